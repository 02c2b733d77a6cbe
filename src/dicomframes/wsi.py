"""Whole-slide images: tile geometry, regions and pyramids.

A whole-slide image (VL Whole Slide Microscopy Image Storage) is a pyramid of
levels; each level is one instance (or a concatenation of several) whose frames
are tiles of a *total pixel matrix*. This module places every frame in that
matrix, stitches regions from the tiles they touch, and sorts the instances of
a series into a pyramid:

- `TileGeometry` (``reader.tile_geometry``): where each frame lies. For
  TILED_FULL files this is arithmetic on the frame number (columns fastest,
  then rows, then focal planes, then optical paths); for TILED_SPARSE files the
  positions come from the Per-Frame Functional Groups Sequence, parsed lazily
  into arrays (`functional_groups.walk_items`).
- `read_region` and `iter_tiles` (``reader.read_region``, ``reader.iter_tiles``):
  regions are stitched from the tiles they touch, fetched together through the
  reader's planned, coalesced range reads.
- `open_slide` and `Slide`: a series' instances as levels (largest first), with
  label, overview and thumbnail images kept apart, OpenSlide-style regions and
  thumbnails.

Nothing here parses DICOM beyond the positions: everything else comes from the
reader's header.
"""

from __future__ import annotations

import math
import os
import threading
from typing import TYPE_CHECKING, Any, Iterator, NamedTuple, Sequence

import numpy as np

from .errors import DicomFramesError, InvalidFileError, NotDicomError
from .functional_groups import MISSING, ItemValues, walk_header_sequence

if TYPE_CHECKING:  # pragma: no cover
    from .reader import Reader

__all__ = [
    "TilePosition", "TileGeometry", "NotTiledError", "RegionError", "SlideError",
    "read_region", "iter_tiles", "geometry_of", "open_slide", "Slide", "Level", "AssociatedImage",
]

TILED_FULL = "TILED_FULL"
TILED_SPARSE = "TILED_SPARSE"
_POSITION_BLOCK = 1 << 20  # bytes per read while walking functional groups
_ASSOCIATED = ("LABEL", "OVERVIEW", "THUMBNAIL")


class NotTiledError(DicomFramesError, ValueError):
    """The file is not a tiled image (no Total Pixel Matrix Columns/Rows)."""


class RegionError(DicomFramesError, ValueError):
    """A region, focal plane or optical path that the image does not have."""


class SlideError(DicomFramesError, ValueError):
    """The instances given do not make a slide (no pyramid level, several series)."""


class TilePosition(NamedTuple):
    """Where a tile lies: pixel offsets (0-based) of its top-left corner in the
    total pixel matrix, and its focal plane and optical path (0-based indices)."""

    row: int
    column: int
    focal_plane: int = 0
    optical_path: int = 0


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list) and value else value


