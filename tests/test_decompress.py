"""`dicomframes.decompress`: pydicom's ``decompress`` + ``save_as``, streamed with flat memory.

The reference is pydicom itself: ``pydicom.pixels.decompress(dcmread(src))``,
saved with ``save_as`` and read back. For sources pydicom's ``decompress``
refuses because they are already uncompressed (Implicit VR, Big Endian,
Deflated ...), which ``dicomframes.decompress`` converts all the same, the
reference follows pydicom's steps by hand (`_decompress_like_pydicom`). Pixel
data are compared byte for byte with both sides decoding through the pylibjpeg
plugins, as pydicom does.

Deliberate differences (docs/decompress.md) are asserted as such, not skipped.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
pytest.importorskip("data_store")

from pydicom.encaps import encapsulate, encapsulate_extended
from pydicom.uid import UID

import dicomframes
from dicomframes import (
    DestinationExistsError,
    DicomFramesError,
)
from dicomframes.cli import main as cli_main
from dicomframes.frames.tiff_tiles import MAGICS as TIFF_MAGICS
from dicomframes.io.local import LocalFileSource
from dicomframes.samples import write_sample
from dicomframes.transcode.decompress import Progress, ProgressDisplay, decompress
from tests.test_corpus import CORPUS

logging.getLogger("pydicom").setLevel(logging.CRITICAL)
# pydicom's complaints about values in the test files themselves (invalid UIDs, long SH values)
pytestmark = [
    pytest.mark.filterwarnings("ignore:Invalid value for VR:UserWarning"),
    pytest.mark.filterwarnings("ignore:The value length:UserWarning"),
]

MiB = 1 << 20
GiB = 1 << 30
EXPLICIT_LE = "1.2.840.10008.1.2.1"
ENCAPSULATED_UNCOMPRESSED = "1.2.840.10008.1.2.1.98"
DEFLATED_FRAMES = "1.2.840.10008.1.2.8.1"
RLE = "1.2.840.10008.1.2.5"
EOT_TAGS = (0x7FE00001, 0x7FE00002, 0x7FE00003)
SWAPPED = {"OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}
SRC = str(Path(__file__).resolve().parents[1] / "src")


def _testfile(name: str) -> str:
    return pydicom.data.get_testdata_file(name)


def _no_partial_files(directory: Path) -> None:
    left = [p.name for p in Path(directory).iterdir() if p.name.endswith(".part")]
    assert not left, f"temporary files left behind: {left}"


# -- the reference: pydicom ------------------------------------------------------------------


def _decompress_like_pydicom(ds, *, as_rgb: bool, generate_instance_uid: bool) -> None:
    """The steps of ``pydicom.pixels.utils.decompress``, for sources it calls uncompressed.

    One difference: Bits Allocated 1 frames are packed again (pydicom would
    write one byte per pixel, a file that contradicts its own Bits Allocated).
    """
    from pydicom.pixels import get_decoder
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    tsyntax = ds.file_meta.get("TransferSyntaxUID")
    if not tsyntax:  # no file meta: what pydicom detected
        implicit, little = ds.original_encoding
        tsyntax = ds.file_meta.TransferSyntaxUID = (
            pydicom.uid.ImplicitVRLittleEndian if implicit
            else ExplicitVRLittleEndian if little else pydicom.uid.ExplicitVRBigEndian
        )
    frames, image_pixel = [], None
    for arr, image_pixel in get_decoder(tsyntax).iter_array(ds, as_rgb=as_rgb):
        frames.append(arr)
    if ds.BitsAllocated == 1:
        data = np.packbits(np.concatenate([f.reshape(-1) for f in frames]), bitorder="little").tobytes()
    else:
        data = b"".join(np.ascontiguousarray(f, dtype=f.dtype.newbyteorder("<")).tobytes() for f in frames)
    if len(data) % 2:
        data += b"\x00"
    keyword = next(k for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData") if k in ds)
    elem = ds[keyword]
    elem.value = data
    elem.is_undefined_length = False
    if keyword == "PixelData":
        elem.VR = "OB" if ds.BitsAllocated <= 8 else "OW"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if generate_instance_uid:
        uid = generate_uid()
        ds.SOPInstanceUID = uid
        ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.PhotometricInterpretation = image_pixel["photometric_interpretation"]
    if image_pixel["samples_per_pixel"] > 1:
        ds.PlanarConfiguration = image_pixel["planar_configuration"]
    if "NumberOfFrames" in ds or len(frames) > 1:
        ds.NumberOfFrames = len(frames)


def pydicom_result(path: str, tmp: Path, *, as_rgb: bool = True, generate_instance_uid: bool = True):
    """pydicom's decompressed data set, saved and read back where pydicom can save it.

    Returns ``(dataset, big_endian)``: `big_endian` when the data set could not
    be saved (pydicom refuses to convert big endian to little endian) and its
    binary values are still big endian in memory.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path, force=True)
        ts = ds.file_meta.get("TransferSyntaxUID")
        if ts and UID(ts).is_compressed:
            pydicom.pixels.decompress(
                ds, as_rgb=as_rgb, generate_instance_uid=generate_instance_uid, decoding_plugin="pylibjpeg",
            )
        else:
            _decompress_like_pydicom(ds, as_rgb=as_rgb, generate_instance_uid=generate_instance_uid)
        out = tmp / "pydicom.dcm"
        try:
            ds.save_as(out, overwrite=True)
        except (ValueError, TypeError) as exc:
            # pydicom cannot save it: big endian (it refuses to convert), or (SC_rgb_jpeg.dcm,
            # a JPEG file whose data set is implicit VR) a TypeError inside its writer.
            # Compare with the data set in memory, less the Group Lengths its writer drops.
            for tag in [t for t in ds.keys() if t.element == 0 and t.group > 6]:
                del ds[tag]
            if "FileMetaInformationGroupLength" in ds.file_meta:  # stale until written
                del ds.file_meta.FileMetaInformationGroupLength
            return ds, "big endian" in str(exc)
        return pydicom.dcmread(out, force=True), False


