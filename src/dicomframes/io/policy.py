"""How a source likes to be read: the plan the fetcher follows for it.

Each source says how its reads should be planned (``Source.fetch_policy``):
local files want small first batches and exact ranges, object stores want
large merged requests, several in flight.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FetchPolicy:
    #: merge two spans when at most this many unwanted bytes lie between them
    max_gap: int = 0
    #: never merge into a request larger than this
    max_request: int = 8 << 20
    #: frames per batch are bounded by this many encoded bytes (and `max_frames`)
    batch_bytes: int = 8 << 20
    max_frames: int = 64
    #: the first batch of an iteration is this small, so its first frame comes
    #: soon (8 MiB before the first frame took 10-25 ms from a local page cache,
    #: 1 MiB ~2 ms); None: as big as the others, where each request costs a
    #: round trip (remote storage)
    first_batch_bytes: int | None = 1 << 20
    #: batches fetched at once by an iteration (each its own requests, within
    #: the same bytes in flight): >1 where each request costs a round trip and
    #: the storage serves many at once (object stores); 1 where reads are
    #: local and a second batch in flight only competes with the first
    concurrency: int = 1
