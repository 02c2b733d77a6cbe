"""The Fetcher: turns "these frames" into few, planned range reads.

Frames are taken in batches bounded by bytes; within a batch, neighbouring
spans are merged into one request when the gap between them is small, so
iterating a file reads it in large sequential pieces, and a random frame is a
single request of exactly its bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

from .errors import TruncatedFileError
from .frame_index import FrameSpan
from .sources import Source


@dataclass(frozen=True)
class FetchPolicy:
    #: merge two spans when at most this many unwanted bytes lie between them
    max_gap: int = 0
    #: never merge into a request larger than this
    max_request: int = 16 << 20
    #: frames per batch are bounded by this many encoded bytes (and `max_frames`)
    batch_bytes: int = 32 << 20
    max_frames: int = 256


def plan(spans: list[FrameSpan], policy: FetchPolicy) -> list[tuple[int, int, list[FrameSpan]]]:
    """Group `spans` into requests: (offset, size, spans inside)."""
    requests: list[tuple[int, int, list[FrameSpan]]] = []
    for span in sorted(set(spans), key=lambda s: s.offset):
        if requests:
            off, size, members = requests[-1]
            end = off + size
            new_end = max(end, span.offset + span.length)
            if span.offset - end <= policy.max_gap and new_end - off <= policy.max_request:
                requests[-1] = (off, new_end - off, members + [span])
                continue
        requests.append((span.offset, span.length, [span]))
    return requests


def fetch(source: Source, spans: list[FrameSpan], policy: FetchPolicy) -> dict[FrameSpan, bytes]:
    """The bytes of each span, read with as few requests as the policy allows."""
    requests = plan(spans, policy)
    blobs = source.read_ranges([(off, size) for off, size, _ in requests])
    out: dict[FrameSpan, bytes] = {}
    for (off, size, members), blob in zip(requests, blobs):
        view = memoryview(blob)
        for span in members:
            rel = span.offset - off
            data = view[rel : rel + span.length]
            if len(data) != span.length:
                raise TruncatedFileError(
                    f"the frame needs bytes {span.offset}..{span.offset + span.length} "
                    f"but the file ends at {off + len(blob)}",
                    path=source.name, frame=span.frame, offset=span.offset,
                )
            out[span] = blob if (rel == 0 and len(blob) == span.length) else bytes(data)
    return out


def batches(
    indices: Iterable[int], locate: Callable[[int], FrameSpan], policy: FetchPolicy
) -> Iterator[list[tuple[int, FrameSpan]]]:
    """Split `indices` (any order, repeats allowed) into byte-bounded batches."""
    batch: list[tuple[int, FrameSpan]] = []
    size = 0
    for i in indices:
        span = locate(i)
        batch.append((i, span))
        size += span.length
        if size >= policy.batch_bytes or len(batch) >= policy.max_frames:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch
