"""`reader.dataset()` and the display transforms (`dicomframes.views.display`).

The dataset must equal ``pydicom.dcmread(path, stop_before_pixels=True)``
element for element on every corpus file dicomframes opens, read from the
header bytes only; the transforms must equal pydicom's ``apply_modality_lut``,
``apply_voi_lut`` and ``apply_color_lut`` on the corpus files that carry
Rescale Slope/Intercept, a Modality LUT, Window Center/Width, a VOI LUT or a
Palette Color LUT, and use the functional groups of enhanced files.
"""

from __future__ import annotations

import builtins
import logging
import os
import warnings
from functools import cache

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, apply_windowing

import dicomframes
from dicomframes.errors import MissingDependencyError
from dicomframes.samples import write_sample
from dicomframes.views import display
from tests.test_corpus import CORPUS

logging.getLogger("pydicom").setLevel(logging.CRITICAL)
# pydicom warns about odd values in some corpus files; they are not what is tested
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _reference(path: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, stop_before_pixels=True, force=True)


@cache
def _openable() -> list[str]:
    out = []
    for path in CORPUS:
        try:
            dicomframes.open(path).close()
        except dicomframes.DicomFramesError:
            continue
        out.append(path)
    return out


def _by_name(name: str) -> str:
    found = [p for p in CORPUS if os.path.basename(p) == name]
    if not found:
        pytest.skip(f"{name} is not in this pydicom's test files")
    return found[0]


def _assert_same(ds, ref) -> None:
    assert list(ds.keys()) == list(ref.keys())
    for tag in ref.keys():
        assert ds[tag] == ref[tag], tag
    assert list(ds.file_meta.keys()) == list(ref.file_meta.keys())
    for tag in ref.file_meta.keys():
        assert ds.file_meta[tag] == ref.file_meta[tag], tag
    assert ds.preamble == ref.preamble


# -- reader.dataset() ----------------------------------------------------------------------
def test_dataset_equals_pydicom_on_the_corpus():
    paths = _openable()
    assert len(paths) > 100
    kinds = set()
    for path in paths:
        with dicomframes.open(path) as reader:
            ts = reader.header.transfer_syntax
            kinds.add("deflated" if ts.deflated else "big" if not ts.little_endian else
                      "explicit" if reader.header.explicit_vr else "implicit")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = reader.dataset()
            _assert_same(ds, _reference(path))
            assert "PixelData" not in ds
    assert kinds == {"deflated", "big", "explicit", "implicit"}


@pytest.mark.parametrize("name", ["MR_small.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm", "image_dfl.dcm"])
def test_dataset_reads_only_the_header(name, monkeypatch):
    path = _by_name(name)
    with dicomframes.open(path) as reader:
        end = reader.header.pixel_offset
        reads: list[tuple[int, int]] = []
        raw_read = reader.source.read

        def counting(offset, size):
            reads.append((offset, size))
            return raw_read(offset, size)

        monkeypatch.setattr(reader.source, "read", counting)
        before = reader.stats["requests"]
        ds = reader.dataset()
        extra = reader.stats["requests"] - before
        if reader.header.transfer_syntax.deflated:
            # the stored file meta group, then the deflated stream up to Pixel Data
            assert extra <= 2
            assert reads[0] == (0, reader.header.dataset_offset)
        else:
            assert extra <= 1
            assert all(o + s <= end for o, s in reads)
        assert ds.SOPInstanceUID == reader.header.get("SOPInstanceUID")
        assert ds.filename == reader.path


def test_dataset_of_a_sample(tmp_path):
    path = write_sample(tmp_path / "s.dcm", frames=5, rows=16, columns=16, syntax="native")
    with dicomframes.open(path) as reader:
        _assert_same(reader.dataset(), _reference(path))


def test_dataset_from_bytes_the_source_keeps(tmp_path):
    """Where the source holds the header's bytes (remote sources keep their first
    read in their block cache), the dataset costs no request."""
    path = write_sample(tmp_path / "s.dcm", frames=5, rows=16, columns=16, syntax="rle")
    with builtins.open(path, "rb") as f:
        head = f.read(64 * 1024)
    with dicomframes.open(path) as reader:
        reader.source.block_cache.reserve(len(head))
        reader.source.block_cache.add(0, head)
        before = reader.stats["requests"]
        ds = reader.dataset()
        assert reader.stats["requests"] == before
        _assert_same(ds, _reference(path))


