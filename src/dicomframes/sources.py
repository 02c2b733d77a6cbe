"""Sources: bytes at an offset, from wherever the file lives.

A source has no shared cursor: ``read(offset, size)`` and ``read_ranges`` may be
called from any thread. Every source counts requests, bytes and the time spent
waiting, so users and benchmarks read the same numbers (``reader.stats``).
"""

from __future__ import annotations

import io
import os
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO, Sequence

from .errors import StorageError, TruncatedFileError

if TYPE_CHECKING:
    from .cursor import BlockCache

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

    def __getstate__(self):
        return {"requests": self.requests, "bytes": self.bytes, "seconds": self.seconds}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()


class Source(ABC):
    """Random access to the bytes of one file.

    Subclasses implement ``_read`` (one request) and may override
    ``_read_many`` (several requests at once, e.g. concurrently).
    """

    #: the path or URL, used in error messages
    name: str = "<source>"
    #: the size in bytes, or None where unknown
    size: int | None = None
    #: bytes of the speculative first read that should hold the whole header
    header_block: int = 64 * 1024
    #: block size for the walk over item headers (and other small sequential reads)
    walk_block: int = 64 * 1024
    #: blocks already read (the header's first read, the walk's blocks) that
    #: fetches take bytes from before asking storage; set by the frame index
    block_cache: "BlockCache | None" = None
    #: the source has ``read_into(offset, buffers)``, reading straight into them
    direct_reads: bool = False

    def fetch_policy(self):
        """How the Fetcher should plan reads from this source."""
        from .fetcher import FetchPolicy

        return FetchPolicy()

    def __init__(self) -> None:
        self.stats = SourceStats()

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

    def read_exact(self, offset: int, size: int, *, frame: int | None = None) -> bytes:
        """Like `read`, but a short result is a `TruncatedFileError`."""
        data = self.read(offset, size)
        if len(data) != size:
            raise TruncatedFileError(
                f"expected {size} bytes but the file ends after {len(data)}",
                path=self.name, frame=frame, offset=offset,
            )
        return data

    def close(self) -> None:
        pass

    def reopen(self) -> "Source":
        """A fresh handle on the same bytes (used after pickling and forking)."""
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class LocalFileSource(Source):
    """A file on local disk, read with positional reads (``os.pread``)."""

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__()
        self.path = os.fspath(path)
        self.name = self.path
        self._fd: int | None = None
        self._pid = -1
        self._lock = threading.Lock()
        self._open()

    def _open(self) -> None:
        try:
            self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        except OSError as exc:
            raise StorageError(f"cannot open: {exc.strerror}", path=self.path) from exc
        self._pid = os.getpid()
        self.size = os.fstat(self._fd).st_size

    def _fileno(self) -> int:
        # After fork the descriptor is shared with the parent; preads do not move
        # a shared position, but closing in one process must not break the other.
        if self._fd is None or self._pid != os.getpid():
            with self._lock:
                if self._fd is None or self._pid != os.getpid():
                    if self._fd is None and self._pid == os.getpid():
                        raise StorageError("read from a closed source", path=self.path)
                    self._open()
        return self._fd  # type: ignore[return-value]

    def _read(self, offset: int, size: int) -> bytes:
        fd = self._fileno()
        if hasattr(os, "pread"):
            chunks = []
            while size > 0:
                chunk = os.pread(fd, size, offset)
                if not chunk:
                    break
                chunks.append(chunk)
                offset += len(chunk)
                size -= len(chunk)
            return b"".join(chunks) if len(chunks) != 1 else chunks[0]
        with self._lock:  # pragma: no cover - Windows has no pread
            os.lseek(fd, offset, os.SEEK_SET)
            return os.read(fd, size)

    direct_reads = hasattr(os, "preadv")

    def read_into(self, offset: int, buffers: Sequence) -> int:
        """Fill writable `buffers`, in order, with the bytes from `offset` (``preadv``:
        one system call for up to 1024 buffers). Returns the bytes read, fewer
        only at the end of the file."""
        fd = self._fileno()
        start = time.perf_counter()
        views = [memoryview(b) for b in buffers if len(b)]
        total = requests = i = 0
        while i < len(views):
            n = os.preadv(fd, views[i : i + 1024], offset)
            requests += 1
            if not n:
                break
            offset += n
            total += n
            while n:  # step over the buffers filled, keep the rest of a partial one
                if n >= len(views[i]):
                    n -= len(views[i])
                    i += 1
                else:
                    views[i] = views[i][n:]
                    n = 0
        self.stats.add(requests, total, time.perf_counter() - start)
        return total

    def close(self) -> None:
        with self._lock:
            if self._fd is not None and self._pid == os.getpid():
                os.close(self._fd)
            self._fd = None

    def reopen(self) -> "LocalFileSource":
        return LocalFileSource(self.path)

    def __getstate__(self):
        return {"path": self.path}

    def __setstate__(self, state):
        self.__init__(state["path"])

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class FileObjectSource(Source):
    """An open binary file object (anything with ``seek`` and ``read``).

    Reads take a lock because the object has one shared position; the caller's
    position is restored after each read.
    """

    def __init__(self, fileobj: BinaryIO, name: str | None = None) -> None:
        super().__init__()
        self.fileobj = fileobj
        self.name = name or str(getattr(fileobj, "name", None) or getattr(fileobj, "path", None) or repr(fileobj))
        self._lock = threading.Lock()
        with self._lock:
            here = fileobj.tell()
            self.size = fileobj.seek(0, io.SEEK_END)
            fileobj.seek(here)

    def _read(self, offset: int, size: int) -> bytes:
        with self._lock:
            here = self.fileobj.tell()
            try:
                self.fileobj.seek(offset)
                chunks = []
                while size > 0:
                    chunk = self.fileobj.read(size)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    size -= len(chunk)
                return b"".join(chunks)
            finally:
                self.fileobj.seek(here)

    def __getstate__(self):
        raise TypeError("a reader over an open file object cannot be pickled; open it by path or URL")


class BytesSource(Source):
    """Bytes already in memory (tests, and small files fetched whole)."""

    def __init__(self, data: bytes | bytearray | memoryview, name: str = "<bytes>") -> None:
        super().__init__()
        self._data = memoryview(data).cast("B") if not isinstance(data, bytes) else data
        self.name = name
        self.size = len(self._data)

    def _read(self, offset: int, size: int) -> bytes:
        return bytes(self._data[offset : offset + size])

    def __getstate__(self):
        return {"data": bytes(self._data), "name": self.name, "stats": self.stats}

    def __setstate__(self, state):
        self.__init__(state["data"], state["name"])
