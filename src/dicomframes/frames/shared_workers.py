"""Worker processes that read their frames themselves and decode into shared memory.

The required decoders (the pylibjpeg plugins, pyjpegls) hold the GIL, so
frames decode in parallel only in processes. A `ProcessPoolExecutor` pickles
every codestream out to a worker and every decoded frame back (a 196 kB tile
through a pipe each way), and that work lands on the calling process, which
then eats the core a worker needed. Here instead:

- each worker has its own copy of the data source (a file handle, a
  connection) and reads the spans it is given, several at once in planned
  reads, as the calling process would;
- it decodes each frame into a slot of one anonymous shared mapping made
  before the workers were forked (no named segment to leak, nothing for a
  resource tracker), and answers with a few numbers per frame;
- the calling process copies each frame out of its slot (one memcpy, a few
  percent of a decode) and frees the slot at once, so frames a caller keeps
  never hold a slot, and the memory stays what the slots are.

Frames come back in order, with the pipeline's error semantics: a frame's
error is raised at that frame, after the frames before it; a worker that
dies is a `DecodeError` naming the first frame it held, and the pool is
closed (the next iteration starts another). Linux only (fork): elsewhere the
executor pool is used.
"""

from __future__ import annotations

import ctypes
import mmap
import multiprocessing
import os
import pickle
import signal
import threading
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Iterable, Iterator

import numpy as np

from dicomframes.errors import DecodeError, DicomFramesError
from dicomframes.frames import codecs
from dicomframes.frames.decode import decode_span
from dicomframes.frames.fetch import Scratch, fetch, fetch_present
from dicomframes.frames.pixels import PixelFormat, store
from dicomframes.frames.span import FrameSpan
from dicomframes.io.policy import FetchPolicy
from dicomframes.io.source import Source

#: tasks a worker holds at once: one decoding, one waiting
_QUEUED = 2

#: glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


#: held while a reader checks, replaces or starts its pool (briefly; renewed after fork)
pools_lock = threading.Lock()


def _after_fork() -> None:
    global pools_lock
    pools_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def available() -> bool:
    """Whether this platform forks (anonymous shared memory is inherited only so)."""
    return hasattr(os, "fork") and "fork" in multiprocessing.get_all_start_methods() and os.name == "posix"


@dataclass
class Job:
    """What a worker needs: where the bytes are, what they mean, how to decode them."""

    source: Source
    fmt: PixelFormat
    decoder: str | None
    as_rgb: bool
    policy: FetchPolicy


def _serve(job_bytes: bytes, memory: mmap.mmap, slot_bytes: int, conn: Connection) -> None:
    """A worker: (task, [(slot, span), ...]) in, (task, [(slot, shape, dtype, error, planar), ...]) out."""
    # Ctrl-C reaches the whole process group: the calling process handles it (and
    # closes its workers); a worker dying of it would turn it into a DecodeError.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _keep_frame_memory(slot_bytes)
    job: Job = pickle.loads(job_bytes)
    scratch = Scratch()  # each task's bytes are decoded (copied) before the next task's are read
    backend = codecs.select(job.fmt.ts, job.decoder, job.fmt.name) if job.fmt.ts.encapsulated else None
    dtype = job.fmt.dtype
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        task, items = message
        out: list = []
        scratch.reset()  # the last task's bytes are decoded and gone
        blobs, failed = _read(job, [span for _, span in items], scratch)
        for slot, span in items:
            if span not in blobs:
                out.append((slot, None, None, failed, False))
                continue
            try:
                frame = decode_span(job.fmt, backend, span, blobs[span], job.as_rgb, fallback=job.decoder is None)
                planar = _planar(frame)
                # Planar frames (RLE's) go into the slot as decoded, samples apart: one
                # memcpy here, not a strided copy costing a quarter of the decode.
                stored = frame.transpose(2, 0, 1) if planar else frame
                np.ndarray(stored.shape, dtype, buffer=memory, offset=slot * slot_bytes)[...] = stored
                out.append((slot, stored.shape, dtype.str, None, planar))
            except DicomFramesError as exc:
                out.append((slot, None, None, exc, False))
            except Exception as exc:  # a decoder's own error type: a DecodeError
                out.append((slot, None, None, DecodeError(f"{type(exc).__name__}: {exc}", path=job.fmt.name,
                                                          frame=span.frame, offset=span.offset), False))
        try:
            conn.send((task, out))
        except (BrokenPipeError, OSError):
            return


