"""A buffered, forward-moving read position over a `Source`, and the block cache.

The header parser and the fragment walk read many small pieces (8-byte element
headers) and skip large ones; the cursor turns that into few, block-sized
requests and never reads the bytes it is asked to skip.

The `BlockCache` keeps the last few blocks such reads fetched (bounded in
bytes), so that frames lying inside them are not fetched a second time: the
bytes after the Pixel Data element that came with the header's first read, and
the blocks the walk over item headers read. `read_through` serves ranges from
the cache and fetches only the bytes it lacks.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Sequence

from dicomframes.errors import TruncatedFileError

if TYPE_CHECKING:  # a Source makes its BlockCache: at run time this module needs none of it
    from dicomframes.io.source import Source


class BlockCache:
    """A few blocks of one source, by offset; least recently used go first.

    Parameters
    ----------
    capacity : int
        The most bytes kept. A block larger than this is not kept at all.

    Blocks a sequential reader has consumed (a read ran through their end) are
    dropped at once (`consumed`), so iterating in order keeps only the blocks
    still ahead of it.

    Each `Source` owns one (``source.block_cache``); readers of the source that
    need room for more blocks ask for it with `reserve`.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = max(0, int(capacity))
        self._blocks: OrderedDict[int, bytes] = OrderedDict()  # start -> bytes
        self._bytes = 0
        self._lock = threading.Lock()
        #: bytes served from the cache rather than the source (for tests and stats)
        self.hits = 0

    def __len__(self) -> int:
        return len(self._blocks)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def reserve(self, capacity: int) -> None:
        """Keep up to `capacity` bytes from now on; a smaller request leaves
        the capacity as it is (another reader of the source may need it)."""
        with self._lock:
            self.capacity = max(self.capacity, int(capacity))

    def add(self, offset: int, data: bytes) -> None:
        """Keep `data`, the bytes at `offset` (evicting the oldest blocks if needed)."""
        n = len(data)
        if not n or n > self.capacity:
            return
        if not isinstance(data, bytes):
            data = bytes(data)
        with self._lock:
            old = self._blocks.pop(offset, None)
            if old is not None:
                self._bytes -= len(old)
                if len(old) > n:
                    data, n = old, len(old)
            self._blocks[offset] = data
            self._bytes += n
            while self._bytes > self.capacity and self._blocks:
                _, gone = self._blocks.popitem(last=False)
                self._bytes -= len(gone)

    def clear(self) -> None:
        with self._lock:
            self._blocks.clear()
            self._bytes = 0

    def _covering(self, pos: int) -> tuple[int, bytes] | None:
        """The block holding `pos` that reaches furthest, or None (lock held)."""
        best = None
        for start, data in self._blocks.items():
            if start <= pos < start + len(data) and (best is None or start + len(data) > best[0] + len(best[1])):
                best = (start, data)
        return best

    def pieces(self, offset: int, size: int) -> tuple[list[tuple[int, bytes]], list[tuple[int, int]]]:
        """What the cache holds of ``[offset, offset + size)``.

        Returns ``(held, missing)``: `held` is a list of (offset, bytes) pieces
        and `missing` a list of (offset, size) gaps; together they tile the
        range in order.
        """
        held: list[tuple[int, bytes]] = []
        missing: list[tuple[int, int]] = []
        end = offset + size
        pos = offset
        with self._lock:
            if not self._blocks:
                return [], [(offset, size)] if size > 0 else []
            while pos < end:
                block = self._covering(pos)
                if block is not None:
                    start, data = block
                    stop = min(end, start + len(data))
                    held.append((pos, data[pos - start : stop - start]))
                    self._blocks.move_to_end(start)
                    pos = stop
                    continue
                # A gap: up to the next block that starts inside the range.
                nxt = min((s for s in self._blocks if pos < s < end), default=end)
                missing.append((pos, nxt - pos))
                pos = nxt
            self.hits += sum(len(d) for _, d in held)
        return held, missing

    def run(self, offset: int, limit: int) -> bytes:
        """The cached bytes contiguous from `offset`, at most `limit` (maybe none)."""
        out: list[bytes] = []
        pos, end = offset, offset + limit
        with self._lock:
            while pos < end:
                block = self._covering(pos)
                if block is None:
                    break
                start, data = block
                piece = data[pos - start : min(end, start + len(data)) - start]
                out.append(piece)
                self._blocks.move_to_end(start)
                pos += len(piece)
            self.hits += pos - offset
        return out[0] if len(out) == 1 else b"".join(out)

    def consumed(self, offset: int, end: int) -> None:
        """A reader took ``[offset, end)``: drop the blocks that ended inside it."""
        with self._lock:
            for start in [s for s, d in self._blocks.items() if offset < s + len(d) <= end]:
                self._bytes -= len(self._blocks.pop(start))

    # Caches are per process and hold bytes: never pickle their contents.
    def __getstate__(self) -> dict[str, int]:
        return {"capacity": self.capacity}

    def __setstate__(self, state: dict[str, int]) -> None:
        type(self).__init__(self, state["capacity"])


