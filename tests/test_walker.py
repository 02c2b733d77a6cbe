"""The element walker (`dicomframes._dicom.elements`) over hand-made bytes.

Every parser of a data set is built on it: the header parser, the dataset
writer's walk, decompress's item walk. These tests feed it bytes made here
(through a minimal reader over memory, and through the io layer's `Cursor`)
and check each length form, both VR modes and byte orders, nested
undefined-length sequences and items, an undefined-length UN, encapsulated
icon pixel data, the depth limit, and the errors for truncated and lying input.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import pytest

from dicomframes._dicom import encode
from dicomframes._dicom.elements import ElementWalker
from dicomframes._dicom.tags import ITEM, LONG_VRS, MAX_DEPTH, PIXEL_DATA, UNDEFINED, VRS
from dicomframes.errors import InvalidFileError, TruncatedFileError
from dicomframes.io.cursor import Cursor
from dicomframes.io.local import BytesSource

ICON_IMAGE_SEQUENCE = 0x00880200
PATIENT_NAME = 0x00100010
PATIENT_ID = 0x00100020
PRIVATE_SQ = 0x00091010


class MemoryReader:
    """The smallest `ByteReader`: bytes in memory, counting the bytes it hands out."""

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos
        self.bytes_read = 0

    def read(self, n: int, what: str = "data") -> bytes:
        chunk = self.data[self.pos : self.pos + n]
        if len(chunk) != n:
            raise TruncatedFileError(f"the file ends inside {what}", path="<memory>", offset=self.pos)
        self.pos += n
        self.bytes_read += n
        return chunk

    def peek(self, n: int) -> bytes:
        chunk = self.data[self.pos : self.pos + n]
        self.bytes_read += len(chunk)
        return chunk

    def skip(self, n: int) -> None:
        self.pos += n


def walker(data: bytes, *, explicit: bool = True, little: bool = True, cursor: bool = False, block: int = 64):
    if cursor:
        reader = Cursor(BytesSource(data, name="test.dcm"), 0, block)
    else:
        reader = MemoryReader(data)
    return ElementWalker(reader, name="test.dcm", size=len(data), explicit=explicit, little=little)


# -- building bytes -------------------------------------------------------------------------------

class Enc:
    """Elements, items and sequences in one encoding."""

    def __init__(self, explicit: bool = True, little: bool = True) -> None:
        self.explicit, self.little = explicit, little

    def el(self, tag: int, vr: str, value: bytes) -> bytes:
        return encode.element(tag, vr, value, explicit=self.explicit, little=self.little)

    def header(self, tag: int, vr: str, length: int) -> bytes:
        return encode.element_header(tag, vr, length, explicit=self.explicit, little=self.little)

    def item(self, content: bytes, undefined: bool) -> bytes:
        if undefined:
            return encode.item_header(little=self.little) + content + encode.item_delimiter(little=self.little)
        return encode.item_header(len(content), little=self.little) + content

    def seq(self, tag: int, items: list[bytes], undefined: bool = True, items_undefined: bool = True, vr: str = "SQ") -> bytes:
        body = b"".join(self.item(i, items_undefined) for i in items)
        if undefined:
            return self.header(tag, vr, UNDEFINED) + body + encode.sequence_delimiter(little=self.little)
        return self.header(tag, vr, len(body)) + body


class El(NamedTuple):
    """An element as `ElementWalker.elements` yields it, with names for the tests."""

    tag: int
    vr: str | None
    length: int
    start: int
    value_start: int


def _all(w: ElementWalker) -> list[El]:
    return [El(*found) for found in w.elements()]


ENCODINGS = [(True, True), (False, True), (True, False), (False, False)]
ENCODING_IDS = ["explicit-le", "implicit-le", "explicit-be", "implicit-be"]


# -- headers --------------------------------------------------------------------------------------

@pytest.mark.parametrize("vr", sorted(VRS))
def test_each_vr_length_form(vr):
    value = b"\x01\x02\x03\x04"
    for little in (True, False):
        data = encode.element(PATIENT_ID, vr, value, little=little)
        w = walker(data, little=little)
        tag, got_vr, length = w.header()
        assert (tag, got_vr, length) == (PATIENT_ID, vr.encode(), 4)
        # Long VRs: 2 reserved bytes and a 4-byte length; the others a 2-byte length.
        assert w.reader.pos == (12 if vr in LONG_VRS else 8)


@pytest.mark.parametrize("explicit,little", ENCODINGS, ids=ENCODING_IDS)
def test_header_reads_tag_and_length_in_every_encoding(explicit, little):
    e = Enc(explicit, little)
    data = e.el(0x7FE00010, "OW", b"\x00" * 300) + e.el(PATIENT_NAME, "PN", b"Doe^J")
    w = walker(data, explicit=explicit, little=little)
    assert w.header() == (0x7FE00010, b"OW" if explicit else None, 300)
    w.skip_value(300, 0x7FE00010)
    assert w.header() == (PATIENT_NAME, b"PN" if explicit else None, 6)


@pytest.mark.parametrize("little", [True, False])
def test_items_and_delimiters_have_no_vr(little):
    data = encode.item_header(10, little=little) + encode.item_delimiter(little=little) + encode.sequence_delimiter(little=little)
    w = walker(data, explicit=True, little=little)
    assert w.header() == (ITEM, None, 10)
    assert w.header() == (0xFFFEE00D, None, 0)
    assert w.header() == (0xFFFEE0DD, None, 0)


def test_an_invalid_vr_is_refused_with_its_offset():
    data = encode.element(PATIENT_NAME, "PN", b"ab") + struct.pack("<HH2sH", 0x0010, 0x0020, b"\x01x", 2) + b"xy"
    w = walker(data)
    w.header()
    w.skip_value(2, PATIENT_NAME)
    with pytest.raises(InvalidFileError, match=r"\(0010,0020\) has no valid VR") as info:
        w.header()
    assert info.value.offset == 10 and info.value.path == "test.dcm"


# -- the top-level walk ---------------------------------------------------------------------------

@pytest.mark.parametrize("explicit,little", ENCODINGS, ids=ENCODING_IDS)
def test_elements_are_yielded_with_offsets_and_values_skipped_unread(explicit, little):
    e = Enc(explicit, little)
    blob = bytes(range(256)) * 4096  # 1 MiB, never read
    parts = [e.el(0x00080016, "UI", b"1.2.3"), e.el(0x00091001, "OB", blob), e.el(PATIENT_NAME, "PN", b"Doe^J")]
    data = b"".join(parts)
    w = walker(data, explicit=explicit, little=little)
    found = _all(w)
    assert [el.tag for el in found] == [0x00080016, 0x00091001, PATIENT_NAME]
    starts = [0, len(parts[0]), len(parts[0]) + len(parts[1])]
    assert [el.start for el in found] == starts
    hl = [12 if explicit and vr in LONG_VRS else 8 for vr in ("UI", "OB", "PN")]
    assert [el.value_start for el in found] == [s + h for s, h in zip(starts, hl)]
    assert [el.vr for el in found] == (["UI", "OB", "PN"] if explicit else [None] * 3)
    assert [el.length for el in found] == [6, len(blob), 6]
    assert w.reader.bytes_read <= 3 * 12  # element headers only: the values were never read


def test_a_value_the_caller_reads_is_not_skipped_again():
    e = Enc()
    data = e.el(0x00080016, "UI", b"1.2.3") + e.el(PATIENT_NAME, "PN", b"Doe^J")
    w = walker(data)
    values = {}
    for tag, _, length, _, _ in w.elements():
        values[tag] = w.reader.read(length, "a value")
    assert values == {0x00080016: b"1.2.3\x00", PATIENT_NAME: b"Doe^J "}


def test_elements_stop_at_end():
    e = Enc()
    first = e.el(0x00020001, "OB", b"\x00\x01")
    data = first + e.el(0x00020010, "UI", b"1.2") + e.el(0x00080016, "UI", b"1.2")
    w = walker(data)
    assert [found[0] for found in w.elements(end=len(first) + 1)] == [0x00020001, 0x00020010]


@pytest.mark.parametrize("tag", [ITEM, 0xFFFEE00D, 0xFFFEE0DD])
def test_items_and_delimiters_are_refused_at_the_top_level(tag):
    e = Enc()
    data = e.el(PATIENT_NAME, "PN", b"ab") + encode.element_header(tag, "", 0)
    with pytest.raises(InvalidFileError, match="at the top level") as info:
        _all(walker(data))
    assert info.value.offset == 10


# -- sequences ------------------------------------------------------------------------------------

def _nested(e: Enc, undefined: bool, items_undefined: bool) -> bytes:
    """A sequence whose items hold sequences, in every length combination, with a value between."""
    inner = e.seq(PRIVATE_SQ, [e.el(PATIENT_ID, "LO", b"in"), b""], undefined=not undefined, items_undefined=items_undefined)
    deeper = e.seq(PRIVATE_SQ, [e.seq(PRIVATE_SQ, [e.el(PATIENT_ID, "LO", b"deep")])])
    return e.seq(0x00081140, [inner + e.el(PATIENT_NAME, "PN", b"x"), deeper, b""], undefined=undefined, items_undefined=items_undefined)


@pytest.mark.parametrize("explicit,little", ENCODINGS, ids=ENCODING_IDS)
@pytest.mark.parametrize("undefined", [True, False])
@pytest.mark.parametrize("items_undefined", [True, False])
@pytest.mark.parametrize("cursor", [False, True], ids=["memory", "cursor"])
def test_nested_sequences_are_skipped_to_the_next_element(explicit, little, undefined, items_undefined, cursor):
    e = Enc(explicit, little)
    seq = _nested(e, undefined, items_undefined)
    data = e.el(0x00080016, "UI", b"1.2") + seq + e.el(PATIENT_NAME, "PN", b"after")
    found = _all(walker(data, explicit=explicit, little=little, cursor=cursor, block=16))
    assert [el.tag for el in found] == [0x00080016, 0x00081140, PATIENT_NAME]
    assert found[1].length == (UNDEFINED if undefined else len(seq) - (12 if explicit else 8))
    assert found[2].start == len(data) - len(e.el(PATIENT_NAME, "PN", b"after"))


@pytest.mark.parametrize("little", [True, False])
def test_undefined_length_un_is_an_implicit_little_endian_sequence(little):
    """PS3.5 6.2.2: whatever the data set's encoding, the items of an undefined-length UN are Implicit VR LE."""
    implicit = Enc(explicit=False, little=True)
    items = implicit.seq(PRIVATE_SQ, [implicit.el(PATIENT_ID, "LO", b"abc") + implicit.seq(PRIVATE_SQ, [implicit.el(PATIENT_ID, "LO", b"zz")])])
    e = Enc(True, little)
    un = e.header(0x00091020, "UN", UNDEFINED) + items[8:]  # the implicit sequence's items and delimiter
    data = un + e.el(PATIENT_NAME, "PN", b"after")
    found = _all(walker(data, little=little))
    assert [(el.tag, el.vr, el.length) for el in found] == [(0x00091020, "UN", UNDEFINED), (PATIENT_NAME, "PN", 6)]
    assert found[1].start == len(un)


