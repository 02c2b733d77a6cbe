"""Where the frames of one tiled instance lie in its total pixel matrix.

A whole-slide image (VL Whole Slide Microscopy Image Storage) is a pyramid of
levels; each level is one instance (or a concatenation of several) whose frames
are tiles of a *total pixel matrix*. ``reader.tile_geometry`` places every frame
in that matrix with one class per tile organisation, picked by
`TileGeometry.from_header`:

- `TiledFullGeometry`: arithmetic on the frame number (columns fastest, then
  rows, then focal planes, then optical paths);
- `TiledSparseGeometry`: positions from the Per-Frame Functional Groups
  Sequence, parsed lazily into arrays (`functional_groups.walk_items`), once.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from dicomframes.errors import InvalidFileError, NotTiledError, RegionError
from dicomframes.views.functional_groups import (
    MISSING,
    ItemValues,
    walk_header_sequence,
)

if TYPE_CHECKING:  # pragma: no cover
    from dicomframes.frames.header import Header
    from dicomframes.io.source import Source

TILED_FULL = "TILED_FULL"
TILED_SPARSE = "TILED_SPARSE"
_POSITION_BLOCK = 1 << 20  # bytes per read while walking functional groups

_Frames = tuple[np.ndarray, np.ndarray, np.ndarray]


class TilePosition(NamedTuple):
    """Where a tile lies: pixel offsets (0-based) of its top-left corner in the
    total pixel matrix, and its focal plane and optical path (0-based indices)."""

    row: int
    column: int
    focal_plane: int = 0
    optical_path: int = 0


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list) and value else value


def _walk(header: "Header", source: "Source | None", keyword: str, capacity: int = 0) -> ItemValues | None:
    if source is None:
        raise InvalidFileError("the reader is closed or not bound; cannot read positions", path=header.name)
    block = max(int(getattr(source, "walk_block", 0) or 0), _POSITION_BLOCK)
    return walk_header_sequence(header, source, keyword, capacity=capacity, block=block)


def _matrix_size(header: "Header") -> tuple[int, int]:
    """Total Pixel Matrix Columns and Rows; NotTiledError if the image has none."""
    v = header.values
    width, height = v.get("TotalPixelMatrixColumns"), v.get("TotalPixelMatrixRows")
    if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
        raise NotTiledError(
            "not a tiled image: it has no Total Pixel Matrix Columns/Rows "
            f"(found {width!r}, {height!r})",
            path=header.name, hint="regions and tile positions need a whole-slide (tiled) image",
        )
    return width, height


def _no_frames() -> _Frames:
    empty = np.zeros(0, dtype=np.int64)
    return empty, empty, empty


class TileGeometry(ABC):
    """Where the frames of one tiled instance lie in its total pixel matrix.

    The base of `TiledFullGeometry` and `TiledSparseGeometry`; made by
    ``reader.tile_geometry`` (`TileGeometry.from_header`).

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
    organization : str
        "TILED_FULL" or "TILED_SPARSE".
    """

    organization: str

    def __init__(self, header: "Header", number_of_frames: int, source: "Source | None" = None) -> None:
        v = header.values
        self.path = header.name
        self.width, self.height = width, height = _matrix_size(header)
        self.tile_width, self.tile_height = int(v["Columns"]), int(v["Rows"])
        self.tiles_across = -(-width // self.tile_width)
        self.tiles_down = -(-height // self.tile_height)
        self.number_of_frames = number_of_frames
        self.frame_offset = int(v.get("ConcatenationFrameOffsetNumber") or 0)
        self.declared_organization = _first(v.get("DimensionOrganizationType"))
        self._header = header
        self._source = source
        self._optical_path_ids: list[str] | None = None
        self._pixel_spacing: tuple[float, ...] | None | bool = False  # False: not looked up yet

    @staticmethod
    def from_header(header: "Header", number_of_frames: int, source: "Source | None" = None,
                    kept_positions: dict[str, np.ndarray] | None = None) -> "TileGeometry":
        """The geometry of the header's tile organisation.

        `kept_positions`: a sparse geometry's `kept_positions` from an index
        file: used instead of reading the Per-Frame Functional Groups.

        Dimension Organization Type TILED_FULL is full tiling, even where the
        items carry positions, and TILED_SPARSE is sparse (positions read on
        first use). Otherwise (absent or another value) the Per-Frame
        Functional Groups decide, so they are read now: sparse if their items
        hold positions, full tiling if they do not or there are none.
        """
        _matrix_size(header)  # not tiled: say so before reading anything
        declared = str(_first(header.values.get("DimensionOrganizationType")) or "").strip().upper()
        if kept_positions and declared != TILED_FULL:
            return TiledSparseGeometry(header, number_of_frames, source, kept=kept_positions)
        if declared == TILED_FULL:
            return TiledFullGeometry(header, number_of_frames, source)
        if declared == TILED_SPARSE:
            return TiledSparseGeometry(header, number_of_frames, source)
        if "PerFrameFunctionalGroupsSequence" not in header.sequences:
            return TiledFullGeometry(header, number_of_frames, source)
        found = _walk(header, source, "PerFrameFunctionalGroupsSequence", capacity=number_of_frames)
        if found is None or not found.has_positions:
            return TiledFullGeometry(header, number_of_frames, source)
        return TiledSparseGeometry(header, number_of_frames, source, found=found)

    def kept_positions(self) -> dict[str, np.ndarray] | None:
        """Arrays worth keeping in an index file (parsed tile positions); None here."""
        return None

    # -- pickling: drop the source, the owner binds a fresh one --------------------
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_source"] = None
        state.pop("_lock", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)

    def bind(self, source: "Source") -> "TileGeometry":
        self._source = source
        return self

    def _walk(self, keyword: str, capacity: int = 0) -> ItemValues | None:
        return _walk(self._header, self._source, keyword, capacity)

    # -- descriptions ---------------------------------------------------------------
    @property
    def sparse(self) -> bool:
        return self.organization == TILED_SPARSE

    @property
    @abstractmethod
    def focal_planes(self) -> int:
        """How many the instance holds."""

    @property
    @abstractmethod
    def optical_paths(self) -> int:
        """How many the instance holds."""

    @property
    def focal_plane_z(self) -> np.ndarray | None:
        """Z offsets (µm) of the focal planes of a sparse image, in index order."""
        return None

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
        return (
            f"<TileGeometry {self.width}x{self.height}, tiles {self.tile_width}x{self.tile_height} "
            f"({self.tiles_across}x{self.tiles_down}), {self.organization}, {self.number_of_frames} frames>"
        )

    # -- positions -----------------------------------------------------------------
    @abstractmethod
    def positions(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(rows, columns, focal planes, optical paths) of every frame, as int arrays."""

    def position(self, frame: int) -> TilePosition:
        """Where frame `frame` (0-based, of this instance) lies."""
        if not 0 <= frame < self.number_of_frames:
            raise IndexError(f"frame index {frame} out of range for {self.number_of_frames} frames in {self.path}")
        return self._position(frame)

    @abstractmethod
    def _position(self, frame: int) -> TilePosition:
        """`position` of a frame known to be in range."""

    def frame_at(self, tile_row: int, tile_column: int, focal_plane: int = 0, optical_path: int = 0) -> int | None:
        """The frame (of this instance) holding tile (`tile_row`, `tile_column`), or None if absent."""
        if not (0 <= tile_row < self.tiles_down and 0 <= tile_column < self.tiles_across):
            return None  # off the grid: no arithmetic wrap-around into a neighbouring row
        frames, _, _ = self._tiles_in_grid(tile_row, tile_row, tile_column, tile_column, focal_plane, optical_path)
        return int(frames[0]) if len(frames) else None

    def check_plane(self, focal_plane: int, optical_path: int) -> None:
        if not 0 <= focal_plane < self.focal_planes:
            raise RegionError(f"focal plane {focal_plane} out of range: the image has {self.focal_planes}", path=self.path)
        if not 0 <= optical_path < self.optical_paths:
            raise RegionError(f"optical path {optical_path} out of range: the image has {self.optical_paths}", path=self.path)

    @abstractmethod
    def _tiles_in_grid(self, r0: int, r1: int, c0: int, c1: int, fp: int, op: int) -> _Frames:
        """Frames whose grid cell lies in rows r0..r1 and columns c0..c1 (inclusive)."""

    def _tiles_overlapping(self, x0: int, y0: int, x1: int, y1: int, fp: int, op: int) -> _Frames:
        """Frames overlapping pixels [x0, x1) x [y0, y1), already clipped to the image."""
        return self._tiles_in_grid(
            y0 // self.tile_height, (y1 - 1) // self.tile_height,
            x0 // self.tile_width, (x1 - 1) // self.tile_width, fp, op,
        )

    def tiles_in(self, x: int, y: int, width: int, height: int, focal_plane: int = 0, optical_path: int = 0):
        """Frames that overlap the region, and their pixel rows and columns.

        Returns three int arrays: frame indices (of this instance), tile top
        rows, tile left columns.
        """
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + width, self.width), min(y + height, self.height)
        if x1 <= x0 or y1 <= y0:
            return _no_frames()
        return self._tiles_overlapping(x0, y0, x1, y1, focal_plane, optical_path)

    @staticmethod
    def _cells(r0: int, r1: int, c0: int, c1: int) -> tuple[np.ndarray, np.ndarray]:
        rr, cc = np.meshgrid(np.arange(r0, r1 + 1), np.arange(c0, c1 + 1), indexing="ij")
        return rr.ravel(), cc.ravel()


