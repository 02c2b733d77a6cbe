"""Byte-level builders of odd DICOM files for tests (no pydicom needed to write them).

`write_file` writes a Part 10 file in any of the uncompressed encodings
(explicit/implicit VR, little/big endian) with pixel data given as raw bytes
exactly as they must appear in the file, or as encapsulated fragments.
`encapsulate` lays out fragments behind a Basic Offset Table and reports where
each frame's first item landed; `write_sparse_bot_file` builds an encapsulated
file larger than 4 GiB whose Basic Offset Table wraps around, by leaving holes
(sparse regions) inside padding fragments. Elements, items and the file meta
group are encoded by dicomframes' own encoder (`dicomframes._dicom.encode`).
"""

from __future__ import annotations

import os
import struct
from typing import Iterable, Sequence

import numpy as np

from dicomframes._dicom import encode as dcm
from dicomframes._dicom.tags import (
    FILE_META_INFORMATION_VERSION,
    IMPLEMENTATION_CLASS_UID,
    MEDIA_STORAGE_SOP_CLASS_UID,
    MEDIA_STORAGE_SOP_INSTANCE_UID,
    PIXEL_DATA,
    TRANSFER_SYNTAX_UID,
    UNDEFINED,
)

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"
RLE = "1.2.840.10008.1.2.5"
JPEG_LS = "1.2.840.10008.1.2.4.80"
J2K = "1.2.840.10008.1.2.4.90"

SC_MF_BYTE = "1.2.840.10008.5.1.4.1.1.7.2"
SC_MF_WORD = "1.2.840.10008.5.1.4.1.1.7.3"
SC_MF_TRUE_COLOR = "1.2.840.10008.5.1.4.1.1.7.4"
SC_MF_SINGLE_BIT = "1.2.840.10008.5.1.4.1.1.7.1"

_NUMERIC = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d"}

Element = tuple[int, str, object]  # (tag, VR, value)


def encode_value(vr: str, value: object, little: bool = True) -> bytes:
    """The value bytes of one element, padded to even length."""
    e = "<" if little else ">"
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
    elif vr in _NUMERIC:
        values = value if isinstance(value, (list, tuple)) else [value]
        raw = struct.pack(f"{e}{len(values)}{_NUMERIC[vr]}", *values)
    else:
        raw = str(value).encode("ascii")
    return dcm.pad(vr, raw)


def element_header(tag: int, vr: str, length: int, *, little: bool = True, explicit: bool = True) -> bytes:
    return dcm.element_header(tag, vr, length, explicit=explicit, little=little)


def element(tag: int, vr: str, value: object, *, little: bool = True, explicit: bool = True) -> bytes:
    return dcm.element(tag, vr, encode_value(vr, value, little), explicit=explicit, little=little)


def file_meta(transfer_syntax: str, sop_class: str = SC_MF_BYTE, sop_instance: str = "2.25.1") -> bytes:
    """Preamble, DICM and the file meta group (always explicit VR little endian)."""
    return dcm.file_meta([
        element(FILE_META_INFORMATION_VERSION, "OB", b"\x00\x01"),
        element(MEDIA_STORAGE_SOP_CLASS_UID, "UI", sop_class),
        element(MEDIA_STORAGE_SOP_INSTANCE_UID, "UI", sop_instance),
        element(TRANSFER_SYNTAX_UID, "UI", transfer_syntax),
        element(IMPLEMENTATION_CLASS_UID, "UI", "2.25.2"),
    ])


def image_elements(
    *, frames: int, rows: int, columns: int, samples_per_pixel: int = 1, bits_allocated: int = 8,
    bits_stored: int | None = None, pixel_representation: int = 0,
    photometric: str | None = None, planar_configuration: int | None = None,
    sop_class: str = SC_MF_BYTE, extra: Iterable[Element] = (),
) -> list[Element]:
    """The image pixel description, as (tag, VR, value) in ascending tag order."""
    bits_stored = bits_allocated if bits_stored is None else bits_stored
    photometric = photometric or ("MONOCHROME2" if samples_per_pixel == 1 else "RGB")
    els: list[Element] = [
        (0x00080016, "UI", sop_class),
        (0x00080018, "UI", "2.25.1"),
        (0x00080060, "CS", "OT"),
        (0x00280002, "US", samples_per_pixel),
        (0x00280004, "CS", photometric),
    ]
    if samples_per_pixel > 1:
        els.append((0x00280006, "US", planar_configuration or 0))
    els += [
        (0x00280008, "IS", str(frames)),
        (0x00280010, "US", rows),
        (0x00280011, "US", columns),
        (0x00280100, "US", bits_allocated),
        (0x00280101, "US", bits_stored),
        (0x00280102, "US", bits_stored - 1),
        (0x00280103, "US", pixel_representation),
    ]
    els += list(extra)
    return sorted(els, key=lambda e: e[0])