class TileGeometry:
    """Where the frames of one tiled instance lie in its total pixel matrix.

    Made by ``reader.tile_geometry``. For TILED_SPARSE (and undeclared)
    organisations, the Per-Frame Functional Groups Sequence is parsed on first
    use of a position, once.

    Attributes
    ----------
    width, height : int
        Total Pixel Matrix Columns and Rows.
    tile_width, tile_height : int
        Columns and Rows of each frame.
    tiles_across, tiles_down : int
        Tiles per row and per column of the matrix.
    frame_offset : int
        Concatenation Frame Offset Number: frame 0 of this instance is frame
        `frame_offset` of the concatenation (TILED_FULL numbering).
    number_of_frames : int
        Frames in this instance.
    """

    def __init__(self, header: Any, number_of_frames: int, source: Any = None) -> None:
        v = header.values
        self.path = header.name
        width, height = v.get("TotalPixelMatrixColumns"), v.get("TotalPixelMatrixRows")
        if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
            raise NotTiledError(
                "not a tiled image: it has no Total Pixel Matrix Columns/Rows "
                f"(found {width!r}, {height!r})",
                path=self.path, hint="regions and tile positions need a whole-slide (tiled) image",
            )
        self.width, self.height = width, height
        self.tile_width, self.tile_height = int(v["Columns"]), int(v["Rows"])
        self.tiles_across = -(-width // self.tile_width)
        self.tiles_down = -(-height // self.tile_height)
        self.number_of_frames = number_of_frames
        self.frame_offset = int(v.get("ConcatenationFrameOffsetNumber") or 0)
        self.declared_organization = _first(v.get("DimensionOrganizationType"))
        self._full_focal_planes = int(v.get("TotalPixelMatrixFocalPlanes") or 1)
        self._full_optical_paths = int(v.get("NumberOfOpticalPaths") or 1)
        self._header = header
        self._source = source
        self._lock = threading.Lock()
        self._sparse: dict[str, Any] | None = None
        self._optical_path_ids: list[str] | None = None
        self._pixel_spacing: tuple[float, ...] | None | bool = False  # False: not looked up yet
        dot = str(self.declared_organization or "").strip().upper()
        if dot == TILED_FULL:
            self._organization: str | None = TILED_FULL
        elif dot == TILED_SPARSE:
            self._organization = TILED_SPARSE
        elif "PerFrameFunctionalGroupsSequence" in header.sequences:
            self._organization = None  # decided by whether the items hold positions
        else:
            self._organization = TILED_FULL
        if self._organization == TILED_FULL:
            self._check_full()

    # -- pickling: drop the source, the owner binds a fresh one --------------------
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_source"] = None
        state.pop("_lock", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def bind(self, source: Any) -> "TileGeometry":
        self._source = source
        return self

    # -- organisation ----------------------------------------------------------------
    @property
    def organization(self) -> str:
        """"TILED_FULL" or "TILED_SPARSE" (as declared, or as the positions show)."""
        if self._organization is None:
            self._parse()
        return self._organization  # type: ignore[return-value]

    @property
    def sparse(self) -> bool:
        return self.organization == TILED_SPARSE

    def _check_full(self) -> None:
        expected = self.tiles_across * self.tiles_down * self._full_focal_planes * self._full_optical_paths
        if self.frame_offset + self.number_of_frames > expected:
            raise InvalidFileError(
                f"TILED_FULL image of {self.tiles_across}x{self.tiles_down} tiles, "
                f"{self._full_focal_planes} focal plane(s) and {self._full_optical_paths} optical path(s) "
                f"has {expected} tiles, but frames {self.frame_offset}..{self.frame_offset + self.number_of_frames - 1} "
                "are declared",
                path=self.path, hint="check Total Pixel Matrix Focal Planes and Number of Optical Paths",
            )

    def _walk(self, keyword: str, capacity: int = 0) -> ItemValues | None:
        if self._source is None:
            raise InvalidFileError("the reader is closed or not bound; cannot read positions", path=self.path)
        block = max(int(getattr(self._source, "walk_block", 0) or 0), _POSITION_BLOCK)
        return walk_header_sequence(self._header, self._source, keyword, capacity=capacity, block=block)

    def _parse(self) -> None:
        """Read the sparse positions (once)."""
        with self._lock:
            if self._sparse is not None or self._organization == TILED_FULL:
                return
            found = self._walk("PerFrameFunctionalGroupsSequence", capacity=self.number_of_frames)
            if found is None or not found.has_positions:
                if self._organization == TILED_SPARSE:
                    raise InvalidFileError(
                        "TILED_SPARSE image without Plane Position (Slide) in its Per-Frame Functional Groups",
                        path=self.path,
                    )
                self._organization = TILED_FULL
                self._check_full()
                return
            if found.count != self.number_of_frames:
                raise InvalidFileError(
                    f"the Per-Frame Functional Groups Sequence has {found.count} items for "
                    f"{self.number_of_frames} frames",
                    path=self.path,
                )
            missing = np.flatnonzero((found.columns == MISSING) | (found.rows == MISSING))
            if len(missing):
                raise InvalidFileError(
                    "frame has no Column/Row Position In Total Image Pixel Matrix in its Plane Position (Slide)",
                    path=self.path, frame=int(missing[0]),
                )
            n = found.count
            # Focal planes: the distinct Z offsets, in increasing order.
            if found.z is not None and not np.isnan(found.z).all():
                z = np.where(np.isnan(found.z), np.nanmin(found.z), found.z)
                z_values, focal = np.unique(z, return_inverse=True)
                focal = focal.astype(np.int32)
            else:
                z_values, focal = np.zeros(1), np.zeros(n, dtype=np.int32)
            # Optical paths: in the order of the Optical Path Sequence where it names them all.
            ids = found.optical_path_ids
            if found.optical_path is not None and ids:
                order = self.optical_path_ids
                if order and set(ids) <= set(order):
                    remap = np.asarray([order.index(i) for i in ids], dtype=np.int32)
                    optical = np.where(found.optical_path >= 0, remap[np.maximum(found.optical_path, 0)], 0)
                else:
                    optical = np.maximum(found.optical_path, 0)
                optical = optical.astype(np.int32)
                n_optical = max(int(optical.max()) + 1, len(order or ()))
            else:
                optical = np.zeros(n, dtype=np.int32)  # no frame names an optical path: one
                n_optical = 1
            sparse: dict[str, Any] = {
                "rows": found.rows, "columns": found.columns, "focal": focal, "optical": optical,
                "z": z_values, "focal_planes": len(z_values), "optical_paths": n_optical, "grid": None,
            }
            aligned = (
                not (found.columns % self.tile_width).any() and not (found.rows % self.tile_height).any()
                and found.columns.min() >= 0 and found.rows.min() >= 0
                and found.columns.max() < self.width and found.rows.max() < self.height
            )
            if aligned:
                grid = np.full((len(z_values), n_optical, self.tiles_down, self.tiles_across), -1, dtype=np.int32)
                grid[focal, optical, found.rows // self.tile_height, found.columns // self.tile_width] = np.arange(n, dtype=np.int32)
                sparse["grid"] = grid
            self._sparse = sparse
            self._organization = TILED_SPARSE

    def _positions_ready(self) -> dict[str, Any] | None:
        """The sparse arrays, parsing them if needed; None for TILED_FULL."""
        if self._organization == TILED_FULL:
            return None
        if self._sparse is None:
            self._parse()
        return self._sparse

    # -- descriptions ---------------------------------------------------------------
    @property
    def focal_planes(self) -> int:
        sparse = self._positions_ready()
        return self._full_focal_planes if sparse is None else sparse["focal_planes"]

    @property
    def optical_paths(self) -> int:
        sparse = self._positions_ready()
        return self._full_optical_paths if sparse is None else sparse["optical_paths"]

    @property
    def focal_plane_z(self) -> np.ndarray | None:
        """Z offsets (µm) of the focal planes of a sparse image, in index order."""
        sparse = self._positions_ready()
        return None if sparse is None else sparse["z"]

    @property
    def optical_path_ids(self) -> list[str]:
        """Optical Path Identifiers in the order of the Optical Path Sequence ([] if absent)."""
        if self._optical_path_ids is None:
            found = self._walk("OpticalPathSequence") if "OpticalPathSequence" in self._header.sequences else None
            ids: list[str] = []
            if found is not None and found.optical_path is not None:
                ids = [found.optical_path_ids[k] for k in found.optical_path if k >= 0]
            self._optical_path_ids = ids
        return self._optical_path_ids

    @property
    def pixel_spacing(self) -> tuple[float, ...] | None:
        """(row, column) spacing in mm from the Shared Functional Groups, if there."""
        if self._pixel_spacing is False:
            found = None
            if "SharedFunctionalGroupsSequence" in self._header.sequences:
                found = self._walk("SharedFunctionalGroupsSequence")
            self._pixel_spacing = found.pixel_spacing if found is not None else None
        return self._pixel_spacing  # type: ignore[return-value]

    @property
    def size(self) -> tuple[int, int]:
        return (self.width, self.height)

    @property
    def tile_size(self) -> tuple[int, int]:
        return (self.tile_width, self.tile_height)

    def __repr__(self) -> str:
        org = self._organization or "undetermined"
        return (
            f"<TileGeometry {self.width}x{self.height}, tiles {self.tile_width}x{self.tile_height} "
            f"({self.tiles_across}x{self.tiles_down}), {org}, {self.number_of_frames} frames>"
        )

    # -- positions -----------------------------------------------------------------
    def positions(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(rows, columns, focal planes, optical paths) of every frame, as int arrays."""
        sparse = self._positions_ready()
        if sparse is not None:
            return sparse["rows"], sparse["columns"], sparse["focal"], sparse["optical"]
        f = np.arange(self.frame_offset, self.frame_offset + self.number_of_frames, dtype=np.int64)
        per_plane = self.tiles_across * self.tiles_down
        rows = (f // self.tiles_across % self.tiles_down) * self.tile_height
        columns = (f % self.tiles_across) * self.tile_width
        focal = f // per_plane % self._full_focal_planes
        optical = f // (per_plane * self._full_focal_planes)
        return rows, columns, focal, optical

    def position(self, frame: int) -> TilePosition:
        """Where frame `frame` (0-based, of this instance) lies."""
        if not 0 <= frame < self.number_of_frames:
            raise IndexError(f"frame index {frame} out of range for {self.number_of_frames} frames in {self.path}")
        sparse = self._positions_ready()
        if sparse is not None:
            return TilePosition(int(sparse["rows"][frame]), int(sparse["columns"][frame]),
                                int(sparse["focal"][frame]), int(sparse["optical"][frame]))
        f = self.frame_offset + frame
        per_plane = self.tiles_across * self.tiles_down
        return TilePosition(
            f // self.tiles_across % self.tiles_down * self.tile_height,
            f % self.tiles_across * self.tile_width,
            f // per_plane % self._full_focal_planes,
            f // (per_plane * self._full_focal_planes),
        )

    def frame_at(self, tile_row: int, tile_column: int, focal_plane: int = 0, optical_path: int = 0) -> int | None:
        """The frame (of this instance) holding tile (`tile_row`, `tile_column`), or None if absent."""
        frames, _, _ = self._tiles_in_grid(tile_row, tile_row, tile_column, tile_column, focal_plane, optical_path)
        return int(frames[0]) if len(frames) else None

    def check_plane(self, focal_plane: int, optical_path: int) -> None:
        if not 0 <= focal_plane < self.focal_planes:
            raise RegionError(f"focal plane {focal_plane} out of range: the image has {self.focal_planes}", path=self.path)
        if not 0 <= optical_path < self.optical_paths:
            raise RegionError(f"optical path {optical_path} out of range: the image has {self.optical_paths}", path=self.path)

    def _tiles_in_grid(self, r0: int, r1: int, c0: int, c1: int, fp: int, op: int):
        """Frames whose grid cell lies in rows r0..r1 and columns c0..c1 (inclusive)."""
        sparse = self._positions_ready()
        rr, cc = np.meshgrid(np.arange(r0, r1 + 1), np.arange(c0, c1 + 1), indexing="ij")
        rr, cc = rr.ravel(), cc.ravel()
        if sparse is None:
            f = ((op * self._full_focal_planes + fp) * self.tiles_down + rr) * self.tiles_across + cc
            local = f - self.frame_offset
            keep = (local >= 0) & (local < self.number_of_frames)
            return local[keep], rr[keep] * self.tile_height, cc[keep] * self.tile_width
        grid = sparse["grid"]
        if not (0 <= fp < grid.shape[0] and 0 <= op < grid.shape[1]):
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty
        cells = grid[fp, op, r0 : r1 + 1, c0 : c1 + 1].ravel()
        keep = cells >= 0
        return cells[keep].astype(np.int64), rr[keep] * self.tile_height, cc[keep] * self.tile_width

    def tiles_in(self, x: int, y: int, width: int, height: int, focal_plane: int = 0, optical_path: int = 0):
        """Frames that overlap the region, and their pixel rows and columns.

        Returns three int arrays: frame indices (of this instance), tile top
        rows, tile left columns.
        """
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + width, self.width), min(y + height, self.height)
        empty = np.zeros(0, dtype=np.int64)
        if x1 <= x0 or y1 <= y0:
            return empty, empty, empty
        sparse = self._positions_ready()
        if sparse is None or sparse["grid"] is not None:
            return self._tiles_in_grid(
                y0 // self.tile_height, (y1 - 1) // self.tile_height,
                x0 // self.tile_width, (x1 - 1) // self.tile_width, focal_plane, optical_path,
            )
        # Tiles off the grid: test every frame (vectorised).
        rows, cols = sparse["rows"], sparse["columns"]
        hit = (
            (sparse["focal"] == focal_plane) & (sparse["optical"] == optical_path)
            & (cols < x1) & (cols + self.tile_width > x0) & (rows < y1) & (rows + self.tile_height > y0)
        )
        frames = np.flatnonzero(hit)
        return frames, rows[frames].astype(np.int64), cols[frames].astype(np.int64)


# -- reader-level operations ------------------------------------------------------------
def geometry_of(reader: "Reader") -> TileGeometry:
    """The reader's `TileGeometry`, made once and kept on the reader."""
    geometry = reader.__dict__.get("_tile_geometry")
    if geometry is None:
        geometry = TileGeometry(reader.header, len(reader), reader._data_source)
        reader.__dict__["_tile_geometry"] = geometry
    elif geometry._source is not reader._data_source:
        geometry.bind(reader._data_source)  # after unpickling
    return geometry


def default_background(reader: "Reader") -> Any:
    """White for 8-bit brightfield images (255; 0 for MONOCHROME1; (255, 128, 128)
    for YCbCr tiles read with ``as_rgb=False``), else 0."""
    fmt = reader.format
    if fmt.dtype != np.uint8:
        return 0
    pi = fmt.photometric_interpretation
    if pi == "MONOCHROME1":
        return 0
    if pi.startswith("YBR_FULL") and not reader.as_rgb:
        return (255, 128, 128)
    return 255


def _region_shape(reader: "Reader", width: int, height: int) -> tuple[int, ...]:
    return (height, width) + tuple(reader.format.shape[2:])


def _check_size(size: Sequence[int], path: str) -> tuple[int, int]:
    try:
        w, h = (int(s) for s in size)
    except (TypeError, ValueError):
        raise RegionError(f"size must be (width, height), not {size!r}", path=path) from None
    if w <= 0 or h <= 0:
        raise RegionError(f"region size must be positive, not {w}x{h}", path=path)
    return w, h


def _new_region(reader: "Reader", width: int, height: int, background: Any) -> np.ndarray:
    out = np.empty(_region_shape(reader, width, height), dtype=reader.format.dtype)
    out[...] = default_background(reader) if background is None else background
    return out


def _paste_tiles(reader: "Reader", geometry: TileGeometry, out: np.ndarray, x: int, y: int,
                 focal_plane: int, optical_path: int) -> int:
    """Paste the reader's tiles overlapping region (x, y, out's size) into `out`; returns tiles used."""
    h, w = out.shape[:2]
    frames, tops, lefts = geometry.tiles_in(x, y, w, h, focal_plane, optical_path)
    if not len(frames):
        return 0
    # Image-edge clipping bounds, in region coordinates.
    clip_x0, clip_y0 = max(0, -x), max(0, -y)
    clip_x1, clip_y1 = min(w, geometry.width - x), min(h, geometry.height - y)
    where = dict(zip(frames.tolist(), zip(tops.tolist(), lefts.tolist())))
    order = sorted(where)  # file order: neighbouring tiles coalesce into one read
    # One tile is one read: skip the pipeline's start-up (about a millisecond).
    tiles = [reader.frame(order[0])] if len(order) == 1 else reader.iter_frames(order)
    for frame, tile in zip(order, tiles):
        top, left = where[frame]
        ty0, tx0 = max(top - y, clip_y0), max(left - x, clip_x0)
        ty1 = min(top - y + tile.shape[0], clip_y1)
        tx1 = min(left - x + tile.shape[1], clip_x1)
        if ty1 > ty0 and tx1 > tx0:
            out[ty0:ty1, tx0:tx1] = tile[ty0 + y - top : ty1 + y - top, tx0 + x - left : tx1 + x - left]
    return len(order)


def read_region(
    reader: "Reader",
    location: Sequence[int],
    size: Sequence[int],
    *,
    focal_plane: int = 0,
    optical_path: int = 0,
    background: Any = None,
) -> np.ndarray:
    """The region of `size` (width, height) at `location` (x, y) of the total pixel matrix.

    Only the tiles the region touches are fetched, in one planned batch of
    range reads. Pixels past the image edge and absent tiles of sparse images
    are `background` (default: `default_background`). The region must overlap
    the image.

    Returns
    -------
    numpy.ndarray
        (height, width) or (height, width, samples), the reader's dtype.
    """
    geometry = geometry_of(reader)
    x, y = (int(v) for v in location)
    w, h = _check_size(size, geometry.path)
    _check_overlap(geometry.width, geometry.height, x, y, w, h, geometry.path)
    geometry.check_plane(focal_plane, optical_path)
    out = _new_region(reader, w, h, background)
    _paste_tiles(reader, geometry, out, x, y, focal_plane, optical_path)
    return out


def _check_overlap(width: int, height: int, x: int, y: int, w: int, h: int, path: str) -> None:
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        raise RegionError(
            f"region {w}x{h} at ({x}, {y}) lies outside the image of {width}x{height}", path=path,
        )


def iter_tiles(
    reader: "Reader", focal_plane: int | None = None, optical_path: int | None = None
) -> Iterator[tuple[TilePosition, np.ndarray]]:
    """Every tile of the reader (of one focal plane / optical path if given), in file order,
    with its position. Tiles come as stored: edge tiles include their padding."""
    geometry = geometry_of(reader)
    rows, columns, focal, optical = geometry.positions()
    keep = np.ones(len(rows), dtype=bool)
    if focal_plane is not None:
        keep &= focal == focal_plane
    if optical_path is not None:
        keep &= optical == optical_path
    frames = np.flatnonzero(keep).tolist()
    for frame, tile in zip(frames, reader.iter_frames(frames)):
        yield TilePosition(int(rows[frame]), int(columns[frame]), int(focal[frame]), int(optical[frame])), tile


# -- pyramids --------------------------------------------------------------------------
def _image_type(reader: "Reader") -> str:
    value = reader.header.get("ImageType")
    values = value if isinstance(value, list) else ([value] if value else [])
    flavour = str(values[2]).strip().upper() if len(values) > 2 else ""
    if flavour:
        return flavour
    return "VOLUME" if reader.header.get("TotalPixelMatrixColumns") else ""


class _Part:
    """One instance of a level, or the instances of one concatenation joined."""

    def __init__(self, readers: list["Reader"]) -> None:
        def order(r):
            v = r.header.values
            return (v.get("ConcatenationFrameOffsetNumber") or 0, v.get("InConcatenationNumber") or 0)

        self.readers = sorted(readers, key=order)
        first = self.geometries[0]
        self.width, self.height = first.width, first.height
        if len(self.readers) > 1 and first.organization == TILED_FULL:
            total = sum(g.number_of_frames for g in self.geometries)
            expected = first.tiles_across * first.tiles_down * first._full_focal_planes * first._full_optical_paths
            if total > expected:
                raise InvalidFileError(
                    f"the concatenation's {len(self.readers)} instances hold {total} frames, "
                    f"more than the {expected} tiles of the image",
                    path=first.path,
                )

    @property
    def geometries(self) -> list[TileGeometry]:
        # Through the readers each time: bound to their sources, also after unpickling.
        return [geometry_of(r) for r in self.readers]

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
    def readers(self) -> list["Reader"]:
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
        w, h = _check_size(size, path)
        _check_overlap(self.width, self.height, x, y, w, h, path)
        where = self._plane_map().get((focal_plane, optical_path))
        if where is None:
            raise RegionError(
                f"focal plane {focal_plane} / optical path {optical_path} out of range: level {self.index} has "
                f"{self.focal_planes} focal plane(s) and {self.optical_paths} optical path(s)",
                path=path,
            )
        part, fp, op = where
        out = _new_region(part.readers[0], w, h, background)
        for reader, geometry in zip(part.readers, part.geometries):
            _paste_tiles(reader, geometry, out, x, y, fp, op)
        return out

    def __repr__(self) -> str:
        return (
            f"Level(index={self.index}, width={self.width}, height={self.height}, "
            f"tile_width={self.tile_width}, tile_height={self.tile_height}, downsample={self.downsample:g}, "
            f"instances={len(self.readers)})"
        )


class AssociatedImage:
    """A label, overview or thumbnail image of a slide."""

    def __init__(self, reader: "Reader", image_type: str) -> None:
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

    def __init__(self, readers: Sequence["Reader"]) -> None:
        self._readers = list(readers)
        self.associated: list[AssociatedImage] = []
        self.others: list["Reader"] = []
        volumes: list["Reader"] = []
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
        groups: dict[str, list["Reader"]] = {}
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
    def readers(self) -> list["Reader"]:
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

        See `dicomframes.dask.slide_to_dask`; slices equal `read_region` there.
        """
        from .dask import slide_to_dask

        return slide_to_dask(self, level, tiles_per_chunk, **kw)

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
    acc = np.add.reduceat(image.astype(np.float64), ys, axis=0)
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
_READER_OPTIONS = ("as_rgb", "decoder", "workers", "max_inflight")


def _is_dicom_name(name: str) -> bool:
    return name.lower().endswith((".dcm", ".dicom"))


def _expand(sources: Any, storage_options: dict[str, Any]) -> tuple[list[Any], bool]:
    """The instances to open, and whether they came from a listing (skip non-DICOM files)."""
    if isinstance(sources, (str, os.PathLike)):
        text = os.fspath(sources)
        if "://" in text and not text.startswith("file://"):
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
        if text.startswith("file://"):
            text = text[len("file://") :]
        if os.path.isdir(text):
            found = sorted(
                os.path.join(dirpath, f) for dirpath, _, files in os.walk(text) for f in files
            )
            chosen = [p for p in found if _is_dicom_name(p)] or found
            return chosen, True
        return [text], False
    if isinstance(sources, tuple) and len(sources) == 2 and not isinstance(sources[0], (str, os.PathLike)):
        return [sources], False  # one (filesystem, path) pair
    return list(sources), False


def open_slide(sources: Any, **options: Any) -> Slide:
    """Open the instances of one whole-slide series as a `Slide`.

    Parameters
    ----------
    sources : list of paths/URLs, or one folder or URL prefix
        The series' instances (anything `dicomframes.open` takes), or a local
        folder / fsspec URL prefix whose ``.dcm`` files (all files, if none is
        named so) are the instances. From a folder, files that are not DICOM
        images are skipped.
    **options
        ``as_rgb``, ``decoder``, ``workers`` and ``max_inflight`` for each
        reader (see `dicomframes.open`); everything else is a storage option
        for fsspec (e.g. ``anon=True``).

    Only headers are read here; tiles are fetched by `Slide.read_region`.
    """
    from . import open as open_reader
    from .reader import open_all

    reader_options = {k: options.pop(k) for k in _READER_OPTIONS if k in options}
    items, listed = _expand(sources, options)
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
