"""The tile table of a TIFF header in the preamble: dual-personality DICOM-TIFF files.

PS3.10 7.1 leaves the 128-byte preamble to applications. A whole-slide file
can put a TIFF header there, whose image file directories (IFDs; usually in
Data Set Trailing Padding at the end of the file) list each tile's offset and
byte count, pointing at the Pixel Data fragments, so that TIFF readers open
the same file (Clunie, "Dual-Personality DICOM-TIFF for Whole Slide Images",
J Pathol Inform 2019). For a file without an offset table that is every
frame's place for one or two small reads instead of a walk over all of them.

Only the few tags that locate tiles are read (TIFF 6.0 section 15; BigTIFF's
64-bit variant too). The bytes are untrusted: IFDs are followed at most
`MAX_IFDS` deep, none twice, with at most `MAX_ENTRIES` entries, and an array
is read only when it holds exactly the number of tiles wanted and lies inside
the file. Any departure is a `FrameIndexError` naming it (without the path:
the caller, who walks instead, says which file).
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np

from dicomframes.errors import FrameIndexError

#: the first 4 bytes of a TIFF file -> (byte order, BigTIFF)
MAGICS = {b"II*\0": ("<", False), b"MM\0*": (">", False), b"II+\0": ("<", True), b"MM\0+": (">", True)}
#: bytes of the preamble kept in the header: the TIFF header (16 for BigTIFF)
SIGNATURE_BYTES = 16
#: IFDs followed (the chain and SubIFDs) before giving up
MAX_IFDS = 64
#: entries one IFD may hold (TIFF files use a few dozen)
MAX_ENTRIES = 4096
#: bytes read at an IFD beyond its tile arrays' room: its entries and what else follows
WINDOW = 64 * 1024

# field types: code -> (struct character, size)
_TYPES = {3: ("H", 2), 4: ("I", 4), 13: ("I", 4), 16: ("Q", 8), 18: ("Q", 8)}
_TILE_WIDTH, _TILE_LENGTH, _TILE_OFFSETS, _TILE_BYTE_COUNTS, _SUB_IFDS = 322, 323, 324, 325, 330
_SAMPLES_PER_PIXEL, _PLANAR_CONFIGURATION = 277, 284


@dataclass(frozen=True)
class TileTable:
    """Each tile's first byte and byte count in the file, in the IFD's order."""

    offsets: np.ndarray  # int64
    counts: np.ndarray  # int64


def signature(preamble: bytes) -> bytes:
    """The TIFF header at the start of `preamble`, or b"" when it holds none."""
    return bytes(preamble[:SIGNATURE_BYTES]) if preamble[:4] in MAGICS else b""


class _Window:
    """Reads of an untrusted structure: `read(offset, size)` bytes (short only
    at the end of the file), `span` bytes at a time, so that an IFD and the
    arrays written after it cost one request."""

    def __init__(self, read: Callable[[int, int], bytes], size: int | None, span: int = WINDOW) -> None:
        self._read = read
        self.size = size
        self.span = span
        self._start = 0
        self._data = b""

    def get(self, offset: int, n: int, what: str) -> bytes:
        if offset < 0 or (self.size is not None and offset + n > self.size):
            raise FrameIndexError(f"{what} at {offset} ({n} bytes) lies outside the file")
        rel = offset - self._start
        if not (0 <= rel and rel + n <= len(self._data)):
            want = max(n, self.span)
            if self.size is not None:
                want = min(want, self.size - offset)
            self._start, self._data = offset, self._read(offset, want)
            rel = 0
        data = self._data[rel : rel + n]
        if len(data) != n:
            raise FrameIndexError(f"the file ends inside {what} at {offset}")
        return data


def read_tile_table(
    head: bytes, read: Callable[[int, int], bytes], size: int | None, *, tiles: int, tile_shape: tuple[int, int],
    samples: int = 1,
) -> TileTable:
    """The table of the first IFD (in the chain, or among SubIFDs) whose tiles
    are `tile_shape` (rows, columns), interleaved, and number exactly `tiles`.

    `head` is the TIFF header (`signature`); `read(offset, size)` reads the
    file; `size` is its length when known.
    """
    if head[:4] not in MAGICS:
        raise FrameIndexError("the preamble holds no TIFF header")
    order, big = MAGICS[head[:4]]
    if big:
        if len(head) < 16:
            raise FrameIndexError("the BigTIFF header is cut short")
        offset_size, zero, first = struct.unpack(order + "HHQ", head[4:16])
        if offset_size != 8 or zero != 0:
            raise FrameIndexError(f"the BigTIFF header declares {offset_size}-byte offsets")
    else:
        first = struct.unpack(order + "I", head[4:8])[0]
    layout = _Layout(order, big)
    # Room for the IFD and both arrays (8 bytes an entry at most) in the first read.
    window = _Window(read, size, span=WINDOW + 16 * tiles)
    todo: deque[int] = deque([first])
    seen: set[int] = set()
    rows, columns = tile_shape
    found: list[str] = []
    while todo:
        ifd = todo.popleft()
        if ifd == 0:
            continue
        if ifd in seen:
            raise FrameIndexError(f"the IFD at {ifd} is listed twice (a loop)")
        if len(seen) >= MAX_IFDS:
            raise FrameIndexError(f"more than {MAX_IFDS} IFDs")
        seen.add(ifd)
        fields, following = layout.ifd(window, ifd)
        todo.append(following)
        sub = layout.values(window, fields, _SUB_IFDS, MAX_IFDS)
        if sub is not None:
            todo.extend(int(v) for v in sub)
        width, length = (layout.values(window, fields, tag, 1) for tag in (_TILE_WIDTH, _TILE_LENGTH))
        if width is None or length is None or len(width) != 1 or len(length) != 1:
            continue  # a striped image (a thumbnail, a label)
        n_offsets = fields.get(_TILE_OFFSETS, (0, -1, b""))[1]
        n_counts = fields.get(_TILE_BYTE_COUNTS, (0, -1, b""))[1]
        found.append(f"{n_offsets} tiles of {int(width[0])}x{int(length[0])}")
        if (int(width[0]), int(length[0])) != (columns, rows) or not n_offsets == n_counts == tiles:
            continue
        spp = layout.values(window, fields, _SAMPLES_PER_PIXEL, 1)
        planar = layout.values(window, fields, _PLANAR_CONFIGURATION, 1)
        if (int(spp[0]) if spp is not None and len(spp) else 1) != samples:
            continue
        if samples > 1 and planar is not None and len(planar) and int(planar[0]) == 2:
            continue  # a tile per sample: not a frame per tile
        offsets = layout.values(window, fields, _TILE_OFFSETS, tiles)
        counts = layout.values(window, fields, _TILE_BYTE_COUNTS, tiles)
        if offsets is None or counts is None:
            raise FrameIndexError(f"the IFD at {ifd} lists its tiles with a type that is not an integer")
        return TileTable(offsets, counts)
    listed = "; it lists " + ", ".join(found) if found else ""
    raise FrameIndexError(f"no IFD lists {tiles} tiles of {columns}x{rows}{listed}")


class _Layout:
    """How one TIFF encodes IFDs: byte order, and classic or BigTIFF sizes."""

    def __init__(self, order: str, big: bool) -> None:
        self.order = order
        # struct characters of: the IFD's entry count, a field's value count, an offset
        self.entries_fmt, self.count_fmt, self.offset_fmt = ("Q", "Q", "Q") if big else ("H", "I", "I")
        self.entry_size, self.inline = (20, 8) if big else (12, 4)

    def ifd(self, window: _Window, offset: int) -> tuple[dict[int, tuple[int, int, bytes]], int]:
        """The IFD's fields (tag -> (type, count, value or offset field)) and the next IFD's offset."""
        order, head = self.order, struct.calcsize(self.entries_fmt)
        entries = struct.unpack(order + self.entries_fmt, window.get(offset, head, "an IFD"))[0]
        if entries > MAX_ENTRIES:
            raise FrameIndexError(f"the IFD at {offset} claims {entries} entries")
        size, count_size = self.entry_size, struct.calcsize(self.count_fmt)
        raw = window.get(offset + head, entries * size + struct.calcsize(self.offset_fmt), "an IFD's entries")
        fields = {}
        for k in range(entries):
            entry = raw[k * size : (k + 1) * size]
            tag, kind, n = struct.unpack(order + "HH" + self.count_fmt, entry[: 4 + count_size])
            fields[tag] = (kind, n, entry[4 + count_size :])
        return fields, struct.unpack(order + self.offset_fmt, raw[entries * size :])[0]

    def values(self, window: _Window, fields: dict[int, tuple[int, int, bytes]], tag: int, most: int) -> np.ndarray | None:
        """The tag's values as int64: None when absent, not of an integer type, or more than `most`."""
        if tag not in fields:
            return None
        kind, n, value = fields[tag]
        if kind not in _TYPES or n > most:
            return None
        char, item = _TYPES[kind]
        if n * item <= self.inline:
            data = value[: n * item]
        else:
            where = struct.unpack(self.order + self.offset_fmt, value)[0]
            data = window.get(where, n * item, f"the values of tag {tag}")
        return np.frombuffer(data, dtype=self.order + char, count=n).astype(np.int64)