def test_encapsulated_pixel_data_of_an_icon_image_is_skipped():
    e = Enc()
    fragments = encode.item_header(0) + encode.item(b"\xff\xd8 icon codestream \xff\xd9")
    icon_pixels = encode.pixel_header(PIXEL_DATA, "OB", None) + fragments + encode.SEQUENCE_DELIMITER_BYTES
    icon = e.seq(ICON_IMAGE_SEQUENCE, [e.el(0x00280010, "US", b"\x10\x00") + icon_pixels])
    data = icon + e.el(0x00280010, "US", b"\x00\x02") + encode.pixel_header(PIXEL_DATA, "OW", 8) + bytes(8)
    found = _all(walker(data))
    assert [el.tag for el in found] == [ICON_IMAGE_SEQUENCE, 0x00280010, PIXEL_DATA]
    assert found[2].start == len(icon) + 10


def test_undefined_length_on_a_value_vr_is_refused():
    data = encode.element_header(0x00180050, "UT", UNDEFINED)
    with pytest.raises(InvalidFileError, match=r"\(0018,0050\) with VR UT has undefined length"):
        _all(walker(data + bytes(16)))


def test_a_non_item_inside_a_sequence_is_refused_with_its_offset():
    e = Enc()
    data = e.header(0x00081140, "SQ", UNDEFINED) + e.el(PATIENT_NAME, "PN", b"xy") + encode.SEQUENCE_DELIMITER_BYTES
    with pytest.raises(InvalidFileError, match=r"expected an item in a sequence, found \(0010,0010\)") as info:
        _all(walker(data))
    assert info.value.offset == 12


