"""FrameIndex: where the bytes of frame i are, one class per way of knowing it.

- `NativeFrameIndex`: native data, arithmetic.
- `ExtendedOffsetTableIndex` ("EOT"): the Extended Offset Table gives every
  frame's offset and length.
- `BasicOffsetTableIndex` ("BOT"): the Basic Offset Table gives every frame's
  offset (32-bit, unwrapped past 4 GiB); the last frame's end is found by
  walking its items.
- `TiffTileIndex` ("TIFF"): no table, but the preamble's TIFF header lists
  every tile (a dual-personality DICOM-TIFF file); each frame's item header is
  checked as it is read, and the first that disagrees turns it into a walk.
- `WalkedIndex` ("walked"): no usable table; a lazy walk over item headers
  that stops as soon as the frames asked for are located.

`build_index` picks the class for a file. Everything is kept in numpy arrays,
never a Python object per fragment.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from dicomframes._dicom.tags import ITEM, SEQUENCE_DELIMITER, UNDEFINED
from dicomframes.errors import FrameIndexError, FrameNumberError, InvalidFileError, StorageError, TruncatedFileError
from dicomframes.frames.header import Header
from dicomframes.frames.span import ITEM_HEADER, FrameBytes, FrameSpan
from dicomframes.frames.tiff_tiles import TileTable, read_tile_table
from dicomframes.io.cursor import BlockCache, Cursor, read_through
from dicomframes.io.source import Source

#: the walk reads this much at an item header when fragments are large
_SMALL_WALK_READ = 64 * 1024
#: walk blocks read at once from a remote source
_WALK_READAHEAD = 4

log = logging.getLogger("dicomframes")


def cache_capacity(source: Source, block: int) -> int:
    """Bytes of blocks an index asks its source's `BlockCache` to keep.

    Enough for the walk to run one fetch batch (and a block or two) ahead of
    the fetches that consume its blocks, so a file iterated in order is read
    once; never more than 64 walk blocks (4 MiB for a local file).
    """
    batch = source.fetch_policy().batch_bytes
    return max(4 * block, min(2 * batch + 2 * block, 64 * block))


def _adopt_head(header: Header, source: Source, block: int) -> BlockCache:
    """The source's block cache, with room for an index's blocks, holding the
    bytes after the Pixel Data element that came with the header's reads
    (`Header.pixel_head`, taken over here and emptied: the header pickles small)."""
    head = header.pixel_head
    cache = source.block_cache
    cache.reserve(max(cache_capacity(source, block), len(head)))
    if head:
        cache.add(header.pixel_offset, head)
        header.pixel_head = b""
    return cache


def _read_exact(source: Source, cache: BlockCache, name: str, offset: int, size: int, frame: int | None) -> bytes:
    try:
        data = read_through(source, cache, [(offset, size)])[0]
    except StorageError as exc:
        raise (exc if frame is None else exc.with_frame(frame)) from None
    if len(data) != size:
        raise TruncatedFileError(
            f"expected {size} bytes but the file ends after {len(data)}",
            path=name, frame=frame, offset=offset,
        )
    return data


class FrameIndex(ABC):
    """Frame number -> `FrameSpan`.

    The bytes an index reads go through its source's `BlockCache`
    (``source.block_cache``, also ``index.cache``): the bytes after the Pixel
    Data element that came with the header, and the blocks of the walk over
    item headers, so the fetches (`dicomframes.frames.fetch.fetch`) do not
    read them twice. An index pickles without its source; `bind` attaches one.
    """

    #: how frames are located, as ``reader.info.index_kind`` reports it
    kind: ClassVar[str] = ""
    #: building it read more than the header did (worth keeping in an index cache)
    costly: ClassVar[bool] = False
    #: its spans need `recheck`ing against the bytes read
    rechecks: ClassVar[bool] = False

    def __init__(self, header: Header, source: Source, number_of_frames: int, block: int = 64 * 1024) -> None:
        self.header = header
        self.source = source
        self.name = header.name
        self.number_of_frames = number_of_frames
        self.block = block
        self.cache = _adopt_head(header, source, block)
        self._lock = threading.Lock()

    def read(self, offset: int, size: int, frame: int | None = None) -> bytes:
        """Exactly `size` bytes at `offset`, from the cache where it holds them."""
        return _read_exact(self.source, self.cache, self.name, offset, size, frame)

    def __len__(self) -> int:
        return self.number_of_frames

    @abstractmethod
    def span(self, i: int) -> FrameSpan:
        """Where frame `i`'s bytes are."""

    def locate_all(self) -> None:
        """Locate every frame now (the last frame's end included)."""
        if self.number_of_frames:
            self.span(self.number_of_frames - 1)

    def walk_all(self) -> int:
        """Walk the item headers to the end (for `info`): the number of
        fragments, or -1 for an index that does not walk them."""
        return -1

    @property
    def walked_to(self) -> int:
        """How far a walk over item headers has read (0 for indexes that do not walk)."""
        return 0

    def recheck(self, span: FrameSpan, data: FrameBytes) -> FrameSpan | None:
        """None when `data`, the bytes read for `span`, are the frame's; else
        where the frame really is. Only an index built on another format's
        numbers (`TiffTileIndex`) doubts its spans."""
        return None

    def kept(self) -> FrameIndex:
        """The index an index file keeps: this one, or what it turned into."""
        return self

    def check(self, i: int) -> None:
        """Raise `FrameNumberError` (an `IndexError`) unless 0 <= i < the number of frames."""
        if not 0 <= i < self.number_of_frames:
            raise FrameNumberError(f"frame index {i} out of range for {self.number_of_frames} frames", path=self.name)

    def bind(self, source: Source) -> None:
        """Attach a (re)opened source after unpickling: its block cache becomes
        the index's, with room for as many bytes as before."""
        cache = source.block_cache
        cache.reserve(self.cache.capacity)
        self.source = source
        self.cache = cache

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["source"] = None
        state.pop("_lock", None)
        return state  # the cache pickles empty (see BlockCache), keeping its capacity

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


