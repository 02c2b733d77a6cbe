"""Worker processes that read their own frames and decode into shared memory.

The required decoders hold the GIL: dicomframes iterates their frames in forked
processes that read the bytes themselves and write decoded frames into slots of
one anonymous shared mapping. Same frames, same order, same errors as inline
decoding; nothing left behind (processes, file descriptors, threads, shared
memory) after a break, an exception, a close or a killed worker.
"""

from __future__ import annotations

import gc
import os
import platform
import signal
import subprocess
import sys
import threading

import numpy as np
import psutil
import pytest

import dicomframes
from dicomframes.errors import DecodeError, TruncatedFileError
from dicomframes.frames import shared_workers
from dicomframes.reader import PROCESS_POOL_MIN_FRAMES
from dicomframes.samples import write_sample

pytestmark = pytest.mark.skipif(not shared_workers.available(), reason="shared-memory workers need fork")

FRAMES = 96


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("shared")
    return {
        "jpegls": write_sample(str(root / "jls.dcm"), frames=FRAMES, rows=64, columns=48, samples_per_pixel=3,
                               syntax="jpegls"),
        "j2k": write_sample(str(root / "j2k.dcm"), frames=FRAMES // 2, rows=64, columns=64, syntax="j2k",
                            bits_allocated=16),
        # RLE: planar samples, cheap to decode (an executor's pool would not pay; these workers do)
        "rle": write_sample(str(root / "rle.dcm"), frames=FRAMES, rows=64, columns=48, samples_per_pixel=3,
                            syntax="rle"),
    }


def _reference(path):
    with dicomframes.open(path, workers=1, decoder="pylibjpeg") as reader:
        reader.shared_workers = False
        return [reader.frame(i) for i in range(len(reader))]