# -- the depth limit ------------------------------------------------------------------------------

def _deep(levels: int, e: Enc | None = None) -> bytes:
    e = e or Enc()
    inner = e.el(PATIENT_ID, "LO", b"x")
    for _ in range(levels):
        inner = e.seq(PRIVATE_SQ, [inner])
    return inner


def test_nesting_is_limited_in_one_place():
    # Depth counts open sequences and items: the k-th nested sequence is at 2k - 1.
    allowed = (MAX_DEPTH + 1) // 2
    ok = _deep(allowed) + Enc().el(PATIENT_NAME, "PN", b"ok")
    assert [el.tag for el in _all(walker(ok))] == [PRIVATE_SQ, PATIENT_NAME]
    too_deep = _deep(allowed + 1)
    with pytest.raises(InvalidFileError, match=f"sequences nested deeper than {MAX_DEPTH} levels") as info:
        _all(walker(too_deep))
    assert info.value.offset == allowed * (12 + 8) + 12  # the value of the first sequence too deep
    for cursor in (False, True):  # the same through a cursor, and in implicit VR
        with pytest.raises(InvalidFileError, match="nested"):
            _all(walker(_deep(allowed + 1, Enc(False)), explicit=False, cursor=cursor))


# -- truncation and lying lengths -----------------------------------------------------------------

