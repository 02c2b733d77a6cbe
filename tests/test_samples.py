"""dicomframes.samples.write_sample: valid files that pydicom and dicomframes read alike."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
from pydicom.pixels import pixel_array

import dicomframes
from dicomframes.samples import TRANSFER_SYNTAXES, sample_frame, write_sample

KIND = {"bot": "BOT", "eot": "EOT", "none": "walked"}
FRAMES = 4


def assert_same_as_pydicom(path: str, frames: int) -> dicomframes.Reader:
    reader = dicomframes.open(path)
    assert len(reader) == frames
    for i in range(frames):
        expected = pixel_array(path, index=i)
        got = reader.frame(i)
        assert got.dtype == expected.dtype, (path, i)
        assert got.shape == expected.shape, (path, i)
        assert np.array_equal(got, expected), (path, i)
    return reader


def _encapsulated_cases():
    for syntax in ("rle", "jpegls", "j2k"):
        for table in ("bot", "eot", "none"):
            for spp in (1, 3):
                for bits in (8, 16):
                    yield pytest.param(syntax, table, spp, bits, 1, id=f"{syntax}-{table}-{spp}x{bits}")
    # Several fragments per frame (not allowed with RLE or the EOT).
    for syntax in ("jpegls", "j2k"):
        for table in ("bot", "none"):
            for spp in (1, 3):
                yield pytest.param(syntax, table, spp, 8, 3, id=f"{syntax}-{table}-{spp}x8-3frag")


@pytest.mark.parametrize("syntax,table,spp,bits,fragments", list(_encapsulated_cases()))
def test_encapsulated_matches_pydicom(tmp_path, syntax, table, spp, bits, fragments):
    # Odd sizes, so codestreams and fragments need padding now and then.
    path = write_sample(
        tmp_path / "s.dcm", frames=FRAMES, rows=33, columns=37, samples_per_pixel=spp,
        bits_allocated=bits, syntax=syntax, offset_table=table, fragments_per_frame=fragments, seed=7,
    )
    reader = assert_same_as_pydicom(path, FRAMES)
    assert reader.info.index_kind == KIND[table]
    assert reader.info.transfer_syntax_uid == TRANSFER_SYNTAXES[syntax]
    # Lossless: the frames are exactly the texture that was written.
    for i in range(FRAMES):
        assert np.array_equal(reader.frame(i), sample_frame(i, 33, 37, spp, bits, seed=7))
    reader.close()


@pytest.mark.parametrize("spp", [1, 3])
@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("table", ["bot", "eot", "none"])  # ignored for native data
def test_native_matches_pydicom(tmp_path, spp, bits, table):
    path = write_sample(tmp_path / "n.dcm", frames=FRAMES, rows=17, columns=9, samples_per_pixel=spp,
                        bits_allocated=bits, syntax="native", offset_table=table)
    reader = assert_same_as_pydicom(path, FRAMES)
    assert reader.info.index_kind == "native"
    expected_size = FRAMES * 17 * 9 * spp * bits // 8
    ds = pydicom.dcmread(path, stop_before_pixels=False)
    assert len(ds.PixelData) == expected_size + expected_size % 2
    assert ds["PixelData"].VR == ("OB" if bits == 8 else "OW")
    reader.close()


def test_odd_native_length_is_padded(tmp_path):
    path = write_sample(tmp_path / "odd.dcm", frames=3, rows=3, columns=5, syntax="native")
    ds = pydicom.dcmread(path)
    assert len(ds.PixelData) == 46 and ds.PixelData[-1:] == b"\x00"
    assert_same_as_pydicom(path, 3).close()


def test_default_arguments(tmp_path):
    path = write_sample(tmp_path / "default.dcm", frames=3)
    assert path == os.fspath(tmp_path / "default.dcm")
    with dicomframes.open(path) as reader:
        assert reader.info.transfer_syntax_uid == "1.2.840.10008.1.2.5"
        assert reader.info.index_kind == "BOT"
        assert reader.info.shape == (256, 256)
        assert reader.info.dtype == "uint8"


def test_file_structure(tmp_path):
    path = write_sample(tmp_path / "s.dcm", frames=5, rows=32, columns=48, samples_per_pixel=3,
                        syntax="j2k", offset_table="eot")
    raw = open(path, "rb").read()
    assert raw[:128] == bytes(128) and raw[128:132] == b"DICM"
    ds = pydicom.dcmread(path)
    meta = ds.file_meta
    assert meta.FileMetaInformationVersion == b"\x00\x01"
    assert meta.MediaStorageSOPClassUID == ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7.4"
    assert meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"
    assert meta.ImplementationClassUID.startswith("2.25.")
    # Group length: the bytes of the meta group after (0002,0000).
    group_length = struct.unpack("<I", raw[140:144])[0]
    assert raw[144 + group_length : 146 + group_length] == b"\x08\x00"  # the data set starts
    assert meta.FileMetaInformationGroupLength == group_length
    for uid in (ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID):
        assert uid.startswith("2.25.") and len(uid) <= 64
        assert uid.is_valid
    assert len({ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID}) == 3
    assert ds.Modality == "OT"
    assert ds.SamplesPerPixel == 3 and ds.PhotometricInterpretation == "RGB" and ds.PlanarConfiguration == 0
    assert ds.NumberOfFrames == 5 and ds.Rows == 32 and ds.Columns == 48
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (8, 8, 7, 0)
    tags = [int(e.tag) for e in ds]
    assert tags == sorted(tags)
    # EOT: offsets from the first item after the (empty) BOT; lengths are the codestreams'.
    offsets = np.frombuffer(ds.ExtendedOffsetTable, "<u8")
    lengths = np.frombuffer(ds.ExtendedOffsetTableLengths, "<u8")
    frags = list(pydicom.encaps.generate_fragments(ds.PixelData))
    assert frags[0] == b""  # the empty Basic Offset Table
    frames = frags[1:]
    assert len(frames) == 5
    pos = 0
    for i, frag in enumerate(frames):
        assert offsets[i] == pos
        assert lengths[i] in (len(frag), len(frag) - 1)
        assert frag[:4] == b"\xff\x4f\xff\x51"
        pos += 8 + len(frag)


def test_bot_values(tmp_path):
    path = write_sample(tmp_path / "s.dcm", frames=6, rows=20, columns=20, syntax="jpegls",
                        offset_table="bot", fragments_per_frame=2)
    ds = pydicom.dcmread(path)
    items = list(pydicom.encaps.generate_fragments(ds.PixelData))
    bot = np.frombuffer(items[0], "<u4")
    assert len(bot) == 6 and bot[0] == 0
    fragments = items[1:]
    assert len(fragments) == 12
    assert all(len(f) % 2 == 0 and len(f) > 0 for f in fragments)
    pos = 0
    for i in range(6):
        assert bot[i] == pos
        assert fragments[2 * i][:2] == b"\xff\xd8"
        pos += 16 + len(fragments[2 * i]) + len(fragments[2 * i + 1])


def test_frames_differ_and_seed_is_deterministic():
    a = sample_frame(0, 64, 64)
    assert np.array_equal(a, sample_frame(0, 64, 64))
    assert not np.array_equal(a, sample_frame(1, 64, 64))
    assert not np.array_equal(a, sample_frame(0, 64, 64, seed=1))
    rgb = sample_frame(3, 32, 48, 3, 16)
    assert rgb.shape == (32, 48, 3) and rgb.dtype == np.uint16
    assert not np.array_equal(rgb[..., 0], rgb[..., 1])
    assert len(np.unique(a)) > 20  # a texture, not a flat field


@pytest.mark.parametrize(
    "kwargs",
    [
        {"syntax": "htj2k"},
        {"syntax": "jpeg"},
        {"offset_table": "both"},
        {"samples_per_pixel": 2},
        {"bits_allocated": 12},
        {"frames": 0},
        {"rows": 0},
        {"fragments_per_frame": 0},
        {"syntax": "rle", "fragments_per_frame": 2},
        {"syntax": "native", "fragments_per_frame": 2},
        {"syntax": "j2k", "offset_table": "eot", "fragments_per_frame": 2},
        {"syntax": "native", "frames": 70_000, "rows": 256, "columns": 256},  # > 4 GiB
        {"syntax": "j2k", "rows": 16, "columns": 64},  # the encoder needs 32x32 at least
        {"syntax": "jpegls", "rows": 8, "columns": 8, "fragments_per_frame": 5000},  # too few bytes
        {"syntax": "jpegls", "rows": 4, "columns": 4},  # CharLS refuses frames this small
    ],
)
def test_rejects_what_it_cannot_write(tmp_path, kwargs):
    with pytest.raises(ValueError):
        write_sample(tmp_path / "bad.dcm", **{"frames": 2, "rows": 8, "columns": 8, **kwargs})
    assert not (tmp_path / "bad.dcm").exists()


def test_cli(tmp_path):
    out = tmp_path / "cli.dcm"
    done = subprocess.run(
        [sys.executable, "-m", "dicomframes.samples", str(out), "--frames", "3", "--rows", "12",
         "--columns", "10", "--samples", "3", "--syntax", "jpegls", "--offset-table", "none"],
        capture_output=True, text=True, check=True,
    )
    assert done.stdout.strip() == str(out)
    reader = assert_same_as_pydicom(str(out), 3)
    assert reader.info.shape == (12, 10, 3) and reader.info.index_kind == "walked"
    reader.close()


def test_does_not_import_pydicom(tmp_path):
    code = (
        "import sys; sys.modules['pydicom'] = None\n"
        "from dicomframes.samples import write_sample\n"
        f"write_sample({str(tmp_path / 'x.dcm')!r}, frames=2, rows=32, columns=32, syntax='j2k')\n"
        "assert 'pydicom' not in [m.split('.')[0] for m in sys.modules if sys.modules[m] is not None]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("syntax,table", [("native", "bot"), ("rle", "bot"), ("j2k", "eot"), ("jpegls", "none")])
def test_writing_memory_is_flat(tmp_path, syntax, table):
    """Frames are made and written one at a time: peak memory does not grow with the frame count."""
    rows = columns = 256
    frame_bytes = rows * columns  # 64 KiB

    def peak_for(frames: int) -> int:
        tracemalloc.start()
        try:
            write_sample(tmp_path / f"m{frames}.dcm", frames=frames, rows=rows, columns=columns,
                         syntax=syntax, offset_table=table)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    few, many = peak_for(20), peak_for(320)  # 1.25 MiB and 20 MiB of pixels
    # A few float32 working planes (4 bytes a pixel) at most, and no growth with the
    # frame count beyond the offset tables (16 bytes a frame).
    assert many < 32 * frame_bytes, many
    assert many < few + 300 * 16 + 256 * 1024, (few, many)
