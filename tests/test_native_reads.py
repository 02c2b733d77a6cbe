"""Native frames of a local file: read on the calling thread, one positional read
each, straight into the array handed out (or into ``out[k]``)."""

from __future__ import annotations

import os
import threading
import tracemalloc

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

import dicomframes
from dicomframes import StorageError
from dicomframes.frames.pixels import PixelFormat
from dicomframes.io.local import LocalFileSource
from dicomframes.samples import write_sample

pytestmark = pytest.mark.skipif(not hasattr(os, "preadv"), reason="no preadv on this platform")

FRAME = 128 * 128 * 3


@pytest.fixture(scope="module")
def rgb_file(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("native") / "rgb.dcm")
    return write_sample(path, frames=120, rows=128, columns=128, samples_per_pixel=3, syntax="native")


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("dicomframes")
            and not t.name.startswith("dicomframes-region")}


def test_iteration_reads_each_frame_once_on_the_calling_thread(rgb_file):
    ds = pydicom.dcmread(rgb_file)
    with dicomframes.open(rgb_file, workers=2) as reader:
        before = reader.stats["requests"], reader.stats["bytes"]
        started = set()
        for i, frame in enumerate(reader):
            started |= _threads()
            np.testing.assert_array_equal(frame, ds.pixel_array[i])
            assert frame.flags.writeable and frame.flags.c_contiguous
            assert frame.base is None  # its own memory, not a view of a batch
        assert (reader.stats["requests"] - before[0], reader.stats["bytes"] - before[1]) == (120, 120 * FRAME)
    assert not started  # no fetch or decode threads


def test_memory_stays_at_a_frame_or_two(rgb_file):
    with dicomframes.open(rgb_file) as reader:
        tracemalloc.start()
        try:
            for _ in reader:
                pass
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 2.5 * FRAME, peak


def test_read_into_reads_straight_into_out(tmp_path):
    path = write_sample(str(tmp_path / "big.dcm"), frames=60, rows=256, columns=256, samples_per_pixel=3, syntax="native")
    ds = pydicom.dcmread(path)
    with dicomframes.open(path) as reader:
        out = np.zeros((50, 256, 256, 3), np.uint8)
        reader.read_into(range(50), out)  # once before: what the first call sets up is not counted
        tracemalloc.start()
        try:
            got = reader.read_into(range(10, 60), out)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert got is out
    np.testing.assert_array_equal(out, ds.pixel_array[10:60])
    assert peak < 64 << 10, peak  # no frame buffer (196 KiB) allocated at all


def test_read_into_a_strided_out_goes_through_a_buffer(rgb_file):
    ds = pydicom.dcmread(rgb_file)
    with dicomframes.open(rgb_file) as reader:
        big = np.zeros((5, 128, 256, 3), np.uint8)
        out = big[:, :, ::2]  # not contiguous: cannot be read into
        reader.read_into([3, 1, 4, 1, 5], out)
    np.testing.assert_array_equal(out, ds.pixel_array[[3, 1, 4, 1, 5]])
    assert not big[:, :, 1::2].any()


def _format(**changes) -> PixelFormat:
    path = get_testdata_file("SC_rgb_2frame.dcm")
    with dicomframes.open(path) as reader:
        fmt = reader.format
    from dataclasses import replace
    return replace(fmt, **changes)


@pytest.mark.parametrize("changes,as_rgb,expected", [
    ({}, True, True),
    ({"planar_configuration": 1}, True, False),
    ({"photometric_interpretation": "YBR_FULL"}, True, False),
    ({"photometric_interpretation": "YBR_FULL"}, False, True),
    ({"photometric_interpretation": "YBR_FULL_422"}, False, False),
    ({"samples_per_pixel": 1, "photometric_interpretation": "MONOCHROME2",
      "bits_allocated": 16, "bits_stored": 12}, True, False),
    ({"samples_per_pixel": 1, "photometric_interpretation": "MONOCHROME2",
      "bits_allocated": 16, "bits_stored": 16, "pixel_representation": 1}, True, True),
    ({"samples_per_pixel": 1, "photometric_interpretation": "MONOCHROME2",
      "bits_allocated": 1, "bits_stored": 1}, True, False),
])
def test_which_layouts_are_read_as_they_are_stored(changes, as_rgb, expected):
    assert _format(**changes).native_as_stored(as_rgb) is expected


