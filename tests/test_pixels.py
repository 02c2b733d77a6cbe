"""The Pixels layer's fast paths are exactly pydicom's arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
from pydicom.pixels.processing import convert_color_space

from dicomframes.frames.pixels import ybr_full_to_rgb


def test_ybr_to_rgb_lookup_equals_pydicom_for_every_8_bit_triple():
    y, cb, cr = np.meshgrid(np.arange(256), np.arange(256), np.arange(256), indexing="ij")
    triples = np.stack([y, cb, cr], axis=-1).astype(np.uint8).reshape(4096, 4096, 3)
    for rows in np.array_split(np.arange(4096), 8):
        block = triples[rows]
        np.testing.assert_array_equal(ybr_full_to_rgb(block), convert_color_space(block.copy(), "YBR_FULL", "RGB"))