def read_through(source: Source, cache: BlockCache | None, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
    """The bytes of `ranges`, from `cache` where it holds them, else from `source`.

    Only the bytes the cache lacks are requested, all in one
    ``source.read_ranges`` call (concurrent where the source can). A result is
    short only where the source ends. Blocks that a range reads through to
    their end are dropped from the cache (see `BlockCache.consumed`).
    """
    if cache is None or not len(cache):
        return source.read_ranges(list(ranges))
    plans = []
    wanted: list[tuple[int, int]] = []
    for off, size in ranges:
        held, missing = cache.pieces(off, size)
        plans.append((off, size, held, missing))
        wanted.extend(missing)
    fetched = iter(source.read_ranges(wanted) if wanted else [])
    out: list[bytes] = []
    for off, size, held, missing in plans:
        pieces = [(o, d) for o, d in held]
        for o, _n in missing:
            pieces.append((o, next(fetched)))
        pieces.sort(key=lambda p: p[0])
        parts, pos = [], off
        for o, d in pieces:
            if o != pos:  # a short piece before this one: the source ended there
                break
            parts.append(d)
            pos += len(d)
        out.append(parts[0] if len(parts) == 1 else b"".join(parts))
        if held:
            cache.consumed(off, off + size)
    return out


class Cursor:
    """A read position over `source` that reads `block` bytes at a time.

    With a `cache`, bytes are taken from it where it holds them, and every
    block read from the source is added to it. Without one, the source's own
    cache (``source.block_cache``) is consulted but not added to. `buffered`
    is bytes at `offset` the caller has already read: the cursor starts with
    them and does not read them again.
    """

    def __init__(
        self, source: Source, offset: int = 0, block: int = 64 * 1024, cache: BlockCache | None = None,
        *, buffered: bytes = b"", readahead: int = 1,
    ) -> None:
        self.source = source
        self.pos = offset
        self.block = block
        self.cache = cache
        self._buf = buffered
        self._buf_start = offset
        #: blocks read at once, concurrently, when the cursor must read (with a
        #: cache, which keeps the ones ahead): a walk over a remote file is bound
        #: by round trips, not bandwidth
        self.readahead = max(1, int(readahead))

    def _buffered(self, n: int) -> bytes:
        """Bytes at the position, up to `n`, served from the block buffer."""
        rel = self.pos - self._buf_start
        if 0 <= rel and rel + n <= len(self._buf):
            return self._buf[rel : rel + n]
        # Keep what is still ahead of us and read one block more.
        keep = self._buf[rel:] if 0 <= rel < len(self._buf) else b""
        start = self.pos + len(keep)
        want = max(n, self.block) - len(keep)
        # Bytes already read: our cache, else the source's own (read only).
        cache = self.cache if self.cache is not None else self.source.block_cache
        more = cache.run(start, want)
        if len(keep) + len(more) < n:
            at = start + len(more)
            read_from = at
            buf_end = self._buf_start + len(self._buf)
            if self.cache is not None and self._buf and not keep and not more and 0 < at - buf_end < self.block // 2:
                # A short skip past the buffer (the tail of a fragment): read on
                # from the buffer's end, so the cached blocks stay contiguous and
                # a later fetch of these frames finds every byte there.
                read_from = buf_end
            n_fresh = at + want - len(more) - read_from
            if self.cache is not None and self.readahead > 1 and n_fresh >= self.block // 2:
                fresh = self._read_ahead(read_from, n_fresh)
            else:
                fresh = self.source.read(read_from, n_fresh)
            if self.cache is not None:
                self.cache.add(read_from, fresh)
            fresh = fresh[at - read_from :] if read_from != at else fresh
            more = more + fresh if more else fresh
        self._buf = keep + more if keep else more
        self._buf_start = self.pos
        return self._buf[:n]

    def _read_ahead(self, offset: int, n: int) -> bytes:
        """The `n` bytes at `offset`, read together with the next blocks not yet
        cached (up to `readahead` ranges in one concurrent call; those go to the cache)."""
        assert self.cache is not None
        size = self.source.find_size()  # never a range past the end (a 416 and a size lookup each)
        if size is None:
            return self.source.read(offset, n)
        ranges = [(offset, n)]
        start = offset + n
        while len(ranges) < self.readahead and start < size:
            if not self.cache.run(start, 1):
                ranges.append((start, min(self.block, size - start)))
            start += self.block
        got = self.source.read_ranges(ranges)
        for (o, _), data in zip(ranges[1:], got[1:]):
            self.cache.add(o, data)
        return got[0]

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

    def buffered_from(self, offset: int) -> bytes:
        """The bytes the buffer holds from `offset` on (empty if it holds none)."""
        rel = offset - self._buf_start
        if 0 <= rel < len(self._buf):
            return self._buf[rel:]
        return b""
