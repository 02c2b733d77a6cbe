"""Worker processes for decoders that hold the GIL, and shared decode threads.

The pylibjpeg plugins and pyjpegls do not release the GIL, so threads cannot
decode in parallel with them; processes can. The pool starts lazily, on the
first iteration that needs it, and belongs to one reader (closed with it).

On Linux workers are forked: 'spawn' and 'forkserver' re-import the user's
main module in every worker, which runs an unguarded script (or fails for
stdin and notebooks). All workers are forked at once, when the pool is made,
before this iteration starts its fetch thread; they only ever run
`decode_in_worker`, which takes no lock a parent thread could hold.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool


def available_cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _context():
    if sys.platform.startswith("linux"):
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")  # macOS, Windows: needs a main guard


def _broken(executor: ProcessPoolExecutor) -> bool:
    """Whether a worker died (a codec crashed it), which leaves the pool unusable.

    The public way to ask: a broken pool refuses new work with
    `BrokenProcessPool`. A healthy one runs the probe, a no-op, unawaited.
    """
    try:
        executor.submit(os.getpid)
    except BrokenProcessPool:
        return True
    return False


class ProcessPool:
    """One reader's worker processes; safe to share between its threads."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._executor: ProcessPoolExecutor | None = None
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def executor(self, workers: int) -> ProcessPoolExecutor:
        with self._lock:
            if self._pid != os.getpid():
                # Forked (a data loader's worker): the parent's pool is not ours.
                self._executor, self._pid = None, os.getpid()
            executor = self._executor
            if executor is not None and _broken(executor):
                executor.shutdown(wait=False, cancel_futures=True)
                executor = None
            if executor is None:
                self.workers = workers
                executor = self._executor = ProcessPoolExecutor(workers, mp_context=_context())
                # Start every worker now (fork launches them all on the first submit).
                executor.submit(os.getpid).result()
            # A pool already running keeps its size: another thread may be using it.
            return executor

    def shutdown(self, wait: bool = True) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None and self._pid == os.getpid():
            executor.shutdown(wait=wait, cancel_futures=True)


_threads: ThreadPoolExecutor | None = None
_threads_lock = threading.Lock()


def decode_threads() -> ThreadPoolExecutor:
    """The process's threads for decoding a few frames at once (a region's
    tiles): started once, not per call, since starting threads costs about a
    millisecond, as much as decoding a tile. For decoders that release the GIL."""
    global _threads
    with _threads_lock:
        if _threads is None:
            _threads = ThreadPoolExecutor(available_cores(), thread_name_prefix="dicomframes-region")
        return _threads


def _threads_after_fork() -> None:
    # The parent's threads do not exist in a forked child: start new ones there when needed.
    global _threads, _threads_lock
    _threads, _threads_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_threads_after_fork)
