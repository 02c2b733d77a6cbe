"""Whole-slide images: the instances of a series sorted into a pyramid.

`open_slide` and `Slide`: a series' instances as levels (largest first), with
label, overview and thumbnail images kept apart, OpenSlide-style regions and
thumbnails. Each level reads its tiles through `dicomframes.views` (the tile
geometry and regions of one instance); nothing here parses DICOM.
"""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

import numpy as np

from dicomframes.errors import InvalidFileError, NotDicomError, RegionError, SlideError
from dicomframes.io.resolve import inputs, is_single, is_url, local_path
from dicomframes.reader import Reader, open_all
from dicomframes.reader import open as open_reader
from dicomframes.views.geometry import TILED_FULL, TiledFullGeometry, TileGeometry
from dicomframes.views.regions import (
    Rect,
    check_overlap,
    check_size,
    fill_uncovered,
    new_region,
    paste_tiles,
    read_region,
)

__all__ = ["open_slide", "Slide", "Level", "AssociatedImage", "resize_area"]

_ASSOCIATED = ("LABEL", "OVERVIEW", "THUMBNAIL")


def _image_type(reader: Reader) -> str:
    value = reader.header.get("ImageType")
    values = value if isinstance(value, list) else ([value] if value else [])
    flavour = str(values[2]).strip().upper() if len(values) > 2 else ""
    if flavour:
        return flavour
    return "VOLUME" if reader.header.get("TotalPixelMatrixColumns") else ""


class _Part:
    """One instance of a level, or the instances of one concatenation joined."""

    def __init__(self, readers: list[Reader]) -> None:
        def order(r):
            v = r.header.values
            return (v.get("ConcatenationFrameOffsetNumber") or 0, v.get("InConcatenationNumber") or 0)

        self.readers = sorted(readers, key=order)
        first = self.geometries[0]
        self.width, self.height = first.width, first.height
        if len(self.readers) > 1 and isinstance(first, TiledFullGeometry):
            total = sum(g.number_of_frames for g in self.geometries)
            expected = first.tile_count
            if total > expected:
                raise InvalidFileError(
                    f"the concatenation's {len(self.readers)} instances hold {total} frames, "
                    f"more than the {expected} tiles of the image",
                    path=first.path,
                )

    @property
    def geometries(self) -> list[TileGeometry]:
        # Through the readers each time: bound to their sources, also after unpickling.
        return [r.tile_geometry for r in self.readers]

    @property
    def focal_planes(self) -> int:
        return max(g.focal_planes for g in self.geometries)

    @property
    def optical_paths(self) -> int:
        return max(g.optical_paths for g in self.geometries)

    @property
    def optical_path_ids(self) -> list[str]:
        return self.geometries[0].optical_path_ids

    @property
    def sort_key(self) -> tuple:
        v = self.readers[0].header.values
        return (v.get("InstanceNumber") or 0, v.get("SOPInstanceUID") or "")


