"""The iteration pipeline: fetch ahead on one thread, decode on a pool, yield in order.

Memory is bounded by bytes in flight: at most ``(ahead + 1) * batch_bytes``
fetched and not yet handed to decoding (the batches ahead and the one in use)
plus `depth` frames being decoded. Where requests cost a round trip
(``policy.concurrency > 1``: object stores) that window is cut into smaller
batches, about one request each, fetched several at once: the same bytes in
flight, round trips overlapped instead of taken one after another. Errors
surface at the frame where they happened, in order. Closing the generator
(``break``, an exception, ``reader.close()``) cancels pending work and joins
the threads it started.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import replace
from typing import Callable, Iterable, Iterator

import numpy as np

from dicomframes.errors import DecodeError, DicomFramesError
from dicomframes.frames.fetch import fetch_present
from dicomframes.frames.frame_source import FrameSource
from dicomframes.frames.pixels import store
from dicomframes.frames.span import FrameBytes, FrameSpan
from dicomframes.io.policy import FetchPolicy


def _result(span: FrameSpan, future: Future, name: str):
    """A worker's frame; a worker that died (a codec crashed it) is a DecodeError."""
    try:
        return future.result()
    except (DicomFramesError, KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:
        raise DecodeError(
            f"the decoding worker failed: {type(exc).__name__}: {exc}",
            path=name, frame=span.frame, offset=span.offset,
        ) from exc


class _Part:
    """Frame `k` of a chunk decoded by one process-pool task."""

    def __init__(self, future: Future, k: int) -> None:
        self.future = future
        self.k = k

    def result(self, span: FrameSpan, name: str) -> np.ndarray:
        out = _result(span, self.future, name)[self.k]
        if isinstance(out, BaseException):
            raise out
        return out


class _Failed:
    """A fetch failure, kept in order so it is raised at its first frame."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def in_flight(policy: FetchPolicy, ahead: int) -> tuple[int, FetchPolicy]:
    """(batches fetched at once, the policy each is planned with).

    The window of ``(ahead + 1) * batch_bytes`` fetched bytes stays what it
    was; with ``policy.concurrency > 1`` it holds `n` batches in flight plus
    the one in use, each ``window / (n + 1)`` and no smaller than one request
    (``max_request``, when the window allows): more, smaller requests would
    cost more round trips, not fewer.
    """
    if policy.concurrency <= 1:
        return 1, policy
    window = (ahead + 1) * policy.batch_bytes
    n = max(1, min(policy.concurrency, window // max(1, min(policy.batch_bytes, policy.max_request)) - 1))
    return n, replace(policy, batch_bytes=max(1, min(policy.batch_bytes, window // (n + 1))))


def iterate(
    indices: Iterable[int],
    source: FrameSource,
    policy: FetchPolicy,
    decode: Callable,
    pool: Executor | None,
    depth: int,
    ahead: int = 2,
    pickled: bool = False,
    chunk: int = 1,
    out: np.ndarray | None = None,
) -> Iterator[np.ndarray]:
    """Yield decoded frames of `indices` (valid frame numbers) of `source`, in order.

    With `out` (one array per index along its first axis), the k-th frame is
    decoded into ``out[k]``, which is what is yielded: `decode` then also
    takes ``out=`` (one array) inline, or a list of them for a thread pool; a
    process pool's frames are copied in.

    With a `pool` (threads, or processes when `pickled`), `decode` takes lists
    of up to `chunk` (span, bytes) pairs and returns a list of arrays that
    ends early with the exception of a failed frame; without one, `decode`
    takes (span, bytes) and runs on the calling thread while the next batches
    are fetched in the background. Memory held: `ahead` fetched batches, the
    batch being used, and `depth` frames decoding; with
    ``policy.concurrency > 1`` the same bytes as smaller batches, several
    read at once (`in_flight`).
    """
    todo = iter(indices)
    exhausted = False
    width, policy = in_flight(policy, ahead)
    if width > 1:
        ahead = width

    carried: list[FrameSpan] = []  # located but left for the next batch

    batches = 0
    ended = False  # a frame could not be located: nothing after it is planned

    def take():
        """The next batch's spans and a locate failure after them, or None.
        Runs on the single fetch thread, so `todo` is consumed in order."""
        nonlocal batches, ended
        if ended:
            return None
        limit = policy.batch_bytes
        if not batches and policy.first_batch_bytes:
            limit = min(limit, policy.first_batch_bytes)
        batches += 1
        spans: list[FrameSpan] = carried[:]
        carried.clear()
        size = sum(span.length for span in spans)
        failed: _Failed | None = None
        for i in todo:
            try:
                span = source.locate(i)
            except DicomFramesError as exc:  # raised after the frames before it
                failed = _Failed(exc)
                ended = True
                break
            if spans and size + span.length > limit:
                carried.append(span)  # keep each batch within the byte bound
                break
            spans.append(span)
            size += span.length
            if len(spans) >= policy.max_frames:
                break
        if not spans:
            return [failed] if failed else None
        return spans, failed

    def read(spans: list[FrameSpan], failed: _Failed | None):
        # A partial file is read frame by frame: the frames wholly present are
        # still served and the error comes at its own frame.
        blobs, error = fetch_present(lambda batch: source.read_many(batch, policy), spans)
        out: list[tuple[FrameSpan, FrameBytes] | _Failed] = [(span, blobs[span]) for span in spans if span in blobs]
        if error is not None:
            out.append(_Failed(error))
        return out + [failed] if failed else out

    # One batch at a time: plan and read on the fetch thread. Several: plan
    # there (in order) and read on `reads`, one thread per batch in flight.
    reads = ThreadPoolExecutor(width, thread_name_prefix="dicomframes-fetch-io") if width > 1 else None

    def next_batch():
        planned = take()
        if planned is None or isinstance(planned, list):
            return planned
        if reads is None:
            return read(*planned)
        return reads.submit(read, *planned)

    fetcher = ThreadPoolExecutor(1, thread_name_prefix="dicomframes-fetch")
    fetches: deque[Future] = deque()
    frames: deque = deque()  # (span, bytes) fetched, not yet handed to decoding
    running: deque = deque()  # (span, _Part, k), or (span, bytes, k) to decode inline, or _Failed
    handed = 0  # frames handed to decoding: the next one's place in `out`

    def refill_fetches() -> None:
        while not exhausted and len(fetches) < ahead:
            fetches.append(fetcher.submit(next_batch))

    try:
        while True:
            refill_fetches()
            while len(running) < depth:
                if not frames:
                    if not fetches:
                        break
                    try:
                        batch = fetches.popleft().result()
                        if isinstance(batch, Future):  # planned, read on `reads`
                            batch = batch.result()
                    except BaseException as exc:  # raise it in order, at its frames
                        exhausted = True
                        frames.append(_Failed(exc))
                        batch = []
                    if batch is None:
                        exhausted = True
                        continue
                    frames.extend(batch)
                    del batch  # the deque alone holds these bytes now
                    refill_fetches()
                    if not frames:
                        continue
                item = frames.popleft()
                if isinstance(item, _Failed):
                    exhausted = True
                    frames.clear()
                    running.append(item)
                elif pool is None:
                    running.append((*item, handed))
                    handed += 1
                else:
                    # `chunk` frames per task: fewer hand-offs between threads
                    # (or messages between processes) per frame.
                    group = [item]
                    while len(group) < chunk and frames and not isinstance(frames[0], _Failed):
                        group.append(frames.popleft())
                    if pickled:  # copied out of their batch to be pickled
                        group = [(s, bytes(d)) for s, d in group]
                    if out is None or pickled:
                        future = pool.submit(decode, group)
                    else:
                        future = pool.submit(decode, group, [out[handed + k] for k in range(len(group))])
                    running.extend((s, _Part(future, k), handed + k) for k, (s, _) in enumerate(group))
                    handed += len(group)
            if not running:
                return
            item = running.popleft()
            if isinstance(item, _Failed):
                raise item.exc
            span, work, k = item
            if isinstance(work, _Part):
                frame = work.result(span, source.name)
                if out is not None and pickled:
                    frame = store(frame, out[k])
                yield frame
            else:
                yield decode(span, work) if out is None else decode(span, work, out=out[k])
    finally:
        exhausted = True
        for item in list(running):
            if not isinstance(item, _Failed):
                work = item[1]
                if isinstance(work, _Part):
                    work.future.cancel()
        for f in fetches:
            f.cancel()
        fetcher.shutdown(wait=True, cancel_futures=True)
        if reads is not None:  # after the fetch thread: it submits no more reads
            reads.shutdown(wait=True, cancel_futures=True)