def write_file(
    path: str | os.PathLike,
    transfer_syntax: str,
    elements: Sequence[Element],
    pixel_data: bytes,
    *,
    pixel_vr: str = "OB",
    pixel_tag: int = PIXEL_DATA,
    encapsulated: bool = False,
    sop_class: str = SC_MF_BYTE,
) -> str:
    """Write a Part 10 file; `pixel_data` is the value exactly as stored.

    For native data the value is padded to even length; for encapsulated data
    it is the items (BOT first, then fragments) without the sequence delimiter,
    which is appended here.
    """
    little = transfer_syntax != EXPLICIT_BE
    explicit = transfer_syntax != IMPLICIT_LE
    out = [file_meta(transfer_syntax, sop_class)]
    for tag, vr, value in elements:
        out.append(element(tag, vr, value, little=little, explicit=explicit))
    if encapsulated:
        out.append(element_header(pixel_tag, pixel_vr, UNDEFINED, little=little, explicit=explicit))
        out.append(pixel_data)
        out.append(dcm.SEQUENCE_DELIMITER_BYTES)
    else:
        value = pixel_data + (b"\x00" if len(pixel_data) % 2 else b"")
        out.append(element_header(pixel_tag, pixel_vr, len(value), little=little, explicit=explicit))
        out.append(value)
    with open(path, "wb") as f:
        f.write(b"".join(out))
    return os.fspath(path)


def item(value: bytes) -> bytes:
    """One item: header and value (padded to even length)."""
    return dcm.item(value)


def encapsulate(frames: Sequence[Sequence[bytes]], *, bot: bool = True) -> tuple[bytes, list[int]]:
    """Items for frames given as lists of fragments: (value, offsets of each frame's first item).

    Offsets are relative to the first item after the Basic Offset Table.
    """
    body, offsets, pos = [], [], 0
    for fragments in frames:
        offsets.append(pos)
        for fragment in fragments:
            it = item(fragment)
            body.append(it)
            pos += len(it)
    table = struct.pack(f"<{len(frames)}I", *[o % (1 << 32) for o in offsets]) if bot else b""
    return item(table) + b"".join(body), offsets


def write_sparse_bot_file(
    path: str | os.PathLike,
    transfer_syntax: str,
    elements: Sequence[Element],
    codestreams: Sequence[bytes],
    holes: dict[int, int],
) -> list[int]:
    """An encapsulated file with a Basic Offset Table whose offsets wrap past 4 GiB.

    Frame ``i`` is one fragment holding ``codestreams[i]``; for each ``i`` in
    `holes`, a second fragment of ``holes[i]`` zero bytes follows it, written as
    a hole (seek, not write), so the file is sparse and costs no disk. Returns
    the true (unwrapped) offsets of each frame's first item.
    """
    n = len(codestreams)
    with open(path, "wb") as f:
        f.write(file_meta(transfer_syntax))
        for tag, vr, value in elements:
            f.write(element(tag, vr, value))
        f.write(element_header(PIXEL_DATA, "OB", UNDEFINED))
        f.write(dcm.item_header(4 * n))
        bot_at = f.tell()
        f.write(bytes(4 * n))
        first = f.tell()
        offsets = []
        for i, cs in enumerate(codestreams):
            offsets.append(f.tell() - first)
            f.write(item(cs))
            if i in holes:
                size = holes[i] + holes[i] % 2
                if size >= UNDEFINED:
                    raise ValueError("a fragment holds at most 4 GiB - 2 bytes")
                f.write(dcm.item_header(size))
                f.seek(size, os.SEEK_CUR)
        f.write(dcm.SEQUENCE_DELIMITER_BYTES)
        f.seek(bot_at)
        f.write((np.asarray(offsets, dtype=np.uint64) % (1 << 32)).astype("<u4").tobytes())
    return offsets
