"""Transfer syntaxes the real-file corpus lacks (HTJ2K, JPEG Lossless .57),
built here with imagecodecs' encoders and checked against pydicom; and the
error for a missing decoder."""

from __future__ import annotations

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
imagecodecs = pytest.importorskip("imagecodecs")

from pydicom.pixels import pixel_array

import dicomframes
from dicomframes.frames import codecs
from tests.helpers.encapsulated import write_encapsulated


def _frames(n: int, rows: int, cols: int, spp: int, dtype, maxval: int) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:rows, 0:cols]
    out = []
    for k in range(n):
        base = (x * 3 + y * 5 + k * 11) % (maxval + 1)
        noise = rng.integers(0, 4, size=(rows, cols))
        img = np.clip(base + noise, 0, maxval).astype(dtype)
        if spp == 3:
            img = np.stack([img, img[::-1], img[:, ::-1]], axis=-1)
        out.append(np.ascontiguousarray(img))
    return out


CASES = {
    # name: (uid, spp, dtype, bits stored, photometric, encode)
    "htj2k-lossless": ("1.2.840.10008.1.2.4.201", 1, np.uint16, 12, "MONOCHROME2",
                       lambda a: imagecodecs.htj2k_encode(a, reversible=True)),
    "htj2k-rpcl-rgb": ("1.2.840.10008.1.2.4.202", 3, np.uint8, 8, "RGB",
                       lambda a: imagecodecs.htj2k_encode(a, reversible=True)),
    "htj2k-lossy": ("1.2.840.10008.1.2.4.203", 1, np.uint8, 8, "MONOCHROME2",
                    lambda a: imagecodecs.htj2k_encode(a, level=30, reversible=False)),
    "jpeg-lossless-p3": ("1.2.840.10008.1.2.4.57", 1, np.uint8, 8, "MONOCHROME2",
                         lambda a: imagecodecs.jpeg8_encode(a, lossless=True, predictor=3)),
    "jpeg-lossless-p6-12bit": ("1.2.840.10008.1.2.4.57", 1, np.uint16, 12, "MONOCHROME2",
                               lambda a: imagecodecs.jpeg8_encode(a, lossless=True, predictor=6, bitspersample=12)),
}


@pytest.mark.parametrize("layout", ["bot", "eot", "walked-fragments"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_generated_codec_matches_pydicom(tmp_path, case, layout):
    uid, spp, dtype, bits, pi, encode = CASES[case]
    maxval = (1 << bits) - 1
    frames = _frames(5, 48, 40, spp, dtype, maxval)
    streams = [encode(f) for f in frames]
    path = write_encapsulated(
        str(tmp_path / f"{case}.dcm"), frames, streams, uid, bits_stored=bits, photometric=pi,
        extended=layout == "eot", fragments=3 if layout == "walked-fragments" else 1,
    )
    with dicomframes.open(path) as reader:
        assert reader.info.index_kind == {"bot": "BOT", "eot": "EOT", "walked-fragments": "walked"}[layout]
        assert reader.info.transfer_syntax_uid == uid
        got = list(reader)
        for i, frame in enumerate(got):
            ref = pixel_array(path, index=i)
            assert frame.dtype == ref.dtype
            np.testing.assert_array_equal(frame, ref)
            if "lossy" not in case:
                np.testing.assert_array_equal(frame, frames[i])
            assert reader.encoded_frame(i) == streams[i] + b"\x00" * (len(streams[i]) % 2)


def test_missing_decoder_names_the_package(tmp_path, monkeypatch):
    frames = _frames(2, 16, 16, 1, np.uint8, 255)
    streams = [imagecodecs.jpeg8_encode(f, lossless=True, predictor=1) for f in frames]
    path = write_encapsulated(str(tmp_path / "ll.dcm"), frames, streams, "1.2.840.10008.1.2.4.70", bits_stored=8, photometric="MONOCHROME2")
    for backend in codecs.backends_for(_ts("1.2.840.10008.1.2.4.70")):
        monkeypatch.setattr(backend, "_available", False)
    with dicomframes.open(path) as reader:
        assert len(reader) == 2  # opening needs no decoder
        with pytest.raises(dicomframes.MissingDecoderError) as info:
            reader.frame(0)
    assert "pylibjpeg-libjpeg" in str(info.value) and path in str(info.value)


def test_unknown_decoder_name(tmp_path):
    frames = _frames(1, 16, 16, 1, np.uint8, 255)
    streams = [imagecodecs.jpeg8_encode(frames[0], lossless=True, predictor=1)]
    path = write_encapsulated(str(tmp_path / "ll.dcm"), frames, streams, "1.2.840.10008.1.2.4.70", bits_stored=8, photometric="MONOCHROME2")
    with dicomframes.open(path, decoder="no-such-decoder") as reader:
        with pytest.raises(dicomframes.MissingDecoderError, match="no-such-decoder"):
            reader.frame(0)


def _ts(uid):
    from dicomframes._dicom.syntaxes import lookup

    return lookup(uid)
