"""Explicit VR Little Endian data elements at the byte level: what `decompress` copies and encodes.

`decompress` copies a file's elements as byte ranges (a 15 MB Per-Frame
Functional Groups Sequence is copied, not parsed) and encodes anew only the few
it changes. This module holds the pieces:

- `walk`: the top-level elements of an Explicit VR Little Endian data set as
  byte ranges, reading only element and item headers (values are skipped;
  undefined-length sequences are walked item header by item header);
- `rewrite`: a walk plus a few edits (replace, insert, delete) -> the list of
  byte ranges to copy and encoded elements to write, in tag order;
- `element`, `text_element`, `us_element`, `ul_element`: encode one element;
- `reencode`: a data set in another encoding (Implicit VR, Big Endian, or one
  encoded differently from its transfer syntax) -> Explicit VR Little Endian
  bytes, through pydicom (an optional dependency: only such files need it).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterable, Iterator

from dicomframes.errors import (
    DicomFramesError,
    InvalidFileError,
    MissingDependencyError,
    TranscodeError,
    TruncatedFileError,
)
from dicomframes.io.cursor import Cursor
from dicomframes.io.source import Source

UNDEFINED = 0xFFFFFFFF
ITEM = 0xFFFEE000
ITEM_DELIMITER = 0xFFFEE00D
SEQUENCE_DELIMITER = 0xFFFEE0DD
PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # Pixel Data, Float, Double Float

#: VRs whose explicit length field is 4 bytes, after 2 reserved bytes (PS3.5 7.1.2)
LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT", "SV", "UV"})
_MAX_DEPTH = 64
#: the most bytes of elements `reencode` accepts (they are held in memory)
MAX_REENCODE_BYTES = 256 << 20


def tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


# -- encoding ------------------------------------------------------------------------------


def element(tag: int, vr: str, value: bytes) -> bytes:
    """One Explicit VR Little Endian element; odd values padded as pydicom pads them."""
    if len(value) % 2:
        value += b"\x00" if vr in ("UI", "OB", "UN") else b" "
    group, elem = tag >> 16, tag & 0xFFFF
    if vr in LONG_VRS:
        if len(value) > 0xFFFFFFFE:
            raise ValueError(f"{tag_text(tag)}: a {len(value)}-byte value is too long for a defined length")
        return struct.pack("<HH2s2xI", group, elem, vr.encode(), len(value)) + value
    if len(value) > 0xFFFF:
        raise ValueError(f"{tag_text(tag)}: a {len(value)}-byte value is too long for VR {vr}")
    return struct.pack("<HH2sH", group, elem, vr.encode(), len(value)) + value


def text_element(tag: int, vr: str, text: str) -> bytes:
    return element(tag, vr, text.encode("ascii"))


def us_element(tag: int, value: int) -> bytes:
    return element(tag, "US", struct.pack("<H", value))


def ul_element(tag: int, value: int) -> bytes:
    return element(tag, "UL", struct.pack("<I", value))


def pixel_header(tag: int, vr: str, length: int | None) -> bytes:
    """The header of a Pixel Data element (``None``: undefined length, encapsulated)."""
    return struct.pack("<HH2s2xI", tag >> 16, tag & 0xFFFF, vr.encode(), UNDEFINED if length is None else length)


def item_header(length: int) -> bytes:
    return struct.pack("<HHI", 0xFFFE, 0xE000, length)


SEQUENCE_DELIMITER_BYTES = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)


# -- walking -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ElementRange:
    """Where one top-level element lies in its source."""

    tag: int
    vr: str
    #: offset of the element's first byte (its tag)
    start: int
    #: offset of its value
    value_start: int
    #: offset just past it; for Pixel Data of undefined length, None
    end: int | None
    #: the value length as stored (0xFFFFFFFF: undefined)
    length: int


class _Walker:
    def __init__(self, source: Source, offset: int, block: int) -> None:
        self.source = source
        self.cur = Cursor(source, offset, block)

    def error(self, cls, message: str, offset: int | None = None):
        return cls(message, path=self.source.name, offset=self.cur.pos if offset is None else offset)

    def header(self, explicit: bool) -> tuple[int, str | None, int]:
        """Tag, VR (None where implicit, and for items and delimiters), length."""
        start = self.cur.pos
        h = self.cur.read(8, "an element header")
        group, elem, short = struct.unpack("<HH4s", h)
        tag = group << 16 | elem
        if group == 0xFFFE or not explicit:
            return tag, None, struct.unpack("<I", short)[0]
        raw = h[4:6]
        if not (65 <= raw[0] <= 90 and 65 <= raw[1] <= 90):
            raise self.error(InvalidFileError, f"element {tag_text(tag)} has no valid VR ({raw!r})", start)
        vr = raw.decode()
        if vr in LONG_VRS:
            return tag, vr, struct.unpack("<I", self.cur.read(4, "an element header"))[0]
        return tag, vr, struct.unpack("<H", h[6:])[0]

    def skip(self, length: int, tag: int) -> None:
        size = self.source.size
        if size is not None and self.cur.pos + length > size:
            raise self.error(TruncatedFileError, f"element {tag_text(tag)} declares {length} bytes but the file ends at {size}")
        self.cur.skip(length)

    def skip_undefined(self, tag: int, vr: str | None, depth: int, explicit: bool) -> None:
        if depth > _MAX_DEPTH:
            raise self.error(InvalidFileError, f"sequences nested deeper than {_MAX_DEPTH} levels")
        if vr == "UN":
            # An undefined-length UN is a sequence encoded as Implicit VR LE (PS3.5 6.2.2).
            self.skip_sequence(depth + 1, False)
        elif vr in (None, "SQ", "OB", "OW"):
            # Sequences, and encapsulated pixel data (of an icon image), are items up to a delimiter.
            self.skip_sequence(depth + 1, explicit)
        else:
            raise self.error(InvalidFileError, f"element {tag_text(tag)} with VR {vr} has undefined length")

    def skip_sequence(self, depth: int, explicit: bool) -> None:
        while True:
            start = self.cur.pos
            tag, _, length = self.header(False)
            if tag == SEQUENCE_DELIMITER:
                return
            if tag != ITEM:
                raise self.error(InvalidFileError, f"expected an item in a sequence, found {tag_text(tag)}", start)
            if length == UNDEFINED:
                self.skip_item(depth + 1, explicit)
            else:
                self.skip(length, tag)

    def skip_item(self, depth: int, explicit: bool) -> None:
        while True:
            tag, vr, length = self.header(explicit)
            if tag == ITEM_DELIMITER:
                return
            if length == UNDEFINED:
                self.skip_undefined(tag, vr, depth, explicit)
            else:
                self.skip(length, tag)


def walk(source: Source, start: int, end: int | None = None, *, block: int = 1 << 20) -> Iterator[ElementRange]:
    """The top-level elements of the Explicit VR Little Endian data set at `start`.

    Stops at `end`, at the end of the source, or after yielding a Pixel Data
    element (whose value is not walked: its `end` is None when its length is
    undefined). Only element and item headers are read.
    """
    w = _Walker(source, start, block)
    cur = w.cur
    while end is None or cur.pos < end:
        if cur.at_end():
            return
        pos = cur.pos
        tag, vr, length = w.header(True)
        if tag >> 16 == 0xFFFE:
            raise w.error(InvalidFileError, f"unexpected item or delimiter tag {tag_text(tag)} at the top level", pos)
        value_start = cur.pos
        if tag in PIXEL_TAGS:
            yield ElementRange(tag, vr or "OB", pos, value_start, None if length == UNDEFINED else value_start + length, length)
            return
        if length == UNDEFINED:
            w.skip_undefined(tag, vr, 1, True)
        else:
            w.skip(length, tag)
        yield ElementRange(tag, vr or "UN", pos, value_start, cur.pos, length)


# -- rewriting -------------------------------------------------------------------------------

#: a piece of output: a (start, end) range of the source to copy, or bytes to write
Piece = tuple[int, int] | bytes


@dataclass
class Edits:
    """Changes to a run of elements, by tag.

    `replace`: tag -> the new encoded element, written where the old one was, or
    in tag order if there was none (unless the tag is in `only_if_present`);
    `delete`: tags dropped (and Group Lengths, with `drop_group_lengths`).
    """

    replace: dict[int, bytes]
    delete: frozenset[int] = frozenset()
    only_if_present: frozenset[int] = frozenset()
    #: drop the retired Group Length elements (gggg,0000) of groups above 6, as
    #: pydicom's writer does (PS3.5 7.2): a changed element would falsify them
    drop_group_lengths: bool = False

    def deletes(self, tag: int) -> bool:
        return tag in self.delete or (self.drop_group_lengths and tag & 0xFFFF == 0 and tag >> 16 > 6)


def rewrite(elements: Iterable[ElementRange], edits: Edits) -> tuple[list[Piece], set[int]]:
    """Pieces of output for `elements` with `edits` applied, in tag order.

    Neighbouring copied elements merge into one range. Returns the pieces and
    the tags seen.
    """
    pieces: list[Piece] = []
    run: list[int] | None = None
    seen: set[int] = set()
    to_insert = sorted(t for t in edits.replace if t not in edits.only_if_present)

    def flush() -> None:
        nonlocal run
        if run is not None:
            pieces.append((run[0], run[1]))
            run = None

    def emit(data: bytes) -> None:
        flush()
        pieces.append(data)

    for el in elements:
        assert el.end is not None
        while to_insert and to_insert[0] < el.tag:
            emit(edits.replace[to_insert.pop(0)])
        seen.add(el.tag)
        if el.tag in edits.replace:
            if el.tag in to_insert:
                to_insert.remove(el.tag)
            emit(edits.replace[el.tag])
            continue
        if edits.deletes(el.tag):
            flush()
            continue
        if run is not None and run[1] == el.start:
            run[1] = el.end
        else:
            flush()
            run = [el.start, el.end]
    for tag in to_insert:
        emit(edits.replace[tag])
    flush()
    return pieces, seen


def pieces_size(pieces: Iterable[Piece]) -> int:
    return sum(len(p) if isinstance(p, bytes) else p[1] - p[0] for p in pieces)


# -- re-encoding through pydicom ----------------------------------------------------------------


def _swap_words(ds) -> None:
    """Big endian OW/OL/OF/OD/OV values, kept as raw bytes by pydicom: to little endian."""
    import numpy as np

    sizes = {"OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                _swap_words(item)
        elif elem.VR in sizes and isinstance(elem.value, (bytes, bytearray)) and elem.value:
            n = sizes[elem.VR]
            value = bytes(elem.value)
            whole = len(value) // n * n
            swapped = np.frombuffer(value[:whole], dtype=f">u{n}").astype(f"<u{n}").tobytes()
            elem.value = swapped + value[whole:]


def reencode(raw: bytes, *, explicit_vr: bool, little_endian: bool, name: str, what: str = "the data set") -> bytes:
    """The elements in `raw` (a data set fragment) as Explicit VR Little Endian bytes.

    Implicit VR needs a data dictionary to know each element's VR: this uses
    pydicom's. pydicom's writer keeps big endian OW/OL/OF/OD/OV values as
    they are; here they are byte-swapped, as little endian requires.
    """
    encoding = ("Explicit" if explicit_vr else "Implicit") + " VR " + ("Little" if little_endian else "Big") + " Endian"
    if len(raw) > MAX_REENCODE_BYTES:
        raise TranscodeError(
            f"{what} is encoded as {encoding} and holds {len(raw):,} bytes before the pixel data; "
            f"re-encoding it as Explicit VR Little Endian is limited to {MAX_REENCODE_BYTES >> 20} MiB",
            path=name,
        )
    try:
        import pydicom  # noqa: F401
        from pydicom.filebase import DicomBytesIO
        from pydicom.filereader import read_dataset
        from pydicom.filewriter import write_dataset
    except ImportError:
        raise MissingDependencyError(
            f"{what} is encoded as {encoding}; re-encoding it as Explicit VR Little Endian needs "
            "a data dictionary, which dicomframes takes from pydicom",
            path=name, hint="pip install pydicom",
        ) from None
    import logging
    import warnings

    level = logging.getLogger("pydicom").level
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = read_dataset(DicomBytesIO(raw), is_implicit_VR=not explicit_vr, is_little_endian=little_endian)
            if not little_endian:
                _swap_words(ds)
            out = DicomBytesIO()
            out.is_implicit_VR, out.is_little_endian = False, True
            write_dataset(out, ds)
    except DicomFramesError:
        raise
    except Exception as exc:
        raise InvalidFileError(
            f"pydicom could not re-encode {what} ({encoding} -> Explicit VR Little Endian): {type(exc).__name__}: {exc}",
            path=name,
        ) from exc
    finally:
        logging.getLogger("pydicom").setLevel(level)
    return out.getvalue()