def _same_value(ours, ref, big_endian: bool) -> bool:
    if big_endian and ours.VR in SWAPPED and isinstance(ref.value, bytes) and ref.value:
        n = SWAPPED[ours.VR]
        whole = len(ref.value) // n * n
        swapped = np.frombuffer(ref.value[:whole], f">u{n}").astype(f"<u{n}").tobytes() + ref.value[whole:]
        return ours.value == swapped
    return ours.value == ref.value


def assert_elements_equal(ours, ref, *, big_endian: bool = False, where: str = "") -> None:
    """Every element of two data sets: same tags, VRs and values (sequences item by item)."""
    assert sorted(ours.keys()) == sorted(ref.keys()), (
        f"{where}: tags differ: ours only {sorted(set(ours.keys()) - set(ref.keys()))}, "
        f"pydicom only {sorted(set(ref.keys()) - set(ours.keys()))}"
    )
    for tag in ref.keys():
        a, b = ours[tag], ref[tag]
        assert a.VR == b.VR, f"{where}{tag}: VR {a.VR} != {b.VR}"
        if a.VR == "SQ":
            assert len(a.value) == len(b.value), f"{where}{tag}: {len(a.value)} items != {len(b.value)}"
            for k, (x, y) in enumerate(zip(a.value, b.value)):
                assert_elements_equal(x, y, big_endian=big_endian, where=f"{where}{tag}[{k}].")
        else:
            assert _same_value(a, b, big_endian), f"{where}{tag} {a.keyword}: {str(a.value)[:80]} != {str(b.value)[:80]}"


def _valid_new_uid(value, old) -> None:
    assert UID(value).is_valid and value != old, (value, old)


