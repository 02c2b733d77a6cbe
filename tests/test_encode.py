"""The element encoder (`dicomframes._dicom.encode`): what it writes, pydicom reads back.

The sample writer, `decompress` and the test generators all encode through it.
These tests write files with it alone and read them with pydicom's `dcmread`,
check the even-length padding of odd values and the length fields of the VRs
with 4-byte lengths, and read the other encodings back with the element walker.
"""

from __future__ import annotations

import struct

import pytest

from dicomframes._dicom import encode
from dicomframes._dicom.elements import ElementWalker
from dicomframes._dicom.tags import (
    BITS_ALLOCATED,
    COLUMNS,
    EXTENDED_OFFSET_TABLE,
    FILE_META_GROUP_LENGTH,
    FILE_META_INFORMATION_VERSION,
    IMPLEMENTATION_CLASS_UID,
    LONG_VRS,
    MEDIA_STORAGE_SOP_CLASS_UID,
    MEDIA_STORAGE_SOP_INSTANCE_UID,
    NUMBER_OF_FRAMES,
    PHOTOMETRIC_INTERPRETATION,
    PIXEL_DATA,
    ROWS,
    SAMPLES_PER_PIXEL,
    SOP_CLASS_UID,
    SOP_INSTANCE_UID,
    TRANSFER_SYNTAX_UID,
    UNDEFINED,
    VRS,
)
from dicomframes.io.cursor import Cursor
from dicomframes.io.local import BytesSource

pydicom = pytest.importorskip("pydicom")

SC = "1.2.840.10008.5.1.4.1.1.7"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
RLE = "1.2.840.10008.1.2.5"


def _meta(transfer_syntax: str, sop_instance: str = "2.25.12345") -> bytes:
    return encode.file_meta([
        encode.element(FILE_META_INFORMATION_VERSION, "OB", b"\x00\x01"),
        encode.text(MEDIA_STORAGE_SOP_CLASS_UID, "UI", SC),
        encode.text(MEDIA_STORAGE_SOP_INSTANCE_UID, "UI", sop_instance),
        encode.text(TRANSFER_SYNTAX_UID, "UI", transfer_syntax),
        encode.text(IMPLEMENTATION_CLASS_UID, "UI", encode.IMPLEMENTATION_UID),
    ])


def _image(frames: int, extra: dict[int, bytes] | None = None) -> bytes:
    """A data set's elements before Pixel Data (and `extra`, tag -> encoded element), in tag order."""
    elements = {
        SOP_CLASS_UID: encode.text(SOP_CLASS_UID, "UI", SC),
        SOP_INSTANCE_UID: encode.text(SOP_INSTANCE_UID, "UI", "2.25.12345"),  # odd length: NUL padded
        0x00100010: encode.text(0x00100010, "PN", "Doe^Jane"),
        SAMPLES_PER_PIXEL: encode.us(SAMPLES_PER_PIXEL, 1),
        PHOTOMETRIC_INTERPRETATION: encode.text(PHOTOMETRIC_INTERPRETATION, "CS", "MONOCHROME2"),  # odd: space padded
        NUMBER_OF_FRAMES: encode.text(NUMBER_OF_FRAMES, "IS", str(frames)),
        ROWS: encode.us(ROWS, 2),
        COLUMNS: encode.us(COLUMNS, 3),
        BITS_ALLOCATED: encode.us(BITS_ALLOCATED, 8),
        0x00280101: encode.us(0x00280101, 8),
        0x00280102: encode.us(0x00280102, 7),
        0x00280103: encode.us(0x00280103, 0),
        **(extra or {}),
    }
    return b"".join(elements[tag] for tag in sorted(elements))


