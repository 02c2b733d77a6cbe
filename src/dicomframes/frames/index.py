"""FrameIndex: where the bytes of frame i are.

Native data: arithmetic. Encapsulated data: the Extended Offset Table, else the
Basic Offset Table (unwrapping 32-bit overflow past 4 GiB), else a lazy walk
over item headers that stops as soon as the frames asked for are located.
Everything is kept in numpy arrays, never a Python object per fragment.
"""

from __future__ import annotations

import struct
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from dicomframes.errors import FrameIndexError, StorageError, TruncatedFileError
from dicomframes.frames.header import ITEM, SEQUENCE_DELIMITER, Header
from dicomframes.io.cursor import BlockCache, Cursor, read_through
from dicomframes.io.source import Source

_ITEM_HEADER = struct.Struct("<HHI")
#: the walk reads this much at an item header when fragments are large
_SMALL_WALK_READ = 64 * 1024


def cache_capacity(source: Source, block: int) -> int:
    """Bytes of blocks an index keeps for `source` (see `BlockCache`).

    Enough for the walk to run one fetch batch (and a block or two) ahead of
    the fetches that consume its blocks, so a file iterated in order is read
    once; never more than 64 walk blocks (4 MiB for a local file).
    """
    batch = source.fetch_policy().batch_bytes
    return max(4 * block, min(2 * batch + 2 * block, 64 * block))


@dataclass(frozen=True)
class FrameSpan:
    """The bytes of one frame: a range of the (data set) source.

    For encapsulated data the range covers whole items, headers included, and
    `unwrap` turns it into the frame's codestream.
    """

    frame: int
    offset: int
    length: int
    #: the range holds item-wrapped fragments
    items: bool = False
    #: EOT frames: take only `payload` bytes of the single item
    payload: int | None = None
    #: native Bits Allocated 1: the frame starts this many bits into the first byte
    bit_offset: int = 0
    #: native 8-bit big endian OW: bytes to drop at the start after swapping pairs
    skip: int = 0


def unwrap(span: FrameSpan, data: bytes, name: str) -> bytes:
    """The codestream of an encapsulated frame from the bytes of its span."""
    if span.payload is not None:
        group, elem, length = _ITEM_HEADER.unpack_from(data, 0)
        if (group << 16 | elem) != ITEM or length < span.payload:
            raise FrameIndexError(
                "the Extended Offset Table does not point at an item of the frame's length",
                path=name, frame=span.frame, offset=span.offset,
            )
        return data[8 : 8 + span.payload]
    parts = []
    pos, end = 0, len(data)
    while pos < end:
        if pos + 8 > end:
            raise FrameIndexError("a fragment header crosses the end of the frame", path=name, frame=span.frame, offset=span.offset + pos)
        group, elem, length = _ITEM_HEADER.unpack_from(data, pos)
        if (group << 16 | elem) != ITEM:
            raise FrameIndexError(
                f"expected a fragment item, found ({group:04X},{elem:04X}); the offset table may be wrong",
                path=name, frame=span.frame, offset=span.offset + pos,
            )
        if pos + 8 + length > end:
            raise FrameIndexError(
                f"fragment of {length} bytes overruns the frame's end at offset {span.offset + end}",
                path=name, frame=span.frame, offset=span.offset + pos,
            )
        parts.append(data[pos + 8 : pos + 8 + length])
        pos += 8 + length
    return parts[0] if len(parts) == 1 else b"".join(parts)


