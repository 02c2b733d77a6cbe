"""SOP class names for `info`: the built-in table agrees with pydicom's dictionary."""

from __future__ import annotations

import pytest

import dicomframes
from dicomframes._dicom.sop_classes import known_uids, sop_class_name

pydicom = pytest.importorskip("pydicom")


def test_every_listed_name_is_pydicoms():
    from pydicom.uid import UID

    listed = known_uids()
    assert len(listed) >= 50
    for uid, name in listed.items():
        assert UID(uid).name == name, uid


def test_multi_frame_and_whole_slide_classes_are_listed():
    assert sop_class_name("1.2.840.10008.5.1.4.1.1.77.1.6") == "VL Whole Slide Microscopy Image Storage"
    assert sop_class_name("1.2.840.10008.5.1.4.1.1.2.1") == "Enhanced CT Image Storage"
    assert sop_class_name("1.2.840.10008.5.1.4.1.1.3.1") == "Ultrasound Multi-frame Image Storage"


def test_unknown_and_absent_classes_have_no_name():
    assert sop_class_name(None) is None
    assert sop_class_name("") is None
    assert sop_class_name("1.2.840.10008.5.1.4.1.1.88.11") is None  # Basic Text SR: no pixels
    assert sop_class_name("1.2.3.4") is None


def test_info_names_the_class(tmp_path):
    path = dicomframes.samples.write_sample(tmp_path / "s.dcm", frames=2, rows=8, columns=8)
    with dicomframes.open(path) as reader:
        assert reader.info.sop_class == "Multi-frame Grayscale Byte Secondary Capture Image Storage"
        assert reader.info.as_dict()["sop_class"] == reader.info.sop_class
