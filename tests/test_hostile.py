"""Hostile and random input: frames equal to pydicom, or a DicomFramesError.

Two kinds of test:

- a property test (hypothesis) that builds DICOM files from random but valid
  structure — encodings, image descriptions, offset tables, fragments, private
  elements, nested sequences of defined and undefined length — and checks every
  frame against pydicom;
- a mutation test that corrupts real corpus files (truncation in every region,
  bit flips, rewritten length fields) and checks the contract: frames or a
  ``DicomFramesError``, never another exception, a hang or runaway memory.

CI runs a few dozen examples of each; set ``DICOMFRAMES_FUZZ=1000`` (examples)
for a longer campaign; benchmarks/fuzz.py runs mutants for minutes in child processes.
"""

from __future__ import annotations

import os
import signal
import struct
import tracemalloc
import warnings
from contextlib import contextmanager

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, encapsulate_extended
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

import dicomframes
from dicomframes import DicomFramesError

EXAMPLES = int(os.environ.get("DICOMFRAMES_FUZZ", "40"))
CASE_SECONDS = 10


@contextmanager
def time_limit(seconds: int):
    """Fail (rather than hang CI) if the body runs longer than `seconds`."""

    def on_alarm(signum, frame):
        raise TimeoutError(f"case took more than {seconds} s: a hang")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# -- property test ------------------------------------------------------------------
NATIVE = {
    "implicit": "1.2.840.10008.1.2",
    "explicit": "1.2.840.10008.1.2.1",
    "big": "1.2.840.10008.1.2.2",
}


@st.composite
def images(draw):
    encoding = draw(st.sampled_from(["implicit", "explicit", "big", "rle", "jpegls"]))
    spp = draw(st.sampled_from([1, 3]))
    ba = draw(st.sampled_from([8, 16]))
    if encoding == "jpegls":
        spp = 1
    bs = draw(st.integers(min_value=max(2, ba - 7), max_value=ba)) if encoding != "jpegls" else ba
    pr = draw(st.sampled_from([0, 1])) if spp == 1 and encoding != "jpegls" else 0
    rows = draw(st.integers(1, 12)) if encoding != "jpegls" else draw(st.integers(8, 20))
    cols = draw(st.integers(1, 12)) if encoding != "jpegls" else draw(st.integers(8, 20))
    frames = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**16))
    extras = draw(st.lists(st.tuples(st.integers(0x10, 0xFF), st.integers(0, 300), st.booleans()), max_size=4))
    nested = draw(st.integers(0, 3))
    table = draw(st.sampled_from(["bot", "none", "eot"]))
    fragments = draw(st.integers(1, 3)) if table == "none" and encoding == "jpegls" else 1
    return dict(encoding=encoding, spp=spp, ba=ba, bs=bs, pr=pr, rows=rows, cols=cols, frames=frames,
                seed=seed, extras=extras, nested=nested, table=table, fragments=fragments)