def assert_matches_pydicom(out: str, ref, big_endian: bool, source: str, *, generate_instance_uid: bool, as_rgb: bool = True) -> None:
    """``dcmread(out)`` equals pydicom's result, but for UIDs and the documented differences."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = pydicom.dcmread(out)
        src = pydicom.dcmread(source, force=True, stop_before_pixels=True)
    meta_src = src.file_meta
    had_meta = "TransferSyntaxUID" in meta_src

    # -- file meta -----------------------------------------------------------------------
    meta, ref_meta = ours.file_meta.copy(), ref.file_meta.copy()
    assert meta.TransferSyntaxUID == EXPLICIT_LE
    if generate_instance_uid:
        _valid_new_uid(meta.MediaStorageSOPInstanceUID, meta_src.get("MediaStorageSOPInstanceUID"))
        assert meta.MediaStorageSOPInstanceUID == ours.SOPInstanceUID
        for m in (meta, ref_meta):  # new random UIDs of different lengths on both sides
            for tag in (0x00020000, 0x00020003):
                if tag in m:
                    del m[tag]
    if had_meta:
        if 0x00020000 in meta and 0x00020000 not in ref_meta and "FileMetaInformationGroupLength" in meta_src:
            del meta[0x00020000]  # an unsaved reference: pydicom computes it when writing
        assert_elements_equal(meta, ref_meta, where="file meta ")
        if ref.preamble[:4] in TIFF_MAGICS and ours.preamble != ref.preamble:
            # A dual-personality source: its TIFF header is left out where the pixel data it
            # points at moved (pydicom copies it regardless, pointing at other bytes).
            assert ours.preamble == bytes(128)
            with dicomframes.open(out) as copy, dicomframes.open(source) as original:
                assert (copy.header.pixel_offset != original.header.pixel_offset
                        or original.header.transfer_syntax.uid != EXPLICIT_LE)
        else:
            assert ours.preamble == ref.preamble
    else:
        # No file meta in the source: we write the mandatory group (pydicom writes only what it set).
        assert {0x00020001, 0x00020010, 0x00020012} <= set(ours.file_meta.keys())

    # -- data set ------------------------------------------------------------------------
    a, b = ours.copy(), ref.copy()
    if generate_instance_uid:
        _valid_new_uid(a.SOPInstanceUID, src.get("SOPInstanceUID"))
        assert UID(b.SOPInstanceUID) != src.get("SOPInstanceUID")  # pydicom changed it too
        del a.SOPInstanceUID, b.SOPInstanceUID
    for tag in EOT_TAGS:  # dropped on purpose: they describe compressed fragments
        assert tag not in a
        if tag in b:
            del b[tag]
    if not as_rgb and b.get("PhotometricInterpretation") == "YBR_FULL_422":
        # On purpose: decoded frames are full resolution YCbCr (pydicom keeps saying 4:2:2).
        assert a.PhotometricInterpretation == "YBR_FULL"
        b.PhotometricInterpretation = "YBR_FULL"
    for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        if keyword in b:
            assert a[keyword].VR == b[keyword].VR
            assert len(a[keyword].value) == len(b[keyword].value) and len(a[keyword].value) % 2 == 0
            assert a[keyword].value == b[keyword].value, "pixel data differ"
            assert not a[keyword].is_undefined_length
            del a[keyword], b[keyword]
    assert_elements_equal(a, b, big_endian=big_endian)


# -- which corpus files pydicom itself cannot turn into a reference ---------------------------------

#: name -> why pydicom gives no reference; dicomframes still decompresses them
#: (checked by round trip) or raises a clear error (`OUR_ERRORS`).
NO_PYDICOM_REFERENCE = {
    "JPEG-lossy.dcm": "libjpeg rejects the codestream",
    "JPEG2000-embedded-sequence-delimiter.dcm": "the codestream's SIZ segment is garbage",
    "MR_truncated.dcm": "the file ends inside the frame",
    "emri_small_jpeg_2k_lossless_too_short.dcm": "pydicom finds no Pixel Data (the delimiter is missing)",
    "badVR.dcm": "an IS value '1A' in an unrelated element",
    "UN_sequence.dcm": "pydicom finds no Pixel Data",
}
#: name -> the error dicomframes raises (pydicom fails on these too)
OUR_ERRORS = {
    "JPEG-lossy.dcm": dicomframes.DecodeError,
    "JPEG2000-embedded-sequence-delimiter.dcm": dicomframes.DecodeError,
    "MR_truncated.dcm": dicomframes.TruncatedFileError,
}


def _source_frames(path: str, as_rgb: bool = True) -> list[np.ndarray]:
    with dicomframes.open(path, decoder="pylibjpeg", as_rgb=as_rgb) as reader:
        return [reader.frame(i) for i in range(len(reader))]


def _is_readable(path: str) -> bool:
    try:
        with dicomframes.open(path):
            return True
    except DicomFramesError:
        return False


@pytest.mark.parametrize("path", CORPUS, ids=[os.path.basename(p) for p in CORPUS])
def test_corpus_output_equals_pydicom(path, tmp_path):
    name = os.path.basename(path)
    out = tmp_path / "ours.dcm"
    if not _is_readable(path):
        with pytest.raises(DicomFramesError):
            decompress(path, out)
        assert not out.exists()
        _no_partial_files(tmp_path)
        return
    if name in OUR_ERRORS:
        with pytest.raises(OUR_ERRORS[name]) as info:
            decompress(path, out, decoder="pylibjpeg")
        assert path in str(info.value)
        assert not out.exists()
        _no_partial_files(tmp_path)
        return

    decompress(path, out, decoder="pylibjpeg")
    _no_partial_files(tmp_path)
    # Round trip: the output's frames, read by dicomframes and by pydicom, are the input's.
    expected = _source_frames(path)
    with dicomframes.open(out) as back:
        assert back.info.transfer_syntax_uid == EXPLICIT_LE and back.info.index_kind == "native"
        assert len(back) == len(expected)
        for i, frame in enumerate(expected):
            np.testing.assert_array_equal(back.frame(i), frame, err_msg=f"{name} frame {i}")
    if name in NO_PYDICOM_REFERENCE:
        with pytest.raises(Exception):  # the list is exact: pydicom really fails on it
            pydicom_result(path, tmp_path)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        arr = pydicom.dcmread(out).pixel_array
    np.testing.assert_array_equal(arr, np.stack(expected) if len(expected) > 1 else expected[0])

    ref, big_endian = pydicom_result(path, tmp_path)
    assert_matches_pydicom(str(out), ref, big_endian, path, generate_instance_uid=True)

    # Colour files: also with YCbCr kept, and with the SOP Instance UID kept.
    if expected[0].ndim == 3:
        out2 = tmp_path / "ours_ybr.dcm"
        decompress(path, out2, decoder="pylibjpeg", as_rgb=False, generate_instance_uid=False)
        ref2, big_endian2 = pydicom_result(path, tmp_path, as_rgb=False, generate_instance_uid=False)
        assert_matches_pydicom(str(out2), ref2, big_endian2, path, generate_instance_uid=False, as_rgb=False)


def test_corpus_comparisons_cover_every_kind_of_file():
    """The comparison above is not vacuous: it ran on every compressed syntax and encoding."""
    seen = set()
    for path in CORPUS:
        if os.path.basename(path) in NO_PYDICOM_REFERENCE or not _is_readable(path):
            continue
        with dicomframes.open(path) as reader:
            seen.add((reader.header.transfer_syntax.uid, reader.header.explicit_vr))
    uids = {uid for uid, _ in seen}
    for uid in ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99",
                "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.70",
                "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"]:
        assert uid in uids, uid
    # A compressed file whose data set is Implicit VR although its syntax says explicit (re-encoded).
    assert ("1.2.840.10008.1.2.4.50", False) in seen


def test_generate_instance_uid_false_keeps_every_uid(tmp_path):
    path = _testfile("emri_small_jpeg_2k_lossless.dcm")
    out = tmp_path / "out.dcm"
    decompress(path, out, generate_instance_uid=False, decoder="pylibjpeg")
    ref, big_endian = pydicom_result(path, tmp_path, generate_instance_uid=False)
    assert_matches_pydicom(str(out), ref, big_endian, path, generate_instance_uid=False)
    ours, src = pydicom.dcmread(out), pydicom.dcmread(path)
    assert ours.SOPInstanceUID == src.SOPInstanceUID
    assert ours.file_meta.MediaStorageSOPInstanceUID == src.file_meta.MediaStorageSOPInstanceUID
    assert ours.file_meta.FileMetaInformationGroupLength == ref.file_meta.FileMetaInformationGroupLength


# -- deliberate differences -------------------------------------------------------------------------


def test_extended_offset_table_is_dropped(tmp_path):
    """pydicom keeps (7FE0,0001/0002), which describe compressed fragments; a native file must not have them."""
    src = write_sample(tmp_path / "eot.dcm", frames=7, rows=64, columns=48, syntax="rle", offset_table="eot")
    out = tmp_path / "out.dcm"
    decompress(src, out, decoder="pylibjpeg")
    ref, _ = pydicom_result(src, tmp_path)
    assert "ExtendedOffsetTable" in ref and "ExtendedOffsetTableLengths" in ref  # pydicom keeps them
    ours = pydicom.dcmread(out)
    assert "ExtendedOffsetTable" not in ours and "ExtendedOffsetTableLengths" not in ours
    assert_matches_pydicom(str(out), ref, False, src, generate_instance_uid=True)


def test_keep_ybr_says_ybr_full(tmp_path):
    """as_rgb=False on JPEG YBR_FULL_422: the decoded frames are full-resolution YCbCr.

    pydicom writes 3 full samples per pixel but keeps 'YBR_FULL_422', which
    readers take as subsampled (2/3 of the bytes); we write 'YBR_FULL'.
    """
    path = _testfile("SC_rgb_dcmtk_+eb+cy+s2.dcm")
    out = tmp_path / "out.dcm"
    decompress(path, out, as_rgb=False, decoder="pylibjpeg")
    ref, _ = pydicom_result(path, tmp_path, as_rgb=False)
    assert ref.PhotometricInterpretation == "YBR_FULL_422"
    ours = pydicom.dcmread(out)
    assert ours.PhotometricInterpretation == "YBR_FULL"
    raw = pydicom.pixels.pixel_array(str(out), as_rgb=False)
    np.testing.assert_array_equal(raw, _source_frames(path, as_rgb=False)[0])
    assert_matches_pydicom(str(out), ref, False, path, generate_instance_uid=True, as_rgb=False)


def test_big_endian_words_are_swapped(tmp_path):
    """OW values of a big endian source (here palette LUT data) become little endian words.

    pydicom cannot save big endian data sets as little endian; its writer
    would keep OW bytes unswapped. The output equals the little endian twin.
    """
    out = tmp_path / "out.dcm"
    decompress(_testfile("OBXXXX1A_expb.dcm"), out)
    ours, twin = pydicom.dcmread(out), pydicom.dcmread(_testfile("OBXXXX1A.dcm"))
    for keyword in ("RedPaletteColorLookupTableData", "GreenPaletteColorLookupTableData", "BluePaletteColorLookupTableData"):
        assert ours[keyword].value == twin[keyword].value
    assert ours.PixelData == twin.PixelData


def test_uncompressed_sources_are_converted(tmp_path):
    """pydicom's decompress refuses these ("already uncompressed"); we write Explicit VR LE."""
    path = _testfile("MR_small_implicit.dcm")
    with pytest.raises(ValueError, match="already uncompressed"):
        pydicom.pixels.decompress(pydicom.dcmread(path))
    out = tmp_path / "out.dcm"
    decompress(path, out)
    ours = pydicom.dcmread(out)
    assert ours.file_meta.TransferSyntaxUID == EXPLICIT_LE and not ours.is_implicit_VR
    np.testing.assert_array_equal(ours.pixel_array, pydicom.dcmread(path).pixel_array)