def _keep_frame_memory(frame_bytes: int) -> None:
    """Make glibc's malloc in this worker reuse frame-sized blocks, not map them afresh.

    A decoder returns each frame in a new buffer, freed once copied into the
    slot. By default glibc maps blocks over 128 KiB with their own ``mmap``
    and unmaps them on free (or trims freed heap at the top), so every frame's
    buffer is faulted in page by page: for a 512x512 RGB RLE frame that was a
    fifth to a third of the decode on the test VM (one worker 0.69-0.79
    thousand frames/s, 0.86-1.0 with this). Blocks up to 4 frames stay in the heap and freed
    memory up to 8 frames is kept: a few MB per worker, in processes that are
    ours (Dask tunes its workers' allocator the same way, by environment).
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # no mallopt here (musl's takes these and does nothing)
        return
    threshold = min(32 << 20, max(1 << 20, 4 * frame_bytes))  # glibc takes at most 32 MiB
    mallopt(_M_MMAP_THRESHOLD, threshold)
    mallopt(_M_TRIM_THRESHOLD, 2 * threshold)


def _planar(frame: np.ndarray) -> bool:
    """A (rows, columns, samples) view of samples stored one plane after another."""
    return frame.ndim == 3 and not frame.flags.c_contiguous and frame.transpose(2, 0, 1).flags.c_contiguous


def _read(job: Job, spans: list[FrameSpan], scratch: Scratch | None = None) -> tuple[dict, DicomFramesError | None]:
    """The spans' bytes in planned reads (into `scratch`: valid until its next
    reset), and the error that stopped them (a partial file is read frame by
    frame, as the pipeline does: `fetch_present`)."""
    try:
        return fetch_present(lambda batch: fetch(job.source, batch, job.policy, scratch=scratch), spans)
    except DicomFramesError as exc:  # the batch failed otherwise: every frame of it with this error
        return {}, exc


class SharedDecoder:
    """`workers` forked processes decoding `job`'s frames into `slots` shared
    slots of `slot_bytes`; one iteration at a time (`iterate`)."""

    def __init__(self, job: Job, workers: int, slot_bytes: int, slots: int) -> None:
        self.job = job
        self.slot_bytes = slot_bytes
        self.slots = max(slots, workers)
        self.memory = mmap.mmap(-1, slot_bytes * self.slots)  # MAP_SHARED | MAP_ANONYMOUS
        self._pid = os.getpid()
        self._lock = threading.Lock()  # one iteration at a time
        self.broken = False
        ctx = multiprocessing.get_context("fork")
        data = pickle.dumps(job)
        self.conns: list[Connection] = []
        self.procs: list = []
        try:
            for _ in range(workers):
                ours, theirs = ctx.Pipe()
                proc = ctx.Process(target=_serve, args=(data, self.memory, slot_bytes, theirs), daemon=True,
                                   name="dicomframes-decode-worker")
                proc.start()
                theirs.close()
                self.conns.append(ours)
                self.procs.append(proc)
        except BaseException:
            self.close()
            raise

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def claim(self) -> bool:
        """Take the pool for one iteration (`iterate` gives it back); False where
        another one (another thread's) has it."""
        return self._lock.acquire(blocking=False)

    def iterate(self, spans: Iterable[FrameSpan], chunk: int, name: str,
                out: np.ndarray | None = None) -> Iterator[np.ndarray]:
        """Decoded frames of `spans`, in order (the k-th copied into ``out[k]``
        where `out` is given), by a pool the caller has claimed (`claim`) and
        that is released when the iteration ends; `spans` may raise (a frame
        that cannot be located): that error comes after the frames before it."""
        try:
            yield from self._iterate(iter(spans), max(1, chunk), name, out)
        finally:
            self._lock.release()

    def _iterate(self, todo: Iterator[FrameSpan], chunk: int, name: str,
                 out: np.ndarray | None) -> Iterator[np.ndarray]:
        free = deque(range(self.slots))
        busy = {conn: 0 for conn in self.conns}  # tasks each worker holds
        owner: dict[int, tuple[Connection, list[int]]] = {}  # task -> (worker, its sequence numbers)
        spans: dict[int, FrameSpan] = {}  # sequence -> span, until yielded
        done: dict[int, tuple] = {}  # sequence -> (slot, shape, dtype, error, planar)
        ended: BaseException | None = None  # locating a frame failed: after the frames before it
        seq_in = seq_out = task_id = 0
        exhausted = False

        def dispatch() -> None:
            nonlocal seq_in, task_id, exhausted, ended
            while not exhausted:
                alive = [c for c, p in zip(self.conns, self.procs) if p.exitcode is None]
                idle = [c for c in alive if busy[c] < _QUEUED]
                if not idle or len(free) < min(chunk, self.slots // max(1, len(self.conns))):
                    return
                conn = min(idle, key=lambda c: busy[c])
                items: list[tuple[int, FrameSpan]] = []
                seqs: list[int] = []
                while len(items) < chunk and free:
                    try:
                        span = next(todo)
                    except StopIteration:
                        exhausted = True
                        break
                    except DicomFramesError as exc:
                        exhausted, ended = True, exc
                        break
                    slot = free.popleft()
                    spans[seq_in] = span
                    items.append((slot, span))
                    seqs.append(seq_in)
                    seq_in += 1
                if not items:
                    return
                task_id += 1
                try:
                    conn.send((task_id, items))
                except OSError:  # the worker died since it was chosen: its frames fail, in order
                    self.broken = True
                    for (slot, span), s in zip(items, seqs):
                        done[s] = (slot, None, None, DecodeError(
                            "a decoding worker process died", path=name, frame=span.frame, offset=span.offset), False)
                    return
                owner[task_id] = (conn, seqs)
                busy[conn] += 1

        def receive() -> None:
            if self.broken and not self.procs:
                raise DecodeError("the reader was closed during the iteration", path=name)
            ready = wait(list(self.conns) + [p.sentinel for p in self.procs])
            for item in ready:
                if isinstance(item, Connection):
                    try:
                        task, results = item.recv()
                    except (EOFError, OSError):
                        continue  # its process's sentinel says what happened
                    conn, seqs = owner.pop(task)
                    busy[conn] -= 1
                    for s, result in zip(seqs, results):
                        done[s] = result
            for proc, conn in zip(self.procs, self.conns):
                if proc.exitcode is not None:
                    lost = [s for _, (c, seqs) in owner.items() if c is conn for s in seqs]
                    self.broken = True
                    first = min(lost) if lost else seq_out
                    span = spans.get(first)
                    raise DecodeError(
                        f"a decoding worker process died (exit code {proc.exitcode})",
                        path=name, frame=span.frame if span else None, offset=span.offset if span else None,
                    )

        try:
            while True:
                dispatch()
                if seq_out == seq_in:
                    if exhausted:
                        if ended is not None:
                            raise ended
                        return
                    receive()  # nothing could be handed out: no worker is left (raises), never a busy loop
                    continue
                while seq_out not in done:
                    receive()
                    dispatch()
                slot, shape, dtype, error, planar = done.pop(seq_out)
                spans.pop(seq_out)
                k = seq_out
                seq_out += 1
                if error is not None:
                    free.append(slot)
                    raise error
                start = slot * self.slot_bytes
                count = int(np.prod(shape))
                decoded = np.frombuffer(self.memory, np.dtype(dtype), count, start).reshape(shape)
                if out is None:  # planar frames come out as decoding them here gives them: a view
                    frame = decoded.copy().transpose(1, 2, 0) if planar else decoded.copy()
                else:
                    frame = store(decoded.transpose(1, 2, 0) if planar else decoded, out[k])
                free.append(slot)
                yield frame
        except (KeyboardInterrupt, SystemExit):
            # Perhaps raised inside a message half read: the pipes are not to be
            # trusted any more, so no draining (the next iteration starts new workers).
            self.broken = True
            raise
        finally:
            # Work already handed out finishes (a few frames): collect it, so that
            # the next iteration starts with every worker idle.
            while owner and not self.broken:
                try:
                    receive()
                except DecodeError:
                    break

    def close(self) -> None:
        if self._pid != os.getpid():
            return  # a forked child's copy: the parent's workers are not ours
        self.broken = True  # an iteration suspended now ends at its next step
        for conn in self.conns:
            try:
                conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        for proc in self.procs:
            proc.join(2)
            if proc.exitcode is None:
                proc.terminate()
                proc.join(2)
            proc.close()
        for conn in self.conns:
            conn.close()
        self.conns, self.procs = [], []
        try:
            self.memory.close()
        except BufferError:  # pragma: no cover - a view still exported
            pass
