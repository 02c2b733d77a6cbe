"""Local files: frames read straight into buffers of their own (``preadv``).

One copy per byte, native frames handed out without another, and a frame the
caller keeps holds only its own bytes, not the batch it was read with.
"""

from __future__ import annotations

import os

import numpy as np
import pydicom
import pytest

import dicomframes
from dicomframes import TruncatedFileError
from dicomframes.frames.fetch import FetchPolicy, fetch
from dicomframes.frames.span import FrameSpan
from dicomframes.io.local import LocalFileSource
from dicomframes.samples import write_sample

pytestmark = pytest.mark.skipif(not hasattr(os, "preadv"), reason="no preadv on this platform")


@pytest.fixture()
def blob(tmp_path):
    path = tmp_path / "blob.bin"
    path.write_bytes(bytes(range(256)) * 40)  # 10240 bytes
    return str(path)


def test_read_into_fills_buffers_in_order(blob):
    data = open(blob, "rb").read()
    src = LocalFileSource(blob)
    sizes = [0, 1, 7, 4096, 0, 300]
    buffers = [bytearray(n) for n in sizes]
    assert src.read_into(5, buffers) == sum(sizes)
    assert b"".join(buffers) == data[5 : 5 + sum(sizes)]
    assert src.stats.requests == 1


def test_read_into_more_buffers_than_one_call_takes(blob):
    data = open(blob, "rb").read()
    src = LocalFileSource(blob)
    buffers = [bytearray(3) for _ in range(3000)]  # over IOV_MAX (1024)
    assert src.read_into(10, buffers) == 9000
    assert b"".join(buffers) == data[10:9010]


def test_read_into_stops_at_the_end_of_the_file(blob):
    src = LocalFileSource(blob)
    buffers = [bytearray(100), bytearray(100)]
    assert src.read_into(10240 - 150, buffers) == 150
    assert bytes(buffers[0]) == open(blob, "rb").read()[-150:-50]


def test_fetch_reads_each_frame_into_its_own_buffer(blob):
    data = open(blob, "rb").read()
    src = LocalFileSource(blob)
    spans = [FrameSpan(k, 1000 * k, 1000) for k in range(8)]
    got = fetch(src, spans, FetchPolicy())
    assert src.stats.requests == 1  # adjacent frames: one preadv
    for span in spans:
        assert bytes(got[span]) == data[span.offset : span.offset + span.length]
        assert memoryview(got[span]).obj.nbytes == span.length  # not a view of the batch


def test_fetch_past_the_end_is_truncation_at_that_frame(blob):
    src = LocalFileSource(blob)
    spans = [FrameSpan(0, 9000, 1000), FrameSpan(1, 10000, 1000)]
    with pytest.raises(TruncatedFileError) as info:
        fetch(src, spans, FetchPolicy())
    assert info.value.frame == 1


def _root(arr: np.ndarray):
    """The object that owns an array's memory."""
    obj = arr
    while True:
        if isinstance(obj, np.ndarray) and obj.base is not None:
            obj = obj.base
        elif isinstance(obj, memoryview):
            obj = obj.obj
        else:
            return obj


def test_native_frames_are_writable_and_hold_only_their_own_bytes(tmp_path):
    path = write_sample(str(tmp_path / "native.dcm"), frames=40, rows=32, columns=24, samples_per_pixel=3, syntax="native")
    ds = pydicom.dcmread(path)
    with dicomframes.open(path, workers=1) as reader:
        frames = list(reader)
    for i, frame in enumerate(frames):
        np.testing.assert_array_equal(frame, ds.pixel_array[i])
        assert frame.flags.writeable
        assert _root(frame).nbytes == frame.nbytes


class _Recording(LocalFileSource):
    """A local file that notes the size of every read (to see how iteration batches)."""

    def __init__(self, path):
        super().__init__(path)
        self.sizes: list[int] = []

    def _read(self, offset, size):
        self.sizes.append(size)
        return super()._read(offset, size)

    def read_into(self, offset, buffers):
        self.sizes.append(sum(len(b) for b in buffers))
        return super().read_into(offset, buffers)


def test_the_first_batch_is_small_so_the_first_frame_comes_soon(tmp_path):
    # Encapsulated: the pipeline's batches (native frames of a local file are read
    # one by one on the calling thread: test_native_reads).
    path = write_sample(str(tmp_path / "big.dcm"), frames=60, rows=256, columns=256, samples_per_pixel=3, syntax="rle")
    frame_bytes = 256 * 256 * 3
    source = _Recording(path)
    with dicomframes.open(source, workers=1) as reader:
        source.sizes.clear()  # the header's reads
        assert sum(1 for _ in reader) == 60
    policy = FetchPolicy()
    assert source.sizes[0] <= policy.first_batch_bytes
    assert max(source.sizes[1:]) > policy.first_batch_bytes  # then full batches
    assert sum(source.sizes) <= 60 * frame_bytes  # (the header's read held the first bytes)


def test_fetch_into_scratch_reuses_its_memory_after_a_reset(blob):
    from dicomframes.frames.fetch import Scratch

    data = open(blob, "rb").read()
    src = LocalFileSource(blob)
    scratch = Scratch()
    spans = [FrameSpan(k, 1000 * k, 1000) for k in range(4)]
    first = fetch(src, spans, FetchPolicy(), scratch=scratch)
    again = fetch(src, [FrameSpan(9, 9000, 500)], FetchPolicy(), scratch=scratch)  # no reset: elsewhere
    for span in spans:
        assert bytes(first[span]) == data[span.offset : span.offset + span.length]
    assert bytes(next(iter(again.values()))) == data[9000:9500]
    assert memoryview(first[spans[0]]).obj is not memoryview(next(iter(again.values()))).obj  # it grew
    owner = memoryview(next(iter(again.values()))).obj
    scratch.reset()
    later = fetch(src, spans[:2], FetchPolicy(), scratch=scratch)
    assert memoryview(later[spans[0]]).obj is owner  # the same memory, read again
    assert bytes(later[spans[1]]) == data[1000:2000]
    bigger = fetch(src, [FrameSpan(0, 0, 10_000)], FetchPolicy(), scratch=scratch)  # grows: a new buffer
    assert bytes(next(iter(bigger.values()))) == data[:10_000]
    assert bytes(later[spans[1]]) == data[1000:2000]  # views of the old buffer stay valid
