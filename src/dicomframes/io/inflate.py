"""Random access to the inflated bytes of a Deflated transfer syntax data set.

Deflate streams cannot be entered in the middle, so reading at an offset means
inflating from somewhere before it. We inflate forward in bounded pieces and
keep a checkpoint (a copy of the decompressor, ~40 KB) every few MiB of output,
so a backwards jump costs at most one checkpoint interval, and memory stays
bounded however large the data set is.
"""

from __future__ import annotations

import bisect
import threading
import zlib
from typing import Any

from dicomframes.errors import InvalidFileError
from dicomframes.io.source import Source

_PIECE = 1 << 20  # inflate at most this much at once
_INPUT_BLOCK = 256 * 1024


class InflatedSource(Source):
    """The inflated data set of a deflated file, as a `Source`.

    Offsets are positions in the inflated stream. ``size`` becomes known once
    the stream has been inflated to its end.
    """

    checkpoint_every = 8 << 20

    def __init__(self, raw: Source, start: int) -> None:
        super().__init__()
        self.raw = raw
        self.start = start
        self.name = raw.name
        self.size = None
        self._lock = threading.Lock()
        self._restore((0, start, zlib.decompressobj(-zlib.MAX_WBITS), b""))
        self._checkpoints = [(0, start, self._d.copy(), b"")]

    def _restore(self, cp) -> None:
        self._out, self._in, d, self._tail = cp
        self._d = d.copy()

    def _produce(self, limit: int) -> bytes:
        """Inflate up to `limit` more bytes; b"" at the end of the stream."""
        while not self._d.eof:
            try:
                if self._tail:
                    data = self._d.decompress(self._tail, limit)
                else:
                    chunk = self.raw.read(self._in, _INPUT_BLOCK)
                    if not chunk:
                        data = self._d.flush()[:limit]
                        self._d = _Ended()
                        self._out += len(data)
                        self.size = self._out
                        return data
                    self._in += len(chunk)
                    data = self._d.decompress(chunk, limit)
                self._tail = self._d.unconsumed_tail
            except zlib.error as exc:
                raise InvalidFileError(
                    f"the deflated data set is corrupt ({exc})",
                    path=self.name, offset=self._in,
                ) from exc
            if data:
                self._out += len(data)
                if self._out - self._checkpoints[-1][0] >= self.checkpoint_every and not self._d.eof:
                    self._checkpoints.append((self._out, self._in, self._d.copy(), self._tail))
                if self._d.eof:
                    self.size = self._out
                return data
        self.size = self._out
        return b""

    def _read(self, offset: int, size: int) -> bytes:
        with self._lock:
            # Jump to the last checkpoint at or before `offset` when that is
            # closer than where we stand (or we stand beyond `offset`).
            i = bisect.bisect_right([c[0] for c in self._checkpoints], offset) - 1
            cp = self._checkpoints[i]
            if self._out > offset or cp[0] > self._out:
                self._restore(cp)
            while self._out < offset:
                if not self._produce(min(_PIECE, offset - self._out)):
                    return b""
            parts, got = [], 0
            while got < size:
                piece = self._produce(min(_PIECE, size - got))
                if not piece:
                    break
                parts.append(piece)
                got += len(piece)
            return b"".join(parts)

    def close(self) -> None:
        self.raw.close()

    def reopen(self) -> "InflatedSource":
        """A fresh inflated stream over a fresh handle on the raw file."""
        return InflatedSource(self.raw.reopen(), self.start)

    def __getstate__(self) -> dict[str, Any]:
        return {"raw": self.raw, "start": self.start}  # checkpoints are rebuilt on use

    def __setstate__(self, state: dict[str, Any]) -> None:
        type(self).__init__(self, state["raw"], state["start"])


class _Ended:
    """Stands in for a decompressor whose input ran out."""

    eof = True
    unconsumed_tail = b""

    def copy(self):
        return self