def _write(path, pixels: np.ndarray, **attrs) -> str:
    """A native multi-frame file of `pixels` (frames first) written by pydicom."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
    ds.NumberOfFrames = pixels.shape[0]
    ds.Rows, ds.Columns = pixels.shape[1:3]
    ds.SamplesPerPixel = 1 if pixels.ndim == 3 else pixels.shape[3]
    ds.BitsAllocated = ds.BitsStored = pixels.dtype.itemsize * 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    ds.PhotometricInterpretation = "MONOCHROME2" if pixels.ndim == 3 else "RGB"
    if pixels.ndim == 4:
        ds.PlanarConfiguration = 0
    for key, value in attrs.items():
        setattr(ds, key, value)
    if ds.get("PlanarConfiguration") == 1:
        pixels = pixels.transpose(0, 3, 1, 2)
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return str(path)


@pytest.mark.parametrize("case", ["high bits", "signed", "planar", "ybr", "ybr kept"])
def test_layouts_that_are_not_as_stored_equal_pydicom(tmp_path, case):
    rng = np.random.default_rng(5)
    as_rgb = case != "ybr kept"
    if case in ("high bits", "signed"):
        dtype = np.uint16 if case == "high bits" else np.int16
        pixels = rng.integers(np.iinfo(dtype).min, np.iinfo(dtype).max, (6, 20, 30), dtype=dtype)
        attrs = {"BitsStored": 12, "HighBit": 11} if case == "high bits" else {}
    else:
        pixels = rng.integers(0, 255, (6, 20, 30, 3), dtype=np.uint8)
        attrs = {"PlanarConfiguration": 1} if case == "planar" else {"PhotometricInterpretation": "YBR_FULL"}
    path = _write(tmp_path / "f.dcm", pixels, **attrs)
    expected = pydicom.dcmread(path).pixel_array
    if case == "ybr kept":
        from pydicom.pixels import pixel_array
        expected = pixel_array(path, as_rgb=False)
    with dicomframes.open(path, as_rgb=as_rgb) as reader:
        frames = list(reader)
        out = np.zeros((6, *reader.format.shape), reader.format.dtype)
        reader.read_into(range(6), out)
    np.testing.assert_array_equal(np.stack(frames), expected)
    np.testing.assert_array_equal(out, expected)


class _FailingAt(LocalFileSource):
    """A local file whose reads fail over one byte range, as a disk with a bad sector."""

    def __init__(self, path, bad: int) -> None:
        super().__init__(path)
        self.bad = bad

    def read_into(self, offset, buffers):
        size = sum(memoryview(b).nbytes for b in buffers)
        if offset <= self.bad < offset + size:
            raise StorageError("Input/output error", path=self.name, offset=offset, byte_range=(offset, size))
        return super().read_into(offset, buffers)


def test_a_failed_read_comes_at_its_frame_naming_it(rgb_file):
    with dicomframes.open(rgb_file) as plain:
        span = plain.index.span(7)
    got = []
    with dicomframes.open(_FailingAt(rgb_file, span.offset + 10)) as reader:
        with pytest.raises(StorageError) as info:
            for frame in reader:
                got.append(frame)
    assert len(got) == 7
    assert info.value.frame == 7 and "frame 7" in str(info.value) and rgb_file in str(info.value)


def test_a_header_larger_than_the_file_allocates_nothing_it_declares(tmp_path):
    # 30,000 x 30,000 RGB declared, Pixel Data's length saying 2.7 GB, 48 bytes there.
    path = _write(tmp_path / "small.dcm", np.zeros((1, 4, 4, 3), np.uint8))
    ds = pydicom.dcmread(path)
    ds.Rows = ds.Columns = 30_000
    ds.save_as(path, enforce_file_format=True)
    raw = bytearray(open(path, "rb").read())
    at = raw.index(b"\xe0\x7f\x10\x00OB\x00\x00") + 8
    raw[at : at + 4] = (30_000 * 30_000 * 3).to_bytes(4, "little")
    open(path, "wb").write(raw)
    with dicomframes.open(path) as reader:
        tracemalloc.start()
        try:
            with pytest.raises(dicomframes.TruncatedFileError) as info:
                list(reader)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert info.value.frame == 0 and path in str(info.value)
    assert peak < 1 << 20, peak


def test_read_into_reads_frames_in_a_row_with_one_request(rgb_file):
    with dicomframes.open(rgb_file) as reader:
        out = np.empty((30, 128, 128, 3), np.uint8)
        before = reader.stats["requests"]
        reader.read_into(range(40, 70), out)
        assert reader.stats["requests"] - before == 1
        before = reader.stats["requests"]
        reader.read_into([0, 1, 2, 50, 51, 9] * 5, out)  # runs of 3, 2 and 1 frames
        assert reader.stats["requests"] - before == 3 * 5
        np.testing.assert_array_equal(out[3], reader.frame(50))


def test_a_failed_read_into_a_run_comes_at_its_frame(rgb_file):
    with dicomframes.open(rgb_file) as plain:
        span = plain.index.span(12)
        expected = plain[10:12]
    out = np.zeros((10, 128, 128, 3), np.uint8)
    with dicomframes.open(_FailingAt(rgb_file, span.offset + 10)) as reader:
        with pytest.raises(StorageError) as info:
            reader.read_into(range(10, 20), out)
    assert info.value.frame == 12
    np.testing.assert_array_equal(out[:2], expected)  # the frames before it are there


def test_read_into_past_the_frames_pixel_data_holds_fills_those_before(tmp_path):
    pixels = np.random.default_rng(2).integers(0, 255, (10, 16, 16, 3), dtype=np.uint8)
    path = _write(tmp_path / "short.dcm", pixels)
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames = 12  # Pixel Data holds 10
    ds.save_as(path, enforce_file_format=True)
    out = np.zeros((12, 16, 16, 3), np.uint8)
    with dicomframes.open(path) as reader:
        with pytest.raises(dicomframes.DicomFramesError, match="frame 10") as info:
            reader.read_into(range(12), out)
    assert info.value.frame == 10
    np.testing.assert_array_equal(out[:10], pixels)


def test_regular_spans_are_those_the_index_gives(tmp_path):
    pixels = np.random.default_rng(3).integers(0, 255, (10, 16, 16, 3), dtype=np.uint8)
    path = _write(tmp_path / "regular.dcm", pixels)
    with dicomframes.open(path) as reader:
        start, size, whole = reader.index.regular()
        assert (size, whole) == (16 * 16 * 3, 10)
        assert all(reader.index.span(i) == reader.index.span(i).__class__(i, start + i * size, size) for i in range(10))
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames = 12  # Pixel Data holds 10 of them
    ds.save_as(path, enforce_file_format=True)
    with dicomframes.open(path) as reader:
        assert reader.index.regular()[2] == 10
    bits = _write(tmp_path / "bits.dcm", np.zeros((3, 5, 5), np.uint8))
    ds = pydicom.dcmread(bits)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 1, 0
    ds.PixelData = bytes(10)  # 3 frames of 25 bits, one after another
    ds.save_as(bits, enforce_file_format=True)
    with dicomframes.open(bits) as reader:
        assert reader.index.regular() is None  # frames that start inside a byte