def test_a_native_file_round_trips_through_pydicom(tmp_path):
    pixels = bytes(range(12))  # two 2x3 frames
    long_text = "x" * 70001  # a UT value past the 2-byte length limit, of odd length
    extra = {
        0x00181000: encode.element(0x00181000, "LO", b"serial"),
        0x00204000: encode.text(0x00204000, "LT", "a comment"),
        0x00209228: encode.ul(0x00209228, 7),  # Concatenation Frame Offset Number
        0x0040A160: encode.element(0x0040A160, "UT", long_text.encode()),  # Text Value
    }
    data = _meta(EXPLICIT_LE) + _image(2, extra) + encode.pixel_header(PIXEL_DATA, "OB", len(pixels)) + pixels
    path = tmp_path / "native.dcm"
    path.write_bytes(data)
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == EXPLICIT_LE
    assert ds.file_meta.MediaStorageSOPInstanceUID == "2.25.12345"
    assert ds.file_meta.ImplementationClassUID == encode.IMPLEMENTATION_UID
    group = _meta(EXPLICIT_LE)[132 + 12 :]  # after the group length element
    assert ds.file_meta.FileMetaInformationGroupLength == len(group)
    assert ds.SOPInstanceUID == "2.25.12345" and ds.PatientName == "Doe^Jane"
    assert ds.PhotometricInterpretation == "MONOCHROME2"
    assert (ds.Rows, ds.Columns, ds.NumberOfFrames, ds.ConcatenationFrameOffsetNumber) == (2, 3, 2, 7)
    assert ds.DeviceSerialNumber == "serial" and ds.ImageComments == "a comment"
    assert ds.TextValue.rstrip() == long_text
    assert struct.unpack_from("<I", extra[0x0040A160], 8)[0] == 70002  # padded, in the 4-byte length field
    assert ds.PixelData == pixels
    assert ds.pixel_array.tolist() == [[[0, 1, 2], [3, 4, 5]], [[6, 7, 8], [9, 10, 11]]]


def test_encapsulated_pixel_data_round_trips_through_pydicom(tmp_path):
    from pydicom.encaps import generate_fragments

    fragments = [b"frame-one", b"frame-2!", b"f3"]
    eot = struct.pack("<3Q", 0, 8 + 10, 8 + 10 + 8 + 8)
    data = (
        _meta(RLE) + _image(3)
        + encode.element(EXTENDED_OFFSET_TABLE, "OV", eot)
        + encode.pixel_header(PIXEL_DATA, "OB", None) + encode.item_header(0)
        + b"".join(encode.item(f) for f in fragments) + encode.SEQUENCE_DELIMITER_BYTES
    )
    path = tmp_path / "encapsulated.dcm"
    path.write_bytes(data)
    ds = pydicom.dcmread(path)
    assert ds["PixelData"].is_undefined_length
    assert ds.ExtendedOffsetTable == eot
    items = list(generate_fragments(ds.PixelData))
    assert items == [b"", b"frame-one\x00", b"frame-2!", b"f3"]  # the BOT, then each fragment, padded


def test_without_a_group_length_and_a_given_preamble(tmp_path):
    preamble = bytes(range(128))
    data = encode.file_meta([encode.text(TRANSFER_SYNTAX_UID, "UI", EXPLICIT_LE)], preamble=preamble, group_length=False)
    assert data[:128] == preamble and data[128:132] == b"DICM"
    assert struct.unpack_from("<HH", data, 132) == (0x0002, 0x0010)
    path = tmp_path / "nolength.dcm"
    path.write_bytes(data + _image(1) + encode.pixel_header(PIXEL_DATA, "OB", 6) + bytes(6))
    ds = pydicom.dcmread(path)
    assert ds.preamble == preamble and ds.file_meta.TransferSyntaxUID == EXPLICIT_LE
    with pytest.raises(ValueError, match="128 bytes"):
        encode.file_meta([], preamble=b"short")


def test_the_group_length_counts_the_elements_after_it():
    data = _meta(EXPLICIT_LE)
    group, elem, vr, length = struct.unpack_from("<HH2sH", data, 132)
    assert (group << 16 | elem, vr, length) == (FILE_META_GROUP_LENGTH, b"UL", 4)
    assert struct.unpack_from("<I", data, 140)[0] == len(data) - 144


# -- padding --------------------------------------------------------------------------------------

@pytest.mark.parametrize("vr,pad", [("UI", b"\x00"), ("OB", b"\x00"), ("UN", b"\x00"),
                                    ("CS", b" "), ("LO", b" "), ("DS", b" "), ("IS", b" "), ("PN", b" "), ("UT", b" ")])
