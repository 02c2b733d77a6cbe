"""The iteration pipeline: same frames whatever the workers and backend, in
order, errors at the frame where they happen, and nothing left running."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import dicomframes
from dicomframes import DecodeError, DicomFramesError, TruncatedFileError
from dicomframes.samples import write_sample


@pytest.fixture(scope="module")
def jpegls_file(tmp_path_factory):
    return write_sample(str(tmp_path_factory.mktemp("p") / "jls.dcm"), frames=80, rows=64, columns=48, syntax="jpegls")


@pytest.fixture(scope="module")
def reference(jpegls_file):
    with dicomframes.open(jpegls_file, workers=1, decoder="pylibjpeg") as reader:
        return [reader.frame(i) for i in range(len(reader))]


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("dicomframes")}


@pytest.mark.parametrize("decoder", ["pylibjpeg", "imagecodecs"])
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_same_frames_in_order(jpegls_file, reference, decoder, workers):
    pytest.importorskip("imagecodecs") if decoder == "imagecodecs" else None
    with dicomframes.open(jpegls_file, decoder=decoder, workers=workers) as reader:
        got = list(reader)
        assert len(got) == len(reference)
        for a, b in zip(got, reference):
            np.testing.assert_array_equal(a, b)
        order = [7, 3, 3, 79, 0, -1]
        for a, i in zip(reader.iter_frames(order), order):
            np.testing.assert_array_equal(a, reference[i])
    assert not _threads()


def test_small_inflight_budget_still_yields_everything(jpegls_file, reference):
    with dicomframes.open(jpegls_file, max_inflight=1) as reader:
        for a, b in zip(reader, reference):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("workers", [1, 2])
def test_break_leaves_no_threads(jpegls_file, workers):
    with dicomframes.open(jpegls_file, workers=workers, decoder="pylibjpeg") as reader:
        for k, _ in enumerate(reader):
            if k == 5:
                break
        assert not _threads()
        it = reader.iter_frames()
        next(it)
        it.close()
        assert not _threads()
    assert reader._processes is None or reader._processes._executor is None


@pytest.mark.parametrize("decoder", ["pylibjpeg", "imagecodecs"])
def test_decode_error_raised_at_its_frame(tmp_path, jpegls_file, reference, decoder):
    pytest.importorskip(decoder if decoder == "imagecodecs" else "jpeg_ls")
    data = bytearray(open(jpegls_file, "rb").read())
    with dicomframes.open(jpegls_file) as reader:
        span = reader.index.span(10)
    # Wreck frame 10's codestream (keep its first marker so it is still a frame).
    data[span.offset + 8 + 4 : span.offset + span.length] = b"\x00" * (span.length - 12)
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(bytes(data))
    for workers in (1, 2):  # inline, then threads (imagecodecs) or processes / inline (pylibjpeg)
        with dicomframes.open(str(broken), workers=workers, decoder=decoder) as reader:
            seen = []
            with pytest.raises(DicomFramesError) as info:
                for frame in reader:
                    seen.append(frame)
            assert len(seen) == 10
            assert info.value.frame == 10 and str(broken) in str(info.value)
            for a, b in zip(seen, reference):
                np.testing.assert_array_equal(a, b)
        assert not _threads()


def test_truncation_raised_at_its_frame(tmp_path, jpegls_file, reference):
    with dicomframes.open(jpegls_file) as reader:
        cut = reader.index.span(40).offset + 20
    short = tmp_path / "short.dcm"
    short.write_bytes(open(jpegls_file, "rb").read()[:cut])
    with dicomframes.open(str(short)) as reader:
        seen = []
        with pytest.raises(TruncatedFileError) as info:
            for frame in reader:
                seen.append(frame)
        assert len(seen) == 40 and info.value.frame == 40
        assert info.value.offset is not None


def test_unknown_option_is_an_error(jpegls_file):
    with pytest.raises(TypeError, match="wrokers"):
        dicomframes.open(jpegls_file, wrokers=2)


def test_closed_reader_refuses(jpegls_file):
    reader = dicomframes.open(jpegls_file)
    reader.close()
    with pytest.raises(ValueError):
        reader.frame(0)


def _crash_on_frame_3(fmt, decoder, items, as_rgb):
    """Runs in a forked worker: dies on frame 3, as a segfaulting codec would."""
    import os

    from dicomframes.frames.decode import decode_chunk_in_worker

    if any(span.frame == 3 for span, _ in items):
        os._exit(1)
    return decode_chunk_in_worker(fmt, decoder, items, as_rgb=as_rgb)


def test_a_crashing_worker_is_a_decode_error_and_the_pool_recovers(jpegls_file, reference, monkeypatch):
    from dicomframes.frames import decode as decode_module

    with dicomframes.open(jpegls_file, workers=2, decoder="pylibjpeg") as reader:
        monkeypatch.setattr("dicomframes.reader.decode_chunk_in_worker", _crash_on_frame_3)
        seen = []
        with pytest.raises(DecodeError) as info:
            for frame in reader:
                seen.append(frame)
        # Frames go to workers in chunks: the error names the first frame of
        # the chunk the dead worker held, and every frame before it was yielded.
        assert info.value.frame <= 3 and len(seen) == info.value.frame
        assert jpegls_file in str(info.value) and "worker" in str(info.value)
        monkeypatch.setattr("dicomframes.reader.decode_chunk_in_worker", decode_module.decode_chunk_in_worker)
        for a, b in zip(reader, reference):
            np.testing.assert_array_equal(a, b)