def test_bits_allocated_1_is_packed(tmp_path):
    """Bits Allocated 1: the frames' bits are packed as the source stored them (pydicom would write bytes)."""
    for name in ("liver.dcm", "liver_1frame.dcm", "liver_expb.dcm"):
        out = tmp_path / name
        decompress(_testfile(name), out)
        twin = pydicom.dcmread(_testfile(name.replace("_expb", "")))
        ours = pydicom.dcmread(out)
        assert ours.BitsAllocated == 1 and ours["PixelData"].VR == "OB"
        assert ours.PixelData == twin.PixelData


# -- the newer syntaxes: 1.2.840.10008.1.2.8.1 and 1.2.840.10008.1.2.1.98 --------------------------

#: native twins (explicit VR little endian) to re-encode: Bits Allocated 1, 8, 16, 32; colour; odd sizes
TWINS = [
    "liver.dcm", "liver_1frame.dcm", "SC_rgb_2frame.dcm", "SC_rgb_16bit_2frame.dcm", "SC_rgb_32bit_2frame.dcm",
    "MR_small.dcm", "emri_small.dcm", "rtdose.dcm", "OBXXXX1A_2frame.dcm", "SC_rgb_small_odd.dcm",
]


def _native_frames_bytes(ds) -> list[bytes]:
    """Each frame's stored bytes (Bits Allocated 1: its bits, packed from a byte boundary)."""
    n = int(ds.get("NumberOfFrames", 1) or 1)
    pixels = ds.Rows * ds.Columns * ds.SamplesPerPixel
    if ds.BitsAllocated == 1:
        bits = np.unpackbits(np.frombuffer(ds.PixelData, np.uint8), bitorder="little")
        return [np.packbits(bits[i * pixels:(i + 1) * pixels], bitorder="little").tobytes() for i in range(n)]
    size = pixels * ds.BitsAllocated // 8
    return [ds.PixelData[i * size:(i + 1) * size] for i in range(n)]


