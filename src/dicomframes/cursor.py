"""A buffered, forward-moving read position over a `Source`.

The header parser and the fragment walk read many small pieces (8-byte element
headers) and skip large ones; the cursor turns that into few, block-sized
requests and never reads the bytes it is asked to skip.
"""

from __future__ import annotations

from .errors import TruncatedFileError
from .sources import Source


class Cursor:
    def __init__(self, source: Source, offset: int = 0, block: int = 64 * 1024) -> None:
        self.source = source
        self.pos = offset
        self.block = block
        self._buf = b""
        self._buf_start = 0

    def _buffered(self, n: int) -> bytes:
        """Bytes at the position, up to `n`, served from the block buffer."""
        rel = self.pos - self._buf_start
        if 0 <= rel and rel + n <= len(self._buf):
            return self._buf[rel : rel + n]
        # Keep what is still ahead of us and read one block more.
        keep = self._buf[rel:] if 0 <= rel < len(self._buf) else b""
        want = max(n, self.block) - len(keep)
        more = self.source.read(self.pos + len(keep), want)
        self._buf = keep + more
        self._buf_start = self.pos
        return self._buf[:n]

    def peek(self, n: int) -> bytes:
        """Up to `n` bytes at the position without moving it (short only at the end)."""
        return self._buffered(n)

    def read(self, n: int, what: str = "data") -> bytes:
        data = self._buffered(n)
        if len(data) != n:
            raise TruncatedFileError(
                f"the file ends inside {what}: needed {n} bytes, {len(data)} left",
                path=self.source.name, offset=self.pos,
            )
        self.pos += n
        return data

    def skip(self, n: int) -> None:
        self.pos += n

    def at_end(self) -> bool:
        return not self._buffered(1)
