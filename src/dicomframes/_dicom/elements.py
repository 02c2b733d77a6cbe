"""Reading data elements: the one element-header reader and walker (PS3.5 7).

Every parser of a data set reads through an `ElementWalker`: the header
parser up to Pixel Data, the dataset writer's walk over the elements it copies
as byte ranges, and item walks over sequences and encapsulated pixel data. It
reads only tags, VRs and lengths; values are read by the caller or skipped
without being read. Explicit and implicit VR, little and big endian, items and
sequences of defined and undefined length, an undefined-length UN (a sequence
in Implicit VR Little Endian, PS3.5 6.2.2) and encapsulated pixel data inside
a sequence (an icon image) are all handled, and nesting is limited to
`MAX_DEPTH` here, for every caller.

The walker does no I/O of its own: it reads from a `ByteReader` passed in (the
``io`` layer's buffered cursor is one), so this module stays below the layers
that hold sources.

(The whole-slide functional-group walk, ``views.functional_groups``, keeps an
inline reader of its own for 150,000-item sequences, on the same constants.)
"""

from __future__ import annotations

import logging
import struct
from typing import Any, Callable, Iterator, Protocol

from dicomframes._dicom.tags import (
    DELIMITER_GROUP,
    ITEM,
    ITEM_DELIMITER,
    LONG_VRS_BYTES,
    MAX_DEPTH,
    SEQUENCE_DELIMITER,
    UNDEFINED,
    VRS_BYTES,
    tag_text,
)
from dicomframes.errors import DicomFramesError, InvalidFileError, TruncatedFileError

#: what a truncation error says the file ends inside
_HEADER = "an element header"

log = logging.getLogger("dicomframes")

# One unpack per header: group, element and the next 4 bytes as one uint32 (an
# item's or an implicit VR element's length; in explicit VR, the VR and the
# 2-byte length, split below).
_Unpack = Callable[..., tuple[Any, ...]]
_HEAD: dict[bool, _Unpack] = {True: struct.Struct("<HHI").unpack_from, False: struct.Struct(">HHI").unpack_from}
_U32: dict[bool, _Unpack] = {True: struct.Struct("<I").unpack_from, False: struct.Struct(">I").unpack_from}
#: VRs after which an undefined length means items up to a sequence delimiter:
#: sequences, and encapsulated pixel data (OB, or OW as some writers put it)
_ITEMS_VRS = (None, b"SQ", b"OB", b"OW")
#: VR bytes -> text, without a decode per element
_VR_TEXT = {vr: vr.decode() for vr in VRS_BYTES}

#: what `ElementWalker.elements` yields for each element: (tag, VR as written or
#: None in implicit VR, value length as stored (`UNDEFINED`: up to a delimiter),
#: offset of the element's tag, offset of its value). A plain tuple: a header
#: parse makes one per element, and a named tuple costs 5% of it.
Element = tuple[int, str | None, int, int, int]


class ByteReader(Protocol):
    """What the walker reads from: a forward-moving, buffered position.

    ``dicomframes.io.cursor.Cursor`` is one; so is anything else with these
    four members (a test's reader over bytes).
    """

    #: the offset of the next byte `read` returns
    pos: int

    def read(self, n: int, what: str = ...) -> bytes:
        """Exactly `n` bytes, moving past them; `TruncatedFileError` (naming `what`) if fewer are left."""
        ...

    def peek(self, n: int) -> bytes:
        """Up to `n` bytes at the position without moving it; short only at the end of the data."""
        ...

    def skip(self, n: int) -> None:
        """Move `n` bytes on without reading them."""
        ...