def _write_with_pydicom(twin: str, path: Path, syntax: str) -> Path:
    """`twin` re-encoded with pydicom's encapsulation: each frame deflated (8.1) or as is (.98)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(twin)
    frames = _native_frames_bytes(ds)
    if syntax == DEFLATED_FRAMES:
        def deflate(b: bytes) -> bytes:
            c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
            return c.compress(b) + c.flush()
        ds.PixelData = encapsulate([deflate(f) for f in frames], has_bot=True)
    else:
        data, eot, eotl = encapsulate_extended(frames)
        ds.PixelData = data
        ds.ExtendedOffsetTable = eot
        ds.ExtendedOffsetTableLengths = eotl
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = syntax
    ds.save_as(path, implicit_vr=False, little_endian=True, force_encoding=True, overwrite=True)
    return path


@pytest.mark.parametrize("syntax", [DEFLATED_FRAMES, ENCAPSULATED_UNCOMPRESSED])
@pytest.mark.parametrize("name", TWINS)
def test_reads_and_decompresses_newer_syntaxes(name, syntax, tmp_path):
    """No such files exist in pydicom-data 1.0.0 (the only release): they are made here from
    native files with pydicom's encapsulation, and compared with pydicom's decoding of the twin."""
    twin = _testfile(name)
    path = _write_with_pydicom(twin, tmp_path / "in.dcm", syntax)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = pydicom.dcmread(twin).pixel_array
    with dicomframes.open(path) as reader:
        assert reader.info.transfer_syntax_uid == syntax
        n = len(reader)
        ref = ref if n > 1 else ref[None]
        for i in range(n):
            np.testing.assert_array_equal(reader.frame(i), ref[i], err_msg=f"{name} frame {i}")
        for i, frame in enumerate(reader):
            np.testing.assert_array_equal(frame, ref[i])
    out = tmp_path / "out.dcm"
    decompress(path, out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours, native = pydicom.dcmread(out), pydicom.dcmread(twin)
    assert ours.file_meta.TransferSyntaxUID == EXPLICIT_LE
    assert "ExtendedOffsetTable" not in ours
    assert ours.PixelData == native.PixelData
    assert ours["PixelData"].VR == ("OB" if native.BitsAllocated <= 8 else "OW")


# -- encapsulated output (1.2.840.10008.1.2.1.98) ---------------------------------------------------


@pytest.mark.parametrize("name", [
    "emri_small_jpeg_2k_lossless.dcm", "color3d_jpeg_baseline.dcm", "SC_rgb_rle_16bit_2frame.dcm",
    "liver.dcm", "SC_rgb_small_odd_jpeg.dcm", "rtdose_rle.dcm", "MR_small_bigendian.dcm",
])
def test_encapsulated_output_round_trips(name, tmp_path):
    path = _testfile(name)
    out = tmp_path / "out.dcm"
    decompress(path, out, encapsulated=True, decoder="pylibjpeg")
    expected = _source_frames(path)
    with dicomframes.open(out) as back:
        assert back.info.transfer_syntax_uid == ENCAPSULATED_UNCOMPRESSED
        assert back.info.index_kind == "EOT"
        assert [f.tobytes() for f in back] == [f.tobytes() for f in expected]
    # pydicom reads the structure: empty BOT, one fragment per frame, the EOT pointing at each.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(out)
    assert ds.file_meta.TransferSyntaxUID == ENCAPSULATED_UNCOMPRESSED
    assert ds["PixelData"].is_undefined_length and ds["PixelData"].VR == "OB"
    offsets = np.frombuffer(ds.ExtendedOffsetTable, "<u8")
    lengths = np.frombuffer(ds.ExtendedOffsetTableLengths, "<u8")
    assert len(offsets) == len(expected)
    fragments = list(pydicom.encaps.generate_fragments(ds.PixelData))
    assert fragments[0] == b""  # the Basic Offset Table, empty
    assert len(fragments) == 1 + len(expected)
    frames = list(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=len(expected),
                                                extended_offsets=(offsets.tolist(), lengths.tolist())))
    for got, frame in zip(frames, expected):
        if ds.BitsAllocated == 1:
            want = np.packbits(frame.reshape(-1), bitorder="little").tobytes()
        else:
            want = np.ascontiguousarray(frame, frame.dtype.newbyteorder("<")).tobytes()
        assert got == want


# -- streaming and memory ---------------------------------------------------------------------------

FRAME_SIDE = 1024


def _rle_codestream(seed: int) -> bytes:
    """One 1024x1024 8-bit frame that RLE compresses to a few KB (bands that differ per seed)."""
    from rle.utils import encode_array

    arr = np.zeros((FRAME_SIDE, FRAME_SIDE), np.uint8)
    arr[:, :] = ((np.arange(FRAME_SIDE) // 128 + seed) * 37 % 256).astype(np.uint8)[None, :]
    arr[seed % FRAME_SIDE, :] = 255
    return next(encode_array(arr, rows=FRAME_SIDE, columns=FRAME_SIDE, samples_per_pixel=1,
                             bits_allocated=8, number_of_frames=1))


def _frame_of(i: int) -> np.ndarray:
    seed = i % 16
    arr = np.zeros((FRAME_SIDE, FRAME_SIDE), np.uint8)
    arr[:, :] = ((np.arange(FRAME_SIDE) // 128 + seed) * 37 % 256).astype(np.uint8)[None, :]
    arr[seed % FRAME_SIDE, :] = 255
    return arr


def write_large_rle(path: Path, frames: int) -> Path:
    """An RLE file of `frames` 1024x1024 frames (1 MiB each once decoded): a few MB on disk."""
    codestreams = [_rle_codestream(s) for s in range(16)]
    from tests.helpers.dicomgen import element, element_header, file_meta, image_elements

    with open(path, "wb") as f:
        f.write(file_meta(RLE))
        for tag, vr, value in image_elements(frames=frames, rows=FRAME_SIDE, columns=FRAME_SIDE):
            f.write(element(tag, vr, value))
        f.write(element_header(0x7FE00010, "OB", 0xFFFFFFFF))
        f.write(struct.pack("<HHI", 0xFFFE, 0xE000, 0))  # empty BOT: the reader walks the items
        for i in range(frames):
            cs = codestreams[i % 16]
            cs += b"\x00" * (len(cs) % 2)
            f.write(struct.pack("<HHI", 0xFFFE, 0xE000, len(cs)) + cs)
        f.write(struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))
    return path


@pytest.fixture(scope="module")
def large_rle(tmp_path_factory) -> Path:
    """1,100 frames: 1.07 GiB of native pixel data."""
    return write_large_rle(tmp_path_factory.mktemp("large") / "large.dcm", 1100)


_PEAK_SCRIPT = """
import sys
sys.path.insert(0, {src!r})
import dicomframes
dicomframes.decompress(sys.argv[1], sys.argv[2], **eval(sys.argv[3]))
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        print(int(line.split()[1]) * 1024)
"""


def _peak_rss(src: Path, dst: Path, **options) -> int:
    """Decompress in a fresh process; its peak resident memory (VmHWM), bytes."""
    script = _PEAK_SCRIPT.format(src=SRC)
    done = subprocess.run([sys.executable, "-c", script, str(src), str(dst), repr(options)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="VmHWM is read from /proc (Linux)")
def test_memory_stays_flat_past_1_gib(large_rle, tmp_path):
    out = tmp_path / "native.dcm"
    peak = _peak_rss(large_rle, out)
    native = os.path.getsize(out)
    assert native > GiB and os.path.getsize(large_rle) < 20 * MiB
    assert peak < 150 * MiB, f"peak RSS {peak / MiB:.0f} MiB while writing {native / MiB:.0f} MiB"
    with dicomframes.open(out) as back:
        assert len(back) == 1100
        for i in (0, 1, 17, 555, 1099):
            np.testing.assert_array_equal(back.frame(i), _frame_of(i))
    # With the pylibjpeg decoders (worker processes) the parent stays small too.
    os.unlink(out)
    peak = _peak_rss(large_rle, out, decoder="pylibjpeg", workers=2)
    assert peak < 150 * MiB, f"peak RSS {peak / MiB:.0f} MiB (pylibjpeg)"


def test_traced_memory_is_bounded_by_bytes_in_flight(tmp_path):
    """In-process: tracemalloc sees every buffer; the peak stays near the in-flight budget."""
    import tracemalloc

    src = write_large_rle(tmp_path / "in.dcm", 200)  # 200 MiB native
    tracemalloc.start()
    try:
        decompress(src, tmp_path / "out.dcm", max_inflight=16 * MiB, workers=2)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert os.path.getsize(tmp_path / "out.dcm") > 200 * MiB
    assert peak < 48 * MiB, f"traced peak {peak / MiB:.1f} MiB"


def test_header_is_copied_not_parsed(tmp_path):
    """A sparse whole-slide level: its 4,000-item Per-Frame Functional Groups Sequence
    (MBs, undefined lengths and nested noise) is copied; the output equals pydicom's."""
    from tests.helpers.wsigen import smooth_image, write_level

    level = write_level(tmp_path, "sparse", smooth_image(1024, 1000), tile_size=(16, 16), codec="jpeg",
                        organization="TILED_SPARSE", undefined_lengths=True, noise=True)
    path = level.paths[0]
    out = tmp_path / "out.dcm"
    decompress(path, out, decoder="pylibjpeg")
    ref, _ = pydicom_result(str(path), tmp_path)
    assert_matches_pydicom(str(out), ref, False, str(path), generate_instance_uid=True)
    # Defined lengths: the walk skips the sequence; every byte of the source is read about once.
    level = write_level(tmp_path, "defined", smooth_image(1024, 1000), tile_size=(16, 16), codec="jpeg",
                        organization="TILED_SPARSE", undefined_lengths=False, noise=True)
    source = LocalFileSource(level.paths[0])
    size = source.size
    decompress(source, tmp_path / "out2.dcm")
    assert source.stats.bytes < 1.15 * size + MiB, (source.stats.bytes, size)


