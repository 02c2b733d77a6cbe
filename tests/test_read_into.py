"""`Reader.read_into`: frames written into an array the caller owns, decoded
straight into it where the decoder can, identical to `frame(i)` everywhere.

Dask chunks and `reader[a:b]` are built this way, so their tests cover it too;
here: every syntax and backend, every kind of pool, the in-place decode
itself, odd `out` arrays, and failures half-way."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import dicomframes
from dicomframes import DecodeError
from dicomframes.frames import decode as decode_module
from dicomframes.samples import sample_frame, write_sample

imagecodecs = pytest.importorskip("imagecodecs")
pytest.importorskip("pydicom")
from tests.helpers.encapsulated import write_encapsulated  # after the skip: it needs pydicom

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
HTJ2K_LOSSLESS = "1.2.840.10008.1.2.4.201"
FRAMES = 40  # at least 32: the process path (shared workers) is taken for the required decoders


def _jpeg(path, spp: int, frames: int = FRAMES, bad: int | None = None):
    images = [sample_frame(i, 48, 64, spp) for i in range(frames)]
    streams = [imagecodecs.jpeg8_encode(f, level=90) for f in images]
    if bad is not None:  # a codestream of another size: refused before any decoder runs
        streams[bad] = imagecodecs.jpeg8_encode(sample_frame(bad, 16, 16, spp), level=90)
    return str(write_encapsulated(path, images, streams, JPEG_BASELINE, bits_stored=8,
                                  photometric="YBR_FULL_422" if spp == 3 else "MONOCHROME2"))


def _htj2k(path, spp: int):
    images = [sample_frame(i, 40, 56, spp) for i in range(FRAMES)]
    streams = [imagecodecs.htj2k_encode(f, reversible=True) for f in images]
    return str(write_encapsulated(path, images, streams, HTJ2K_LOSSLESS, bits_stored=8,
                                  photometric="RGB" if spp == 3 else "MONOCHROME2"))


FILES = {
    "jpeg-rgb": lambda p: _jpeg(p, 3),
    "jpeg-grey": lambda p: _jpeg(p, 1),
    "htj2k-rgb": lambda p: _htj2k(p, 3),
    "jpegls-16": lambda p: write_sample(p, frames=FRAMES, rows=40, columns=48, bits_allocated=16, syntax="jpegls"),
    "jpegls-rgb": lambda p: write_sample(p, frames=FRAMES, rows=40, columns=48, samples_per_pixel=3, syntax="jpegls"),
    "j2k-16": lambda p: write_sample(p, frames=FRAMES, rows=40, columns=48, bits_allocated=16, syntax="j2k"),
    "rle-rgb": lambda p: write_sample(p, frames=FRAMES, rows=40, columns=48, samples_per_pixel=3, syntax="rle"),
    "native-16": lambda p: write_sample(p, frames=FRAMES, rows=40, columns=48, bits_allocated=16, syntax="native"),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("read_into")
    return {name: str(make(root / f"{name}.dcm")) for name, make in FILES.items()}


def _expected(reader, indices) -> np.ndarray:
    return np.stack([reader.frame(i) for i in indices])


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("decoder", [None, "pylibjpeg"])
@pytest.mark.parametrize("name", list(FILES))
def test_equals_frames(files, name, decoder, workers):
    indices = [5, 0, 3, 3, FRAMES - 1, *range(FRAMES)]
    with dicomframes.open(files[name], decoder=decoder) as reader:
        out = np.empty((len(indices), *reader.format.shape), dtype=reader.format.dtype)
        got = reader.read_into(indices, out, workers=workers)
        assert got is out
        np.testing.assert_array_equal(out, _expected(reader, indices))


@pytest.mark.parametrize("name", ["jpeg-rgb", "jpeg-grey", "htj2k-rgb", "jpegls-16", "jpegls-rgb", "j2k-16"])
def test_imagecodecs_decodes_in_place(files, name, monkeypatch):
    """The codec's own output is the caller's array: no frame is decoded elsewhere and copied."""
    with dicomframes.open(files[name], decoder="imagecodecs") as reader:
        backend = reader.backend
        assert backend.decodes_into
        placed: list[bool] = []

        def spying(src, ctx, params, out=None):
            decoded = backend.decode(src, ctx, params, out=out)
            placed.append(out is not None and np.shares_memory(np.asarray(decoded.data), out))
            return decoded

        spy = dataclasses.replace(backend, decode=spying)
        monkeypatch.setattr(reader, "_backend", spy)
        out = np.empty((FRAMES, *reader.format.shape), dtype=reader.format.dtype)
        reader.read_into(range(FRAMES), out, workers=1)
        assert placed == [True] * FRAMES
        monkeypatch.undo()
        np.testing.assert_array_equal(out, _expected(reader, range(FRAMES)))


def test_signed_frames_are_copied_not_decoded_in_place(tmp_path, monkeypatch):
    """pydicom's sign handling works on unsigned codec output: signed frames take the copy."""
    images = [(sample_frame(i, 32, 32, 1).astype(np.int16) - 100) for i in range(4)]
    streams = [imagecodecs.jpeg2k_encode(f, level=0) for f in images]
    path = write_encapsulated(tmp_path / "signed.dcm", images, streams, "1.2.840.10008.1.2.4.90",
                              bits_stored=16, photometric="MONOCHROME2")
    import pydicom

    ds = pydicom.dcmread(path)
    ds.PixelRepresentation = 1
    ds.save_as(path)
    with dicomframes.open(path, decoder="imagecodecs") as reader:
        assert reader.format.dtype == np.int16
        out = np.empty((4, 32, 32), np.int16)
        reader.read_into(range(4), out)
        np.testing.assert_array_equal(out, np.stack(images))
        np.testing.assert_array_equal(out, _expected(reader, range(4)))