class Level:
    """One level of a pyramid: its size, tile size and downsample, and its instances.

    Attributes
    ----------
    index : int
        0 for the largest level.
    width, height : int
        Size of the level's total pixel matrix.
    tile_width, tile_height : int
    downsample : float
        Level 0 size over this level's size (mean of both axes, as OpenSlide).
    """

    def __init__(self, index: int, parts: list[_Part], base_size: tuple[int, int]) -> None:
        self.index = index
        self._parts = sorted(parts, key=lambda p: p.sort_key)
        first = self._parts[0].geometries[0]
        self.width, self.height = first.width, first.height
        self.tile_width, self.tile_height = first.tile_width, first.tile_height
        self.downsample = (base_size[0] / self.width + base_size[1] / self.height) / 2
        self._planes: dict[tuple[int, int], tuple[_Part, int, int]] | None = None

    @property
    def size(self) -> tuple[int, int]:
        return (self.width, self.height)

    @property
    def tile_size(self) -> tuple[int, int]:
        return (self.tile_width, self.tile_height)

    @property
    def readers(self) -> list[Reader]:
        return [r for p in self._parts for r in p.readers]

    @property
    def organization(self) -> str:
        return self._parts[0].geometries[0].organization

    @property
    def pixel_spacing(self) -> tuple[float, ...] | None:
        """(row, column) pixel spacing in mm, from the Shared Functional Groups."""
        return self._parts[0].geometries[0].pixel_spacing

    def _plane_map(self) -> dict[tuple[int, int], tuple[_Part, int, int]]:
        """(focal plane, optical path) of the level -> (part, its focal plane, its optical path).

        Several instances of one size are optical paths of the level, unless
        they all name the same optical paths: then they are focal planes.
        """
        if self._planes is None:
            planes: dict[tuple[int, int], tuple[_Part, int, int]] = {}
            parts = self._parts
            by_focal_plane = len(parts) > 1 and all(p.optical_path_ids == parts[0].optical_path_ids for p in parts)
            fp_base = op_base = 0
            for part in parts:
                for fp in range(part.focal_planes):
                    for op in range(part.optical_paths):
                        planes.setdefault((fp_base + fp, op_base + op), (part, fp, op))
                if by_focal_plane:
                    fp_base += part.focal_planes
                else:
                    op_base += part.optical_paths
            self._planes = planes
        return self._planes

    @property
    def focal_planes(self) -> int:
        return 1 + max(fp for fp, _ in self._plane_map())

    @property
    def optical_paths(self) -> int:
        return 1 + max(op for _, op in self._plane_map())

    def read_region(
        self,
        location: Sequence[int],
        size: Sequence[int],
        *,
        focal_plane: int = 0,
        optical_path: int = 0,
        background: Any = None,
    ) -> np.ndarray:
        """The region of `size` (width, height) at `location` (x, y) in *this level's* pixels."""
        first_reader = self._parts[0].readers[0]
        path = first_reader.path
        x, y = (int(v) for v in location)
        w, h = check_size(size, path)
        check_overlap(self.width, self.height, x, y, w, h, path)
        where = self._plane_map().get((focal_plane, optical_path))
        if where is None:
            raise RegionError(
                f"focal plane {focal_plane} / optical path {optical_path} out of range: level {self.index} has "
                f"{self.focal_planes} focal plane(s) and {self.optical_paths} optical path(s)",
                path=path,
            )
        part, fp, op = where
        out = new_region(part.readers[0], w, h)
        pasted: list[Rect] = []
        for reader, geometry in zip(part.readers, part.geometries):
            pasted += paste_tiles(reader, geometry, out, x, y, fp, op)
        # The parts of a concatenation hold different frames of one grid.
        disjoint = all(g.organization == TILED_FULL for g in part.geometries)
        fill_uncovered(part.readers[0], out, pasted, disjoint, background)
        return out

    def to_kerchunk(self, *, focal_plane: int = 0, optical_path: int = 0, url: Any = None,
                    fill_value: Any = None, verify: bool = True) -> dict[str, Any]:
        """This level (one focal plane / optical path) as kerchunk references.

        fsspec reference-filesystem JSON (``{"version": 1, "refs": {...}}``,
        zarr format 2) of one array ``image``, (height, width[, samples]),
        chunked by tile; absent tiles of sparse levels have no reference and
        read as `fill_value` (default: `read_region`'s background). ``image[y0:y1,
        x0:x1]`` read by zarr equals ``read_region((x0, y0), (x1 - x0, y1 - y0))``.
        `url`: one URL (a single instance), a mapping of reader paths to URLs,
        or a function of the path. See `dicomframes.Reader.to_kerchunk` and docs/kerchunk.md.
        """
        from dicomframes.views.kerchunk import level_references

        where = self._plane_map().get((focal_plane, optical_path))
        if where is None:
            raise RegionError(
                f"focal plane {focal_plane} / optical path {optical_path} out of range: level {self.index} has "
                f"{self.focal_planes} focal plane(s) and {self.optical_paths} optical path(s)",
                path=self._parts[0].readers[0].path,
            )
        part, fp, op = where
        return level_references(
            part.readers, focal_plane=fp, optical_path=op, url=url, fill_value=fill_value, verify=verify,
            attributes={"level": self.index, "downsample": self.downsample},
        )

    def __repr__(self) -> str:
        return (
            f"Level(index={self.index}, width={self.width}, height={self.height}, "
            f"tile_width={self.tile_width}, tile_height={self.tile_height}, downsample={self.downsample:g}, "
            f"instances={len(self.readers)})"
        )