# -- past 4 GiB --------------------------------------------------------------------------------------


def test_native_past_4_gib_is_refused_before_writing(tmp_path):
    src = write_large_rle(tmp_path / "huge.dcm", 4097)  # 4 GiB + 1 MiB native
    out = tmp_path / "out.dcm"
    with pytest.raises(DicomFramesError, match="encapsulated") as info:
        decompress(src, out)
    assert str(src) in str(info.value)
    assert not out.exists()
    _no_partial_files(tmp_path)


@pytest.mark.slow
def test_encapsulated_output_past_4_gib_reads_back(tmp_path):
    frames = 4100  # 4.004 GiB native: more than a defined length holds
    need = frames * (FRAME_SIDE * FRAME_SIDE + 8) + 64 * MiB
    free = shutil.disk_usage(tmp_path).free
    if free < need + GiB:
        pytest.skip(f"needs {need / GiB:.1f} GiB of free disk, {free / GiB:.1f} GiB free")
    src = write_large_rle(tmp_path / "huge.dcm", frames)
    out = tmp_path / "out.dcm"
    decompress(src, out, encapsulated=True)
    try:
        assert os.path.getsize(out) > 4 * GiB
        with dicomframes.open(out) as back:
            assert back.info.transfer_syntax_uid == ENCAPSULATED_UNCOMPRESSED and back.info.index_kind == "EOT"
            assert len(back) == frames
            spots = [0, 1, 2047, 4095, 4096, frames - 1]
            for i in spots:
                np.testing.assert_array_equal(back.frame(i), _frame_of(i), err_msg=f"frame {i}")
            for i, frame in zip(range(4090, frames), back.iter_frames(range(4090, frames))):
                np.testing.assert_array_equal(frame, _frame_of(i))
        # pydicom: the Extended Offset Table (64-bit offsets past 4 GiB) points at each frame.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(out, stop_before_pixels=True)
        offsets = np.frombuffer(ds.ExtendedOffsetTable, "<u8")
        lengths = np.frombuffer(ds.ExtendedOffsetTableLengths, "<u8")
        assert offsets[-1] > 1 << 32 and (lengths == FRAME_SIDE * FRAME_SIDE).all()
        with dicomframes.open(out) as back:
            first_item = back.index.first_item
        with open(out, "rb") as f:
            for i in spots:
                f.seek(first_item + int(offsets[i]))
                assert struct.unpack("<HHI", f.read(8)) == (0xFFFE, 0xE000, FRAME_SIDE * FRAME_SIDE)
                assert f.read(FRAME_SIDE * FRAME_SIDE) == _frame_of(i).tobytes()
    finally:
        os.unlink(out)


# -- safe writes --------------------------------------------------------------------------------------


def test_existing_destination_is_refused(tmp_path):
    src = _testfile("emri_small_RLE.dcm")
    out = tmp_path / "out.dcm"
    out.write_bytes(b"precious")
    with pytest.raises(DestinationExistsError) as info:
        decompress(src, out)
    assert isinstance(info.value, FileExistsError) and isinstance(info.value, DicomFramesError)
    assert out.read_bytes() == b"precious"
    decompress(src, out, overwrite=True)
    assert pydicom.dcmread(out).file_meta.TransferSyntaxUID == EXPLICIT_LE
    _no_partial_files(tmp_path)


def test_the_source_is_never_modified(tmp_path):
    src = tmp_path / "src.dcm"
    shutil.copy(_testfile("emri_small_jpeg_ls_lossless.dcm"), src)
    before = (src.read_bytes(), os.stat(src).st_mtime_ns)
    decompress(src, tmp_path / "out.dcm")
    with pytest.raises(DicomFramesError, match="is the source"):
        decompress(src, src, overwrite=True)
    assert (src.read_bytes(), os.stat(src).st_mtime_ns) == before
    _no_partial_files(tmp_path)


def test_interrupt_leaves_nothing(tmp_path):
    src = write_sample(tmp_path / "in.dcm", frames=60, rows=64, columns=64, syntax="rle")
    out = tmp_path / "out.dcm"
    seen = []

    def interrupt(p: Progress) -> None:
        seen.append(p.frames_done)
        if p.frames_done == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        decompress(src, out, progress=interrupt)
    assert seen == [1, 2, 3, 4, 5]
    assert not out.exists()
    _no_partial_files(tmp_path)
    # An existing destination survives an interrupted overwrite.
    out.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        decompress(src, out, progress=interrupt, overwrite=True)
    assert out.read_bytes() == b"old"
    _no_partial_files(tmp_path)