class FrameIndex(ABC):
    """Frame number -> `FrameSpan`.

    An index keeps a small `BlockCache` of bytes already read from its source:
    the bytes after the Pixel Data element that came with the header
    (`Header.pixel_head`, taken over here) and the blocks of the walk over item
    headers. It is attached to the source as ``source.block_cache``, where
    `dicomframes.fetcher.fetch` finds it, so those bytes are not fetched twice.
    """

    kind: str = ""

    def __init__(self, header: Header, source: Source, number_of_frames: int, block: int = 64 * 1024) -> None:
        self.header = header
        self.source = source
        self.name = header.name
        self.number_of_frames = number_of_frames
        self.block = block
        head = header.pixel_head
        capacity = max(cache_capacity(source, block), len(head))
        cache = source.block_cache
        if isinstance(cache, BlockCache):
            cache.capacity = max(cache.capacity, capacity)  # the source's own (bytes it read)
        else:
            cache = BlockCache(capacity)
        self.cache = cache
        if head:
            self.cache.add(header.pixel_offset, head)
            header.pixel_head = b""  # taken over: keep the header small to pickle
        self._attach(source)

    def _attach(self, source: Source) -> None:
        try:
            source.block_cache = self.cache  # type: ignore[attr-defined]
        except AttributeError:  # pragma: no cover - a source with __slots__
            pass

    def read(self, offset: int, size: int, frame: int | None = None) -> bytes:
        """Exactly `size` bytes at `offset`, from the cache where it holds them."""
        try:
            data = read_through(self.source, self.cache, [(offset, size)])[0]
        except StorageError as exc:
            raise (exc if frame is None else exc.with_frame(frame)) from None
        if len(data) != size:
            raise TruncatedFileError(
                f"expected {size} bytes but the file ends after {len(data)}",
                path=self.name, frame=frame, offset=offset,
            )
        return data

    def __len__(self) -> int:
        return self.number_of_frames

    @abstractmethod
    def span(self, i: int) -> FrameSpan:
        """Where frame `i`'s bytes are."""

    def locate_all(self) -> None:
        """Locate every frame now (the last frame's end included)."""
        if self.number_of_frames:
            self.span(self.number_of_frames - 1)

    def check(self, i: int) -> None:
        if not 0 <= i < self.number_of_frames:
            raise IndexError(f"frame index {i} out of range for {self.number_of_frames} frames")

    def bind(self, source: Source) -> None:
        """Attach a (re)opened source after unpickling."""
        self.source = source
        self._attach(source)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["source"] = None
        state.pop("_lock", None)
        state.pop("_cursor", None)  # holds a source and a block of bytes
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()
        if "_walk_pos" in state:
            self._cursor = None


