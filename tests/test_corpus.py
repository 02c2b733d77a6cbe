"""Every frame of every real file in pydicom's test files and pydicom-data
equals pydicom's own decoding of it.

The reference is ``pydicom.pixels.pixel_array(path, index=i)``; where that
function cannot open a file that ``dcmread(path).pixel_array`` can (deflated
files, a data set encoded differently from its transfer syntax), the latter is
the reference. Files pydicom cannot decode at all must give a clear
``DicomFramesError``; they are listed below with the reason.
"""

from __future__ import annotations

import glob
import logging
import os
import warnings

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
data_store = pytest.importorskip("data_store")  # the pydicom-data package

import dicomframes
from dicomframes import DecodeError, DicomFramesError, InvalidFileError, TruncatedFileError

logging.getLogger("pydicom").setLevel(logging.CRITICAL)


def _corpus() -> list[str]:
    test_files = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")
    files = [f for f in glob.glob(test_files + "/**/*", recursive=True) if os.path.isfile(f)]
    files += glob.glob(os.path.join(os.path.dirname(data_store.__file__), "data", "*"))
    return sorted(f for f in files if not f.endswith((".py", ".pyc", ".txt", ".json", ".gz", ".bz2", ".zip", ".xz")))


CORPUS = _corpus()

# Files with pixel data that pydicom itself cannot decode, and what we raise.
PYDICOM_CANNOT_DECODE = {
    "JPEG-lossy.dcm": (DecodeError, "libjpeg rejects the codestream (misplaced marker segment)"),
    "JPEG2000-embedded-sequence-delimiter.dcm": (DecodeError, "the codestream's SIZ segment is garbage"),
    "MR_truncated.dcm": (TruncatedFileError, "the file ends inside the frame"),
    "meta_missing_tsyntax.dcm": (InvalidFileError, "no transfer syntax and no image description"),
    "nested_priv_SQ.dcm": (InvalidFileError, "no Rows, Columns or Bits Allocated"),
    "rtplan_truncated.dcm": (TruncatedFileError, "the file ends inside an element"),
}
# Truncated copies of corpus files: frames wholly present must equal the
# complete file's, the others must raise a clear error. pydicom reads no pixel
# data from them at all.
PARTIAL_FILES = {
    "emri_small_jpeg_2k_lossless_too_short.dcm": "emri_small_jpeg_2k_lossless.dcm",
}
# Files pydicom cannot decode but we can; checked against a reference we trust.
WE_DECODE_PYDICOM_CANNOT = {
    # IS value '1A' in an unrelated element makes pydicom fail; the pixels are fine.
    "badVR.dcm",
}


def _reference(path: str, index: int, frames: int):
    """pydicom's frame, or an exception if pydicom cannot produce it."""
    from pydicom.pixels import pixel_array

    try:
        return pixel_array(path, index=index)
    except Exception as first:
        try:
            ds = pydicom.dcmread(path, force=True)
            if "TransferSyntaxUID" not in ds.file_meta:
                # No file meta: tell pydicom the encoding it detected itself.
                implicit, little = ds.original_encoding
                ds.file_meta.TransferSyntaxUID = (
                    pydicom.uid.ImplicitVRLittleEndian if implicit
                    else pydicom.uid.ExplicitVRLittleEndian if little
                    else pydicom.uid.ExplicitVRBigEndian
                )
            arr = ds.pixel_array
        except Exception:
            raise first from None
        return arr[index] if frames > 1 else arr


def _pydicom_frames(path: str) -> int | None:
    """Number of frames if pydicom sees pixel data, else None (not an image)."""
    try:
        ds = pydicom.dcmread(path, force=True, stop_before_pixels=False, defer_size=64)
    except Exception:
        return -1
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        return None
    try:
        return int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        return 1


@pytest.mark.parametrize("path", CORPUS, ids=[os.path.basename(p) for p in CORPUS])
def test_frames_equal_pydicom(path):
    name = os.path.basename(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frames = _pydicom_frames(path)
    if name in PARTIAL_FILES:
        complete = os.path.join(os.path.dirname(path), PARTIAL_FILES[name])
        with dicomframes.open(path) as partial, dicomframes.open(complete) as whole:
            readable = 0
            for i in range(len(whole)):
                try:
                    got = partial.frame(i)
                except (TruncatedFileError, dicomframes.FrameIndexError) as exc:
                    assert exc.frame == i and path in str(exc)
                    continue
                readable += 1
                np.testing.assert_array_equal(got, whole.frame(i))
            assert readable >= 1
        return
    if frames is None or frames == -1:
        # Not an image (or not DICOM): we must say so clearly, never crash.
        with pytest.raises(DicomFramesError):
            dicomframes.open(path).frame(0)
        return
    if name in PYDICOM_CANNOT_DECODE:
        cls, _reason = PYDICOM_CANNOT_DECODE[name]
        with pytest.raises(cls) as info:
            with dicomframes.open(path, decoder="pylibjpeg") as reader:
                for _ in reader:
                    pass
        assert path in str(info.value)
        return
    # pydicom decodes with the pylibjpeg plugins; so do we, to compare exactly.
    with dicomframes.open(path, decoder="pylibjpeg") as reader:
        assert len(reader) == frames
        for i in range(frames):
            got = reader.frame(i)
            if name in WE_DECODE_PYDICOM_CANNOT:
                assert got.shape == reader.info.shape
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ref = _reference(path, i, frames)
            assert got.shape == ref.shape, (name, i)
            assert got.dtype == ref.dtype.newbyteorder("="), (name, i)
            np.testing.assert_array_equal(got, ref, err_msg=f"{name} frame {i}")


def test_corpus_is_large():
    """The corpus really holds files of every transfer syntax we claim.

    (JPEG Lossless process 14 with a predictor other than 1, .4.57, and the
    three HTJ2K syntaxes have no file in the corpus; tests/test_codecs.py covers
    them with files encoded by imagecodecs.)
    """
    seen = set()
    for path in CORPUS:
        try:
            with dicomframes.open(path) as reader:
                seen.add(reader.info.transfer_syntax_uid)
        except DicomFramesError:
            pass
    for uid in [
        "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99",
        "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",
    ]:
        assert uid in seen, uid


def test_encoded_frame_is_the_codestream():
    from pydicom.encaps import generate_frames

    path = pydicom.data.get_testdata_file("emri_small_jpeg_2k_lossless.dcm")
    ds = pydicom.dcmread(path)
    expected = list(generate_frames(ds.PixelData, number_of_frames=ds.NumberOfFrames))
    with dicomframes.open(path) as reader:
        assert [reader.encoded_frame(i) for i in range(len(reader))] == expected


def _decodable(path: str) -> bool:
    name = os.path.basename(path)
    if name in PARTIAL_FILES or name in PYDICOM_CANNOT_DECODE:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _pydicom_frames(path) not in (None, -1)


@pytest.mark.parametrize("decoder", [None, "pylibjpeg"])
@pytest.mark.parametrize("path", [p for p in CORPUS if _decodable(p)],
                         ids=[os.path.basename(p) for p in CORPUS if _decodable(p)])
def test_read_into_equals_frames(path, decoder):
    """Frames written into a caller's array (decoded in place where the backend can: the
    default imagecodecs one) equal the frames `frame(i)` returns, with each decoder."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with dicomframes.open(path, decoder=decoder) as reader:
            want = np.stack([reader.frame(i) for i in range(len(reader))])
            out = np.full((len(reader), *reader.format.shape), 3, dtype=reader.format.dtype)
            reader.read_into(range(len(reader)), out)
    np.testing.assert_array_equal(out, want, err_msg=os.path.basename(path))