def test_odd_values_are_padded_to_even_length(vr, pad):
    got = encode.element(0x00091001, vr, b"abc")
    header = 12 if vr in LONG_VRS else 8
    assert got[header:] == b"abc" + pad
    length = struct.unpack_from("<I" if vr in LONG_VRS else "<H", got, header - (4 if vr in LONG_VRS else 2))[0]
    assert length == 4
    assert encode.element(0x00091001, vr, b"ab")[header:] == b"ab"  # even: as it is
    assert encode.pad(vr, b"") == b""


def test_items_are_nul_padded():
    assert encode.item(b"abc") == struct.pack("<HHI", 0xFFFE, 0xE000, 4) + b"abc\x00"
    assert encode.item(b"") == struct.pack("<HHI", 0xFFFE, 0xE000, 0)


# -- length fields --------------------------------------------------------------------------------

@pytest.mark.parametrize("vr", sorted(VRS))
def test_length_field_of_each_vr(vr):
    value = b"\x01\x02" * 3
    got = encode.element(0x00091001, vr, value)
    if vr in LONG_VRS:
        # Tag, VR, two reserved zero bytes, a 4-byte length (PS3.5 Table 7.1-1).
        assert struct.unpack_from("<HH2s2sI", got) == (0x0009, 0x1001, vr.encode(), b"\x00\x00", 6)
        assert len(got) == 12 + 6
    else:
        assert struct.unpack_from("<HH2sH", got) == (0x0009, 0x1001, vr.encode(), 6)
        assert len(got) == 8 + 6


def test_long_vrs_take_values_past_64_kib_and_short_ones_refuse_them():
    big = bytes(0x10000)
    got = encode.element(0x00091001, "OB", big)
    assert struct.unpack_from("<I", got, 8)[0] == 0x10000
    got = encode.element(0x00091001, "LO", big, explicit=False)  # implicit VR: every length has 4 bytes
    assert struct.unpack_from("<I", got, 4)[0] == 0x10000
    with pytest.raises(ValueError, match="too long for VR LO"):
        encode.element(0x00091001, "LO", big)


def test_undefined_lengths_and_delimiters():
    assert encode.pixel_header(PIXEL_DATA, "OB", None) == struct.pack("<HH2s2xI", 0x7FE0, 0x0010, b"OB", UNDEFINED)
    assert encode.pixel_header(PIXEL_DATA, "OW", 10) == struct.pack("<HH2s2xI", 0x7FE0, 0x0010, b"OW", 10)
    assert encode.item_header() == struct.pack("<HHI", 0xFFFE, 0xE000, UNDEFINED)
    assert encode.ITEM_DELIMITER_BYTES == struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
    assert encode.SEQUENCE_DELIMITER_BYTES == struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    assert encode.sequence_delimiter(little=False) == struct.pack(">HHI", 0xFFFE, 0xE0DD, 0)
    # Items have no VR, even among explicit VR elements.
    assert encode.element_header(0xFFFEE000, "SQ", 6) == struct.pack("<HHI", 0xFFFE, 0xE000, 6)


# -- the other encodings, read back by the walker ---------------------------------------------------

@pytest.mark.parametrize("explicit", [True, False])
@pytest.mark.parametrize("little", [True, False])
def test_every_encoding_reads_back_through_the_walker(explicit, little):
    values = [(0x00080016, "UI", b"1.2.3"), (0x00091001, "OB", b"\x00" * 70000), (0x00280010, "US", b"\x02\x00"),
              (0x00321060, "UT", b"text"), (0x00100010, "PN", b"Doe")]
    data = b"".join(encode.element(t, vr, v, explicit=explicit, little=little) for t, vr, v in values)
    w = ElementWalker(Cursor(BytesSource(data), 0, 64), name="x", size=len(data), explicit=explicit, little=little)
    got = [(tag, vr, length) for tag, vr, length, _, _ in w.elements()]
    assert got == [(t, vr if explicit else None, len(encode.pad(vr, v))) for t, vr, v in values]
