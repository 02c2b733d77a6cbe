"""Text in the Specific Character Set reads as pydicom reads it: every text value
of pydicom's character-set test files, and the names the header keeps."""

from __future__ import annotations

import logging

import pydicom
import pytest
from pydicom.data import get_charset_files
from pydicom.multival import MultiValue

import dicomframes
from dicomframes._dicom import charset

FILES = sorted(get_charset_files("*.dcm"))


def _pydicom_text(value, vr: str):
    if isinstance(value, MultiValue):
        return [str(v).strip("\x00 ") for v in value]
    return str(value).rstrip("\x00 ") if vr in ("ST", "LT", "UT") else str(value).strip("\x00 ")


def test_the_corpus_is_there():
    assert len(FILES) >= 15  # the ISO 2022 (Japanese, Korean), GB18030, UTF-8 and single-byte sets


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.rsplit("/", 1)[-1])
def test_every_text_value_equals_pydicom(path):
    raw_ds = pydicom.dcmread(path)
    raws = {tag: raw_ds.get_item(tag).value for tag in raw_ds.keys()}  # before pydicom decodes them
    decoded = pydicom.dcmread(path)
    sets = charset.encodings(decoded.get("SpecificCharacterSet"))
    compared = 0
    for tag, raw in raws.items():
        elem = decoded[tag]
        if elem.VR not in charset.TEXT_VRS or not isinstance(raw, bytes):
            continue
        assert charset.decode(raw, elem.VR, sets) == _pydicom_text(elem.value, elem.VR), elem.keyword
        compared += 1
    assert compared > 0


@pytest.mark.parametrize("path", [p for p in FILES if "PixelData" in pydicom.dcmread(p, stop_before_pixels=False)],
                         ids=lambda p: p.rsplit("/", 1)[-1])
def test_the_header_keeps_names_as_pydicom_reads_them(path):
    ds = pydicom.dcmread(path)
    with dicomframes.open(path) as reader:
        for keyword in ("PatientName", "PatientID", "StudyID", "AccessionNumber", "ReferringPhysicianName",
                        "StudyDescription", "SeriesDescription", "PatientSex", "PatientBirthDate", "StudyDate"):
            if keyword in ds:
                assert reader.header.get(keyword) == _pydicom_text(ds[keyword].value, ds[keyword].VR), keyword


def test_terms():
    assert charset.encodings(None) == ("latin_1",)
    assert charset.encodings("ISO_IR 192") == ("utf_8",)
    assert charset.encodings(["", "ISO 2022 IR 87"]) == ("latin_1", "iso2022_jp")
    assert charset.encodings(["ISO 2022 IR 6", "ISO 2022 IR 149"]) == ("latin_1", "euc_kr")
    # plain misspellings of a Defined Term read as that term
    assert charset.encodings("ISO-IR 144") == ("iso8859_5",)
    assert charset.encodings("ISO_IR100") == ("latin_1",)


def test_an_unknown_term_warns_and_reads_as_the_default(caplog):
    with caplog.at_level(logging.WARNING, logger="dicomframes"):
        assert charset.encodings("KLINGON") == ("latin_1",)
    assert "KLINGON" in caplog.text


def test_bytes_a_set_cannot_read_become_replacement_characters():
    assert charset.decode(b"Caf\xff\xfe", "LO", ("utf_8",)) == "Caf\ufffd\ufffd"


def test_an_escape_to_an_undeclared_set_reads_with_the_first_set():
    # ESC $ ) C designates Korean, which a Latin-1 data set did not declare
    assert charset.decode(b"A\x1b$)C\xc8\xab", "LO", ("latin_1",)) == "A\x1b$)CÈ«"


def test_values_split_and_person_name_groups():
    assert charset.decode(b"ONE\\TWO ", "LO", ("latin_1",)) == ["ONE", "TWO"]
    assert charset.decode(b"a\\b ", "LT", ("latin_1",)) == "a\\b"  # one value, backslash kept
    assert charset.decode(b"Doe^John== ", "PN", ("latin_1",)) == "Doe^John"  # trailing empty groups dropped
