"""Memory stays flat while iterating a file much larger than anything the reader holds.

A ~1.1 GiB native file (1100 frames of 1024x1024, 8-bit) is written with
`write_sample` and read with ``for frame in reader``. tracemalloc sees every
bytes object and NumPy buffer, so its peak is what the reader holds at once.

The bound: the iteration pipeline documents an in-flight budget
(``Reader.iter_frames(max_inflight=...)``, default 64 MiB): fetched batches plus
frames being decoded. The peak may exceed it by a few frames (the one the caller
holds, the one being finished), never by a share of the file.
"""

from __future__ import annotations

import os
import tracemalloc

import numpy as np
import pytest

import dicomframes
from dicomframes.samples import sample_frame, write_sample

MiB = 1 << 20
FRAMES, ROWS, COLUMNS = 1100, 1024, 1024
FRAME_BYTES = ROWS * COLUMNS  # 1 MiB
#: the reader's documented default in-flight budget for iteration
DEFAULT_MAX_INFLIGHT = getattr(dicomframes.reader, "DEFAULT_MAX_INFLIGHT", 64 * MiB)


@pytest.fixture(scope="module")
def big_native_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("memory") / "big.dcm"
    write_sample(path, frames=FRAMES, rows=ROWS, columns=COLUMNS, syntax="native")
    assert os.path.getsize(path) > 1 << 30
    yield str(path)
    os.unlink(path)


def _checksum(frame: np.ndarray) -> int:
    return int(np.add.reduce(frame, axis=None, dtype=np.uint64))


def _traced_peak(fn):
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_iterating_a_1_gib_file_keeps_memory_flat(big_native_file):
    def read_all():
        sums = []
        with dicomframes.open(big_native_file) as reader:
            assert len(reader) == FRAMES and reader.info.index_kind == "native"
            for frame in reader:  # touch every frame
                sums.append(_checksum(frame))
        return sums

    def read_a_tenth():
        with dicomframes.open(big_native_file) as reader:
            return [_checksum(f) for f in reader.iter_frames(range(FRAMES // 10))]

    checksums, peak = _traced_peak(read_all)
    tenth, peak_tenth = _traced_peak(read_a_tenth)
    print(f"\npeak traced memory iterating {FRAMES} frames of 1 MiB: {peak / MiB:.1f} MiB "
          f"({FRAMES // 10} frames: {peak_tenth / MiB:.1f} MiB)")
    assert len(checksums) == FRAMES and checksums[: len(tenth)] == tenth
    for i in range(0, FRAMES, 157):  # the right frames, in order
        assert checksums[i] == _checksum(sample_frame(i, ROWS, COLUMNS)), i
    # The in-flight budget plus a few frames, not the 1.1 GiB file ...
    assert peak < DEFAULT_MAX_INFLIGHT + 8 * FRAME_BYTES, f"peak {peak / MiB:.1f} MiB"
    # ... and no growth with the number of frames read: ten times the frames
    # may differ only by how the fetch thread's batches happened to overlap
    # (one 8 MiB batch), not by anything that grows with the file.
    batch = dicomframes.FetchPolicy().batch_bytes
    assert peak < peak_tenth + batch + 4 * FRAME_BYTES, (peak, peak_tenth)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 8])
def test_max_inflight_bounds_memory(big_native_file, workers):
    budget = 16 * MiB

    def read():
        with dicomframes.open(big_native_file) as reader:
            return sum(_checksum(f) for f in reader.iter_frames(workers=workers, max_inflight=budget))

    total, peak = _traced_peak(read)
    print(f"\npeak traced memory, max_inflight 16 MiB, {workers} workers: {peak / MiB:.1f} MiB")
    assert total > 0
    assert peak < budget + 4 * FRAME_BYTES, f"peak {peak / MiB:.1f} MiB"