class NativeFrameIndex(FrameIndex):
    kind = "native"

    def __init__(self, header: Header, source: Source, number_of_frames: int, frame_bits: int, be_swap: bool) -> None:
        super().__init__(header, source, number_of_frames, source.walk_block)
        self.frame_bits = frame_bits
        self.be_swap = be_swap

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

    def regular(self) -> tuple[int, int, int] | None:
        """(where frame 0 starts, bytes per frame, frames wholly inside Pixel Data's
        declared length) where frame i's span is simply ``(start + i * size, size)``
        for each of those: whole bytes, no pairs to swap; else None. A reader of
        many frames then needs no span object per frame."""
        if self.frame_bits % 8 or self.be_swap:
            return None
        size = self.frame_bits // 8
        declared = self.header.pixel_length
        whole = self.number_of_frames if declared is None or not size else min(self.number_of_frames, declared // size)
        return self.header.pixel_offset, size, whole


@dataclass(frozen=True)
class TableItem:
    """The Basic Offset Table item that encapsulated Pixel Data starts with."""

    #: its value length: 4 bytes per offset, 0 when empty
    length: int
    #: False when the writer left the item out and Pixel Data starts with a fragment
    present: bool = True

    def first_fragment(self, pixel_offset: int) -> int:
        """Where the first fragment item starts, given where Pixel Data's value does."""
        return pixel_offset + 8 + self.length if self.present else pixel_offset


class EncapsulatedIndex(FrameIndex):
    """Encapsulated Pixel Data: the Basic Offset Table item, then fragment items.

    Offsets in either offset table are relative to `first_item`, the first
    item after the Basic Offset Table. `table` is that item, when already
    read (`build_index` reads it to choose the class); else it is read here.
    """

    def __init__(
        self, header: Header, source: Source, number_of_frames: int, block: int = 64 * 1024,
        *, table: TableItem | None = None,
    ) -> None:
        super().__init__(header, source, number_of_frames, block)
        if table is None:
            table = read_table_item(header, source, block)
        self.table_length = table.length
        self.first_item = table.first_fragment(header.pixel_offset)


def read_table_item(header: Header, source: Source, block: int = 64 * 1024, start_markers: tuple[bytes, ...] = ()) -> TableItem:
    """The Basic Offset Table item that encapsulated Pixel Data starts with,
    checked to be an item of whole 32-bit offsets that ends inside the file.

    A table's first offset is 0 (PS3.5 A.4). Some writers (wsidicom's
    `OffsetTableType.NONE`) leave the item out: an item that starts with one
    of the codec's `start_markers` is a fragment, not a table, and is read as
    such, with a warning.
    """
    cache = _adopt_head(header, source, block)  # the item usually came with the header's first read
    group, elem, length = ITEM_HEADER.unpack(_read_exact(source, cache, header.name, header.pixel_offset, 8, None))
    if (group << 16 | elem) != ITEM:
        raise FrameIndexError(
            f"encapsulated Pixel Data must start with the Basic Offset Table item, found ({group:04X},{elem:04X})",
            path=header.name, offset=header.pixel_offset,
        )
    start = header.pixel_offset + 8
    peek = min(length, max([4, *(len(m) for m in start_markers)]))
    if source.size is not None:
        peek = max(0, min(peek, source.size - start))
    head = _read_exact(source, cache, header.name, start, peek, None) if length >= 4 else b""
    if any(head.startswith(m) for m in start_markers):
        log.warning(
            "%s: Pixel Data starts with a fragment, not with the Basic Offset Table item (the writer left it out); "
            "reading every item as a fragment", header.name,
        )
        return TableItem(0, present=False)
    size = source.size
    if length % 4 or (size is not None and start + length > size):
        raise FrameIndexError(f"the Basic Offset Table length {length} is invalid", path=header.name, offset=header.pixel_offset)
    if head[:4] != b"\0\0\0\0"[: len(head)]:
        first = int.from_bytes(head[:4], "little")
        raise FrameIndexError(f"the Basic Offset Table's first offset is {first}, not 0", path=header.name, offset=start)
    return TableItem(length)


class ExtendedOffsetTableIndex(EncapsulatedIndex):
    """Every frame's offset and length from the Extended Offset Table (64-bit):
    each frame is one item."""

    kind = "EOT"

    def __init__(
        self, header: Header, source: Source, number_of_frames: int, block: int = 64 * 1024,
        *, table: TableItem | None = None,
    ) -> None:
        super().__init__(header, source, number_of_frames, block, table=table)
        offsets, lengths = header.extended_offsets, header.extended_lengths
        if offsets is None or lengths is None:
            raise FrameIndexError("the file has no Extended Offset Table (and Lengths)", path=self.name, offset=header.pixel_offset)
        self.offsets = self.first_item + offsets.astype(np.int64)  # item-header offsets of each frame
        self.lengths = lengths.astype(np.int64)
        if (offsets > (1 << 62)).any() or (self.lengths < 0).any():
            raise FrameIndexError("the Extended Offset Table holds impossible offsets", path=self.name, offset=header.pixel_offset)
        # The index holds the table now; don't keep (and pickle) it twice.
        header.extended_offsets = header.extended_lengths = None
        self._last_slack = 0
        if self._lengths_count_item_headers():
            log.warning(
                "%s: the Extended Offset Table Lengths count each item's 8-byte header (as wsidicom writes them); "
                "reading each frame as the item its offset points at", self.name,
            )
            # Each length is the distance to the next frame's item; the last
            # one may or may not count its header: its item's length decides.
            self.lengths[:-1] -= 8
            self._last_slack = 8

    def _lengths_count_item_headers(self) -> bool:
        """Whether the lengths include each item's header, against PS3.5 A.4.

        No doubt about it when each frame's item starts exactly `length` bytes
        after the previous one's (a conformant table is 8 short of that) and
        the first item's own length is 8 less than its table length. Costs at
        most one 8-byte read, usually of bytes the header's read brought.
        """
        offsets, lengths = self.offsets, self.lengths
        if len(lengths) < 2 or lengths[0] < 8 or not np.array_equal(np.diff(offsets), lengths[:-1]):
            return False
        try:
            head = _read_exact(self.source, self.cache, self.name, int(offsets[0]), 8, 0)
        except StorageError:
            return False  # a damaged file: the frame's read says what is wrong
        group, elem, length = ITEM_HEADER.unpack(head)
        return (group << 16 | elem) == ITEM and length == lengths[0] - 8

    def span(self, i: int) -> FrameSpan:
        self.check(i)
        length = int(self.lengths[i])
        slack = self._last_slack if i == self.number_of_frames - 1 else 0
        return FrameSpan(i, int(self.offsets[i]), 8 + length, items=True, payload=length, payload_slack=slack)


class BasicOffsetTableIndex(EncapsulatedIndex):
    """Every frame's offset from the Basic Offset Table, one per frame; a
    frame ends where the next begins, the last one where its items end."""

    kind = "BOT"

    def __init__(
        self, header: Header, source: Source, number_of_frames: int, block: int = 64 * 1024,
        *, table: TableItem | None = None,
    ) -> None:
        super().__init__(header, source, number_of_frames, block, table=table)
        if self.table_length != 4 * number_of_frames:
            raise FrameIndexError(
                f"the Basic Offset Table holds {self.table_length // 4} offsets for {number_of_frames} frames",
                path=self.name, offset=header.pixel_offset,
            )
        raw = np.frombuffer(self.read(header.pixel_offset + 8, self.table_length), dtype="<u4")
        if raw[0] != 0:
            raise FrameIndexError(f"the Basic Offset Table's first offset is {raw[0]}, not 0", path=self.name, offset=header.pixel_offset + 8)
        self.offsets = self.first_item + unwrap_offsets(raw)  # item-header offsets of each frame
        self._last_end: int | None = None  # where the last frame's items end, once walked

    def span(self, i: int) -> FrameSpan:
        self.check(i)
        with self._lock:
            start = int(self.offsets[i])
            if i + 1 < self.number_of_frames:
                end = int(self.offsets[i + 1])
            else:
                try:
                    end = self._last_end if self._last_end is not None else self._find_end(start)
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

    def _find_end(self, start: int) -> int:
        """The end of the last frame: walk its items up to the delimiter."""
        cur = Cursor(self.source, start, self.block, self.cache)
        while True:
            head = cur.peek(8)
            if len(head) < 8:
                break
            group, elem, length = ITEM_HEADER.unpack(head)
            if (group << 16 | elem) != ITEM:
                break
            cur.skip(8 + length)
        self._last_end = cur.pos
        return cur.pos


def unwrap_offsets(raw: np.ndarray) -> np.ndarray:
    """Basic Offset Table offsets (increasing, 32-bit) as int64, unwrapped:
    offsets past 4 GiB wrap around, so add 2**32 at every step down."""
    raw = raw.astype(np.int64)
    wraps = np.concatenate([[0], np.cumsum(np.diff(raw) < 0)]).astype(np.int64)
    return raw + (wraps << 32)


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


class WalkedIndex(EncapsulatedIndex):
    """No usable offset table: walk the item headers, lazily, as far as the
    frames asked for.

    A fragment starts a frame when it begins with one of `start_markers` (the
    codec's, e.g. JPEG's SOI); without markers every fragment is a frame. At
    the end of the walk, as many fragments as frames means one fragment per
    frame, whatever the markers said.
    """

    kind = "walked"

    def __init__(
        self, header: Header, source: Source, number_of_frames: int, start_markers: tuple[bytes, ...] = (),
        block: int = 64 * 1024, *, table: TableItem | None = None,
    ) -> None:
        super().__init__(header, source, number_of_frames, block, table=table)
        self.start_markers = start_markers
        # Remote walks are bound by round trips: read a few blocks at once,
        # concurrently, with room for them in the cache (so none is read twice).
        self.readahead = min(_WALK_READAHEAD, int(getattr(source, "concurrency", 1))) if source.remote else 1
        if self.readahead > 1:
            self.cache.reserve(self.cache.capacity + (self.readahead - 1) * block)
        self._frag_offsets = _Growing()  # item header offsets
        self._frag_lengths = _Growing()
        self._frame_starts = _Growing()  # index of each frame's first fragment
        self._cursor: Cursor | None = None
        self._walk_pos = self.first_item
        self._walk_done = False
        self._walk_error: FrameIndexError | None = None
        self._last_fragment = 0  # length of the last fragment walked

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
        cur.readahead = getattr(self, "readahead", 1) if cur.block == self.block else 1
        pos = cur.pos
        head = cur.peek(8)
        if len(head) < 8:
            # The file ends without a sequence delimiter: tolerate (partial files).
            self._walk_done = True
            return False
        group, elem, length = ITEM_HEADER.unpack(head)
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
        if length == UNDEFINED:
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

    def span(self, i: int) -> FrameSpan:
        self.check(i)
        with self._lock:
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

    def locate_all(self) -> None:
        self.walk_all()
        super().locate_all()

    @property
    def walked_to(self) -> int:
        return self._walk_pos

    def walk_all(self) -> int:
        with self._lock:
            self._walk_until(self.number_of_frames + 1)
            return self._frag_offsets.n

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_cursor"] = None  # holds a source and a block of bytes
        return state


class TiffTileIndex(EncapsulatedIndex):
    """Every frame's item from the tile table of the preamble's TIFF (a
    dual-personality DICOM-TIFF file; `dicomframes.frames.tiff_tiles`).

    Built only when the table lists the fragments themselves: tile i's bytes
    are the value of the i-th item after the Basic Offset Table, the items one
    after another. The numbers are another format's, so each frame's item
    header is checked as it is read (`recheck`, by `IndexedFrames`); at the
    first that disagrees the index warns and walks the item headers instead.
    """

    kind = "TIFF"
    costly = True  # the IFDs lie at the end of the file: a read the header did not make
    rechecks = True

    def __init__(
        self, header: Header, source: Source, number_of_frames: int, tiles: TileTable,
        start_markers: tuple[bytes, ...] = (), block: int = 64 * 1024, *, table: TableItem | None = None,
    ) -> None:
        super().__init__(header, source, number_of_frames, block, table=table)
        self.offsets = tiles.offsets - 8  # item-header offsets of each frame
        self.lengths = tiles.counts + (tiles.counts & 1)  # item lengths: values are padded to even
        self.start_markers = start_markers
        #: the walk that took over from the table, once the table was found wrong
        self.walk: WalkedIndex | None = None

    def span(self, i: int) -> FrameSpan:
        self.check(i)
        if self.walk is not None:
            return self.walk.span(i)
        return FrameSpan(i, int(self.offsets[i]), 8 + int(self.lengths[i]), items=True)

    def recheck(self, span: FrameSpan, data: FrameBytes) -> FrameSpan | None:
        i = span.frame
        if span.offset != self.offsets[i] or span.length != 8 + self.lengths[i]:
            return None  # the walk's span
        group, elem, length = ITEM_HEADER.unpack_from(data, 0)
        if (group << 16 | elem) == ITEM and length == self.lengths[i]:
            return None
        with self._lock:
            if self.walk is None:
                log.warning(
                    "%s: frame %d: the TIFF tile table points at an item of %d bytes at %d, but the file holds "
                    "(%04X,%04X) of %d bytes there; walking the item headers instead",
                    self.name, i, self.lengths[i], span.offset, group, elem, length,
                )
                present = self.first_item != self.header.pixel_offset
                self.walk = WalkedIndex(
                    self.header, self.source, self.number_of_frames, self.start_markers, self.block,
                    table=TableItem(self.table_length, present=present),
                )
        return self.walk.span(i)

    def kept(self) -> FrameIndex:
        return self.walk if self.walk is not None else self

    @property
    def walked_to(self) -> int:
        return self.walk.walked_to if self.walk is not None else 0

    def walk_all(self) -> int:
        return self.walk.walk_all() if self.walk is not None else -1

    def bind(self, source: Source) -> None:
        super().bind(source)
        if self.walk is not None:
            self.walk.bind(source)


def tiff_index(
    header: Header, source: Source, frames: int, start_markers: tuple[bytes, ...], block: int, table: TableItem,
) -> TiffTileIndex | None:
    """The index from the preamble's TIFF tile table, or None (with a warning
    saying why) when it does not list the fragments one by one."""
    first = table.first_fragment(header.pixel_offset)
    cache = _adopt_head(header, source, block)
    size = source.find_size()  # the table's bounds are checked against it
    try:
        tiles = read_tile_table(
            header.tiff_signature, lambda off, n: read_through(source, cache, [(off, n)])[0], size, tiles=frames,
            tile_shape=(int(header.get("Rows") or 0), int(header.get("Columns") or 0)),
            samples=int(header.get("SamplesPerPixel") or 1),
        )
        offsets, counts = tiles.offsets, tiles.counts
        items = counts + (counts & 1)
        if (counts <= 0).any():
            raise FrameIndexError("it lists an empty tile")
        if offsets[0] != first + 8:
            raise FrameIndexError(f"its first tile starts at {offsets[0]}, not at the first fragment's value ({first + 8})")
        if not np.array_equal(np.diff(offsets), items[:-1] + 8):
            k = int(np.flatnonzero(np.diff(offsets) != items[:-1] + 8)[0]) + 1
            raise FrameIndexError(f"tile {k} does not start where the item after tile {k - 1} does")
        end = int(offsets[-1] + items[-1])
        if size is not None and end > size:
            raise FrameIndexError(f"its last tile ends at {end}, past the end of the file ({size})")
    except FrameIndexError as exc:
        log.warning("%s: the preamble holds a TIFF header, but its tile table is not used (%s); walking the item "
                    "headers", header.name, exc.message)
        return None
    return TiffTileIndex(header, source, frames, tiles, start_markers, block, table=table)


def build_index(
    header: Header, source: Source, number_of_frames: int | None = None, *,
    frame_bits: int | None = None, be_swap: bool = False, block: int = 64 * 1024,
) -> FrameIndex:
    """The frame index for `header`'s pixel data in `source` (the data set's source).

    `number_of_frames` defaults to the header's Number of Frames (1 when
    absent). Native data needs `frame_bits`, the bits of one frame as stored
    (`PixelFormat.native_frame_bits`), and `be_swap` (`PixelFormat.be_swap_ow`).
    Encapsulated data: the Extended Offset Table where the file has one, else
    the Basic Offset Table when it holds one offset per frame, else the tile
    table of a TIFF header in the preamble (`tiff_index`), else a walk over
    the item headers (an empty table, or one that disagrees with Number of
    Frames). `block` is the walk's read size.
    """
    frames = (header.get("NumberOfFrames") or 1) if number_of_frames is None else number_of_frames
    if not isinstance(frames, int) or frames < 1:
        raise InvalidFileError(f"Number of Frames is {frames!r}", path=header.name)
    ts = header.transfer_syntax
    if not ts.encapsulated:
        if header.pixel_length is None:
            raise InvalidFileError(
                f"Pixel Data has undefined length but {ts.name} is not encapsulated",
                path=header.name, offset=header.pixel_offset,
            )
        if frame_bits is None:
            raise ValueError("native pixel data needs frame_bits, the bits of one frame as stored")
        return NativeFrameIndex(header, source, frames, frame_bits, be_swap)
    if header.pixel_length is not None:
        raise InvalidFileError(
            f"{ts.name} needs encapsulated Pixel Data, but its length is defined",
            path=header.name, offset=header.pixel_offset,
        )
    table = read_table_item(header, source, block, ts.frame_start_markers)
    if header.extended_offsets is not None:
        return ExtendedOffsetTableIndex(header, source, frames, block, table=table)
    if table.length and table.length // 4 == frames:
        return BasicOffsetTableIndex(header, source, frames, block, table=table)
    if header.tiff_signature:
        tiff = tiff_index(header, source, frames, ts.frame_start_markers, block, table)
        if tiff is not None:
            return tiff
    return WalkedIndex(header, source, frames, ts.frame_start_markers, block, table=table)