def test_failing_source_leaves_nothing(tmp_path):
    """A file cut inside its pixel data: the error names the frame; no output."""
    full = write_sample(tmp_path / "full.dcm", frames=40, rows=64, columns=64, syntax="rle")
    data = Path(full).read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: len(data) * 2 // 3])
    out = tmp_path / "out.dcm"
    with pytest.raises(DicomFramesError) as info:
        decompress(cut, out)
    assert info.value.frame is not None
    assert not out.exists()
    _no_partial_files(tmp_path)


def test_failing_destination_leaves_nothing(tmp_path):
    src = _testfile("emri_small_RLE.dcm")
    with pytest.raises(DicomFramesError, match="cannot write"):
        decompress(src, tmp_path / "missing-dir" / "out.dcm")
    assert not (tmp_path / "missing-dir").exists()


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process")
def test_sigint_to_the_command_leaves_nothing(large_rle, tmp_path):
    out = tmp_path / "out.dcm"
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "dicomframes", "decompress", str(large_rle), str(out)],
                            env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            parts = [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
            if parts and parts[0].stat().st_size > 50 * MiB:
                break
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.02)
        else:
            pytest.fail("the command never started writing")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not out.exists()
    _no_partial_files(tmp_path)


# -- progress ------------------------------------------------------------------------------------------


def test_progress_reports_every_frame(tmp_path):
    import io

    src = write_sample(tmp_path / "in.dcm", frames=12, rows=32, columns=32, syntax="rle")
    reports: list[Progress] = []
    decompress(src, tmp_path / "out.dcm", progress=reports.append)
    assert [p.frames_done for p in reports] == list(range(1, 13))
    assert all(p.frames_total == 12 and p.bytes_total == 12 * 1024 for p in reports)
    assert reports[-1].bytes_done == 12 * 1024
    stream = io.StringIO()
    display = ProgressDisplay(stream, interval=0)
    for p in reports:
        display(p)
    text = stream.getvalue()
    assert "12/12 frames" in text and "MB/s" in text and text.endswith("\n")
    assert "left" in text.split("\r")[1]


# -- the command --------------------------------------------------------------------------------------


def test_cli_decompress(tmp_path, capsys):
    src = _testfile("SC_rgb_dcmtk_+eb+cy+s2.dcm")
    out = tmp_path / "out.dcm"
    assert cli_main(["decompress", src, str(out)]) == 0
    ds = pydicom.dcmread(out)
    assert ds.PhotometricInterpretation == "RGB"
    assert ds.SOPInstanceUID != pydicom.dcmread(src).SOPInstanceUID
    err = capsys.readouterr().err
    assert "frames" not in err  # stderr is not a terminal: no progress unless forced

    # An existing destination: refused, with a clear message and exit status 1
    # (a data error; 2 is for usage errors only, docs/cli.md).
    assert cli_main(["decompress", src, str(out)]) == 1
    assert "exists" in capsys.readouterr().err
    assert cli_main(["decompress", src, str(out), "--force", "--keep-ybr", "--keep-uid", "--progress"]) == 0
    ds = pydicom.dcmread(out)
    assert ds.PhotometricInterpretation == "YBR_FULL"
    assert ds.SOPInstanceUID == pydicom.dcmread(src).SOPInstanceUID
    err = capsys.readouterr().err
    assert "1/1 frames" in err and "MB/s" in err

    enc = tmp_path / "enc.dcm"
    assert cli_main(["decompress", src, str(enc), "--encapsulated", "--decoder", "pylibjpeg"]) == 0
    assert pydicom.dcmread(enc).file_meta.TransferSyntaxUID == ENCAPSULATED_UNCOMPRESSED
    _no_partial_files(tmp_path)


def test_cli_past_4_gib_error(tmp_path, capsys):
    src = write_large_rle(tmp_path / "huge.dcm", 4097)
    assert cli_main(["decompress", str(src), str(tmp_path / "out.dcm")]) == 1  # a data error (docs/cli.md)
    err = capsys.readouterr().err
    assert "--encapsulated" in err
    assert not (tmp_path / "out.dcm").exists()


# -- remote: fsspec destinations and sources ------------------------------------------------------------


def test_fsspec_destination_through_a_temporary_name(tmp_path):
    """Non-object-store file systems (here fsspec's in-memory one): written beside, then moved."""
    import fsspec

    fs = fsspec.filesystem("memory")
    src = _testfile("emri_small_jpeg_2k_lossless.dcm")
    url = f"memory://decompress-test/{tmp_path.name}/out.dcm"
    try:
        decompress(src, url, generate_instance_uid=False)
        local = tmp_path / "out.dcm"
        decompress(src, local, generate_instance_uid=False)
        assert fs.cat(url) == local.read_bytes()
        with pytest.raises(DestinationExistsError):
            decompress(src, url)

        def interrupt(p):
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            decompress(src, url, overwrite=True, progress=interrupt)
        assert fs.cat(url) == local.read_bytes()  # untouched
        assert [p for p in fs.ls(url.rsplit("/", 1)[0], detail=False) if p.endswith(".part")] == []
    finally:
        fs.rm(f"memory://decompress-test/{tmp_path.name}", recursive=True)


def test_local_to_s3_and_back(s3, tmp_path):
    src = write_sample(tmp_path / "in.dcm", frames=300, rows=128, columns=128, syntax="jpegls")  # 4.7 MiB native
    local = tmp_path / "local.dcm"
    decompress(src, local, generate_instance_uid=False)
    url = s3.url(f"{tmp_path.name}/out.dcm")
    decompress(src, url, generate_instance_uid=False, **s3.options)
    client = s3.server.client()
    key = url.split("/", 3)[3]
    body = client.get_object(Bucket=s3.bucket, Key=key)["Body"].read()
    assert body == local.read_bytes()
    with pytest.raises(DestinationExistsError):
        decompress(src, url, **s3.options)
    # Remote to local: the planned range reads, same bytes.
    back = tmp_path / "back.dcm"
    decompress(s3.url("bot.dcm"), back, generate_instance_uid=False, **s3.options)
    ref = tmp_path / "ref.dcm"
    client.download_file(s3.bucket, "bot.dcm", str(tmp_path / "bot.dcm"))
    decompress(tmp_path / "bot.dcm", ref, generate_instance_uid=False)
    assert back.read_bytes() == ref.read_bytes()


