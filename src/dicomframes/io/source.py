"""Sources: bytes at an offset, from wherever the file lives.

A source has no shared cursor: ``read(offset, size)`` and ``read_ranges`` may be
called from any thread. Every source counts requests, bytes and the time spent
waiting, so users and benchmarks read the same numbers (``reader.stats``).
"""

from __future__ import annotations

import hashlib
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from dicomframes.errors import TruncatedFileError
from dicomframes.io.cursor import BlockCache
from dicomframes.io.policy import FetchPolicy

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

Range = tuple[int, int]  # (offset, size)


@dataclass
class SourceStats:
    """Counters of one source: requests made, bytes received, seconds waited."""

    requests: int = 0
    bytes: int = 0
    seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, requests: int, nbytes: int, seconds: float) -> None:
        with self._lock:
            self.requests += requests
            self.bytes += nbytes
            self.seconds += seconds

    def as_dict(self) -> dict[str, float]:
        return {"requests": self.requests, "bytes": self.bytes, "seconds": round(self.seconds, 6)}

    def __getstate__(self) -> dict[str, float]:
        return {"requests": self.requests, "bytes": self.bytes, "seconds": self.seconds}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


#: the first bytes of an object that `Source.identity` hashes
IDENTITY_BYTES = 64 * 1024


class Source(ABC):
    """Random access to the bytes of one file.

    Subclasses implement ``_read`` (one request) and may override
    ``_read_many`` (several requests at once, e.g. concurrently).

    Every source owns a `BlockCache`, ``block_cache``: blocks already read (the
    header's first read, the walk's blocks) that fetches take bytes from
    before asking storage. It starts empty, holding nothing until a reader of
    the source asks for room with ``block_cache.reserve(capacity)`` (the frame
    index does); it pickles empty, as each process reads its own bytes.
    """

    #: the path or URL, used in error messages
    name: str = "<source>"
    #: the size in bytes, or None where unknown
    size: int | None = None
    #: bytes of the speculative first read that should hold the whole header
    header_block: int = 64 * 1024
    #: block size for the walk over item headers (and other small sequential reads)
    walk_block: int = 64 * 1024
    #: blocks already read that fetches reuse (made in ``__init__``, see above)
    block_cache: BlockCache
    #: ``read_into(offset, buffers)`` reads straight into the buffers (else it reads, then copies)
    direct_reads: bool = False
    #: attempts beyond the first of each request, so far (sources that retry count them)
    retries: int = 0
    #: reads cross a network (the frame index cache is on by default for such sources)
    remote: bool = False

    def fetch_policy(self) -> FetchPolicy:
        """How the Fetcher should plan reads from this source."""
        return FetchPolicy()

    def find_size(self) -> int | None:
        """The size, asking the storage if it is not known yet (one request at
        most, once); None where the storage will not say."""
        return self.size

    def identity(self) -> dict[str, Any]:
        """What tells this object from another at the same place, for a persisted
        frame index: a hash of its first 64 KiB (from the header's first
        read, which sources keep: it costs no second request) and its
        size where known. A replaced object differs there (its UIDs do); one
        rewritten with the same header and other fragment boundaries is caught
        by the item-header checks of every frame read."""
        # The header's first read (kept), of which a fixed part: the same hash from every kind of source.
        head = self.read(0, max(self.header_block, IDENTITY_BYTES))[:IDENTITY_BYTES]
        found: dict[str, Any] = {"head": hashlib.sha256(head).hexdigest(), "head_bytes": len(head)}
        if self.size is not None:
            found["size"] = self.size
        return found

    def __init__(self) -> None:
        self.stats = SourceStats()
        self.block_cache = BlockCache(0)

    # -- what subclasses provide -------------------------------------------------
    @abstractmethod
    def _read(self, offset: int, size: int) -> bytes:
        """One request: up to `size` bytes at `offset`."""

    def _read_many(self, ranges: Sequence[Range]) -> list[bytes]:
        return [self._read(o, s) for o, s in ranges]

    # -- public API --------------------------------------------------------------
    def read(self, offset: int, size: int) -> bytes:
        """Return up to `size` bytes at `offset`; fewer only at the end of the file."""
        if size <= 0:
            return b""
        if self.size is not None:
            size = max(0, min(size, self.size - offset))
            if size == 0:
                return b""
        start = time.perf_counter()
        data = self._read(offset, size)
        self.stats.add(1, len(data), time.perf_counter() - start)
        return data

    def read_ranges(self, ranges: Sequence[Range]) -> list[bytes]:
        """Return the bytes of several ranges (each may be short at the end of file)."""
        if not ranges:
            return []
        if self.size is not None:
            ranges = [(o, max(0, min(s, self.size - o))) for o, s in ranges]
        start = time.perf_counter()
        out = self._read_many(ranges)
        self.stats.add(len(ranges), sum(map(len, out)), time.perf_counter() - start)
        return out

    def read_into(self, offset: int, buffers: Sequence[WriteableBuffer]) -> int:
        """Fill writable `buffers`, in order, with the bytes from `offset`.

        Returns the bytes read, fewer only at the end of the file. Sources with
        ``direct_reads`` read straight into the buffers; this one reads, then copies.
        """
        views = [memoryview(b).cast("B") for b in buffers]
        data = self.read(offset, sum(len(v) for v in views))
        pos = 0
        for v in views:
            n = min(len(v), len(data) - pos)
            v[:n] = data[pos : pos + n]
            pos += n
        return len(data)

    def read_exact(self, offset: int, size: int, *, frame: int | None = None) -> bytes:
        """Like `read`, but a short result is a `TruncatedFileError`."""
        data = self.read(offset, size)
        if len(data) != size:
            raise TruncatedFileError(
                f"expected {size} bytes but the file ends after {len(data)}",
                path=self.name, frame=frame, offset=offset,
            )
        return data

    def close(self) -> None:  # noqa: B027 - most sources hold nothing to release
        """Release what the source holds (a file descriptor, a connection pool)."""

    def reopen(self) -> "Source":
        """A fresh handle on the same bytes (used after pickling and forking)."""
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
