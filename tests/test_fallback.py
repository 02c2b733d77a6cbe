"""Decoder fallback: when the chosen backend fails on a frame, the other
installed backends for the syntax are tried in order (logged once); with a
decoder named by the user there is none; when all fail the error lists each.
And the pylibjpeg-libjpeg JPEG-LS backend gives the same pixels as CharLS."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
jpeg_ls = pytest.importorskip("jpeg_ls")


import dicomframes
from dicomframes._dicom.syntaxes import lookup
from dicomframes.frames import codecs
from dicomframes.frames.codecs.base import Backend
from dicomframes.frames.decode import decode_span
from dicomframes.frames.frame_source import IndexedFrames
from tests.helpers.encapsulated import write_encapsulated

JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
TEST_FILES = os.path.join(os.path.dirname(pydicom.data.__file__), "test_files")
CORPUS_JLS = [
    "MR_small_jpeg_ls_lossless.dcm", "JPEGLSNearLossless_08.dcm", "JPEGLSNearLossless_16.dcm",
    "SC_rgb_jls_lossy_sample.dcm", "SC_rgb_jls_lossy_line.dcm",
]


def _installed_jpegls() -> list[Backend]:
    return [b for b in codecs.backends_for(lookup(JPEG_LS_LOSSLESS)) if b.available()]


def _grey(n: int, rows: int = 24, cols: int = 40, dtype=np.uint8, maxval: int = 255) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:rows, 0:cols]
    return [np.clip((x * 5 + y * 3 + 7 * k) % (maxval + 1) + rng.integers(0, 3, (rows, cols)), 0, maxval).astype(dtype)
            for k in range(n)]


def _no_eoi(frame: np.ndarray) -> bytes:
    """A JPEG-LS codestream complete but for its End Of Image marker: CharLS
    refuses it ("the source buffer is too small"), libjpeg decodes it."""
    cs = bytes(jpeg_ls.encode_array(frame))
    assert cs.endswith(b"\xff\xd9")
    return cs[:-2]


@pytest.fixture
def no_eoi_file(tmp_path):
    frames = _grey(3)
    return write_encapsulated(tmp_path / "no_eoi.dcm", frames, [_no_eoi(f) for f in frames], JPEG_LS_LOSSLESS, bits_stored=8,
                              photometric="MONOCHROME2"), frames


def _raising(message: str):
    def decode(src, ctx, params, out=None):  # `out`: backends that decode into place are given it
        raise RuntimeError(message)
    return decode


@pytest.fixture
def flaky():
    """A backend for JPEG-LS that always fails, registered first (the default)."""
    backend = Backend("flaky", frozenset({"jpegls"}), ("flaky-package",), ("numpy",), _raising("flaky says no"))
    codecs.register(backend, first=True)
    try:
        yield backend
    finally:
        codecs.unregister(backend)


# -- the libjpeg JPEG-LS backend ---------------------------------------------------

def test_libjpeg_backend_registered_after_pyjpegls():
    names = [(b.name, b.packages) for b in codecs.backends_for(lookup(JPEG_LS_LOSSLESS))]
    charls = names.index(("pylibjpeg", ("pyjpegls",)))
    libjpeg = names.index(("libjpeg", ("pylibjpeg", "pylibjpeg-libjpeg")))
    assert charls < libjpeg


@pytest.mark.parametrize("name", CORPUS_JLS)
@pytest.mark.parametrize("decoder", ["pylibjpeg", "libjpeg"])
def test_corpus_jpegls_matches_pydicom(name, decoder):
    path = os.path.join(TEST_FILES, name)
    expected = pydicom.dcmread(path).pixel_array
    with dicomframes.open(path, decoder=decoder) as reader:
        assert reader.backend.name == decoder
        got = reader.frame(0)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("kind", ["grey8", "grey12", "grey16", "rgb-ilv0", "rgb-ilv1", "rgb-ilv2"])
def test_lossless_identical_with_every_backend(tmp_path, kind):
    if kind.startswith("rgb"):
        ilv = int(kind[-1])
        frames = [np.stack([g, g[::-1], g[:, ::-1]], axis=-1) for g in _grey(2)]
        # pyjpegls takes planes for interleave mode 0, pixels otherwise
        streams = [bytes(jpeg_ls.encode_array(np.ascontiguousarray(f.transpose(2, 0, 1)) if ilv == 0 else f,
                                              interleave_mode=ilv)) for f in frames]
        bits, pi = 8, "RGB"
    else:
        bits = {"grey8": 8, "grey12": 12, "grey16": 16}[kind]
        frames = _grey(2, dtype=np.uint8 if bits == 8 else np.uint16, maxval=(1 << bits) - 1)
        streams = [bytes(jpeg_ls.encode_array(f)) for f in frames]
        pi = "MONOCHROME2"
    path = write_encapsulated(tmp_path / f"{kind}.dcm", frames, streams, JPEG_LS_LOSSLESS, bits_stored=bits, photometric=pi)
    expected = pydicom.dcmread(path).pixel_array
    results = {}
    for backend in _installed_jpegls():
        with dicomframes.open(path, decoder=backend.name) as reader:
            results[backend.name] = np.stack([reader.frame(i) for i in range(len(reader))])
    assert {"pylibjpeg", "libjpeg"} <= set(results)
    for name, got in results.items():
        np.testing.assert_array_equal(got, np.stack(frames), err_msg=name)
        np.testing.assert_array_equal(got, expected, err_msg=name)


# -- falling back on a codestream CharLS refuses -------------------------------------

def test_no_eoi_codestream_refused_by_charls_decoded_by_libjpeg(no_eoi_file):
    path, frames = no_eoi_file
    with dicomframes.open(path, decoder="pylibjpeg") as reader, pytest.raises(dicomframes.DecodeError) as info:
        reader.frame(0)
    assert "pylibjpeg could not decode" in str(info.value)  # named: no fallback
    with dicomframes.open(path, decoder="libjpeg") as reader:
        np.testing.assert_array_equal(reader.frame(1), frames[1])


def test_fallback_decodes_and_logs_once(no_eoi_file, caplog):
    path, frames = no_eoi_file
    caplog.set_level(logging.WARNING, logger="dicomframes")
    with dicomframes.open(path) as reader:
        got = [reader.frame(i) for i in range(len(reader))]
        got += list(reader.iter_frames(workers=1))
    for i, arr in enumerate(got):
        np.testing.assert_array_equal(arr, frames[i % len(frames)])
    warnings = [r for r in caplog.records if r.name == "dicomframes" and r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    text = warnings[0].getMessage()
    assert "frame 0" in text and "pylibjpeg (pyjpegls)" in text and "decoded with libjpeg" in text


def test_fallback_from_a_failing_default(no_eoi_file, flaky, caplog):
    path, frames = no_eoi_file
    caplog.set_level(logging.WARNING, logger="dicomframes")
    with dicomframes.open(path) as reader:
        assert reader.backend is flaky
        np.testing.assert_array_equal(reader.frame(2), frames[2])
    text = " ".join(r.getMessage() for r in caplog.records if r.name == "dicomframes")
    assert "frame 2" in text and "flaky (flaky-package)" in text and "flaky says no" in text


@pytest.fixture
def flaky_last():
    """A backend for JPEG-LS that always fails, registered last (only chosen by name)."""
    backend = Backend("flaky", frozenset({"jpegls"}), ("flaky-package",), ("numpy",), _raising("flaky says no"))
    codecs.register(backend)
    try:
        yield backend
    finally:
        codecs.unregister(backend)


def test_no_fallback_from_a_named_decoder(no_eoi_file, flaky_last):
    path, _ = no_eoi_file
    with dicomframes.open(path, decoder="flaky") as reader, pytest.raises(dicomframes.DecodeError) as info:
        reader.frame(0)
    assert "flaky could not decode the frame" in str(info.value)
    assert "libjpeg" not in str(info.value)
    with dicomframes.open(path) as reader, pytest.raises(dicomframes.DecodeError):
        list(reader.iter_frames(decoder="flaky", workers=1))


def test_decode_span_told_not_to_fall_back(no_eoi_file, flaky):
    path, frames = no_eoi_file
    with dicomframes.open(path) as reader:
        source = IndexedFrames(reader.index, reader.data_source)
        span = source.locate(1)
        data = source.read(span)
        with pytest.raises(dicomframes.DecodeError, match="flaky could not decode"):
            decode_span(reader.format, flaky, span, data, True, fallback=False)
        np.testing.assert_array_equal(decode_span(reader.format, flaky, span, data, True, fallback=True), frames[1])
        # not told: falls back from the default backend only
        np.testing.assert_array_equal(decode_span(reader.format, flaky, span, data, True), frames[1])
        other = codecs.select(reader.format.ts, "libjpeg")
        assert codecs.fallbacks(reader.format.ts, other)[0] is flaky


@pytest.fixture
def all_failing(monkeypatch):
    """Every installed JPEG-LS backend fails, each with its own message."""
    backends = _installed_jpegls()
    for k, backend in enumerate(backends):
        monkeypatch.setattr(backend, "decode", _raising(f"failure number {k}"))
    return backends


def test_all_fail_error_lists_every_backend(no_eoi_file, all_failing):
    path, _ = no_eoi_file
    with dicomframes.open(path) as reader, pytest.raises(dicomframes.DecodeError) as info:
        reader.frame(1)
    message = str(info.value)
    assert info.value.frame == 1 and "no installed decoder could decode the frame" in message
    for k, backend in enumerate(all_failing):
        assert f"{backend.name} ({', '.join(backend.packages)}): RuntimeError: failure number {k}" in message


# -- worker processes ---------------------------------------------------------------

@pytest.fixture
def many_frames_no_eoi(tmp_path):
    frames = _grey(40, rows=16, cols=16)
    return write_encapsulated(tmp_path / "many.dcm", frames, [_no_eoi(f) for f in frames], JPEG_LS_LOSSLESS, bits_stored=8,
                              photometric="MONOCHROME2"), frames


def test_workers_fall_back_the_same(many_frames_no_eoi, flaky):
    path, frames = many_frames_no_eoi
    assert not flaky.releases_gil and not flaky.cheap  # the reader uses worker processes
    with dicomframes.open(path) as reader:
        got = list(reader.iter_frames(workers=2))
    np.testing.assert_array_equal(np.stack(got), np.stack(frames))


def test_workers_no_fallback_from_named_decoder(many_frames_no_eoi):
    path, _ = many_frames_no_eoi
    with dicomframes.open(path, decoder="pylibjpeg") as reader, pytest.raises(dicomframes.DecodeError) as info:
        list(reader.iter_frames(workers=2))
    assert "pylibjpeg could not decode" in str(info.value)


def test_workers_all_fail_error_lists_every_backend(many_frames_no_eoi, flaky, monkeypatch):
    path, _ = many_frames_no_eoi
    others = [b for b in _installed_jpegls() if b is not flaky]
    for k, backend in enumerate(others):  # before the pool is forked: the workers see it too
        monkeypatch.setattr(backend, "decode", _raising(f"worker failure {k}"))
    with dicomframes.open(path) as reader, pytest.raises(dicomframes.DecodeError) as info:
        list(reader.iter_frames(workers=2))
    message = str(info.value)
    assert "no installed decoder could decode the frame" in message
    assert "flaky (flaky-package): RuntimeError: flaky says no" in message
    for k, backend in enumerate(others):
        assert f"{backend.name} ({', '.join(backend.packages)}): RuntimeError: worker failure {k}" in message
