"""Non-conformant but common structure that pydicom reads (issue 14).

Two classes, each read the way pydicom reads it, with a warning on the
``dicomframes`` logger:

- a File Meta Information group encoded Implicit VR Little Endian (pydicom
  believes the bytes of the first meta element);
- stray items and sequence delimiters of defined length at the top level of
  the data set, e.g. a zero-length item after a sequence declared with length 0
  (pydicom keeps each as an element of that length and reads on).

`decompress` leaves the strays out of its copy (pydicom cannot write them);
every element pydicom reads is kept.

What pydicom does not read stays refused: a stray item delimiter (pydicom ends
the data set there and finds no Pixel Data) and a stray item of undefined length.
"""

from __future__ import annotations

import logging
import struct
import warnings

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

import dicomframes
from dicomframes import DicomFramesError
from dicomframes._dicom.elements import ElementWalker
from dicomframes._dicom.tags import UNDEFINED
from dicomframes.errors import InvalidFileError, TruncatedFileError
from tests.helpers import dicomgen as g
from tests.helpers.dicomgen import EXPLICIT_BE, EXPLICIT_LE, IMPLICIT_LE

FRAMES, ROWS, COLUMNS = 3, 4, 5
PIXELS = (np.arange(FRAMES * ROWS * COLUMNS) * 7 % 251).astype(np.uint8).tobytes()
PATIENT_NAME = 0x00100010
REFERENCED_IMAGE_SQ = 0x00081140


def _pydicom_frames(path: str) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path).pixel_array


def _assert_frames_equal_pydicom(path: str) -> None:
    expected = _pydicom_frames(path)
    assert expected.shape == (FRAMES, ROWS, COLUMNS)
    with dicomframes.open(path) as reader:
        assert len(reader) == FRAMES
        for i in range(FRAMES):
            np.testing.assert_array_equal(reader.frame(i), expected[i])


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "dicomframes" and r.levelno == logging.WARNING]


def _dataset(transfer_syntax: str, stray: bytes = b"", *, before: int = 0x00280002) -> bytes:
    """The data set (image elements and Pixel Data), with `stray` just before element `before`."""
    little = transfer_syntax != EXPLICIT_BE
    explicit = transfer_syntax != IMPLICIT_LE
    out = []
    for tag, vr, value in g.image_elements(frames=FRAMES, rows=ROWS, columns=COLUMNS):
        if tag == before:
            out.append(stray)
        out.append(g.element(tag, vr, value, little=little, explicit=explicit))
    out.append(g.element_header(0x7FE00010, "OB", len(PIXELS), little=little, explicit=explicit))
    out.append(PIXELS)
    return b"".join(out)


# -- a File Meta Information group encoded Implicit VR ----------------------------------------

def _implicit_meta(transfer_syntax: str, *, group_length: bool = True) -> bytes:
    body = b"".join([
        g.element(0x00020001, "OB", b"\x00\x01", explicit=False),
        g.element(0x00020002, "UI", g.SC_MF_BYTE, explicit=False),
        g.element(0x00020003, "UI", "2.25.1", explicit=False),
        g.element(0x00020010, "UI", transfer_syntax, explicit=False),
        g.element(0x00020012, "UI", "2.25.2", explicit=False),
    ])
    if group_length:
        body = g.element(0x00020000, "UL", len(body), explicit=False) + body
    return b"\x00" * 128 + b"DICM" + body


@pytest.mark.parametrize("transfer_syntax", [EXPLICIT_LE, IMPLICIT_LE, EXPLICIT_BE])
@pytest.mark.parametrize("group_length", [True, False])
def test_implicit_vr_file_meta_is_read_as_pydicom_reads_it(tmp_path, caplog, transfer_syntax, group_length):
    path = tmp_path / "meta.dcm"
    path.write_bytes(_implicit_meta(transfer_syntax, group_length=group_length) + _dataset(transfer_syntax))
    caplog.set_level(logging.WARNING, logger="dicomframes")
    _assert_frames_equal_pydicom(str(path))
    assert any("file meta information is encoded Implicit VR" in m and "meta.dcm" in m for m in _warnings(caplog))
    with dicomframes.open(str(path)) as reader:
        assert reader.header.transfer_syntax.uid == transfer_syntax
        assert reader.header.get("MediaStorageSOPClassUID") == g.SC_MF_BYTE


