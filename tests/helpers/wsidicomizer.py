"""wsidicomizer (wsidicom's converter) for tests: importing it, and a TIFF for it to convert."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest


def import_wsidicomizer():
    """wsidicomizer's `WsiDicomizer`. It needs libturbojpeg (Debian's
    `libturbojpeg0`, which `.ci/run` installs): without it the calling test
    skips, except under CI (``CI`` set), where a missing converter is a failure."""
    try:
        import turbojpeg
        from wsidicomizer import WsiDicomizer

        turbojpeg.TurboJPEG()  # fails without the shared library
    except Exception as exc:  # ImportError, or PyTurboJPEG's RuntimeError for a missing libturbojpeg
        if os.environ.get("CI"):
            raise RuntimeError(f"wsidicomizer is needed under CI: {exc}") from exc
        pytest.skip(f"wsidicomizer unavailable: {exc}")
    return WsiDicomizer


def write_ome_tiff(path: Path, width: int, height: int, tile: int) -> np.ndarray:
    """A three-level pyramid of `tile`-pixel JPEG tiles, written by tifffile; returns level 0's pixels."""
    import tifffile

    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 // width, y * 255 // height, (x ^ y) & 255], axis=-1).astype(np.uint8)
    options = dict(tile=(tile, tile), compression="jpeg", photometric="rgb")
    with tifffile.TiffWriter(path) as tif:
        tif.write(image, subifds=2, metadata={"axes": "YXS", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25}, **options)
        for k in (1, 2):
            tif.write(image[:: 2**k, :: 2**k], subfiletype=1, **options)
    return image