class AssociatedImage:
    """A label, overview or thumbnail image of a slide."""

    def __init__(self, reader: Reader, image_type: str) -> None:
        self.reader = reader
        self.image_type = image_type

    @property
    def size(self) -> tuple[int, int]:
        v = self.reader.header.values
        return (v.get("TotalPixelMatrixColumns") or self.reader.format.columns,
                v.get("TotalPixelMatrixRows") or self.reader.format.rows)

    def read(self) -> np.ndarray:
        """The whole image as an array."""
        if self.reader.header.get("TotalPixelMatrixColumns"):
            return read_region(self.reader, (0, 0), self.size)
        return self.reader.frame(0)

    def __repr__(self) -> str:
        return f"<AssociatedImage {self.image_type} {self.size[0]}x{self.size[1]} {self.reader.path!r}>"


class Slide:
    """The instances of one whole-slide series, as a pyramid. Made by `open_slide`.

    Attributes
    ----------
    levels : list of Level
        Largest first.
    label, overview, thumbnail_image : AssociatedImage or None
    associated : list of AssociatedImage
        Every label, overview and thumbnail image found.
    """

    def __init__(self, readers: Sequence[Reader]) -> None:
        self._readers = list(readers)
        self.associated: list[AssociatedImage] = []
        self.others: list[Reader] = []
        volumes: list[Reader] = []
        series = {r.header.get("SeriesInstanceUID") for r in self._readers} - {None}
        if len(series) > 1:
            raise SlideError(
                f"the instances belong to {len(series)} series ({', '.join(sorted(series))}); give one series",
            )
        for r in self._readers:
            kind = _image_type(r)
            if kind == "VOLUME":
                volumes.append(r)
            elif kind in _ASSOCIATED:
                self.associated.append(AssociatedImage(r, kind))
            else:
                self.others.append(r)
        if not volumes:
            raise SlideError(
                "none of the instances is a pyramid level (Image Type value 3 VOLUME with a total pixel matrix)",
                path=self._readers[0].path if self._readers else None,
            )
        # Concatenations join into one part; parts of one size make one level.
        groups: dict[str, list[Reader]] = {}
        for r in volumes:
            key = r.header.get("ConcatenationUID") or ("instance", r.header.get("SOPInstanceUID"), id(r))
            groups.setdefault(str(key), []).append(r)
        by_size: dict[tuple[int, int], list[_Part]] = {}
        for members in groups.values():
            part = _Part(members)
            by_size.setdefault((part.width, part.height), []).append(part)
        sizes = sorted(by_size, key=lambda s: (s[0] * s[1], s[0]), reverse=True)
        self.levels = [Level(k, by_size[s], sizes[0]) for k, s in enumerate(sizes)]

        def first(kind):
            return next((a for a in self.associated if a.image_type == kind), None)

        self.label = first("LABEL")
        self.overview = first("OVERVIEW")
        self.thumbnail_image = first("THUMBNAIL")

    # -- OpenSlide-like description ---------------------------------------------------
    @property
    def dimensions(self) -> tuple[int, int]:
        return self.levels[0].size

    @property
    def level_count(self) -> int:
        return len(self.levels)

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return tuple(level.size for level in self.levels)

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return tuple(level.downsample for level in self.levels)

    def get_best_level_for_downsample(self, downsample: float) -> int:
        """The largest level index whose downsample does not exceed `downsample`."""
        best = 0
        for level in self.levels:
            if level.downsample <= downsample * (1 + 1e-9):
                best = level.index
        return best

    @property
    def readers(self) -> list[Reader]:
        return list(self._readers)

    # -- pixels ------------------------------------------------------------------------
    def read_region(
        self,
        location: Sequence[int],
        level: int,
        size: Sequence[int],
        *,
        focal_plane: int = 0,
        optical_path: int = 0,
        background: Any = None,
    ) -> np.ndarray:
        """The region of `size` (width, height) of level `level`, with its top-left
        corner at `location` (x, y) given in level 0 pixels (OpenSlide's convention)."""
        if not 0 <= level < len(self.levels):
            raise RegionError(f"level {level} out of range: the slide has {len(self.levels)} levels")
        lv = self.levels[level]
        x, y = (int(v) for v in location)
        lx, ly = math.floor(x / lv.downsample), math.floor(y / lv.downsample)
        return lv.read_region((lx, ly), size, focal_plane=focal_plane, optical_path=optical_path, background=background)

    def thumbnail(self, max_size: Sequence[int] = (512, 512), *, focal_plane: int = 0, optical_path: int = 0) -> np.ndarray:
        """The whole slide, downscaled (area average) to fit `max_size` (width, height),
        keeping its aspect ratio, read from the smallest level that is big enough."""
        mw, mh = (int(v) for v in max_size)
        if mw <= 0 or mh <= 0:
            raise RegionError(f"max_size must be positive, not {mw}x{mh}")
        w0, h0 = self.dimensions
        scale = min(mw / w0, mh / h0, 1.0)
        tw, th = max(1, round(w0 * scale)), max(1, round(h0 * scale))
        chosen = self.levels[0]
        for level in reversed(self.levels):
            if level.width >= tw and level.height >= th:
                chosen = level
                break
        image = chosen.read_region((0, 0), chosen.size, focal_plane=focal_plane, optical_path=optical_path)
        return resize_area(image, tw, th)

    # -- lifetime ------------------------------------------------------------------
    def to_dask(self, level: int = 0, tiles_per_chunk: int | tuple[int, int] = 1, **kw: Any):
        """Level `level` as a lazy dask array, one chunk per tile (``[dask]`` extra).

        See `dicomframes.integrations.dask.slide_to_dask`; slices equal `read_region` there.
        """
        from dicomframes.views.dask_graph import slide_to_dask

        return slide_to_dask(self, level, tiles_per_chunk, **kw)

    def to_kerchunk(self, level: int = 0, **kw: Any) -> dict[str, Any]:
        """Level `level` as kerchunk references (zarr format 2 JSON); see `Level.to_kerchunk`."""
        if not 0 <= level < len(self.levels):
            raise RegionError(f"level {level} out of range: the slide has {len(self.levels)} levels")
        return self.levels[level].to_kerchunk(**kw)

    def close(self) -> None:
        for r in self._readers:
            r.close()

    def __enter__(self) -> "Slide":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        sizes = ", ".join(f"{lv.width}x{lv.height}" for lv in self.levels)
        extra = ", ".join(a.image_type.lower() for a in self.associated)
        return f"<dicomframes.Slide levels [{sizes}]" + (f" + {extra}" if extra else "") + ">"


