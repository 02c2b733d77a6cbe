"""The iteration pipeline: same frames whatever the workers and backend, in
order, errors at the frame where they happen, and nothing left running."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import replace

import numpy as np
import pytest

import dicomframes
from dicomframes import DecodeError, DicomFramesError, StorageError, TruncatedFileError
from dicomframes.io.local import BytesSource
from dicomframes.io.policy import FetchPolicy
from dicomframes.samples import write_sample


@pytest.fixture(scope="module")
def jpegls_file(tmp_path_factory):
    return write_sample(str(tmp_path_factory.mktemp("p") / "jls.dcm"), frames=80, rows=64, columns=48, syntax="jpegls")


@pytest.fixture(scope="module")
def reference(jpegls_file):
    with dicomframes.open(jpegls_file, workers=1, decoder="pylibjpeg") as reader:
        return [reader.frame(i) for i in range(len(reader))]


def _threads() -> set[str]:
    """A reader's threads; the process's region decode threads (one pool, started
    once: `frames.workers.decode_threads`) belong to no reader."""
    names = {t.name for t in threading.enumerate() if t.name.startswith("dicomframes")}
    return {n for n in names if not n.startswith("dicomframes-region")}


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
        reader.shared_workers = False  # the executor's workers (tests/test_shared_workers.py: the others)
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


# -- batches in flight -----------------------------------------------------------------------

KiB = 1 << 10
#: an object store's plan, scaled down to a small file: merged requests, several batches at once
STORE = FetchPolicy(max_gap=8 * KiB, max_request=16 * KiB, batch_bytes=64 * KiB, max_frames=4096,
                    first_batch_bytes=None, concurrency=16)
#: 200 kB in flight: 40 kB batches, a 120 kB window, ~17 kB batches, 6 at once
BUDGET = 200_000


class SlowSource(BytesSource):
    """Bytes in memory answering like storage: each read waits (a round trip,
    jittered so that later reads may finish first), and the source counts the
    reads in flight at once and the bytes asked for and not yet yielded."""

    def __init__(self, data: bytes, policy: FetchPolicy, *, remote: bool, delay: float = 0.01, seed: int = 0):
        super().__init__(data, name="slow.dcm")
        self.remote, self.policy, self.delay = remote, policy, delay
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.fail: tuple[int, int] | None = None  # (offset, length): reads touching it fail
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.now = self.most = self.asked = self.yielded = self.worst = 0

    def took(self, nbytes: int) -> None:
        with self.lock:
            self.yielded += nbytes

    def fetch_policy(self) -> FetchPolicy:
        return self.policy

    def read_ranges(self, ranges):
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
            self.asked += sum(n for _, n in ranges)
            self.worst = max(self.worst, self.asked - self.yielded)
            wait = self.delay * (0.5 + self.rng.random())
        try:
            time.sleep(wait)
            if self.fail is not None:
                lo, n = self.fail
                for o, size in ranges:  # as storage does: the whole request fails
                    if o < lo + n and lo < o + size:
                        raise StorageError("the store failed", path=self.name, byte_range=(o, size))
            return super().read_ranges(ranges)
        finally:
            with self.lock:
                self.now -= 1


@pytest.fixture(scope="module")
def slow_file(tmp_path_factory):
    path = write_sample(str(tmp_path_factory.mktemp("slow") / "slow.dcm"), frames=300, rows=64, columns=64, syntax="jpegls")
    with dicomframes.open(path, workers=1) as reader:
        frames = [reader.frame(i) for i in range(len(reader))]
        lengths = [reader.index.span(i).length for i in range(len(reader))]
    return open(path, "rb").read(), frames, lengths


def _iterate(src, lengths, workers, seen=None):
    """Frames of `src`'s file in order, counting each as yielded on the source."""
    out = [] if seen is None else seen
    with dicomframes.open(src, workers=workers, max_inflight=BUDGET) as reader:
        src.reset()  # count the iteration, not the open
        for k, frame in enumerate(reader):
            src.took(lengths[k])
            out.append(frame)
    return out


@pytest.mark.parametrize("workers", [1, 2])
def test_remote_like_source_has_several_batches_in_flight_within_the_budget(slow_file, workers):
    data, expected, lengths = slow_file
    src = SlowSource(data, STORE, remote=True, seed=workers)
    got = _iterate(src, lengths, workers)
    assert len(got) == len(expected)
    for a, b in zip(got, expected):  # in order, though later reads often finished first
        np.testing.assert_array_equal(a, b)
    assert src.most >= 3, src.most
    assert src.worst <= BUDGET, src.worst
    assert src.now == 0 and not _threads()


def test_local_like_source_reads_one_batch_at_a_time(slow_file):
    data, expected, lengths = slow_file
    src = SlowSource(data, replace(STORE, concurrency=1), remote=False)
    got = _iterate(src, lengths, workers=2)
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
    assert src.most == 1
    assert src.worst <= BUDGET, src.worst


@pytest.mark.parametrize("workers", [1, 2])
def test_storage_error_raised_at_its_frame_with_later_batches_in_flight(slow_file, workers):
    data, expected, lengths = slow_file
    src = SlowSource(data, STORE, remote=True)
    with dicomframes.open(data) as reader:
        span = reader.index.span(150)
    src.fail = (span.offset, span.length)
    seen: list = []
    with pytest.raises(StorageError) as info:
        _iterate(src, lengths, workers, seen)
    # Named by the first frame of the request that failed: every frame before it was yielded.
    assert 150 - 20 < info.value.frame <= 150 and len(seen) == info.value.frame
    for a, b in zip(seen, expected):
        np.testing.assert_array_equal(a, b)
    assert src.most >= 3  # the failing batch was not the only one in flight
    assert src.now == 0 and not _threads()


def test_break_with_batches_in_flight_leaves_no_reads_or_threads(slow_file):
    data, _, _ = slow_file
    src = SlowSource(data, STORE, remote=True, delay=0.05)
    with dicomframes.open(src, max_inflight=BUDGET) as reader:
        for k, _ in enumerate(reader):
            if k == 30:
                break
        assert src.now == 0 and not _threads()
        assert src.most >= 3
