"""DICOM JSON encoded back into a data set: pydicom reads every value back, and
the header parser keeps what it keeps from the file itself."""

from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.data import get_charset_files, get_testdata_file

from dicomframes._dicom.json_dataset import encode
from dicomframes.errors import InvalidFileError
from dicomframes.frames.header import parse_header
from dicomframes.io.local import BytesSource, LocalFileSource
from tests.helpers.wsigen import write_pyramid

FILES = ["color3d_jpeg_baseline.dcm", "emri_small_jpeg_2k_lossless.dcm", "SC_rgb_rle_2frame.dcm",
         "MR_small.dcm", "CT_small.dcm", "eCT_Supplemental.dcm"]


def _json_of(path: str) -> dict:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return ds.to_json_dict(bulk_data_threshold=1 << 62)


def _files() -> list[str]:
    return [get_testdata_file(name) for name in FILES] + sorted(get_charset_files("chr[HIX]*.dcm"))


@pytest.mark.parametrize("path", _files(), ids=lambda p: p.rsplit("/", 1)[-1])
def test_pydicom_reads_every_value_back(path):
    original = pydicom.dcmread(path, stop_before_pixels=True)
    data = encode(_json_of(path))
    back = pydicom.dcmread(io.BytesIO(data), force=True)
    back.file_meta = pydicom.dataset.FileMetaDataset()
    back.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    compared = 0
    for elem in original.iterall():
        if elem.tag == 0x00080005 or elem.VR in ("OB", "OW", "OD", "OF", "OL", "OV", "UN") or elem.tag.group == 2:
            continue
        if elem.VR == "SQ":
            continue  # their elements are compared one by one (iterall)
        found = [e for e in back.iterall() if e.tag == elem.tag and _same(e.value, elem.value, elem.VR)]
        assert found, (elem.keyword or str(elem.tag), elem.value)
        compared += 1
    assert compared > 10


def _same(a, b, vr: str) -> bool:
    if vr in ("DS", "IS"):  # numbers: DICOM JSON carries the number, not its text
        listed = [list(v) if isinstance(v, pydicom.multival.MultiValue) else [v] for v in (a, b)]
        return [None if x in (None, "") else float(x) for x in listed[0]] == \
            [None if x in (None, "") else float(x) for x in listed[1]]
    return str(a) == str(b)


def _header_values(header) -> dict:
    return {k: v for k, v in header.values.items() if k not in ("SpecificCharacterSet", "TransferSyntaxUID",
                                                                 "MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID")}


@pytest.mark.parametrize("path", _files(), ids=lambda p: p.rsplit("/", 1)[-1])
def test_the_header_parser_keeps_what_it_keeps_from_the_file(path):
    from_file, _ = parse_header(LocalFileSource(path))
    encapsulated = from_file.pixel_length is None
    data = encode(_json_of(path), pixel_data=(from_file.pixel_vr, from_file.pixel_length))
    from_json, _ = parse_header(BytesSource(data, "json"))
    assert _header_values(from_json) == _header_values(from_file)
    assert from_json.pixel_keyword == "PixelData" and (from_json.pixel_length is None) == encapsulated
    assert set(from_json.sequences) == set(from_file.sequences)


def test_a_whole_slide_levels_sequences_read_as_from_the_file(tmp_path):
    write_pyramid(tmp_path, width=600, height=400, levels=2, codec="jpeg", tile_size=(128, 128),
                            label=False, overview=False)
    paths = sorted(str(p) for p in tmp_path.rglob("*.dcm"))
    assert len(paths) == 2  # the two levels
    for path in paths:
        from_file, _ = parse_header(LocalFileSource(path))
        from_json, _ = parse_header(BytesSource(encode(_json_of(path), pixel_data=("OB", None)), "json"))
        assert _header_values(from_json) == _header_values(from_file)
        assert set(from_json.sequences) == set(from_file.sequences) >= {"SharedFunctionalGroupsSequence"}


@pytest.mark.parametrize("obj, message", [
    ({"nottag": {"vr": "CS", "Value": ["A"]}}, "not a tag"),
    ({"00080060": {"Value": ["A"]}}, "no VR"),
    ({"00280010": {"vr": "US", "Value": ["many"]}}, "00280010"),
    ({"00280010": {"vr": "US", "Value": [70000]}}, "00280010"),
])
def test_bad_json_is_an_invalid_file_error(obj, message):
    with pytest.raises(InvalidFileError, match=message):
        encode(obj, "http://host/metadata")


def test_nesting_is_bounded():
    obj: dict = {}
    inner = obj
    for _ in range(40):
        inner["00400275"] = {"vr": "SQ", "Value": [{}]}
        inner = inner["00400275"]["Value"][0]
    with pytest.raises(InvalidFileError, match="nests"):
        encode(obj)
