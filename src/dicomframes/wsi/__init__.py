"""Whole-slide images: a series of tiled instances as a pyramid (`open_slide`, `Slide`)."""

from dicomframes.views.geometry import TiledFullGeometry, TiledSparseGeometry, TileGeometry, TilePosition
from dicomframes.views.regions import iter_tiles, read_region
from dicomframes.wsi.slide import AssociatedImage, Level, Slide, open_slide, resize_area

__all__ = [
    "open_slide", "Slide", "Level", "AssociatedImage", "resize_area",
    "TilePosition", "TileGeometry", "TiledFullGeometry", "TiledSparseGeometry", "read_region", "iter_tiles",
]
