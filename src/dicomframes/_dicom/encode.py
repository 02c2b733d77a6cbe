"""Encoding data elements as bytes: the one encoder (PS3.5 7).

What dicomframes writes is Explicit VR Little Endian (the defaults here): the
few elements `decompress` changes, the sample writer's files. Headers in the
other encodings (implicit VR, big endian) are offered for the test generators,
which write files in every encoding: the inverse of the element walker.

Values are padded to even length as pydicom pads them: UI and the binary VRs
OB and UN with a NUL byte, everything else with a space.
"""

from __future__ import annotations

import struct
import uuid
from typing import Iterable

from dicomframes._dicom.tags import (
    DELIMITER_GROUP,
    FILE_META_GROUP_LENGTH,
    ITEM,
    ITEM_DELIMITER,
    LONG_VRS,
    MAX_DEFINED_LENGTH,
    SEQUENCE_DELIMITER,
    UNDEFINED,
    tag_text,
)

_NUL_PADDED = frozenset({"UI", "OB", "UN"})

#: the Implementation Class UID (0002,0012) of files dicomframes writes: a
#: fixed UID naming this writer (PS3.7), derived from the project's address
IMPLEMENTATION_UID = "2.25." + str(uuid.uuid5(uuid.NAMESPACE_URL, "https://pypi.org/project/dicomframes/").int)


def pad(vr: str, value: bytes) -> bytes:
    """`value` padded to even length for VR `vr`."""
    if len(value) % 2:
        return value + (b"\x00" if vr in _NUL_PADDED else b" ")
    return value


def element_header(tag: int, vr: str, length: int, *, explicit: bool = True, little: bool = True) -> bytes:
    """The header of an element whose value is `length` bytes (`UNDEFINED`: up to a delimiter).

    Items and delimiters (group FFFE), and every element in implicit VR, have
    a 4-byte length and no VR.
    """
    e = "<" if little else ">"
    group, elem = tag >> 16, tag & 0xFFFF
    if group == DELIMITER_GROUP or not explicit:
        return struct.pack(e + "HHI", group, elem, length)
    if vr in LONG_VRS:
        return struct.pack(e + "HH2s2xI", group, elem, vr.encode(), length)
    return struct.pack(e + "HH2sH", group, elem, vr.encode(), length)


def element(tag: int, vr: str, value: bytes, *, explicit: bool = True, little: bool = True) -> bytes:
    """One element: header and `value` (padded to even length).

    Raises ValueError for a value too long for the length field: 64 KiB for
    the VRs with a 2-byte length, 4 GiB - 2 bytes for the others.
    """
    value = pad(vr, value)
    if explicit and vr not in LONG_VRS and len(value) > 0xFFFF:
        raise ValueError(f"{tag_text(tag)}: a {len(value)}-byte value is too long for VR {vr}")
    if len(value) > MAX_DEFINED_LENGTH:
        raise ValueError(f"{tag_text(tag)}: a {len(value)}-byte value is too long for a defined length")
    return element_header(tag, vr, len(value), explicit=explicit, little=little) + value


def text(tag: int, vr: str, value: str) -> bytes:
    """A text element (UI, CS, IS, DS, LO...): ASCII, padded to even length."""
    return element(tag, vr, value.encode("ascii"))


def us(tag: int, value: int) -> bytes:
    """An Unsigned Short element holding one value."""
    return element(tag, "US", struct.pack("<H", value))


def ul(tag: int, value: int) -> bytes:
    """An Unsigned Long element holding one value."""
    return element(tag, "UL", struct.pack("<I", value))


def item_header(length: int = UNDEFINED, *, little: bool = True) -> bytes:
    """The header of an item (or pixel data fragment) of `length` bytes (`UNDEFINED`: up to its delimiter)."""
    return element_header(ITEM, "", length, little=little)


def item(value: bytes, *, little: bool = True) -> bytes:
    """A defined-length item: header and `value` (NUL padded to even length, as fragments are)."""
    value = pad("OB", value)
    return item_header(len(value), little=little) + value


def item_delimiter(*, little: bool = True) -> bytes:
    """The end of an undefined-length item."""
    return element_header(ITEM_DELIMITER, "", 0, little=little)


def sequence_delimiter(*, little: bool = True) -> bytes:
    """The end of an undefined-length sequence, or of encapsulated pixel data."""
    return element_header(SEQUENCE_DELIMITER, "", 0, little=little)


#: the two delimiters in little endian, as the writers append them
ITEM_DELIMITER_BYTES = item_delimiter()
SEQUENCE_DELIMITER_BYTES = sequence_delimiter()


def pixel_header(tag: int, vr: str, length: int | None) -> bytes:
    """The header of a pixel data element; a `length` of None: undefined, encapsulated."""
    return element_header(tag, vr, UNDEFINED if length is None else length)


def file_meta(elements: Iterable[bytes], *, preamble: bytes = bytes(128), group_length: bool = True) -> bytes:
    """Preamble, ``DICM`` and the file meta group (PS3.10 7.1) made of `elements`.

    `elements` are encoded group 0002 elements in tag order, without the
    group length, which comes first when `group_length` is True (it counts
    the bytes of the elements after it).
    """
    if len(preamble) != 128:
        raise ValueError(f"the preamble is 128 bytes, not {len(preamble)}")
    body = b"".join(elements)
    if group_length:
        body = ul(FILE_META_GROUP_LENGTH, len(body)) + body
    return preamble + b"DICM" + body
