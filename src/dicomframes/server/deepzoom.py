"""DeepZoom (the pyramid OpenSeadragon reads) made from a slide's stored pyramid.

DeepZoom level `max_level` is the slide at full size, each level below it
half the one above (sizes rounded up), cut into `tile_size` tiles without
overlap. A tile is made from the stored level of exactly its scale where
there is one, else from the nearest finer level, resampled (area average).
A tile that is exactly one stored JPEG tile (same scale, same grid, not cut
by the image's edge) is sent as stored, without decoding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dicomframes.errors import NotFoundError
from dicomframes.views.geometry import TILED_FULL
from dicomframes.wsi.slide import Level, Slide, resize_area

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
#: colour spaces of JPEG tiles that a browser shows as the reader does
BROWSER_COLOURS = ("YBR_FULL_422", "YBR_FULL", "MONOCHROME2")


@dataclass(frozen=True)
class DeepZoom:
    width: int
    height: int
    tile_size: int
    format: str = "jpeg"

    @property
    def max_level(self) -> int:
        return max(0, math.ceil(math.log2(max(self.width, self.height, 1))))

    def level_size(self, level: int) -> tuple[int, int]:
        scale = 2 ** (self.max_level - level)
        return -(-self.width // scale), -(-self.height // scale)

    def tiles(self, level: int) -> tuple[int, int]:
        w, h = self.level_size(level)
        return -(-w // self.tile_size), -(-h // self.tile_size)

    def descriptor(self) -> str:
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" Format="{self.format}" '
            f'Overlap="0" TileSize="{self.tile_size}">'
            f'<Size Width="{self.width}" Height="{self.height}"/></Image>\n'
        )

    def tile_box(self, level: int, col: int, row: int) -> tuple[int, int, int, int]:
        """(x, y, width, height) of a tile in its DeepZoom level's pixels; NotFoundError outside."""
        if not 0 <= level <= self.max_level:
            raise NotFoundError(f"DeepZoom levels are 0 to {self.max_level}, not {level}")
        cols, rows = self.tiles(level)
        if not (0 <= col < cols and 0 <= row < rows):
            raise NotFoundError(f"level {level} has {cols} x {rows} tiles, not ({col}, {row})")
        w, h = self.level_size(level)
        x, y = col * self.tile_size, row * self.tile_size
        return x, y, min(self.tile_size, w - x), min(self.tile_size, h - y)


def for_slide(slide: Slide, fmt: str = "jpeg") -> DeepZoom:
    """The DeepZoom pyramid of a slide: its level 0's size, its level 0's tile size."""
    base = slide.levels[0]
    return DeepZoom(base.width, base.height, max(base.tile_width, base.tile_height), fmt)


def stored_tile(slide: Slide, dz: DeepZoom, level: int, col: int, row: int) -> bytes | None:
    """The stored JPEG tile that is exactly this DeepZoom tile, or None."""
    if dz.format != "jpeg":
        return None
    x, y, w, h = dz.tile_box(level, col, row)
    if (w, h) != (dz.tile_size, dz.tile_size):
        return None  # cut by the image's edge: the stored tile is padded
    size = dz.level_size(level)
    for lv in slide.levels:
        if lv.size == size and lv.tile_size == (dz.tile_size, dz.tile_size) and len(lv.readers) == 1:
            reader = lv.readers[0]
            if reader.header.transfer_syntax.uid != JPEG_BASELINE or lv.organization != TILED_FULL:
                return None
            if reader.format.photometric_interpretation not in BROWSER_COLOURS:
                return None  # an RGB codestream a browser may take for YCbCr
            if lv.focal_planes != 1 or lv.optical_paths != 1:
                return None
            frame = reader.tile_geometry.frame_at(row, col)
            return None if frame is None else reader.encoded_frame(frame)
    return None


def _source_level(slide: Slide, scale: float) -> Level:
    """The coarsest stored level at least as fine as `scale` (level 0's pixels per pixel)."""
    best = slide.levels[0]
    for lv in slide.levels:
        if lv.downsample <= scale * 1.001 and lv.downsample > best.downsample:
            best = lv
    return best


def made_tile(slide: Slide, dz: DeepZoom, level: int, col: int, row: int) -> np.ndarray:
    """The pixels of a DeepZoom tile, read from the stored pyramid (resampled where needed)."""
    x, y, w, h = dz.tile_box(level, col, row)
    scale = 2 ** (dz.max_level - level)
    lv = _source_level(slide, scale)
    factor = scale / lv.downsample  # this level's pixels per DeepZoom pixel
    x0, y0 = math.floor(x * factor), math.floor(y * factor)
    x1 = min(lv.width, max(x0 + 1, math.ceil((x + w) * factor)))
    y1 = min(lv.height, max(y0 + 1, math.ceil((y + h) * factor)))
    region = lv.read_region((x0, y0), (x1 - x0, y1 - y0))
    if region.shape[1] == w and region.shape[0] == h:
        return region
    if region.shape[1] < w or region.shape[0] < h:  # a level a hair too small: repeat its edge
        pad = [(0, max(0, h - region.shape[0])), (0, max(0, w - region.shape[1]))] + [(0, 0)] * (region.ndim - 2)
        region = np.pad(region, pad, mode="edge")
    return resize_area(region, w, h)