def _build(path: str, p: dict) -> list[np.ndarray]:
    rng = np.random.default_rng(p["seed"])
    dtype = np.dtype(f"{'ui'[p['pr']]}{p['ba'] // 8}")
    lo, hi = (-(1 << (p["bs"] - 1)), (1 << (p["bs"] - 1)) - 1) if p["pr"] else (0, (1 << p["bs"]) - 1)
    shape = (p["rows"], p["cols"]) + ((3,) if p["spp"] == 3 else ())
    frames = [rng.integers(lo, hi, size=shape, endpoint=True).astype(dtype) for _ in range(p["frames"])]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    for group, length, undefined in p["extras"]:  # private blobs of any size
        ds.add_new((0x0009, 0x1000 + group), "OB", bytes(rng.integers(0, 256, length, dtype=np.uint8)))
    item = Dataset()
    item.PatientID = "x"
    for _ in range(p["nested"]):  # sequences inside sequences
        outer = Dataset()
        outer.ReferencedSOPSequence = Sequence([item, item])
        item = outer
    ds.ReferencedImageSequence = Sequence([item])
    ds.Rows, ds.Columns, ds.SamplesPerPixel = p["rows"], p["cols"], p["spp"]
    ds.PhotometricInterpretation = "RGB" if p["spp"] == 3 else "MONOCHROME2"
    if p["spp"] == 3:
        ds.PlanarConfiguration = 0
    ds.NumberOfFrames = p["frames"]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = p["ba"], p["bs"], p["bs"] - 1, p["pr"]
    enc = p["encoding"]
    if enc in NATIVE:
        ds.file_meta.TransferSyntaxUID = NATIVE[enc]
        data = b"".join(f.astype(dtype.newbyteorder(">" if enc == "big" else "<")).tobytes() for f in frames)
        ds.PixelData = data + b"\x00" * (len(data) % 2)
        ds["PixelData"].VR = "OW" if p["ba"] == 16 else "OB"
        little = enc != "big"
        ds.save_as(path, implicit_vr=enc == "implicit", little_endian=little, enforce_file_format=True)
        return frames
    if enc == "rle":
        from rle.utils import encode_pixel_data

        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.5"
        streams = [
            encode_pixel_data(f.astype(dtype.newbyteorder("<")).tobytes(), rows=p["rows"], columns=p["cols"],
                              samples_per_pixel=p["spp"], bits_allocated=p["ba"], byteorder="<")
            for f in frames
        ]
    else:
        import jpeg_ls

        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.80"
        streams = [bytes(jpeg_ls.encode_array(f)) for f in frames]
    if p["table"] == "eot":
        ds.PixelData, ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = encapsulate_extended(streams)
    else:
        ds.PixelData = encapsulate(streams, fragments_per_frame=p["fragments"], has_bot=p["table"] == "bot")
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return frames


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(params=images())
def test_random_valid_files_equal_pydicom(tmp_path, params):
    from pydicom.pixels import pixel_array

    path = str(tmp_path / "h.dcm")
    try:
        originals = _build(path, params)
    except (ValueError, RuntimeError) as exc:  # an encoder refusing its input: not our concern
        hypothesis.assume(False)
        raise AssertionError from exc
    with time_limit(CASE_SECONDS), dicomframes.open(path, decoder="pylibjpeg", workers=1) as reader:
        assert len(reader) == params["frames"]
        for i in range(len(reader)):
            got = reader.frame(i)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ref = pixel_array(path, index=i)
            assert got.dtype == ref.dtype.newbyteorder("=")
            np.testing.assert_array_equal(got, ref)
            np.testing.assert_array_equal(got, originals[i])


# -- mutation test -----------------------------------------------------------------
from tests.test_corpus import CORPUS

MUTATION_FILES = [
    p for p in CORPUS
    if os.path.basename(p) in {
        "emri_small_jpeg_2k_lossless.dcm", "emri_small_RLE.dcm", "emri_small_big_endian.dcm",
        "SC_rgb_jpeg_dcmtk.dcm", "JPEGLSNearLossless_08.dcm", "image_dfl.dcm", "liver.dcm",
        "SC_rgb_rle_2frame.dcm", "MR_small_implicit.dcm", "JPGLosslessP14SV1_1s_1f_8b.dcm",
        "693_J2KR.dcm", "OBXXXX1A_2frame.dcm",
    }
]


def _contract(path: str) -> None:
    """Open and read every frame: arrays or DicomFramesError, nothing else."""
    tracemalloc.start()
    try:
        with time_limit(CASE_SECONDS):
            try:
                with dicomframes.open(path, workers=1) as reader:
                    for i in range(len(reader)):
                        try:
                            frame = reader.frame(i)
                            assert frame.shape == reader.info.shape
                        except DicomFramesError:
                            pass
                    try:
                        for _ in reader:
                            pass
                    except DicomFramesError:
                        pass
            except DicomFramesError as exc:
                assert str(exc)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    size = os.path.getsize(path)
    assert peak < 64 * 2**20 + 20 * size, f"peak {peak} bytes for a {size}-byte file"


