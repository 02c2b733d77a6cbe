"""Study lists: QIDO-RS returns and matches patient, study and series attributes,
in every character set, as pydicom reads them; the index page shows them."""

from __future__ import annotations

import shutil

import pydicom
import pytest
import requests
from pydicom.data import get_charset_files, get_testdata_file

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
from dicomweb_client.api import DICOMwebClient

from dicomframes.server import create_app
from tests.helpers.serving import Running

#: pydicom's character-set files that have pixel data and UIDs of their own
CHARSET_FILES = ["chrArab.dcm", "chrFren.dcm", "chrGerm.dcm", "chrGreek.dcm", "chrH31.dcm", "chrH32.dcm",
                 "chrHbrw.dcm", "chrI2.dcm", "chrRuss.dcm", "chrX1.dcm", "chrX2.dcm"]
STUDY_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                  "AccessionNumber", "ReferringPhysicianName", "StudyDescription", "StudyID")


def _study(folder, name: str, **values) -> pydicom.Dataset:
    """pydicom's multi-frame JPEG file as a study of its own, with `values`."""
    ds = pydicom.dcmread(get_testdata_file("color3d_jpeg_baseline.dcm"))
    ds.StudyInstanceUID = pydicom.uid.generate_uid()
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    ds.save_as(folder / name)
    return ds


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    folder = tmp_path_factory.mktemp("studies")
    paths = {name: shutil.copy(f, folder / name) for name in CHARSET_FILES
             for f in get_charset_files(name)}
    assert len(paths) == len(CHARSET_FILES)
    _study(folder, "doe.dcm", PatientName="Doe^John", PatientID="P-1", StudyDate="20200315", StudyTime="101500",
           AccessionNumber="A77", StudyDescription="Lung <b>biopsy</b>", SeriesDescription="H&E 40x",
           SeriesNumber=3, PatientSex="M", PatientBirthDate="19600102")
    _study(folder, "roe.dcm", PatientName="Roe^Jane", PatientID="P-2", StudyDate="20211201",
           StudyDescription="Skin", SeriesDescription="IHC", SeriesNumber=1)
    return folder


@pytest.fixture(scope="module")
def served(root):
    running = Running(create_app(str(root)))
    yield running
    running.stop()


@pytest.fixture()
def client(served):
    return DICOMwebClient(url=served.url + "/dicomweb")


def _by_study(rows) -> dict[str, dict]:
    return {row["0020000D"]["Value"][0]: row for row in rows}


def test_study_attributes_are_the_files_as_pydicom_writes_them_in_dicom_json(client, root):
    found = _by_study(client.search_for_studies())
    compared = 0
    for path in sorted(root.iterdir()):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        expected = ds.to_json_dict()
        row = found[ds.StudyInstanceUID]
        for keyword in STUDY_KEYWORDS:
            tag = f"{pydicom.datadict.tag_for_keyword(keyword):08X}"
            if expected.get(tag, {}).get("Value"):
                assert row[tag] == expected[tag], (path.name, keyword)
                compared += 1
            else:
                assert tag not in row, (path.name, keyword)  # no value: not returned
    assert compared >= 2 * len(CHARSET_FILES) + 10


def test_person_names_in_several_scripts_have_their_component_groups(client, root):
    ds = pydicom.dcmread(root / "chrI2.dcm", stop_before_pixels=True)
    row = _by_study(client.search_for_studies())[ds.StudyInstanceUID]
    assert row["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Hong^Gildong", "Ideographic": "洪^吉洞",
                                                      "Phonetic": "홍^길동"}]}


@pytest.mark.parametrize("query, expected", [
    ({"PatientName": "doe*"}, {"Doe^John"}),  # person names match regardless of case
    ({"PatientName": "*^Ja?e"}, {"Roe^Jane"}),
    ({"PatientName": "Yamada^Tarou*"}, {"Yamada^Tarou=山田^太郎=やまだ^たろう"}),
    ({"PatientID": "P-1"}, {"Doe^John"}),
    ({"PatientID": "p-1"}, set()),  # but IDs exactly
    ({"StudyDate": "20200101-20201231"}, {"Doe^John"}),
    ({"StudyDate": "20210101-"}, {"Roe^Jane"}),
    ({"StudyDate": "-20211130"}, {"Doe^John"}),
    ({"StudyDate": "20211201"}, {"Roe^Jane"}),
    ({"StudyDate": "20200315", "PatientName": "Roe*"}, set()),
    ({"AccessionNumber": "A77"}, {"Doe^John"}),
    ({"00081030": "Skin"}, {"Roe^Jane"}),  # by tag as well as keyword
])
def test_studies_match_patient_and_study_attributes(client, query, expected):
    found = client.search_for_studies(search_filters=query)
    names = {row["00100010"]["Value"][0]["Alphabetic"] + "".join(
        f"={row['00100010']['Value'][0][g]}" for g in ("Ideographic", "Phonetic") if g in row["00100010"]["Value"][0])
        for row in found}
    assert names == expected


def test_a_missing_value_matches_only_universally(client):
    everyone = client.search_for_studies()
    assert len(client.search_for_studies(search_filters={"StudyDate": ""})) == len(everyone)
    assert len(client.search_for_studies(search_filters={"StudyDate": "*"})) == len(everyone)
    # pydicom's character-set files have empty study dates: a range matches neither
    assert len(client.search_for_studies(search_filters={"StudyDate": "19000101-"})) == 2


def test_series_carry_their_description_and_number(client, root):
    ds = pydicom.dcmread(root / "doe.dcm", stop_before_pixels=True)
    (row,) = client.search_for_series(study_instance_uid=ds.StudyInstanceUID)
    assert row["0008103E"] == {"vr": "LO", "Value": ["H&E 40x"]}
    assert row["00200011"] == {"vr": "IS", "Value": [3]}
    assert {r["0008103E"]["Value"][0] for r in client.search_for_series(search_filters={"SeriesDescription": "IH*"})} \
        == {"IHC"}


def test_the_index_page_shows_patients_and_studies_escaped(served):
    page = requests.get(served.url + "/").text
    assert "Doe, John" in page and "P-1" in page and "2020-03-15" in page
    assert "Lung &lt;b&gt;biopsy&lt;/b&gt;" in page and "<b>biopsy" not in page
    assert "H&amp;E 40x" in page
    assert "Äneas, Rüdiger" in page and "Hong, Gildong" in page
    assert page.index("Doe, John") < page.index("Roe, Jane")  # sorted by patient