def test_dataset_remote_costs_no_request(nginx):
    with dicomframes.open(f"{nginx.url}/native.dcm") as reader:
        before = reader.stats["requests"]
        ds = reader.dataset()
        assert reader.stats["requests"] == before
        assert ds.NumberOfFrames == len(reader)


def test_dataset_is_made_anew(tmp_path):
    path = write_sample(tmp_path / "s.dcm", frames=2, rows=8, columns=8, syntax="native")
    with dicomframes.open(path) as reader:
        a, b = reader.dataset(), reader.dataset()
        assert a is not b and a == b


def test_dataset_of_a_closed_reader(tmp_path):
    path = write_sample(tmp_path / "s.dcm", frames=2, rows=8, columns=8, syntax="native")
    reader = dicomframes.open(path)
    reader.close()
    with pytest.raises(dicomframes.ClosedReaderError):
        reader.dataset()


def test_without_pydicom(tmp_path, monkeypatch):
    path = write_sample(tmp_path / "s.dcm", frames=2, rows=8, columns=8, syntax="native")
    real_import = builtins.__import__

    def no_pydicom(name, *args, **kwargs):
        if name == "pydicom" or name.startswith("pydicom."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pydicom)
    with dicomframes.open(path) as reader:
        for call in (reader.dataset, lambda: reader.modality_lut(0), lambda: reader.voi_lut(0),
                     lambda: reader.palette(0)):
            with pytest.raises(MissingDependencyError) as info:
                call()
            assert isinstance(info.value, ImportError)
            assert "pip install pydicom" in str(info.value)
        assert len(reader.frame(0)) == 8  # frames need no pydicom


# -- display transforms ------------------------------------------------------------------------
@cache
def _carrying(*keywords: str) -> list[str]:
    out = []
    for path in _openable():
        ref = _reference(path)
        if any(k in ref for k in keywords):
            out.append(path)
    return out


def _frames(reader, limit: int = 3):
    for i in range(min(len(reader), limit)):
        try:
            yield i, reader.frame(i)
        except dicomframes.DicomFramesError:
            return


def _eq(a, b) -> None:
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(a, b)


def test_modality_lut_matches_pydicom():
    paths = _carrying("RescaleSlope", "RescaleIntercept", "ModalityLUTSequence")
    assert len(paths) >= 10
    assert any("ModalityLUTSequence" in _reference(p) for p in paths)
    for path in paths:
        ref = _reference(path)
        with dicomframes.open(path) as reader:
            ds = reader.dataset()
            for i, arr in _frames(reader):
                expected = apply_modality_lut(arr, ref)
                _eq(display.modality_lut(arr, reader, frame_number=i), expected)
                _eq(reader.modality_lut(i), expected)
                _eq(reader.modality_lut(arr, dataset=ds), expected)


def test_voi_lut_matches_pydicom():
    paths = _carrying("WindowCenter", "VOILUTSequence")
    assert len(paths) >= 10
    assert any("VOILUTSequence" in _reference(p) for p in paths)
    for path in paths:
        ref = _reference(path)
        with dicomframes.open(path) as reader:
            ds = reader.dataset()
            for i, arr in _frames(reader):
                rescaled = apply_modality_lut(arr, ref)
                expected = apply_voi_lut(rescaled, ref)
                _eq(reader.voi_lut(rescaled, dataset=ds, frame_number=i), expected)
                _eq(display.voi_lut(rescaled, reader), expected)
                _eq(reader.voi_lut(i), apply_voi_lut(arr, ref))
                views = ref.get("WindowCenter")
                if isinstance(views, pydicom.multival.MultiValue) and len(views) > 1:
                    _eq(reader.voi_lut(rescaled, 1, dataset=ds), apply_voi_lut(rescaled, ref, index=1))
                if "VOILUTSequence" in ref and "WindowCenter" in ref:
                    _eq(reader.voi_lut(rescaled, prefer_lut=False, dataset=ds),
                        apply_voi_lut(rescaled, ref, prefer_lut=False))


def test_palette_matches_pydicom():
    paths = [p for p in _carrying("RedPaletteColorLookupTableDescriptor")
             if _reference(p).get("PhotometricInterpretation") == "PALETTE COLOR"]
    assert len(paths) >= 5
    for path in paths:
        ref = _reference(path)
        with dicomframes.open(path) as reader:
            for i, arr in _frames(reader):
                expected = apply_color_lut(arr, ref)
                assert expected.shape == (*arr.shape, 3)
                _eq(reader.palette(arr), expected)
                _eq(display.palette(i, reader), expected)