def test_out_of_any_layout(files):
    """`out` need not be C-contiguous per frame: frames are then copied in."""
    with dicomframes.open(files["jpeg-rgb"]) as reader:
        rows, cols, spp = reader.format.shape
        out = np.empty((FRAMES, cols, rows, spp), np.uint8).transpose(0, 2, 1, 3)
        reader.read_into(range(FRAMES), out)
        np.testing.assert_array_equal(out, _expected(reader, range(FRAMES)))
        strided = np.zeros((2 * FRAMES, rows, cols, spp), np.uint8)[::2]
        reader.read_into(iter(range(FRAMES)), strided)  # any iterable of indices
        np.testing.assert_array_equal(strided, out)


def test_out_is_checked(files):
    with dicomframes.open(files["jpeg-rgb"]) as reader:
        shape = reader.format.shape
        for bad, words in [
            (np.empty((3, *shape), np.uint8), "shape (4, 48, 64, 3)"),
            (np.empty((4, *shape), np.uint16), "dtype uint8"),
            (np.empty((4, 48, 64), np.uint8), "not (4, 48, 64) uint8"),
            ([[0]] * 4, "not list"),
        ]:
            with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
                reader.read_into(range(4), bad)
        frozen = np.empty((4, *shape), np.uint8)
        frozen.flags.writeable = False
        with pytest.raises(ValueError, match="writeable"):
            reader.read_into(range(4), frozen)
        with pytest.raises(dicomframes.FrameNumberError):
            reader.read_into([0, FRAMES], np.empty((2, *shape), np.uint8))
    with pytest.raises(dicomframes.DicomFramesError, match="closed"):
        reader.read_into(range(4), np.empty((4, *shape), np.uint8))


@pytest.mark.parametrize("decoder,workers", [(None, 1), (None, 2), ("pylibjpeg", 1), ("pylibjpeg", 2)])
def test_failure_half_way_names_the_frame(tmp_path, decoder, workers):
    """The frames before a corrupt one are in `out`; the error names that frame."""
    path = _jpeg(tmp_path / "bad.dcm", 3, bad=7)
    with dicomframes.open(path, decoder=decoder) as reader:
        out = np.zeros((FRAMES, *reader.format.shape), np.uint8)
        with pytest.raises(DecodeError) as info:
            reader.read_into(range(FRAMES), out, workers=workers)
        assert info.value.frame == 7 and path in str(info.value)
        np.testing.assert_array_equal(out[:7], _expected(reader, range(7)))


def test_fallback_decoder_fills_out(files, monkeypatch, caplog):
    """When the default backend fails on a frame, the one that decodes it writes into `out`."""
    with dicomframes.open(files["jpeg-rgb"]) as reader:
        backend = reader.backend

        def failing(src, ctx, params, out=None):
            if out is not None:
                out[...] = 7  # a partial write that must not survive
            raise RuntimeError("refused")

        monkeypatch.setattr(reader, "_backend", dataclasses.replace(backend, decode=failing))
        monkeypatch.setattr(decode_module.codecs, "fallbacks", lambda ts, b: [
            dataclasses.replace(backend, decodes_into=False)])
        monkeypatch.setattr(decode_module, "_may_fall_back", lambda fmt, b, fallback: True)
        out = np.empty((4, *reader.format.shape), np.uint8)
        reader.read_into(range(4), out, workers=1)
        monkeypatch.undo()
        np.testing.assert_array_equal(out, _expected(reader, range(4)))


def test_stacking_uses_it(files):
    """``reader[a:b]`` and ``np.asarray(reader)`` are built by `read_into`, equal to the frames."""
    with dicomframes.open(files["htj2k-rgb"]) as reader:
        np.testing.assert_array_equal(reader[3:9], _expected(reader, range(3, 9)))
        np.testing.assert_array_equal(np.asarray(reader), _expected(reader, range(FRAMES)))
        assert reader[5:5].shape == (0, *reader.format.shape)


def test_batches_example_runs(tmp_path):
    """examples/batches.py fills one buffer batch after batch (it checks the first batch itself)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "examples" / "batches.py"
    done = subprocess.run([sys.executable, str(script), "--frames", "100", "--batch", "24"],
                          capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "100 frames in" in done.stdout and "batches of 24" in done.stdout
    assert (tmp_path / "examples" / "output" / "batches.dcm").is_file()


@pytest.mark.parametrize("name", ["walked_fragments.dcm", "bot.dcm"])
def test_remote_frames_into_a_buffer(nginx, remote_dir, name):
    """Over HTTP (nginx): the same frames as the local file, fetched in planned requests
    (a 300-frame batch is not 300 requests)."""
    with dicomframes.open(str(remote_dir / name)) as local:
        want = _expected(local, range(100, 400))
    with dicomframes.open(f"{nginx.url}/{name}") as reader:
        opened = reader.stats["requests"]
        out = np.empty((300, *reader.format.shape), reader.format.dtype)
        reader.read_into(range(100, 400), out, workers=2)
        assert reader.stats["requests"] - opened <= 4
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("name", ["jpegls-rgb", "j2k-16"])
def test_executor_workers_fill_out(files, name):
    """Where frames cannot decode in shared memory (no fork), an executor's processes
    decode them and each one is copied into its place."""
    with dicomframes.open(files[name], decoder="pylibjpeg") as reader:
        reader.shared_workers = False
        out = np.empty((FRAMES, *reader.format.shape), reader.format.dtype)
        reader.read_into(range(FRAMES), out, workers=2)
        assert reader._processes is not None and reader._shared is None  # the executor's pool was used
        np.testing.assert_array_equal(out, _expected(reader, range(FRAMES)))