def resize_area(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Downscale `image` to (height, width) by averaging the source pixels each target pixel covers."""
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image.copy()
    if width > w or height > h:
        raise ValueError(f"resize_area only shrinks: {w}x{h} -> {width}x{height}")
    ys = (np.arange(height) * h) // height
    xs = (np.arange(width) * w) // width
    # Rows are summed in bands of about 4 MB of float64 each: the whole image
    # as float64 (8x its bytes for uint8) is never made. Output rows are sums
    # of their own source rows, so banding changes no value.
    row_bytes = max(1, image[0].size * 8)
    band = max(1, (4 << 20) // (row_bytes * max(1, h // height)))
    acc = np.empty((height,) + image.shape[1:], np.float64)
    for a in range(0, height, band):
        b = min(height, a + band)
        stop = ys[b] if b < height else h
        acc[a:b] = np.add.reduceat(image[ys[a]:stop].astype(np.float64), ys[a:b] - ys[a], axis=0)
    acc = np.add.reduceat(acc, xs, axis=1)
    counts = np.diff(np.append(ys, h))[:, None] * np.diff(np.append(xs, w))[None, :]
    if image.ndim == 3:
        counts = counts[:, :, None]
    out = acc / counts
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    return out.astype(image.dtype)


# -- opening -----------------------------------------------------------------------------
_READER_OPTIONS = ("as_rgb", "decoder", "workers", "max_inflight", "index_cache")


def _is_dicom_name(name: str) -> bool:
    return name.lower().endswith((".dcm", ".dicom"))


def list_instances(sources: Any, storage_options: dict[str, Any]) -> tuple[list[Any], bool]:
    """The instances to open, and whether they came from a listing (skip non-DICOM files).

    One file or many, and URL or local path, as `dicomframes.io.resolve` decides
    for every input; only a folder or URL prefix is listed here.
    """
    if not is_single(sources):
        return inputs(sources), False
    if not isinstance(sources, (str, os.PathLike)):
        return [sources], False  # bytes, a file object, a reader, an (fs, path) pair
    text = os.fspath(sources)
    if is_url(text):
        import fsspec

        if _is_dicom_name(text.rstrip("/")) and not text.endswith("/"):
            return [text], False  # one file: no listing (an HTTP "isdir" would download it)
        fs, root = fsspec.core.url_to_fs(text, **storage_options)
        web = text.split("://", 1)[0] in ("http", "https")
        if text.endswith("/") if web else fs.isdir(root):
            found = sorted(p for p in fs.find(root) if not fs.isdir(p))
            chosen = [p for p in found if _is_dicom_name(p)] or found
            return [(fs, p) for p in chosen], True
        return [text], False
    text = local_path(text)
    if os.path.isdir(text):
        found = sorted(
            os.path.join(dirpath, f) for dirpath, _, files in os.walk(text) for f in files
        )
        chosen = [p for p in found if _is_dicom_name(p)] or found
        return chosen, True
    return [text], False


def open_slide(sources: Any, **options: Any) -> Slide:
    """Open the instances of one whole-slide series as a `Slide`.

    Only headers are read here; tiles are fetched by `Slide.read_region`.

    Parameters
    ----------
    sources : one instance, a list of them, or one folder or URL prefix
        The series' instances (anything `dicomframes.open` takes: one of them
        alone, bytes or a file object included, is one instance), or a local
        folder / fsspec URL prefix whose ``.dcm`` files (all files, if none is
        named so) are the instances. From a folder, files that are not DICOM
        images are skipped.
    **options
        ``as_rgb``, ``decoder``, ``workers`` and ``max_inflight`` for each
        reader (see `dicomframes.open`); everything else is a storage option
        for fsspec (e.g. ``anon=True``).
    """
    reader_options = {k: options.pop(k) for k in _READER_OPTIONS if k in options}
    items, listed = list_instances(sources, options)
    if not items:
        raise SlideError(f"no instances found in {sources!r}")

    def one(item):
        try:
            if isinstance(item, tuple):
                return open_reader(item, **reader_options)
            return open_reader(item, **reader_options, **options)
        except NotDicomError:
            if listed:
                return None
            raise

    readers = [r for r in open_all(items, one) if r is not None]
    try:
        return Slide(readers)
    except BaseException:
        for r in readers:
            r.close()
        raise