class ElementWalker:
    """Element headers, items and delimiters read from `reader`.

    Parameters
    ----------
    reader : ByteReader
        Where the bytes come from; the walk starts at its position.
    name : str
        The file's name, for error messages.
    size : int, optional
        Bytes in the data (if known): a value said to run past it is refused
        before anything is skipped.
    explicit, little : bool
        The encoding of the data set (items of an undefined-length UN are read
        as Implicit VR Little Endian whatever these say).
    stray_items : bool
        Whether `elements` moves past a defined-length item or sequence
        delimiter at the top level (logging a warning) as pydicom does, which
        keeps it as an element of that length; some writers leave one, e.g.
        after a sequence declared with length 0. Off, they are refused. An
        item delimiter (where pydicom ends the data set) and an undefined-length
        item are refused either way.

    Nesting depth counts open sequences and items: a top-level sequence is at
    depth 1, its items at 2, a sequence inside them at 3; a sequence deeper
    than `MAX_DEPTH` is refused.
    """

    def __init__(self, reader: ByteReader, *, name: str, size: int | None = None,
                 explicit: bool = True, little: bool = True, stray_items: bool = False) -> None:
        self.reader = reader
        self.name = name
        self.size = size
        self.explicit = explicit
        self.little = little
        self.stray_items = stray_items
        #: stray items and delimiters moved past so far (only the first is logged as a warning)
        self.strays = 0

    def error(self, cls: type[DicomFramesError], message: str, offset: int | None = None) -> DicomFramesError:
        """`cls` naming the file and `offset` (default: the reader's position)."""
        return cls(message, path=self.name, offset=self.reader.pos if offset is None else offset)

    # -- headers ---------------------------------------------------------------------------

    def header(self, explicit: bool | None = None, little: bool | None = None) -> tuple[int, bytes | None, int]:
        """Read one element header: (tag, VR bytes or None, value length).

        The VR is None in implicit VR and for items and delimiters (group
        FFFE), which have no VR in any encoding. `explicit` and `little`
        default to the walker's.
        """
        if explicit is None:
            explicit = self.explicit
        if little is None:
            little = self.little
        found = self._header(explicit, little, _HEAD[little], _U32[little])
        if found is None:
            self.reader.read(8, _HEADER)  # the data ends here: the reader raises TruncatedFileError
            raise self.error(TruncatedFileError, f"the file ends before {_HEADER}")
        return found

    def _header(self, explicit: bool, little: bool, unpack: _Unpack, u32: _Unpack) -> tuple[int, bytes | None, int] | None:
        """`header`, or None at the end of the data (a header cut short still raises).

        `unpack` and `u32` are ``_HEAD[little]`` and ``_U32[little]``, looked
        up once by the caller.
        """
        reader = self.reader
        start = reader.pos
        # One peek serves the end-of-data test, the 8-byte header and a long VR's
        # 4-byte length: one reader call per element, where reads took two or three.
        h = reader.peek(12 if explicit else 8)
        if len(h) < 8:
            if not h:
                return None
            reader.read(8, _HEADER)  # raises: the data ends inside the header
        group, elem, rest = unpack(h)
        tag = group << 16 | elem
        if group == DELIMITER_GROUP or not explicit:
            reader.skip(8)
            return tag, None, rest
        vr = h[4:6]
        if vr in LONG_VRS_BYTES:
            if len(h) < 12:
                reader.skip(8)
                reader.read(4, _HEADER)  # raises: the data ends inside the length
            reader.skip(12)
            return tag, vr, u32(h, 8)[0]
        if not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
            raise self.error(InvalidFileError, f"element {tag_text(tag)} has no valid VR ({vr!r})", start)
        reader.skip(8)
        # The 2-byte length is the last two of the four bytes unpacked with the VR.
        return tag, vr, (rest >> 16) if little else (rest & 0xFFFF)

    # -- skipping values -------------------------------------------------------------------

    def skip_value(self, length: int, tag: int) -> None:
        """Move past a defined-length value, refusing one that runs past the data."""
        reader = self.reader
        size = self.size
        if size is not None and reader.pos + length > size:
            raise self.error(TruncatedFileError, f"element {tag_text(tag)} declares {length} bytes but the file ends at {size}")
        reader.skip(length)

    def skip(self, tag: int, vr: str | bytes | None, length: int, depth: int = 1) -> None:
        """Move past the value of the element whose header was just read, whatever its length.

        `depth` is that of the sequence the value would be (1 for a top-level element).
        """
        if length == UNDEFINED:
            self.skip_undefined(tag, vr.encode() if isinstance(vr, str) else vr, depth)
        else:
            self.skip_value(length, tag)

    def skip_undefined(self, tag: int, vr: bytes | None, depth: int, explicit: bool | None = None,
                       little: bool | None = None) -> None:
        """Move past the undefined-length value of element `tag`: a sequence at nesting `depth`."""
        if explicit is None:
            explicit = self.explicit
        if little is None:
            little = self.little
        if vr == b"UN":
            # An undefined-length UN is a sequence encoded as Implicit VR LE (PS3.5 6.2.2).
            self.skip_sequence(depth, False, True)
        elif vr in _ITEMS_VRS:
            self.skip_sequence(depth, explicit, little)
        else:
            raise self.error(InvalidFileError, f"element {tag_text(tag)} with VR {vr.decode('latin-1')} has undefined length")

    def skip_sequence(self, depth: int, explicit: bool | None = None, little: bool | None = None) -> None:
        """Move past the items of an undefined-length sequence (at `depth`) and its delimiter."""
        if depth > MAX_DEPTH:
            # The one place nesting is limited: hostile files nest without end.
            raise self.error(InvalidFileError, f"sequences nested deeper than {MAX_DEPTH} levels")
        if explicit is None:
            explicit = self.explicit
        if little is None:
            little = self.little
        reader = self.reader
        read = reader.read
        unpack = _HEAD[little]
        size = self.size
        while True:
            start = reader.pos
            group, elem, length = unpack(read(8, _HEADER))
            tag = group << 16 | elem
            if tag == SEQUENCE_DELIMITER:
                return
            if tag != ITEM:
                raise self.error(InvalidFileError, f"expected an item in a sequence, found {tag_text(tag)}", start)
            if length == UNDEFINED:
                self._skip_item(depth + 1, explicit, little)
            elif size is not None and start + 8 + length > size:
                raise self.error(TruncatedFileError, f"element {tag_text(tag)} declares {length} bytes but the file ends at {size}")
            else:
                reader.skip(length)

    def _skip_item(self, depth: int, explicit: bool, little: bool) -> None:
        """Move past the elements of an undefined-length item (at `depth`) and its delimiter.

        `_header` and `skip_value`, inlined: this loop runs once per element of
        every undefined-length item a header parse skips (150,000 items of
        Per-Frame Functional Groups in a sparse whole-slide level).
        """
        reader = self.reader
        read, skip = reader.read, reader.skip
        unpack, u32 = _HEAD[little], _U32[little]
        size = self.size
        delimiter_group, item_delimiter = DELIMITER_GROUP, ITEM_DELIMITER & 0xFFFF  # locals: this loop is hot
        while True:
            start = reader.pos
            h = read(8, _HEADER)
            group, elem, length = unpack(h)
            vr = None
            if group == delimiter_group:
                if elem == item_delimiter:
                    return
            elif explicit:
                vr = h[4:6]
                if vr in LONG_VRS_BYTES:
                    length = u32(read(4, _HEADER))[0]
                elif 65 <= vr[0] <= 90 and 65 <= vr[1] <= 90:
                    length = (length >> 16) if little else (length & 0xFFFF)
                else:
                    raise self.error(InvalidFileError, f"element {tag_text(group << 16 | elem)} has no valid VR ({vr!r})", start)
            if length == UNDEFINED:
                self.skip_undefined(group << 16 | elem, vr, depth + 1, explicit, little)
            elif size is not None and reader.pos + length > size:
                raise self.error(
                    TruncatedFileError,
                    f"element {tag_text(group << 16 | elem)} declares {length} bytes but the file ends at {size}",
                )
            else:
                skip(length)

    # -- walks -----------------------------------------------------------------------------

    def elements(self, end: int | None = None) -> Iterator[Element]:
        """The elements of a data set from the reader's position, up to `end` or the end of the data.

        Each is yielded as an `Element` tuple when its header has been read;
        the caller may read its value (all of it) or move past it with `skip`
        before asking for the next. A value the caller left alone is skipped.
        Items and delimiters are refused here: they belong inside sequences
        (but see `stray_items`).
        """
        reader = self.reader
        skip, header = reader.skip, self._header
        size, explicit, little = self.size, self.explicit, self.little
        unpack, u32 = _HEAD[little], _U32[little]
        while end is None or reader.pos < end:
            start = reader.pos
            found = header(explicit, little, unpack, u32)
            if found is None:
                return
            tag, vr, length = found
            if tag >> 16 == DELIMITER_GROUP:
                if not (self.stray_items and tag in (ITEM, SEQUENCE_DELIMITER) and length != UNDEFINED):
                    raise self.error(InvalidFileError, f"unexpected item or delimiter tag {tag_text(tag)} at the top level", start)
                # pydicom keeps it as an element of that length: move past it the same way.
                self.skip_value(length, tag)
                # One warning per walk: a hostile file could hold millions of 8-byte strays.
                log.log(logging.WARNING if not self.strays else logging.DEBUG,
                        "%s: skipped a stray %s %s of %d bytes at the top level of the data set (offset %d), as pydicom does",
                        self.name, "item" if tag == ITEM else "sequence delimiter", tag_text(tag), length, start)
                self.strays += 1
                continue
            value_start = reader.pos
            yield tag, None if vr is None else _VR_TEXT.get(vr) or vr.decode("latin-1"), length, start, value_start
            if reader.pos != value_start:
                continue  # the caller read the value, or skipped it
            if length == UNDEFINED:
                self.skip_undefined(tag, vr, 1)
            elif size is not None and value_start + length > size:
                raise self.error(TruncatedFileError, f"element {tag_text(tag)} declares {length} bytes but the file ends at {size}")
            else:
                skip(length)

    def items(self, little: bool | None = None) -> Iterator[tuple[int, int]]:
        """The items of a sequence, from the reader's position up to its delimiter.

        Yields (offset of the item's value, its length, maybe `UNDEFINED`). A
        defined-length value the caller did not read is skipped; an undefined
        length is the caller's to walk (`skip_sequence`'s items do that) or to
        refuse (fragments of pixel data always have a length). Returns with the
        reader past the sequence delimiter.
        """
        if little is None:
            little = self.little
        reader = self.reader
        unpack = _HEAD[little]
        while True:
            start = reader.pos
            group, elem, length = unpack(reader.read(8, _HEADER))
            tag = group << 16 | elem
            if tag == SEQUENCE_DELIMITER:
                return
            if tag != ITEM:
                raise self.error(InvalidFileError, f"expected an item in a sequence, found {tag_text(tag)}", start)
            value_start = start + 8
            yield value_start, length
            if length != UNDEFINED and reader.pos == value_start:
                self.skip_value(length, tag)
