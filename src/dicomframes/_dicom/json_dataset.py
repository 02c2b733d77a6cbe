"""A DICOM JSON object (PS3.18 F.2) as the bytes of an Explicit VR Little Endian data set.

A DICOMweb server hands out an instance's header as DICOM JSON; encoding it
back into a data set lets the one header parser and the lazy views over
sequences (functional groups, optical paths, the total pixel matrix origin)
read it as they read a file. Text is written in UTF-8 with Specific Character
Set ISO_IR 192 (JSON is Unicode); binary values come from ``InlineBinary``;
values behind a ``BulkDataURI`` are left empty (a header needs none of them:
Pixel Data comes frame by frame). Elements are written in tag order.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

from dicomframes._dicom.encode import element, element_header, item_delimiter, sequence_delimiter
from dicomframes._dicom.tags import ITEM, UNDEFINED
from dicomframes.errors import InvalidFileError

SPECIFIC_CHARACTER_SET = 0x00080005
PIXEL_DATA = 0x7FE00010
_BINARY_NUMBERS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d", "UV": "Q", "SV": "q"}
_BULK_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
_MAX_DEPTH = 16  # sequences nested deeper are not a header's


def encode(obj: dict[str, Any], name: str = "<DICOM JSON>", *, pixel_data: tuple[str, int | None] | None = None,
           ) -> bytes:
    """The data set bytes of `obj`; with `pixel_data` = (VR, length or None for
    encapsulated), a Pixel Data element header ends them, with no value, so that
    the header parser finds where pixel data would start (frames come otherwise)."""
    out = bytearray()
    _dataset(obj, out, name, 0, top=True)
    if pixel_data is not None:
        vr, length = pixel_data
        out += element_header(PIXEL_DATA, vr, UNDEFINED if length is None else length)
    return bytes(out)


def _dataset(obj: dict[str, Any], out: bytearray, name: str, depth: int, top: bool = False) -> None:
    if depth > _MAX_DEPTH:
        raise InvalidFileError(f"the DICOM JSON nests sequences more than {_MAX_DEPTH} deep", path=name)
    try:
        tags = sorted((int(key, 16), key) for key in obj)
    except ValueError as exc:
        raise InvalidFileError(f"the DICOM JSON has a key that is not a tag: {exc}", path=name) from None
    if top and not any(tag == SPECIFIC_CHARACTER_SET for tag, _ in tags):
        tags.insert(0, (SPECIFIC_CHARACTER_SET, ""))
    for tag, key in tags:
        if tag == PIXEL_DATA or (tag >> 16) == 0x0002 or (tag & 0xFFFF) == 0:  # pixels, file meta, group lengths
            continue
        if tag == SPECIFIC_CHARACTER_SET:
            out += element(tag, "CS", b"ISO_IR 192")  # what every text value below is written in
            continue
        attribute = obj[key]
        if not isinstance(attribute, dict) or not isinstance(attribute.get("vr"), str):
            raise InvalidFileError(f"DICOM JSON attribute {key} has no VR", path=name)
        _element(tag, attribute, out, name, depth)


def _element(tag: int, attribute: dict[str, Any], out: bytearray, name: str, depth: int) -> None:
    vr = attribute["vr"]
    values = attribute.get("Value")
    if vr == "SQ":
        out += element_header(tag, "SQ", UNDEFINED)
        for item in values or []:
            out += struct.pack("<HHI", ITEM >> 16, ITEM & 0xFFFF, UNDEFINED)
            _dataset(item or {}, out, name, depth + 1)
            out += item_delimiter()
        out += sequence_delimiter()
        return
    try:
        out += element(tag, vr, _value(vr, attribute, values))
    except (TypeError, ValueError, AttributeError, struct.error) as exc:
        raise InvalidFileError(f"DICOM JSON attribute {tag >> 16:04X}{tag & 0xFFFF:04X} ({vr}): {exc}",
                               path=name) from None


def _value(vr: str, attribute: dict[str, Any], values: list[Any] | None) -> bytes:
    if "InlineBinary" in attribute:
        return base64.b64decode(attribute["InlineBinary"])
    if vr in _BULK_VRS or "BulkDataURI" in attribute or not values:
        return b""
    if vr in _BINARY_NUMBERS:
        return struct.pack(f"<{len(values)}{_BINARY_NUMBERS[vr]}", *values)
    if vr == "AT":
        tags = [int(v, 16) for v in values]
        return b"".join(struct.pack("<HH", t >> 16, t & 0xFFFF) for t in tags)
    if vr == "PN":
        return "\\".join(person_name(v) for v in values).encode("utf-8")
    if vr in ("IS", "DS"):
        return "\\".join("" if v is None else _number(v) for v in values).encode("ascii")
    return "\\".join("" if v is None else str(v) for v in values).encode("utf-8")


def person_name(value: Any) -> str:
    """A DICOM JSON person name (``{"Alphabetic": ..., "Ideographic": ...}``) as its
    text, ``Alphabetic=Ideographic=Phonetic`` without empty groups at the end."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    groups = [value.get(g, "") for g in ("Alphabetic", "Ideographic", "Phonetic")]
    while groups and not groups[-1]:
        groups.pop()
    return "=".join(groups)


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeError(f"{value!r} is not a number")
    return repr(value) if isinstance(value, float) else str(value)