def _mutants(data: bytes, seed: int, count: int):
    rng = np.random.default_rng(seed)
    n = len(data)
    # Truncation in every region: preamble, meta, header, pixel data, the end.
    for cut in sorted({0, 1, 100, 131, 132, 140, 200, n // 4, n // 2, 3 * n // 4, n - 9, n - 1}):
        if 0 <= cut < n:
            yield "truncate", data[:cut]
    for _ in range(count):
        b = bytearray(data)
        kind = rng.integers(0, 3)
        if kind == 0:  # bit flips
            for pos in rng.integers(0, n, size=rng.integers(1, 8)):
                b[pos] ^= 1 << int(rng.integers(0, 8))
            yield "flip", bytes(b)
        elif kind == 1:  # a length field rewritten: large, odd, undefined or zero
            pos = int(rng.integers(132, max(133, n - 4)))
            value = int(rng.choice([0xFFFFFFFF, 0x7FFFFFFF, 0x10000, 1, 0, n, n * 3]))
            b[pos : pos + 4] = struct.pack("<I", value)
            yield "length", bytes(b)
        else:  # a block of garbage
            pos = int(rng.integers(0, n))
            size = int(rng.integers(1, 64))
            b[pos : pos + size] = bytes(rng.integers(0, 256, size=size, dtype=np.uint8))
            yield "garbage", bytes(b[:n])


@pytest.mark.parametrize("source", MUTATION_FILES, ids=[os.path.basename(p) for p in MUTATION_FILES])
def test_mutated_corpus_files_keep_the_contract(tmp_path, source):
    data = open(source, "rb").read()
    per_file = max(8, EXAMPLES // 2)
    for k, (kind, mutant) in enumerate(_mutants(data, seed=len(data), count=per_file)):
        path = tmp_path / f"m{k}.dcm"
        path.write_bytes(mutant)
        try:
            _contract(str(path))
        except AssertionError as exc:
            raise AssertionError(f"{kind} mutant {k} of {os.path.basename(source)}: {exc}") from exc
        except Exception as exc:
            raise AssertionError(f"{kind} mutant {k} of {os.path.basename(source)} raised {type(exc).__name__}: {exc}") from exc
        path.unlink()


def test_codestream_larger_than_header_is_refused_before_decoding(tmp_path):
    import imagecodecs

    big = np.zeros((512, 512), np.uint8)
    stream = imagecodecs.jpeg8_encode(big, lossless=True, predictor=1)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.70"
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Rows = ds.Columns = 8  # the header lies: the codestream is 512x512
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = encapsulate([stream])
    ds["PixelData"].VR = "OB"
    path = str(tmp_path / "liar.dcm")
    ds.save_as(path, enforce_file_format=True)
    with dicomframes.open(path) as reader, pytest.raises(dicomframes.DecodeError, match="512x512"):
        reader.frame(0)


def test_deeply_nested_sequences_are_refused(tmp_path):
    item = Dataset()
    item.PatientID = "x"
    for _ in range(80):
        outer = Dataset()
        outer.ReferencedSOPSequence = Sequence([item])
        item = outer
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.ReferencedImageSequence = Sequence([item])
    ds.Rows = ds.Columns = 2
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = b"\x01\x02\x03\x04"
    path = str(tmp_path / "deep.dcm")
    # Undefined lengths force the walk to descend instead of skipping by length.
    ds.save_as(path, enforce_file_format=True)
    raw = bytearray(open(path, "rb").read())
    with time_limit(CASE_SECONDS):
        try:
            with dicomframes.open(path) as reader:
                np.testing.assert_array_equal(reader.frame(0), [[1, 2], [3, 4]])
        except dicomframes.InvalidFileError as exc:
            assert "nested" in str(exc)
    assert raw  # the file was written