@pytest.mark.parametrize("cursor", [False, True], ids=["memory", "cursor"])
def test_truncated_inside_an_element_header(cursor):
    e = Enc()
    first = e.el(PATIENT_NAME, "PN", b"ab")
    data = first + e.el(0x00091001, "OB", b"1234")[:10]  # the long length field is cut
    with pytest.raises(TruncatedFileError, match="ends inside an element header") as info:
        _all(walker(data, cursor=cursor))
    assert info.value.offset == len(first) + 8


@pytest.mark.parametrize("cursor", [False, True], ids=["memory", "cursor"])
def test_truncated_inside_a_sequence(cursor):
    e = Enc()
    seq = e.seq(PRIVATE_SQ, [e.el(PATIENT_ID, "LO", b"x" * 20)])
    cut = seq[: len(seq) - 12]  # inside the item, after its last element
    with pytest.raises(TruncatedFileError) as info:
        _all(walker(cut, cursor=cursor))
    assert info.value.offset == len(cut) - 4  # the item delimiter's header starts there, and is cut


def test_a_value_longer_than_the_file_is_refused_before_skipping():
    e = Enc()
    data = e.header(0x00091001, "OB", 1 << 30) + b"abcd"
    with pytest.raises(TruncatedFileError, match=r"\(0009,1001\) declares 1073741824 bytes but the file ends at 16") as info:
        _all(walker(data))
    assert info.value.offset == 12


def test_a_lying_item_length_inside_a_sequence():
    e = Enc()
    data = e.header(PRIVATE_SQ, "SQ", UNDEFINED) + encode.item_header(1000) + e.el(PATIENT_ID, "LO", b"ab")
    with pytest.raises(TruncatedFileError, match=r"\(FFFE,E000\) declares 1000 bytes") as info:
        _all(walker(data))
    assert info.value.offset == 20