def test_explicit_vr_file_meta_logs_nothing(tmp_path, caplog):
    path = g.write_file(tmp_path / "ok.dcm", EXPLICIT_LE, g.image_elements(frames=FRAMES, rows=ROWS, columns=COLUMNS), PIXELS)
    caplog.set_level(logging.WARNING, logger="dicomframes")
    _assert_frames_equal_pydicom(path)
    assert _warnings(caplog) == []


def test_a_meta_element_with_no_vr_and_no_plausible_length_is_refused(tmp_path):
    # Neither a VR nor, read as implicit VR, a length that fits: no guess.
    meta = b"\x00" * 128 + b"DICM" + struct.pack("<HH", 0x0002, 0x0000) + b"\x01\x02\x03\x04" + bytes(4)
    path = tmp_path / "bad.dcm"
    path.write_bytes(meta + _dataset(EXPLICIT_LE))
    with pytest.raises(InvalidFileError, match="no valid VR"):
        dicomframes.open(str(path))


def test_a_truncated_implicit_vr_file_meta_is_an_error(tmp_path):
    data = _implicit_meta(EXPLICIT_LE)
    for cut in range(140, len(data), 7):
        path = tmp_path / f"cut{cut}.dcm"
        path.write_bytes(data[:cut])
        with pytest.raises(DicomFramesError):
            with dicomframes.open(str(path)) as reader:
                reader.frame(0)


# -- stray items at the top level --------------------------------------------------------------

def _item(length: int, content: bytes = b"", *, little: bool = True) -> bytes:
    return struct.pack("<HHI" if little else ">HHI", 0xFFFE, 0xE000, length) + content


def _sequence_delimiter(length: int = 0, *, little: bool = True) -> bytes:
    return struct.pack("<HHI" if little else ">HHI", 0xFFFE, 0xE0DD, length) + bytes(length)


def _strays(transfer_syntax: str) -> dict[str, bytes]:
    little = transfer_syntax != EXPLICIT_BE
    explicit = transfer_syntax != IMPLICIT_LE
    seq0 = g.element_header(REFERENCED_IMAGE_SQ, "SQ", 0, little=little, explicit=explicit)
    name = g.element(PATIENT_NAME, "PN", "AB", little=little, explicit=explicit)
    return {
        "empty sequence, zero-length item": seq0 + _item(0, little=little),
        "zero-length item": _item(0, little=little),
        "empty sequence, item, sequence delimiter": seq0 + _item(0, little=little) + _sequence_delimiter(little=little),
        "zero-length sequence delimiter": _sequence_delimiter(little=little),
        "sequence delimiter with a length": _sequence_delimiter(4, little=little),
        "item holding an element": _item(len(name), name, little=little),
        "item holding bytes": _item(4, b"abcd", little=little),
    }


STRAY_NAMES = list(_strays(EXPLICIT_LE))


@pytest.mark.parametrize("transfer_syntax", [EXPLICIT_LE, IMPLICIT_LE, EXPLICIT_BE])
@pytest.mark.parametrize("case", STRAY_NAMES)
def test_stray_items_at_the_top_level_are_skipped_as_pydicom_skips_them(tmp_path, caplog, transfer_syntax, case):
    path = tmp_path / "stray.dcm"
    # Before Samples per Pixel: the image description after it must still be read.
    path.write_bytes(g.file_meta(transfer_syntax) + _dataset(transfer_syntax, _strays(transfer_syntax)[case]))
    caplog.set_level(logging.WARNING, logger="dicomframes")
    _assert_frames_equal_pydicom(str(path))
    logged = _warnings(caplog)
    assert len(logged) == 1 and "stray" in logged[0] and "stray.dcm" in logged[0]
    with dicomframes.open(str(path)) as reader:
        assert (reader.header.get("Rows"), reader.header.get("Columns"), reader.header.get("NumberOfFrames")) == (ROWS, COLUMNS, FRAMES)


