"""Regions stitched from the tiles of one instance, and its tiles in file order.

``reader.read_region`` and ``reader.iter_tiles``: only the tiles a region
touches are fetched, together, through the reader's planned, coalesced range
reads, and tiles still in the reader's tile cache (a region before it
overlapped them) are not read again. The functions take any reader-like object
(``read_frames``, ``iter_frames``, ``format``, ``as_rgb`` and
``tile_geometry``), so this layer sits below the Reader that offers them as
methods.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from dicomframes.errors import RegionError
from dicomframes.views.geometry import TILED_FULL, TileGeometry, TilePosition

if TYPE_CHECKING:  # pragma: no cover
    from dicomframes.reader import Reader


#: decoded bytes of the tiles a region reads and decodes together (170 RGB tiles of 256x256)
GROUP_BYTES = 32 << 20


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


def check_size(size: Sequence[int], path: str) -> tuple[int, int]:
    try:
        w, h = (int(s) for s in size)
    except (TypeError, ValueError):
        raise RegionError(f"size must be (width, height), not {size!r}", path=path) from None
    if w <= 0 or h <= 0:
        raise RegionError(f"region size must be positive, not {w}x{h}", path=path)
    return w, h


def new_region(reader: "Reader", width: int, height: int) -> np.ndarray:
    """An uninitialised region: `fill_uncovered` sets what no tile covered."""
    return np.empty(_region_shape(reader, width, height), dtype=reader.format.dtype)


#: a pasted tile's rectangle in region coordinates: (top, bottom, left, right)
Rect = tuple[int, int, int, int]


def fill_uncovered(reader: "Reader", out: np.ndarray, pasted: list[Rect], disjoint: bool, background: Any) -> None:
    """Set the pixels of `out` that no pasted tile covered to the background.

    Where the tiles are `disjoint` (a TILED_FULL grid) and their areas add up to
    the region's, nothing is left: filling first would write every pixel twice.
    """
    h, w = out.shape[:2]
    if disjoint and sum((b - t) * (r - le) for t, b, le, r in pasted) == h * w:
        return
    uncovered = np.ones((h, w), dtype=bool)
    for t, b, le, r in pasted:
        uncovered[t:b, le:r] = False
    out[uncovered] = default_background(reader) if background is None else background


def paste_tiles(reader: "Reader", geometry: TileGeometry, out: np.ndarray, x: int, y: int,
                 focal_plane: int, optical_path: int) -> list[Rect]:
    """Paste the reader's tiles overlapping region (x, y, out's size) into `out`;
    returns the rectangles they covered."""
    h, w = out.shape[:2]
    pasted: list[Rect] = []
    frames, tops, lefts = geometry.tiles_in(x, y, w, h, focal_plane, optical_path)
    if not len(frames):
        return pasted
    # Image-edge clipping bounds, in region coordinates.
    clip_x0, clip_y0 = max(0, -x), max(0, -y)
    clip_x1, clip_y1 = min(w, geometry.width - x), min(h, geometry.height - y)
    where = dict(zip(frames.tolist(), zip(tops.tolist(), lefts.tolist())))
    order = sorted(where)  # file order: neighbouring tiles coalesce into one read
    # A few tiles at a time: each group one planned fetch, decoded at once,
    # with no pipeline to start (threads, about a millisecond), memory bounded.
    fmt = reader.format
    at_once = max(1, GROUP_BYTES // max(1, fmt.pixels_per_frame * fmt.dtype.itemsize))
    for start in range(0, len(order), at_once):
        group = order[start : start + at_once]
        for frame, tile in zip(group, reader.read_frames(group)):
            top, left = where[frame]
            ty0, tx0 = max(top - y, clip_y0), max(left - x, clip_x0)
            ty1 = min(top - y + tile.shape[0], clip_y1)
            tx1 = min(left - x + tile.shape[1], clip_x1)
            if ty1 > ty0 and tx1 > tx0:
                out[ty0:ty1, tx0:tx1] = tile[ty0 + y - top : ty1 + y - top, tx0 + x - left : tx1 + x - left]
                pasted.append((ty0, ty1, tx0, tx1))
    return pasted


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
    geometry = reader.tile_geometry
    x, y = (int(v) for v in location)
    w, h = check_size(size, geometry.path)
    check_overlap(geometry.width, geometry.height, x, y, w, h, geometry.path)
    geometry.check_plane(focal_plane, optical_path)
    out = new_region(reader, w, h)
    pasted = paste_tiles(reader, geometry, out, x, y, focal_plane, optical_path)
    fill_uncovered(reader, out, pasted, geometry.organization == TILED_FULL, background)
    return out


def check_overlap(width: int, height: int, x: int, y: int, w: int, h: int, path: str) -> None:
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        raise RegionError(
            f"region {w}x{h} at ({x}, {y}) lies outside the image of {width}x{height}", path=path,
        )


def iter_tiles(
    reader: "Reader", focal_plane: int | None = None, optical_path: int | None = None
) -> Iterator[tuple[TilePosition, np.ndarray]]:
    """Every tile of the reader (of one focal plane / optical path if given), in file order,
    with its position. Tiles come as stored: edge tiles include their padding."""
    geometry = reader.tile_geometry
    rows, columns, focal, optical = geometry.positions()
    keep = np.ones(len(rows), dtype=bool)
    if focal_plane is not None:
        keep &= focal == focal_plane
    if optical_path is not None:
        keep &= optical == optical_path
    frames = np.flatnonzero(keep).tolist()
    for frame, tile in zip(frames, reader.iter_frames(frames)):
        yield TilePosition(int(rows[frame]), int(columns[frame]), int(focal[frame]), int(optical[frame])), tile