def test_a_lying_length_inside_an_undefined_item():
    e = Enc()
    data = e.header(PRIVATE_SQ, "SQ", UNDEFINED) + encode.item_header() + e.header(PATIENT_ID, "LO", 500) + b"ab"
    with pytest.raises(TruncatedFileError, match=r"\(0010,0020\) declares 500 bytes") as info:
        _all(walker(data))
    assert info.value.offset == 28


def test_lengths_are_not_checked_without_a_size():
    """Deflated data has no size to check against: a lying length reads on until the data ends."""
    e = Enc()
    data = e.header(0x00091001, "OB", 100) + b"ab"
    w = ElementWalker(MemoryReader(data), name="x", size=None)
    assert [found[2] for found in w.elements()] == [100]


# -- items of a sequence (fragments) -------------------------------------------------------------

def test_items_yields_each_item_and_stops_after_the_delimiter():
    data = encode.item_header(0) + encode.item(b"abc") + encode.item(b"defg") + encode.SEQUENCE_DELIMITER_BYTES + b"rest"
    w = walker(data)
    seen = []
    for value_start, length in w.items():
        if len(seen) == 1:
            assert w.reader.read(length) == b"abc\x00"  # a value the caller reads is not skipped again
        seen.append((value_start, length))
    assert seen == [(8, 0), (16, 4), (28, 4)]
    assert w.reader.pos == len(data) - 4


def test_items_refuses_what_is_not_an_item():
    data = encode.item(b"ab") + encode.element(PATIENT_NAME, "PN", b"x")
    with pytest.raises(InvalidFileError, match=r"found \(0010,0010\)") as info:
        list(walker(data).items())
    assert info.value.offset == 10


def test_items_truncated():
    data = encode.item(b"abcd") + encode.item_header(8)
    with pytest.raises(TruncatedFileError):
        list(walker(data).items())


# -- the walkers built on it agree ----------------------------------------------------------------

def test_header_parser_and_dataset_writer_walk_agree(tmp_path):
    from dicomframes.frames.header import parse_header
    from dicomframes.io.local import LocalFileSource
    from dicomframes.transcode.dataset_writer import walk
    from tests.helpers import dicomgen

    e = Enc()
    implicit = Enc(False)
    un = e.header(0x00091020, "UN", UNDEFINED) + implicit.seq(PRIVATE_SQ, [implicit.el(PATIENT_ID, "LO", b"abc")])[8:]
    icon_pixels = encode.pixel_header(PIXEL_DATA, "OB", None) + encode.item_header(0) + encode.item(b"icon") + encode.SEQUENCE_DELIMITER_BYTES
    els = dicomgen.image_elements(frames=1, rows=2, columns=2)
    # In tag order: group 0008, a nested sequence (0008,1140), the UN (0009,1020),
    # group 0028, the icon (0088,0200), Pixel Data.
    body = b"".join(dicomgen.element(t, v, x) for t, v, x in els if t >> 16 == 0x0008)
    body += _nested(e, True, False) + un
    body += b"".join(dicomgen.element(t, v, x) for t, v, x in els if t >> 16 == 0x0028)
    body += e.seq(ICON_IMAGE_SEQUENCE, [icon_pixels])
    path = tmp_path / "walk.dcm"
    path.write_bytes(dicomgen.file_meta(dicomgen.EXPLICIT_LE) + body + encode.pixel_header(PIXEL_DATA, "OB", 4) + b"\x01\x02\x03\x04")
    source = LocalFileSource(path)
    try:
        header, _ = parse_header(source)
        elements = list(walk(source, header.dataset_offset))
    finally:
        source.close()
    assert elements[-1].tag == PIXEL_DATA and elements[-1].value_start == header.pixel_offset
    assert [el.tag for el in elements[:-1]] == sorted(el.tag for el in elements[:-1])
    assert {0x00081140, 0x00091020, ICON_IMAGE_SEQUENCE} <= {el.tag for el in elements}
    assert header.get("Rows") == 2 and header.pixel_length == 4