def _resources():
    gc.collect()  # what earlier tests dropped closes now, not during the test
    proc = psutil.Process()
    threads = sorted(t.name for t in threading.enumerate() if t.name.startswith("dicomframes-") and
                     not t.name.startswith("dicomframes-region"))
    shm = len(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else 0
    return proc.num_fds(), len(proc.children(recursive=True)), threads, shm


def _nothing_left(before) -> None:
    fds, children, threads, shm = _resources()
    # Other tests' servers may close descriptors meanwhile, never open ours.
    assert fds <= before[0] and children <= before[1] and (threads, shm) == before[2:]


@pytest.mark.parametrize("name", ["jpegls", "j2k", "rle"])
@pytest.mark.parametrize("workers", [2, 3])
def test_frames_equal_inline_decoding(files, name, workers):
    expected = _reference(files[name])
    n = len(expected)
    with dicomframes.open(files[name], workers=workers, decoder="pylibjpeg") as reader:
        assert list(reader) and reader._shared is not None  # the shared path was taken
        assert len(reader._shared.procs) == workers
        for order in (range(n), list(reversed(range(n))), [5, 5, 0, n - 1] * 10, range(0, n, 3)):
            got = list(reader.iter_frames(order))
            assert len(got) == len(list(order))
            for k, frame in zip(order, got):
                assert frame.dtype == expected[k].dtype and np.array_equal(frame, expected[k]), k
                assert frame.strides == expected[k].strides  # laid out alike (RLE: a view of planes, as pydicom's)
            if len(got) >= PROCESS_POOL_MIN_FRAMES:  # shorter runs decode inline
                # copies: no slot is held (RLE's planar frames are views of their own copy)
                assert all(f.flags.writeable and (f.flags.owndata or name == "rle" and f.base.flags.owndata)
                           for f in got)
                slots = np.frombuffer(reader._shared.memory, np.uint8)
                assert not any(np.shares_memory(f, slots) for f in got)


def test_the_slots_stay_within_the_memory_bound(files):
    with dicomframes.open(files["jpegls"], workers=2, decoder="pylibjpeg", max_inflight=1 << 20) as reader:
        list(reader)
        pool = reader._shared
        assert pool.slots * pool.slot_bytes <= (1 << 20) // 5 + 2 * pool.slot_bytes


def test_errors_come_at_their_frame(files, tmp_path):
    path = files["jpegls"]
    with dicomframes.open(path) as reader:
        cut = reader.index.span(40).offset + 20
    short = tmp_path / "short.dcm"
    short.write_bytes(open(path, "rb").read()[:cut])
    with dicomframes.open(str(short), workers=2, decoder="pylibjpeg") as reader:
        seen = []
        with pytest.raises(TruncatedFileError) as info:
            for frame in reader:
                seen.append(frame)
        assert reader._shared is not None
        assert len(seen) == 40 and info.value.frame == 40
    with dicomframes.open(path, workers=2, decoder="pylibjpeg") as reader:
        got = []
        with pytest.raises(IndexError):
            for frame in reader.iter_frames(iter([0, 1, 2, 10_000, 3])):
                got.append(frame)
        assert len(got) == 3


def test_frames_before_a_cut_in_a_task_are_whole_and_right(files, tmp_path):
    """A task whose batch runs past the end of a partial file is read frame by
    frame in the worker (into its scratch memory): each frame its own bytes."""
    path = files["jpegls"]
    with dicomframes.open(path, workers=1) as reader:
        expected = [reader.frame(i) for i in range(len(reader))]
        cut = reader.index.span(45).offset + 20
    short = tmp_path / "short.dcm"
    short.write_bytes(open(path, "rb").read()[:cut])
    with dicomframes.open(str(short), workers=2, decoder="pylibjpeg") as reader:
        seen = []
        with pytest.raises(TruncatedFileError):
            for frame in reader:
                seen.append(frame)
        assert reader._shared is not None
    assert len(seen) == 45
    for i, frame in enumerate(seen):
        np.testing.assert_array_equal(frame, expected[i], err_msg=f"frame {i}")


def _crash_on_frame_3(fmt, backend, span, data, as_rgb, fallback=None):
    """Runs in a forked worker: dies on frame 3, as a segfaulting codec would."""
    from dicomframes.frames.decode import decode_span

    if span.frame == 3:
        os._exit(1)
    return decode_span(fmt, backend, span, data, as_rgb, fallback=fallback)


def test_a_crashing_worker_is_a_decode_error_and_the_next_iteration_recovers(files, monkeypatch):
    path = files["jpegls"]
    expected = _reference(path)
    before = _resources()
    with dicomframes.open(path, workers=2, decoder="pylibjpeg") as reader:
        monkeypatch.setattr(shared_workers, "decode_span", _crash_on_frame_3)  # inherited by the forked workers
        seen = []
        with pytest.raises(DecodeError) as info:
            for frame in reader:
                seen.append(frame)
        assert info.value.frame is not None and info.value.frame <= 3 and len(seen) == info.value.frame
        assert path in str(info.value) and "worker" in str(info.value)
        monkeypatch.undo()
        got = list(reader)  # a new pool
        assert all(np.array_equal(a, b) for a, b in zip(got, expected)) and len(got) == len(expected)
    _nothing_left(before)


@pytest.mark.parametrize("how", ["break", "exception", "close-mid-iteration", "killed-worker", "dropped"])
def test_nothing_is_left_behind(files, how):
    path = files["jpegls"]
    before = _resources()
    reader = dicomframes.open(path, workers=2, decoder="pylibjpeg")
    if how == "break":
        for k, _ in enumerate(reader):
            if k == 10:
                break
        assert len(list(reader)) == FRAMES  # the pool, reused, is idle and whole
    elif how == "exception":
        with pytest.raises(ZeroDivisionError):
            for k, _ in enumerate(reader):
                if k == 10:
                    1 / 0
    elif how == "close-mid-iteration":
        it = iter(reader)
        next(it)
        reader.close()
        it.close()
    elif how == "killed-worker":
        it = iter(reader)
        next(it)
        os.kill(reader._shared.pids[0], signal.SIGKILL)
        with pytest.raises(DecodeError, match="died"):
            for _ in it:
                pass
    elif how == "dropped":
        it = iter(reader)
        next(it)
        del it
        del reader
        gc.collect()
        reader = None
    if reader is not None:
        reader.close()
    _nothing_left(before)


def test_remote_files_are_fetched_here_in_few_requests(nginx, remote_dir):
    """Workers reading a few frames each would multiply a remote file's requests:
    there the calling process fetches (an executor's processes decode)."""
    url = f"{nginx.url}/walked_fragments.dcm"
    expected = _reference(remote_dir / "walked_fragments.dcm")
    with dicomframes.open(url, workers=2, decoder="pylibjpeg") as reader:
        got = list(reader)
        assert reader._shared is None and reader.stats["requests"] <= 10
    assert len(got) == len(expected) and all(np.array_equal(a, b) for a, b in zip(got, expected))


def _iterate_in_a_daemon(path, queue):
    with dicomframes.open(path, workers=2, decoder="pylibjpeg") as reader:
        frames = list(reader)
        queue.put((len(frames), reader._shared is None, reader._processes is None))


def test_a_daemonic_process_decodes_on_its_own_thread(files):
    """A data loader's workers are daemons, which may not start processes."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_iterate_in_a_daemon, args=(files["jpegls"], queue), daemon=True)
    child.start()
    assert queue.get(timeout=60) == (FRAMES, True, True)
    child.join(30)
    assert child.exitcode == 0


def test_workers_1_starts_no_process(files):
    with dicomframes.open(files["jpegls"], workers=1, decoder="pylibjpeg") as reader:
        assert len(list(reader)) == FRAMES
        assert reader._shared is None and reader._processes is None



def test_workers_killed_while_idle_end_the_next_iteration_with_an_error(files):
    with dicomframes.open(files["jpegls"], workers=2, decoder="pylibjpeg") as reader:
        assert len(list(reader)) == FRAMES
        pool = reader._shared
        for pid in pool.pids:
            os.kill(pid, signal.SIGKILL)
        for proc in pool.procs:
            proc.join(10)
        with pytest.raises(DecodeError, match="died"):
            list(reader)
        assert len(list(reader)) == FRAMES  # new workers


def test_two_iterations_of_one_reader_at_once(files):
    """A second iteration while the workers serve the first (another thread's, or the
    same thread's, interleaved) decodes on its own thread: both give every frame."""
    expected = _reference(files["rle"])
    with dicomframes.open(files["rle"], workers=2) as reader:
        first, second = reader.iter_frames(), reader.iter_frames()
        got = list(zip(first, second))
        assert reader._shared is not None and len(got) == len(expected)
        for (a, b), want in zip(got, expected):
            assert np.array_equal(a, want) and np.array_equal(b, want)
        assert reader._shared.claim()  # given back when both ended
        reader._shared._lock.release()
        list(reader.iter_frames())  # and used again


def test_rle_decodes_in_the_workers_by_default(files):
    """pylibjpeg-rle (the default RLE decoder) holds the GIL: two workers are processes."""
    with dicomframes.open(files["rle"], workers=2) as reader:
        assert reader.backend.name == "pylibjpeg" and reader.backend.cheap
        out = reader.read_into(range(FRAMES), np.empty((FRAMES, *reader.format.shape), np.uint8))
        assert reader._shared is not None and len(reader._shared.procs) == 2
        np.testing.assert_array_equal(out, np.stack(_reference(files["rle"])))


_INTERRUPTED = """
import sys, dicomframes
with dicomframes.open(sys.argv[1], workers=2) as reader:
    for rounds in range(10_000):
        for k, frame in enumerate(reader):
            if rounds == 0 and k == 40:
                print(*reader._shared.pids, flush=True)
"""


@pytest.mark.parametrize("group", [True, False], ids=["ctrl-c to the process group", "sigint to the process"])
def test_an_interrupt_ends_the_iteration_and_its_workers(files, tmp_path, group):
    """Ctrl-C in a terminal reaches the workers too: they ignore it, the calling process
    raises KeyboardInterrupt (never a DecodeError about a dead worker), and no worker outlives it."""
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-c", _INTERRUPTED, files["rle"]], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2, proc.stderr.read()
        time.sleep(0.3)  # well inside the iterations
        if group:
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0 and "KeyboardInterrupt" in err.splitlines()[-1], err
    # One traceback, the calling process's: no worker died of the signal
    assert "DecodeError" not in err and err.count("Traceback") == 1 and "decode-worker" not in err, err
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"
                                              for p in pids):
        time.sleep(0.05)
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids)


_FAULTS = """
import resource, sys
import numpy as np
from dicomframes.frames.shared_workers import _keep_frame_memory
if sys.argv[1] == "kept":
    _keep_frame_memory(800_000)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):  # a worker's frame: its bytes copied out, the decoder's output, their temporaries
    blocks = [np.empty(800_000, np.uint8) for _ in range(3)]
    for block in blocks:
        block.fill(1)
    del blocks, block
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="tunes glibc's malloc")
def test_workers_reuse_frame_memory_instead_of_faulting_it_in_again():
    def faults(mode):
        out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True)
        return int(out.stdout)

    default, kept = faults("default"), faults("kept")
    assert default > 50 * 100  # glibc's default: the freed blocks trimmed, faulted in again (~195 pages each)
    assert kept < default / 10
