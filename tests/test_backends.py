"""Decoder backends agree: imagecodecs (the [fast] extra) vs the required
pylibjpeg plugins, on every encapsulated file of the real-file corpus."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("imagecodecs")
import dicomframes
from dicomframes import DicomFramesError
from tests.test_corpus import CORPUS

# Measured on the corpus: libjpeg-turbo (imagecodecs) and libjpeg (pylibjpeg)
# use different IDCTs and chroma upsampling; lossy JPEG frames differ by at most
# 5 grey levels (color3d_jpeg_baseline.dcm, 4:2:0). docs/performance.md.
LOSSY_JPEG_MAX_DIFF = 5


def _encapsulated_corpus():
    out = []
    for path in CORPUS:
        try:
            with dicomframes.open(path) as reader:
                codec = reader.header.transfer_syntax.codec
        except DicomFramesError:
            continue
        if codec in ("jpeg", "jpegls", "j2k", "htj2k", "rle"):
            out.append(path)
    return out


FILES = _encapsulated_corpus()


@pytest.mark.parametrize("path", FILES, ids=[os.path.basename(p) for p in FILES])
def test_imagecodecs_matches_pylibjpeg(path):
    with dicomframes.open(path, decoder="pylibjpeg") as ref, dicomframes.open(path, decoder="imagecodecs") as fast:
        ts = ref.header.transfer_syntax
        for i in range(len(ref)):
            try:
                want = ref.frame(i)
            except DicomFramesError:
                # libjpeg refuses JPEG-lossy.dcm; libjpeg-turbo decodes it. Either
                # a clear error or a frame of the right shape is acceptable.
                try:
                    assert fast.frame(i).shape == fast.info.shape
                except DicomFramesError:
                    pass
                continue
            got = fast.frame(i)
            assert got.shape == want.shape and got.dtype == want.dtype
            if ts.codec == "jpeg" and ts.lossy:
                assert np.abs(got.astype(int) - want.astype(int)).max() <= LOSSY_JPEG_MAX_DIFF
            else:
                np.testing.assert_array_equal(got, want)


def test_default_backend_is_the_fastest_installed():
    path = next(p for p in FILES if os.path.basename(p) == "SC_rgb_jpeg_dcmtk.dcm")
    with dicomframes.open(path) as reader:
        reader.frame(0)
        assert reader.backend.name == "imagecodecs"