def test_interrupted_multipart_upload_leaves_no_object(s3, tmp_path):
    src = write_sample(tmp_path / "in.dcm", frames=400, rows=256, columns=256, syntax="rle")  # 25 MiB native
    url = s3.url(f"{tmp_path.name}/out.dcm")
    key = url.split("/", 3)[3]
    client = s3.server.client()

    def interrupt(p: Progress) -> None:
        if p.bytes_done > 20 * MiB:  # several 8 MiB parts uploaded
            raise KeyboardInterrupt

    before = len(s3.proxy.records())
    with pytest.raises(KeyboardInterrupt):
        decompress(src, url, progress=interrupt, **s3.options)
    seen = s3.proxy.records()[before:]
    assert any(r.method == "POST" and "uploads" in r.path for r in seen)  # a multipart upload began,
    assert sum(r.method == "PUT" and "partNumber" in r.path for r in seen) >= 2  # parts went up,
    assert any(r.method == "DELETE" and "uploadId" in r.path for r in seen)  # and it was aborted
    assert not any(r.method == "POST" and "uploadId" in r.path for r in seen)  # never completed
    listed = client.list_objects_v2(Bucket=s3.bucket, Prefix=tmp_path.name)
    assert listed.get("KeyCount", 0) == 0
    uploads = client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads", [])
    assert [u for u in uploads if u["Key"] == key] == []


# -- elements after Pixel Data, and sources without pydicom -----------------------------------------


def _with_trailing(path: str, dst: Path, explicit: bool) -> Path:
    """`path` with elements after its Pixel Data: a private block and Data Set Trailing Padding."""
    def el(tag: int, vr: str, value: bytes) -> bytes:
        if explicit:
            head = struct.pack("<HH2s2xI", tag >> 16, tag & 0xFFFF, vr.encode(), len(value)) if vr in ("OB", "UN") \
                else struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), len(value))
        else:
            head = struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value))
        return head + value

    trailing = el(0x7FE10010, "LO", b"DICOMFRAMES ") + el(0x7FE11001, "OB", bytes(range(10))) + el(0xFFFCFFFC, "OB", bytes(64))
    dst.write_bytes(Path(path).read_bytes() + trailing)
    return dst


@pytest.mark.parametrize("name,explicit", [
    ("emri_small_jpeg_2k_lossless.dcm", True),  # encapsulated: after the sequence delimiter; copied
    ("MR_small.dcm", True),  # native
    ("MR_small_implicit.dcm", False),  # implicit VR: re-encoded
])
def test_elements_after_pixel_data_are_kept(name, explicit, tmp_path):
    src = _with_trailing(_testfile(name), tmp_path / "in.dcm", explicit)
    out = tmp_path / "out.dcm"
    decompress(src, out, decoder="pylibjpeg")
    ref, big_endian = pydicom_result(str(src), tmp_path)
    assert 0xFFFCFFFC in ref and 0x7FE11001 in ref
    assert_matches_pydicom(str(out), ref, big_endian, str(src), generate_instance_uid=True)


_WITHOUT_PYDICOM = """
import sys
sys.modules["pydicom"] = None  # as if pydicom were not installed
sys.path.insert(0, {src!r})
import dicomframes
try:
    dicomframes.decompress(sys.argv[1], sys.argv[2])
except dicomframes.DicomFramesError as exc:
    print("ERROR", exc)
else:
    print("OK")
"""


@pytest.mark.parametrize("name,works", [
    ("emri_small_jpeg_2k_lossless.dcm", True),  # Explicit VR LE: byte ranges, no pydicom needed
    ("image_dfl.dcm", True),  # Deflated: inflated as a stream, explicit VR LE inside
    ("MR_small_implicit.dcm", False),  # Implicit VR needs a data dictionary
    ("MR_small_bigendian.dcm", False),  # Big Endian: values must be re-encoded
])
def test_without_pydicom(name, works, tmp_path):
    out = tmp_path / "out.dcm"
    done = subprocess.run([sys.executable, "-c", _WITHOUT_PYDICOM.format(src=SRC), _testfile(name), str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    if works:
        assert done.stdout.strip() == "OK"
        np.testing.assert_array_equal(
            np.stack(_source_frames(str(out))), np.stack(_source_frames(_testfile(name))))
    else:
        assert done.stdout.startswith("ERROR") and "pip install pydicom" in done.stdout, done.stdout
        assert not out.exists()
        _no_partial_files(tmp_path)


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
def test_float_pixel_data(syntax, tmp_path):
    """Float Pixel Data keeps its tag and VR OF (Explicit and Implicit VR sources)."""
    from tests.helpers.dicomgen import image_elements, write_file

    arr = (np.arange(3 * 8 * 6, dtype="<f4").reshape(3, 8, 6) - 50) / 7
    els = [e for e in image_elements(frames=3, rows=8, columns=6, bits_allocated=32)
           if e[0] not in (0x00280101, 0x00280102, 0x00280103)]
    src = write_file(tmp_path / "in.dcm", syntax, els, arr.tobytes(), pixel_vr="OF", pixel_tag=0x7FE00008)
    out = tmp_path / "out.dcm"
    decompress(src, out)
    ref, big_endian = pydicom_result(src, tmp_path)
    assert_matches_pydicom(str(out), ref, big_endian, src, generate_instance_uid=True)
    ours = pydicom.dcmread(out)
    assert ours["FloatPixelData"].VR == "OF"
    np.testing.assert_array_equal(np.frombuffer(ours.FloatPixelData, "<f4").reshape(arr.shape), arr)
    with pytest.raises(DicomFramesError, match="cannot be encapsulated"):
        decompress(src, tmp_path / "enc.dcm", encapsulated=True)
    assert not (tmp_path / "enc.dcm").exists()