@pytest.mark.parametrize("transfer_syntax", [EXPLICIT_LE, IMPLICIT_LE, EXPLICIT_BE])
@pytest.mark.parametrize("case", STRAY_NAMES)
def test_decompress_leaves_stray_items_out_of_the_copy(tmp_path, transfer_syntax, case):
    """The copy holds every element pydicom reads from the source (the strays
    are not elements a writer may write), and the same frames."""
    src, dst = tmp_path / "stray.dcm", tmp_path / "out.dcm"
    src.write_bytes(g.file_meta(transfer_syntax) + _dataset(transfer_syntax, _strays(transfer_syntax)[case]))
    dicomframes.decompress(str(src), str(dst), generate_instance_uid=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = pydicom.dcmread(src, stop_before_pixels=True)
        ours = pydicom.dcmread(dst)
    kept = [t for t in theirs.keys() if t.group != 0xFFFE]
    assert len(kept) < len(theirs.keys())  # pydicom kept the strays as elements
    assert [t for t in ours.keys() if t != 0x7FE00010] == kept
    np.testing.assert_array_equal(ours.pixel_array, _pydicom_frames(str(src)))
    with dicomframes.open(str(dst)) as reader:
        np.testing.assert_array_equal(np.asarray(reader), _pydicom_frames(str(src)))


def _refused(tmp_path, stray: bytes, name: str):
    path = tmp_path / f"{name}.dcm"
    path.write_bytes(g.file_meta(EXPLICIT_LE) + _dataset(EXPLICIT_LE, stray))
    return str(path)


def test_a_stray_item_delimiter_is_refused_as_pydicom_finds_no_pixel_data(tmp_path):
    path = _refused(tmp_path, struct.pack("<HHI", 0xFFFE, 0xE00D, 0), "delim")
    with pytest.raises(AttributeError):
        _pydicom_frames(path)  # pydicom ends the data set at the delimiter
    with pytest.raises(InvalidFileError, match=r"\(FFFE,E00D\) at the top level"):
        dicomframes.open(path)


def test_a_stray_undefined_length_item_is_refused(tmp_path):
    name = g.element(PATIENT_NAME, "PN", "AB")
    path = _refused(tmp_path, _item(UNDEFINED, name) + struct.pack("<HHI", 0xFFFE, 0xE00D, 0), "undefined")
    with pytest.raises(AttributeError):
        _pydicom_frames(path)
    with pytest.raises(InvalidFileError, match=r"\(FFFE,E000\) at the top level"):
        dicomframes.open(path)


def test_a_stray_item_longer_than_the_file_is_refused(tmp_path):
    path = _refused(tmp_path, _item(1 << 30), "long")
    with pytest.raises(TruncatedFileError, match=r"\(FFFE,E000\) declares 1073741824 bytes"):
        dicomframes.open(path)


class _Bytes:
    """A `ByteReader` over bytes."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def read(self, n: int, what: str = "") -> bytes:
        if self.pos + n > len(self.data):
            raise TruncatedFileError(f"the data ends inside {what}")
        self.pos += n
        return self.data[self.pos - n:self.pos]

    def peek(self, n: int) -> bytes:
        return self.data[self.pos:self.pos + n]

    def skip(self, n: int) -> None:
        self.pos += n


def test_the_walker_refuses_stray_items_unless_asked(caplog):
    data = g.element(PATIENT_NAME, "PN", "AB") + _item(0) + _sequence_delimiter() + g.element(0x00100020, "LO", "CD")
    caplog.set_level(logging.WARNING, logger="dicomframes")
    walker = ElementWalker(_Bytes(data), name="walk", size=len(data), stray_items=True)
    assert [e[0] for e in walker.elements()] == [PATIENT_NAME, 0x00100020]
    assert walker.strays == 2
    assert len(_warnings(caplog)) == 1  # one warning per walk, however many strays
    walker = ElementWalker(_Bytes(data), name="walk", size=len(data))
    with pytest.raises(InvalidFileError, match="at the top level"):
        list(walker.elements())
