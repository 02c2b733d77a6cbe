"""The lazy header parser.

Walks data elements from the start of the file to the top-level Pixel Data
element reading only tag, VR and length (with the shared
`dicomframes._dicom.elements.ElementWalker`), keeps the values of the few
attributes that matter, and seeks past everything else (private blobs, icon
images, functional group sequences). Nested sequences of undefined length are
walked item by item without keeping anything.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dicomframes._dicom import charset
from dicomframes._dicom.elements import ElementWalker
from dicomframes._dicom.syntaxes import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    SYNTAXES,
    TransferSyntax,
    lookup,
)
from dicomframes._dicom.tags import (
    EXTENDED_OFFSET_TABLE,
    EXTENDED_OFFSET_TABLE_LENGTHS,
    MEDIA_STORAGE_SOP_CLASS_UID,
    MEDIA_STORAGE_SOP_INSTANCE_UID,
    PIXEL_TAGS,
    TRANSFER_SYNTAX_UID,
    UNDEFINED,
    VRS_BYTES,
    tag_text,
)
from dicomframes.errors import (
    InvalidFileError,
    NotDicomError,
    UnsupportedTransferSyntaxError,
)
from dicomframes.frames.tiff_tiles import signature
from dicomframes.io.cursor import Cursor
from dicomframes.io.inflate import InflatedSource
from dicomframes.io.source import Source

_MAX_SMALL_VALUE = 1 << 16  # the attributes we keep are short strings and numbers

log = logging.getLogger("dicomframes")

# Top-level attributes we keep: tag -> (keyword, VR used when the file is implicit VR).
WANTED: dict[int, tuple[str, str]] = {
    0x00080005: ("SpecificCharacterSet", "CS"),
    0x00080016: ("SOPClassUID", "UI"),
    0x00080018: ("SOPInstanceUID", "UI"),
    0x00080060: ("Modality", "CS"),
    0x00080008: ("ImageType", "CS"),
    # who and what, for catalogues and searches (the text in the Specific Character Set)
    0x00080020: ("StudyDate", "DA"),
    0x00080021: ("SeriesDate", "DA"),
    0x00080030: ("StudyTime", "TM"),
    0x00080050: ("AccessionNumber", "SH"),
    0x00080090: ("ReferringPhysicianName", "PN"),
    0x00081030: ("StudyDescription", "LO"),
    0x0008103E: ("SeriesDescription", "LO"),
    0x00100010: ("PatientName", "PN"),
    0x00100020: ("PatientID", "LO"),
    0x00100030: ("PatientBirthDate", "DA"),
    0x00100040: ("PatientSex", "CS"),
    0x00200010: ("StudyID", "SH"),
    0x00200011: ("SeriesNumber", "IS"),
    0x0020000D: ("StudyInstanceUID", "UI"),
    0x0020000E: ("SeriesInstanceUID", "UI"),
    0x00200013: ("InstanceNumber", "IS"),
    0x00209161: ("ConcatenationUID", "UI"),
    0x00209162: ("InConcatenationNumber", "US"),
    0x00209228: ("ConcatenationFrameOffsetNumber", "UL"),
    0x00209311: ("DimensionOrganizationType", "CS"),
    0x00280002: ("SamplesPerPixel", "US"),
    0x00280004: ("PhotometricInterpretation", "CS"),
    0x00280006: ("PlanarConfiguration", "US"),
    0x00280008: ("NumberOfFrames", "IS"),
    0x00280010: ("Rows", "US"),
    0x00280011: ("Columns", "US"),
    0x00280100: ("BitsAllocated", "US"),
    0x00280101: ("BitsStored", "US"),
    0x00280102: ("HighBit", "US"),
    0x00280103: ("PixelRepresentation", "US"),
    0x00480006: ("TotalPixelMatrixColumns", "UL"),
    0x00480007: ("TotalPixelMatrixRows", "UL"),
    0x00480003: ("NumberOfFocalPlanes", "UL"),
    0x00480302: ("NumberOfOpticalPaths", "UL"),
    0x00480303: ("TotalPixelMatrixFocalPlanes", "UL"),
    EXTENDED_OFFSET_TABLE: ("ExtendedOffsetTable", "OV"),
    EXTENDED_OFFSET_TABLE_LENGTHS: ("ExtendedOffsetTableLengths", "OV"),
}
# Top-level sequences whose position we remember (not their contents): layers
# above (whole-slide geometry) parse them lazily, only when asked.
SEQUENCES: dict[int, str] = {
    0x52009229: "SharedFunctionalGroupsSequence",
    0x52009230: "PerFrameFunctionalGroupsSequence",
    0x00480105: "OpticalPathSequence",
    0x00209221: "DimensionOrganizationSequence",
    0x00209222: "DimensionIndexSequence",
    0x00480008: "TotalPixelMatrixOriginSequence",
}
_META_WANTED = {
    MEDIA_STORAGE_SOP_CLASS_UID: "MediaStorageSOPClassUID",
    MEDIA_STORAGE_SOP_INSTANCE_UID: "MediaStorageSOPInstanceUID",
    TRANSFER_SYNTAX_UID: "TransferSyntaxUID",
}


@dataclass
class Header:
    """What dicomframes keeps of a file's header: small and picklable."""

    name: str
    transfer_syntax: TransferSyntax
    #: where the data set starts in the raw file (the deflated stream, if deflated)
    dataset_offset: int
    #: where the file meta group starts: 132 after a preamble, 4 after a bare
    #: "DICM", 0 when there is neither
    meta_offset: int = 0
    #: keyword -> value of the attributes in `WANTED` (and the file meta ones)
    values: dict[str, Any] = field(default_factory=dict)
    pixel_keyword: str = "PixelData"
    pixel_vr: str = "OW"
    #: offset of the Pixel Data value (in the inflated stream, if deflated)
    pixel_offset: int = 0
    #: the value length, or None for undefined length (encapsulated)
    pixel_length: int | None = None
    #: keyword -> (value offset, value length or None if undefined) of `SEQUENCES`
    sequences: dict[str, tuple[int, int | None]] = field(default_factory=dict)
    #: whether the data set is explicit VR (it may disagree with the transfer syntax)
    explicit_vr: bool = True
    extended_offsets: np.ndarray | None = None
    extended_lengths: np.ndarray | None = None
    #: bytes from `pixel_offset` on that the header's reads already fetched (the
    #: offset tables, often the first frames); the frame index takes them over
    #: (and empties this field) so that opening costs no extra request
    pixel_head: bytes = field(default=b"", repr=False, compare=False)
    #: the TIFF header a dual-personality file's preamble starts with (`tiff_tiles.signature`), else b""
    tiff_signature: bytes = field(default=b"", repr=False)

    def get(self, keyword: str, default: Any = None) -> Any:
        return self.values.get(keyword, default)