def test_enhanced_ct_uses_the_shared_functional_groups():
    path = _by_name("eCT_Supplemental.dcm")
    ref = _reference(path)
    assert "RescaleSlope" not in ref and "WindowCenter" not in ref
    shared = ref.SharedFunctionalGroupsSequence[0]
    pvt = shared.PixelValueTransformationSequence[0]
    voi = shared.FrameVOILUTSequence[0]
    with dicomframes.open(path) as reader:
        for i in range(len(reader)):
            arr = reader.frame(i)
            hu = reader.modality_lut(i)
            expected = arr * float(pvt.RescaleSlope) + float(pvt.RescaleIntercept)
            np.testing.assert_array_equal(hu, expected)
            assert hu.dtype == np.float64
            # pydicom's windowing with the group's values copied to the top level
            flat = pydicom.Dataset()
            for k in ("BitsStored", "PixelRepresentation", "PhotometricInterpretation"):
                flat.add(ref[k])
            flat.WindowCenter, flat.WindowWidth = voi.WindowCenter, voi.WindowWidth
            flat.RescaleSlope, flat.RescaleIntercept = pvt.RescaleSlope, pvt.RescaleIntercept
            _eq(reader.voi_lut(hu, frame_number=i), apply_windowing(hu, flat))
            # pydicom on the file itself applies neither
            _eq(apply_modality_lut(arr, ref), arr)


def _enhanced_per_frame(tmp_path):
    """eCT_Supplemental with a Pixel Value Transformation and Frame VOI LUT per frame."""
    path = _by_name("eCT_Supplemental.dcm")
    ds = pydicom.dcmread(path)
    shared = ds.SharedFunctionalGroupsSequence[0]
    for k, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        pvt, voi = pydicom.Dataset(), pydicom.Dataset()
        pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = 1 + k, -1000 * (k + 1), "HU"
        voi.WindowCenter, voi.WindowWidth = 40 + 100 * k, 400 + 100 * k
        item.PixelValueTransformationSequence = [pvt]
        item.FrameVOILUTSequence = [voi]
    out = tmp_path / "per_frame.dcm"
    ds.save_as(out)
    return str(out), shared


def test_enhanced_per_frame_groups(tmp_path):
    path, shared = _enhanced_per_frame(tmp_path)
    ref = _reference(path)
    with dicomframes.open(path) as reader:
        ds = reader.dataset()
        for i in range(len(reader)):
            arr = reader.frame(i)
            item = ref.PerFrameFunctionalGroupsSequence[i]
            pvt, voi = item.PixelValueTransformationSequence[0], item.FrameVOILUTSequence[0]
            hu = reader.modality_lut(arr, frame_number=i, dataset=ds)
            np.testing.assert_array_equal(hu, arr * float(pvt.RescaleSlope) + float(pvt.RescaleIntercept))
            _eq(reader.modality_lut(i), hu)
            flat = pydicom.Dataset()
            for k in ("BitsStored", "PixelRepresentation", "PhotometricInterpretation"):
                flat.add(ref[k])
            flat.WindowCenter, flat.WindowWidth = voi.WindowCenter, voi.WindowWidth
            flat.RescaleSlope, flat.RescaleIntercept = pvt.RescaleSlope, pvt.RescaleIntercept
            _eq(reader.voi_lut(hu, frame_number=i, dataset=ds), apply_windowing(hu, flat))
            _eq(reader.voi_lut(i), apply_windowing(arr, flat))
        # an array of an unknown frame, where each frame has its own: say so
        with pytest.raises(ValueError, match="frame_number"):
            reader.modality_lut(reader.frame(0), dataset=ds)
        with pytest.raises(ValueError, match="frame_number"):
            reader.voi_lut(reader.frame(0), dataset=ds)
        # negative frame numbers count from the end, as reader.frame does
        _eq(reader.modality_lut(-1, dataset=ds), reader.modality_lut(len(reader) - 1, dataset=ds))


def test_transforms_on_a_file_without_them(tmp_path):
    path = write_sample(tmp_path / "s.dcm", frames=2, rows=8, columns=8, syntax="native", bits_allocated=16)
    ref = _reference(path)
    with dicomframes.open(path) as reader:
        arr = reader.frame(1)
        _eq(reader.modality_lut(1), apply_modality_lut(arr, ref))
        _eq(reader.voi_lut(1), apply_voi_lut(arr, ref))
        _eq(reader.voi_lut(1), arr)  # nothing to apply: pydicom returns the frame