class TiledFullGeometry(TileGeometry):
    """TILED_FULL: every tile present, in order (columns fastest, then rows, then
    focal planes, then optical paths); a frame's position is arithmetic on its
    number in the concatenation."""

    organization = TILED_FULL

    def __init__(self, header: "Header", number_of_frames: int, source: "Source | None" = None) -> None:
        super().__init__(header, number_of_frames, source)
        v = header.values
        self._focal_planes = int(v.get("TotalPixelMatrixFocalPlanes") or 1)
        self._optical_paths = int(v.get("NumberOfOpticalPaths") or 1)
        expected = self.tile_count
        if self.frame_offset + number_of_frames > expected:
            raise InvalidFileError(
                f"TILED_FULL image of {self.tiles_across}x{self.tiles_down} tiles, "
                f"{self._focal_planes} focal plane(s) and {self._optical_paths} optical path(s) "
                f"has {expected} tiles, but frames {self.frame_offset}..{self.frame_offset + number_of_frames - 1} "
                "are declared",
                path=self.path, hint="check Total Pixel Matrix Focal Planes and Number of Optical Paths",
            )

    @property
    def focal_planes(self) -> int:
        return self._focal_planes

    @property
    def optical_paths(self) -> int:
        return self._optical_paths

    @property
    def tile_count(self) -> int:
        """Tiles of the whole matrix: every focal plane and optical path (of a concatenation too)."""
        return self.tiles_across * self.tiles_down * self._focal_planes * self._optical_paths

    def positions(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        f = np.arange(self.frame_offset, self.frame_offset + self.number_of_frames, dtype=np.int64)
        per_plane = self.tiles_across * self.tiles_down
        rows = (f // self.tiles_across % self.tiles_down) * self.tile_height
        columns = (f % self.tiles_across) * self.tile_width
        focal = f // per_plane % self._focal_planes
        optical = f // (per_plane * self._focal_planes)
        return rows, columns, focal, optical

    def _position(self, frame: int) -> TilePosition:
        f = self.frame_offset + frame
        per_plane = self.tiles_across * self.tiles_down
        return TilePosition(
            f // self.tiles_across % self.tiles_down * self.tile_height,
            f % self.tiles_across * self.tile_width,
            f // per_plane % self._focal_planes,
            f // (per_plane * self._focal_planes),
        )

    def _tiles_in_grid(self, r0: int, r1: int, c0: int, c1: int, fp: int, op: int) -> _Frames:
        rr, cc = self._cells(r0, r1, c0, c1)
        f = ((op * self._focal_planes + fp) * self.tiles_down + rr) * self.tiles_across + cc
        local = f - self.frame_offset
        keep = (local >= 0) & (local < self.number_of_frames)
        return local[keep], rr[keep] * self.tile_height, cc[keep] * self.tile_width


class TiledSparseGeometry(TileGeometry):
    """TILED_SPARSE: each frame's position from its item of the Per-Frame
    Functional Groups Sequence, parsed on first use, once (thread-safe), into
    arrays, and a lookup grid where every tile lies on the tile grid."""

    organization = TILED_SPARSE

    def __init__(self, header: "Header", number_of_frames: int, source: "Source | None" = None,
                 found: ItemValues | None = None, kept: dict[str, np.ndarray] | None = None) -> None:
        super().__init__(header, number_of_frames, source)
        self._lock = threading.Lock()
        # rows, columns, focal, optical, z, focal_planes, optical_paths, grid (None off the grid)
        self._sparse: dict[str, Any] | None = None
        if found is not None:  # walked already (by `from_header`): no second read
            self._sparse = self._arrays_from(found)
        elif kept is not None:  # from an index file
            self._sparse = self._arrays_kept(kept)

    #: the arrays `kept_positions` hands out and `_arrays_kept` takes back
    _KEPT = ("rows", "columns", "focal", "optical", "z")

    def kept_positions(self) -> dict[str, np.ndarray] | None:
        """The parsed positions as arrays for an index file; None before they are parsed."""
        sparse = self._sparse
        if sparse is None:
            return None
        kept = {f"tile.{k}": np.asarray(sparse[k]) for k in self._KEPT}
        kept["tile.counts"] = np.asarray([sparse["focal_planes"], sparse["optical_paths"]], dtype=np.int64)
        return kept

    def _arrays_kept(self, kept: dict[str, np.ndarray]) -> dict[str, Any]:
        """Positions from an index file, checked before use (a damaged file must
        not size arrays or name absent planes)."""
        try:
            arrays = {k: np.asarray(kept[f"tile.{k}"]) for k in self._KEPT}
            focal_planes, optical_paths = (int(v) for v in kept["tile.counts"])
        except (KeyError, ValueError, TypeError) as exc:
            raise InvalidFileError(f"the index file's tile positions are incomplete ({exc})", path=self.path) from None
        n = self.number_of_frames
        ints = [arrays[k] for k in ("rows", "columns", "focal", "optical")]
        if any(a.shape != (n,) or a.dtype.kind not in "iu" for a in ints) or arrays["z"].shape != (focal_planes,):
            raise InvalidFileError("the index file's tile positions do not fit the frames", path=self.path)
        rows, columns, focal, optical = (a.astype(np.int64) for a in ints)
        # Positions may lie off the grid, as parsed ones may; planes and paths index arrays.
        if n and (focal.min() < 0 or focal.max() >= focal_planes or optical.min() < 0 or optical.max() >= optical_paths):
            raise InvalidFileError("the index file's tile positions name absent focal planes or optical paths", path=self.path)
        sparse: dict[str, Any] = {
            "rows": rows, "columns": columns, "focal": focal.astype(np.int32), "optical": optical.astype(np.int32),
            "z": arrays["z"].astype(np.float64), "focal_planes": focal_planes, "optical_paths": optical_paths,
        }
        sparse["grid"] = self._grid(sparse) if n else None
        return sparse

    def __setstate__(self, state):
        super().__setstate__(state)
        self._lock = threading.Lock()

    def _arrays(self) -> dict[str, Any]:
        """The parsed positions, reading them on first use."""
        sparse = self._sparse
        if sparse is None:
            with self._lock:
                if self._sparse is None:
                    found = self._walk("PerFrameFunctionalGroupsSequence", capacity=self.number_of_frames)
                    self._sparse = self._arrays_from(found)
                sparse = self._sparse
        return sparse

    def _arrays_from(self, found: ItemValues | None) -> dict[str, Any]:
        if found is None or not found.has_positions:
            raise InvalidFileError(
                "TILED_SPARSE image without Plane Position (Slide) in its Per-Frame Functional Groups",
                path=self.path,
            )
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
        sparse["grid"] = self._grid(sparse)
        return sparse

    def _grid(self, sparse: dict[str, Any]) -> np.ndarray | None:
        """Frame number by (focal plane, optical path, tile row, tile column), -1
        where absent; None unless every tile lies on the tile grid."""
        rows, columns = sparse["rows"], sparse["columns"]
        aligned = (
            not (columns % self.tile_width).any() and not (rows % self.tile_height).any()
            and columns.min() >= 0 and rows.min() >= 0 and columns.max() < self.width and rows.max() < self.height
        )
        if not aligned:
            return None
        grid = np.full((sparse["focal_planes"], sparse["optical_paths"], self.tiles_down, self.tiles_across), -1, dtype=np.int32)
        grid[sparse["focal"], sparse["optical"], rows // self.tile_height, columns // self.tile_width] = np.arange(len(rows), dtype=np.int32)
        return grid

    @property
    def focal_planes(self) -> int:
        return self._arrays()["focal_planes"]

    @property
    def optical_paths(self) -> int:
        return self._arrays()["optical_paths"]

    @property
    def focal_plane_z(self) -> np.ndarray | None:
        return self._arrays()["z"]

    def positions(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        s = self._arrays()
        return s["rows"], s["columns"], s["focal"], s["optical"]

    def _position(self, frame: int) -> TilePosition:
        s = self._arrays()
        return TilePosition(int(s["rows"][frame]), int(s["columns"][frame]),
                            int(s["focal"][frame]), int(s["optical"][frame]))

    def _tiles_in_grid(self, r0: int, r1: int, c0: int, c1: int, fp: int, op: int) -> _Frames:
        s = self._arrays()
        grid = s["grid"]
        if grid is None:  # tiles off the grid: those whose corner lies exactly on a cell's
            rows, cols = s["rows"], s["columns"]
            hit = (
                (s["focal"] == fp) & (s["optical"] == op)
                & (rows % self.tile_height == 0) & (cols % self.tile_width == 0)
                & (rows >= r0 * self.tile_height) & (rows <= r1 * self.tile_height)
                & (cols >= c0 * self.tile_width) & (cols <= c1 * self.tile_width)
            )
            frames = np.flatnonzero(hit)
            return frames, rows[frames].astype(np.int64), cols[frames].astype(np.int64)
        if not (0 <= fp < grid.shape[0] and 0 <= op < grid.shape[1]):
            return _no_frames()
        rr, cc = self._cells(r0, r1, c0, c1)
        cells = grid[fp, op, r0 : r1 + 1, c0 : c1 + 1].ravel()
        keep = cells >= 0
        return cells[keep].astype(np.int64), rr[keep] * self.tile_height, cc[keep] * self.tile_width

    def _tiles_overlapping(self, x0: int, y0: int, x1: int, y1: int, fp: int, op: int) -> _Frames:
        s = self._arrays()
        if s["grid"] is not None:
            return super()._tiles_overlapping(x0, y0, x1, y1, fp, op)
        # Tiles off the grid: test every frame (vectorised).
        rows, cols = s["rows"], s["columns"]
        hit = (
            (s["focal"] == fp) & (s["optical"] == op)
            & (cols < x1) & (cols + self.tile_width > x0) & (rows < y1) & (rows + self.tile_height > y0)
        )
        frames = np.flatnonzero(hit)
        return frames, rows[frames].astype(np.int64), cols[frames].astype(np.int64)