def _decode_value(raw: bytes, vr: str, little: bool, character_set: Any = None) -> Any:
    if vr in charset.TEXT_VRS:
        return charset.decode(raw, vr, charset.encodings(character_set))
    e = "<" if little else ">"
    if vr in ("US", "SS", "UL", "SL", "FL", "FD", "OV"):
        code = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d", "OV": "Q"}[vr]
        if vr == "OV":
            return np.frombuffer(raw, dtype=e + "u8").astype(np.uint64)
        size = struct.calcsize(code)
        vals = [v[0] for v in struct.iter_unpack(e + code, raw[: len(raw) // size * size])]
        return vals[0] if len(vals) == 1 else (vals or None)
    text = raw.decode("latin-1").strip("\x00 ")
    if vr == "IS":
        try:
            return int(float(text.split("\\")[0])) if text else None
        except ValueError:
            return None
    if vr == "CS" and "\\" in text:
        return [t.strip() for t in text.split("\\")]
    return text


class _Parser:
    """The walk of one data set up to its Pixel Data element, on the shared `ElementWalker`."""

    def __init__(self, source: Source, ts: TransferSyntax, cur: Cursor) -> None:
        self.source = source
        self.ts = ts
        self.cur = cur
        self.little = ts.little_endian
        self.explicit = ts.explicit_vr
        # Some writers encode the data set differently from what the transfer
        # syntax says; like pydicom, believe the bytes of the first element.
        first = self.cur.peek(6)
        if len(first) == 6 and ts.little_endian:
            self.explicit = first[4:6] in VRS_BYTES
        # Stray items at the top level are moved past as pydicom does (with a warning).
        self.walker = ElementWalker(cur, name=source.name, size=source.size, explicit=self.explicit, little=self.little,
                                    stray_items=True)

    def error(self, cls, message: str, offset: int | None = None):
        return self.walker.error(cls, message, offset)

    def parse_dataset(self, header: Header) -> None:
        cur = self.cur
        header.explicit_vr = self.explicit
        for tag, vr, length, start, value_start in self.walker.elements():
            if tag in PIXEL_TAGS:
                header.pixel_keyword = PIXEL_TAGS[tag]
                header.pixel_vr = vr or ("OB" if length == UNDEFINED else "OW")
                header.pixel_offset = value_start
                header.pixel_length = None if length == UNDEFINED else length
                return
            if tag in SEQUENCES:
                header.sequences[SEQUENCES[tag]] = (value_start, None if length == UNDEFINED else length)
            if length == UNDEFINED:
                continue  # a sequence (or an icon's pixel data): the walker skips it
            want = WANTED.get(tag)
            if want is None:
                continue
            keyword, implicit_vr = want
            vr_text = vr or implicit_vr
            if vr_text == "UN" or (vr is not None and vr_text != implicit_vr and keyword.startswith("ExtendedOffset")):
                vr_text = implicit_vr
            if keyword.startswith("ExtendedOffset"):
                frames = header.values.get("NumberOfFrames") or 1
                if self.source.size is None and length > 1 << 28:
                    # Deflated: no file size to check the length against; don't inflate gigabytes for it.
                    raise self.error(InvalidFileError, f"{keyword} claims {length} bytes", start)
                if length != 8 * frames:
                    raise self.error(
                        InvalidFileError,
                        f"{keyword} holds {length} bytes but Number of Frames {frames} needs {8 * frames}",
                        start,
                    )
            elif length > _MAX_SMALL_VALUE:
                continue  # not a value we can use; don't allocate for it (the walker skips it)
            raw = cur.read(length, keyword)
            header.values[keyword] = _decode_value(raw, vr_text, self.little, header.values.get("SpecificCharacterSet"))
        raise self.error(NotDicomError, "the data set has no Pixel Data element")


def _guess_syntax(head: bytes) -> TransferSyntax:
    """The encoding of a data set that has no file meta information."""
    if len(head) < 8:
        raise NotDicomError("too short to be a DICOM data set")
    group_le = struct.unpack("<H", head[:2])[0]
    group_be = struct.unpack(">H", head[:2])[0]
    vr = head[4:6]
    explicit = 65 <= vr[0] <= 90 and 65 <= vr[1] <= 90
    if group_be < group_le and group_be in (0x0008, 0x0002):
        return SYNTAXES["1.2.840.10008.1.2.2"]
    return EXPLICIT_VR_LITTLE_ENDIAN if explicit else IMPLICIT_VR_LITTLE_ENDIAN


def _meta_is_explicit(first: bytes, size: int | None, pos: int, name: str) -> bool:
    """Whether the file meta group whose first 8 bytes are `first` is explicit VR.

    Implicit VR only when the two bytes after the first group 0002 tag are no
    VR and, read as a 4-byte length, they make a plausible one for a meta
    element; otherwise explicit (and an invalid VR is refused as such).
    """
    if len(first) < 8 or struct.unpack("<H", first[:2])[0] != 0x0002 or first[4:6] in VRS_BYTES:
        return True
    length = struct.unpack("<I", first[4:8])[0]
    if length > _MAX_SMALL_VALUE or (size is not None and pos + 8 + length > size):
        return True
    log.warning("%s: the file meta information is encoded Implicit VR Little Endian (the standard says explicit VR); "
                "reading it as implicit VR, as pydicom does", name)
    return False


def parse_header(source: Source, first_read: int = 64 * 1024) -> tuple[Header, Source]:
    """Parse `source` up to its Pixel Data element.

    Returns the header and the source that holds the data set (the source
    itself, or an `InflatedSource` for deflated files).
    """
    head = source.read(0, first_read)
    name = source.name
    if len(head) >= 132 and head[128:132] == b"DICM":
        meta_offset = 132
    elif head[:4] == b"DICM":
        meta_offset = 4
    else:
        meta_offset = 0
    meta: dict[str, Any] = {}
    # One cursor, holding the first read, serves the meta group and (unless
    # deflated) the data set: the start of the file is read once.
    cur = Cursor(source, meta_offset, first_read, buffered=head[meta_offset:])
    parser = _Parser(source, EXPLICIT_VR_LITTLE_ENDIAN, cur)
    # File meta information: group 0002, always explicit VR little endian by the
    # standard, but some writers encode it implicit VR; like pydicom, believe the
    # bytes of the first element.
    meta_explicit = _meta_is_explicit(cur.peek(8), source.size, cur.pos, name)
    while True:
        peek = cur.peek(8)
        if len(peek) < 8 or struct.unpack("<H", peek[:2])[0] != 0x0002:
            break
        tag, _, length = parser.walker.header(meta_explicit, True)
        if length == UNDEFINED or length > _MAX_SMALL_VALUE:
            raise parser.error(InvalidFileError, f"file meta element {tag_text(tag)} has an invalid length {length}")
        raw = cur.read(length, "the file meta information")
        if tag in _META_WANTED:
            meta[_META_WANTED[tag]] = _decode_value(raw, "UI", True)
    dataset_offset = cur.pos
    uid = meta.get("TransferSyntaxUID")
    if uid:
        ts = lookup(uid)
        if ts is None:
            raise UnsupportedTransferSyntaxError(
                f"transfer syntax {uid} is not one dicomframes can read",
                path=name, hint="supported: " + ", ".join(sorted(SYNTAXES)),
            )
    else:
        if meta_offset == 0 and dataset_offset == 0 and len(head) >= 8:
            g = struct.unpack("<H", head[:2])[0]
            if g not in (0x0008, 0x0800) and not (0x0002 <= g <= 0x0028):
                raise NotDicomError("no DICM prefix, file meta information or data set found", path=name, offset=0)
        try:
            ts = _guess_syntax(cur.peek(8))
        except NotDicomError as exc:
            raise NotDicomError(exc.message, path=name, offset=dataset_offset) from None

    header = Header(name=name, transfer_syntax=ts, dataset_offset=dataset_offset, meta_offset=meta_offset)
    if meta_offset == 132:
        header.tiff_signature = signature(head[:128])
    header.values.update(meta)
    data_source: Source = source
    if ts.deflated:
        data_source = InflatedSource(source, dataset_offset)
        parser = _Parser(data_source, ts, Cursor(data_source, 0, first_read))
    else:
        parser = _Parser(source, ts, cur)
    try:
        parser.parse_dataset(header)
    except struct.error as exc:  # pragma: no cover - guarded by exact reads
        raise InvalidFileError(str(exc), path=name) from exc
    _finish(header, parser)
    header.pixel_head = parser.cur.buffered_from(header.pixel_offset)
    return header, data_source


def _finish(header: Header, parser: _Parser) -> None:
    v = header.values
    eot = v.pop("ExtendedOffsetTable", None)
    eotl = v.pop("ExtendedOffsetTableLengths", None)
    if eot is not None and eotl is not None and header.pixel_length is None:
        header.extended_offsets = eot
        header.extended_lengths = eotl
