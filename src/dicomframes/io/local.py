"""Sources of bytes on this machine: a local file, an open file object, bytes in memory."""

from __future__ import annotations

import io
import os
import threading
import time
from typing import TYPE_CHECKING, Any, BinaryIO, Sequence

from dicomframes.errors import StorageError
from dicomframes.io.source import Source

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer


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

    def identity(self) -> dict[str, Any]:
        st = os.stat(self.path)
        return {**super().identity(), "size": st.st_size, "modified": st.st_mtime_ns}

    def _fileno(self, offset: int, size: int) -> int:
        # After fork the descriptor is shared with the parent; preads do not move
        # a shared position, but closing in one process must not break the other.
        if self._fd is None or self._pid != os.getpid():
            with self._lock:
                if self._fd is None or self._pid != os.getpid():
                    if self._fd is None and self._pid == os.getpid():
                        raise StorageError("read from a closed source", path=self.path, offset=offset, byte_range=(offset, size))
                    self._open()
        return self._fd  # type: ignore[return-value]

    def _failed(self, exc: OSError, offset: int, size: int) -> StorageError:
        """A local read that failed (EIO, a file turned directory): a StorageError like remote ones."""
        return StorageError(f"cannot read {size} bytes: {exc.strerror or exc}", path=self.path, offset=offset, byte_range=(offset, size))

    def _read(self, offset: int, size: int) -> bytes:
        try:
            return self._pread(offset, size)
        except OSError as exc:
            raise self._failed(exc, offset, size) from exc

    def _pread(self, offset: int, size: int) -> bytes:
        fd = self._fileno(offset, size)
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

    def read_into(self, offset: int, buffers: Sequence[WriteableBuffer]) -> int:
        """Fill writable `buffers`, in order, with the bytes from `offset` (``preadv``:
        one system call for up to 1024 buffers). Returns the bytes read, fewer
        only at the end of the file."""
        start = time.perf_counter()
        if len(buffers) == 1:  # one frame (native frames read one by one): the short way
            view = memoryview(buffers[0]).cast("B")
            try:
                n = os.preadv(self._fileno(offset, len(view)), [view], offset)
            except OSError as exc:
                raise self._failed(exc, offset, len(view)) from exc
            self.stats.add(1, n, time.perf_counter() - start)
            if n == len(view) or not n:
                return n
            return n + self.read_into(offset + n, [view[n:]])  # a short read, not at the end: the rest
        views = [v for v in (memoryview(b).cast("B") for b in buffers) if len(v)]  # bytes, whatever the item size
        wanted = sum(len(v) for v in views)
        fd = self._fileno(offset, wanted)
        total = requests = i = 0
        while i < len(views):
            try:
                n = os.preadv(fd, views[i : i + 1024], offset)
            except OSError as exc:
                raise self._failed(exc, offset, wanted - total) from exc
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

    def __getstate__(self) -> dict[str, str]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, str]) -> None:
        type(self).__init__(self, state["path"])

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
        # ValueError: what a closed file object raises on any call.
        try:
            with self._lock:
                here = self.fileobj.tell()
                try:
                    self.fileobj.seek(offset)
                    chunks = []
                    left = size
                    while left > 0:
                        chunk = self.fileobj.read(left)
                        if not chunk:
                            break
                        chunks.append(chunk)
                        left -= len(chunk)
                    return b"".join(chunks)
                finally:
                    self.fileobj.seek(here)
        except (OSError, ValueError) as exc:
            raise StorageError(
                f"cannot read {size} bytes from the file object: {exc}", path=self.name, offset=offset, byte_range=(offset, size),
            ) from exc

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

    def __getstate__(self) -> dict[str, Any]:
        return {"data": bytes(self._data), "name": self.name, "stats": self.stats}

    def __setstate__(self, state: dict[str, Any]) -> None:
        type(self).__init__(self, state["data"], state["name"])