class NativeFrameIndex(FrameIndex):
    kind = "native"

    def __init__(self, header: Header, source: Source, number_of_frames: int, frame_bits: int, be_swap: bool) -> None:
        super().__init__(header, source, number_of_frames, source.walk_block)
        self.frame_bits = frame_bits
        self.be_swap = be_swap
        self._lock = threading.Lock()

    def span(self, i: int) -> FrameSpan:
        self.check(i)
        start_bit = i * self.frame_bits
        start = start_bit // 8
        end = -(-(start_bit + self.frame_bits) // 8)
        declared = self.header.pixel_length
        if declared is not None and end > declared:
            raise FrameIndexError(
                f"Pixel Data holds {declared} bytes, too few for frame {i} (needs bytes {start}..{end})",
                path=self.name, frame=i, offset=self.header.pixel_offset + start,
            )
        skip = 0
        if self.be_swap and (start % 2 or end % 2):
            # 8-bit values in big endian OW are swapped in pairs: read whole pairs.
            skip = start % 2
            start -= skip
            end += end % 2
        return FrameSpan(i, self.header.pixel_offset + start, end - start, bit_offset=start_bit % 8, skip=skip)


class _Growing:
    """An int64 array that grows by doubling (the fragments found so far)."""

    def __init__(self) -> None:
        self.data = np.empty(64, dtype=np.int64)
        self.n = 0

    def append(self, v: int) -> None:
        if self.n == len(self.data):
            self.data = np.concatenate([self.data, np.empty_like(self.data)])
        self.data[self.n] = v
        self.n += 1

    def view(self) -> np.ndarray:
        return self.data[: self.n]


class EncapsulatedFrameIndex(FrameIndex):
    """Frames of encapsulated pixel data, from EOT, BOT, or a walk over item headers."""

    def __init__(self, header: Header, source: Source, number_of_frames: int, start_markers: tuple[bytes, ...], block: int = 64 * 1024) -> None:
        super().__init__(header, source, number_of_frames, block)
        self._lock = threading.Lock()
        self.start_markers = start_markers
        name = header.name
        # The item header and the BOT usually came with the header's first read.
        first = self.read(header.pixel_offset, 8)
        group, elem, bot_length = _ITEM_HEADER.unpack(first)
        if (group << 16 | elem) != ITEM:
            raise FrameIndexError(
                f"encapsulated Pixel Data must start with the Basic Offset Table item, found ({group:04X},{elem:04X})",
                path=name, offset=header.pixel_offset,
            )
        self.first_item = header.pixel_offset + 8 + bot_length  # offsets are relative to this
        size = source.size
        if bot_length % 4 or (size is not None and self.first_item > size):
            raise FrameIndexError(f"the Basic Offset Table length {bot_length} is invalid", path=name, offset=header.pixel_offset)

        self.offsets: np.ndarray | None = None  # item-header offsets of each frame
        self.lengths: np.ndarray | None = None
        if header.extended_offsets is not None:
            self.kind = "EOT"
            self.offsets = self.first_item + header.extended_offsets.astype(np.int64)
            self.lengths = header.extended_lengths.astype(np.int64)
            if (header.extended_offsets > (1 << 62)).any() or (self.lengths < 0).any():
                raise FrameIndexError("the Extended Offset Table holds impossible offsets", path=name, offset=header.pixel_offset)
            # The index holds the table now; don't keep (and pickle) it twice.
            header.extended_offsets = header.extended_lengths = None
        elif bot_length and bot_length // 4 == number_of_frames:
            raw = np.frombuffer(self.read(header.pixel_offset + 8, bot_length), dtype="<u4").astype(np.int64)
            # Offsets past 4 GiB wrap around in 32 bits: add 2**32 at every step down.
            wraps = np.concatenate([[0], np.cumsum(np.diff(raw) < 0)])
            unwrapped = raw + (wraps << 32)
            if raw[0] != 0:
                raise FrameIndexError(f"the Basic Offset Table's first offset is {raw[0]}, not 0", path=name, offset=header.pixel_offset + 8)
            self.kind = "BOT"
            self.offsets = self.first_item + unwrapped
        else:
            # Empty BOT (or one that disagrees with Number of Frames): walk the items.
            self.kind = "walked"
        # The walk, started lazily (also used for the last frame of a BOT).
        self._frag_offsets = _Growing()  # item header offsets
        self._frag_lengths = _Growing()
        self._frame_starts = _Growing()  # index of each frame's first fragment
        self._cursor: Cursor | None = None
        self._walk_pos = self.first_item
        self._walk_done = False
        self._walk_error: Exception | None = None
        self._bot_last_end: int | None = None
        self._last_fragment = 0  # length of the last fragment walked

    # -- the walk --------------------------------------------------------------
    def _walk_step(self) -> bool:
        """Read one more item header; False when the walk has ended."""
        if self._walk_done:
            return False
        if self._cursor is None or self._cursor.source is not self.source:
            self._cursor = Cursor(self.source, self._walk_pos, self.block, self.cache)
        cur = self._cursor
        # Read ahead in large blocks while fragments are small (few requests
        # for many headers; the blocks are reused by the fetches); when they
        # are large, each header costs a request anyway: read only a little.
        cur.block = self.block if self._last_fragment < self.block // 2 else min(self.block, _SMALL_WALK_READ)
        pos = cur.pos
        head = cur.peek(8)
        if len(head) < 8:
            # The file ends without a sequence delimiter: tolerate (partial files).
            self._walk_done = True
            return False
        group, elem, length = _ITEM_HEADER.unpack(head)
        tag = group << 16 | elem
        if tag == SEQUENCE_DELIMITER:
            self._walk_done = True
            return False
        if tag != ITEM:
            self._walk_done = True
            self._walk_error = FrameIndexError(
                f"expected a fragment item or the sequence delimiter, found ({group:04X},{elem:04X})",
                path=self.name, offset=pos,
            )
            return False
        if length == 0xFFFFFFFF:
            self._walk_done = True
            self._walk_error = FrameIndexError("a fragment has undefined length", path=self.name, offset=pos)
            return False
        n = self._frag_offsets.n
        if self.number_of_frames > 1 and n:
            starts_frame = (
                any(cur.peek(8 + len(m))[8:] == m for m in self.start_markers)
                if self.start_markers else True
            )
        else:
            starts_frame = n == 0
        if starts_frame:
            self._frame_starts.append(n)
        self._frag_offsets.append(pos)
        self._frag_lengths.append(length)
        self._last_fragment = length
        cur.skip(8 + length)
        self._walk_pos = cur.pos
        size = self.source.size
        if size is not None and cur.pos > size:
            self._walk_done = True  # the last fragment runs past the end of the file
            return False
        return True

    def _walk_until(self, frame: int) -> None:
        """Walk until frame `frame`'s fragments are all known (or the walk ends)."""
        while self._frame_starts.n <= frame + 1 and self._walk_step():
            pass
        if self._walk_done:
            self._reconcile()

    def _reconcile(self) -> None:
        """At the end of the walk: one fragment per frame when the counts say so."""
        nfrag = self._frag_offsets.n
        if self._frame_starts.n != self.number_of_frames and nfrag == self.number_of_frames:
            self._frame_starts = _Growing()
            for k in range(nfrag):
                self._frame_starts.append(k)

    def _walked_span(self, i: int) -> FrameSpan:
        try:
            self._walk_until(i)
        except StorageError as exc:
            raise exc.with_frame(i) from None
        starts = self._frame_starts
        if i >= starts.n:
            if self._walk_error is not None:
                raise type(self._walk_error)(self._walk_error.message, path=self.name, frame=i, offset=self._walk_error.offset)
            raise FrameIndexError(
                f"the pixel data holds only {starts.n} frames, not {self.number_of_frames}",
                path=self.name, frame=i, offset=self._walk_pos,
            )
        first = starts.data[i]
        if i + 1 < starts.n:
            last = starts.data[i + 1] - 1
        else:
            if not self._walk_done:  # pragma: no cover - _walk_until guarantees it
                raise AssertionError
            last = self._frag_offsets.n - 1
        off = int(self._frag_offsets.data[first])
        end = int(self._frag_offsets.data[last] + 8 + self._frag_lengths.data[last])
        return FrameSpan(i, off, end - off, items=True)

    # -- public ----------------------------------------------------------------
    def span(self, i: int) -> FrameSpan:
        self.check(i)
        with self._lock:
            if self.kind == "EOT":
                return FrameSpan(i, int(self.offsets[i]), 8 + int(self.lengths[i]), items=True, payload=int(self.lengths[i]))
            if self.kind == "BOT":
                start = int(self.offsets[i])
                if i + 1 < self.number_of_frames:
                    end = int(self.offsets[i + 1])
                else:
                    try:
                        end = self._bot_last_end or self._find_end(start)
                    except StorageError as exc:
                        raise exc.with_frame(i) from None
                if end < start:
                    raise FrameIndexError("the Basic Offset Table is not in increasing order", path=self.name, frame=i, offset=start)
                if end == start:
                    size = self.source.size
                    if size is not None and start + 8 > size:
                        raise TruncatedFileError(f"the file ends at {size}, before the frame's first fragment", path=self.name, frame=i, offset=start)
                    raise FrameIndexError("the Basic Offset Table points at no fragment item", path=self.name, frame=i, offset=start)
                return FrameSpan(i, start, end - start, items=True)
            return self._walked_span(i)

    def _find_end(self, start: int) -> int:
        """The end of the last BOT frame: walk its items up to the delimiter."""
        cur = Cursor(self.source, start, self.block, self.cache)
        while True:
            head = cur.peek(8)
            if len(head) < 8:
                break
            group, elem, length = _ITEM_HEADER.unpack(head)
            if (group << 16 | elem) != ITEM:
                break
            cur.skip(8 + length)
        self._bot_last_end = cur.pos
        return cur.pos

    def locate_all(self) -> None:
        self.walk_all()
        super().locate_all()

    def walk_all(self) -> int:
        """Walk to the end (for `info`); returns the number of fragments."""
        with self._lock:
            if self.kind == "walked":
                self._walk_until(self.number_of_frames + 1)
                return self._frag_offsets.n
        return -1
