"""add_offset_table: a byte-identical copy of the fragments with an Extended Offset Table.

Checked against the source and against other readers: pydicom (the table
itself through ``pydicom.encaps``, pixels through ``pydicom.pixels``),
highdicom's lazy frame reader (which takes frame offsets from the table) and
wsidicom on a whole-slide pyramid. Also: a Basic Offset Table where frames span
several fragments (the standard allows the EOT only with one fragment per
frame), refusals, safe writes, buckets, and the command line.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from pydicom.encaps import generate_fragmented_frames, generate_frames, get_frame

import dicomframes
from dicomframes import (
    DestinationError,
    DestinationExistsError,
    DicomFramesError,
    FrameIndexError,
    TranscodeError,
)
from dicomframes.samples import write_sample
from dicomframes.transcode.decompress import Progress
from dicomframes.transcode.offset_table import add_offset_table
from tests.helpers import dicomgen
from tests.test_decompress import SRC, _no_partial_files, _testfile

EOT_TAG, EOTL_TAG, TOTAL_TAG = 0x7FE00001, 0x7FE00002, 0x7FE00003
ITEM = struct.Struct("<HHI")


def _items(path) -> tuple[bytes, list[tuple[int, bytes]]]:
    """(the Basic Offset Table item's value, [(offset from the first item after it, value)] of every fragment)."""
    ds = pydicom.dcmread(path)
    data = ds.PixelData
    tag_group, tag_elem, length = ITEM.unpack_from(data, 0)
    assert (tag_group, tag_elem) == (0xFFFE, 0xE000)
    table = data[8 : 8 + length]
    pos, first, out = 8 + length, 8 + length, []
    while pos + 8 <= len(data):
        group, elem, n = ITEM.unpack_from(data, pos)
        if (group, elem) == (0xFFFE, 0xE0DD):
            break
        assert (group, elem) == (0xFFFE, 0xE000)
        out.append((pos - first, data[pos + 8 : pos + 8 + n]))
        pos += 8 + n
    return table, out


def _padded(b: bytes) -> bytes:
    return b + b"\x00" * (len(b) % 2)


def check_output(src, out, *, multi_fragment: bool = False) -> None:
    """Everything the output promises, against the source."""
    src_ds, out_ds = pydicom.dcmread(src), pydicom.dcmread(out)
    n = int(src_ds.get("NumberOfFrames", 1) or 1)
    # The fragments are byte-identical, in frame order.
    src_table, src_items = _items(src)
    out_table, out_items = _items(out)
    assert [v for _, v in out_items] == [v for _, v in src_items]
    # Every other element is the source's (Group Lengths and (7FE0,0003) dropped).
    skip = {EOT_TAG, EOTL_TAG, TOTAL_TAG, 0x7FE00010}
    for elem in src_ds:
        if elem.tag in skip or (elem.tag.element == 0 and elem.tag.group > 6):
            continue
        assert out_ds[elem.tag] == elem, elem.tag
    assert TOTAL_TAG not in out_ds
    assert out_ds.file_meta.TransferSyntaxUID == src_ds.file_meta.TransferSyntaxUID
    assert out_ds.SOPInstanceUID == src_ds.SOPInstanceUID  # the same instance, indexed
    with dicomframes.open(src) as a, dicomframes.open(out) as b:
        assert len(b) == len(a) == n
        if multi_fragment:
            assert b.index.kind == "BOT" and EOT_TAG not in out_ds
            offsets = np.frombuffer(out_table, dtype="<u4")
            assert len(offsets) == n and offsets[0] == 0
        else:
            assert b.index.kind == "EOT" and out_table == b""
            offsets = np.frombuffer(out_ds.ExtendedOffsetTable, dtype="<u8")
            lengths = np.frombuffer(out_ds.ExtendedOffsetTableLengths, dtype="<u8")
            # PS3.3 C.7.6.3.1: each frame's item tag, from the first item after the
            # (empty) Basic Offset Table; lengths without the 8-byte item header.
            assert [o for o, _ in out_items] == offsets.tolist()
            assert [len(v) for _, v in out_items] == lengths.tolist()
            assert out_ds["ExtendedOffsetTable"].VR == "OV" and out_ds["ExtendedOffsetTableLengths"].VR == "OV"
            raw = Path(out).read_bytes()
            at = [raw.index(struct.pack("<HH", 0x7FE0, e) + vr) for e, vr in ((1, b"OV"), (2, b"OV"), (0x10, b"OB"))]
            assert at == sorted(at)
            # pydicom finds each frame through the table, and it is the source's codestream.
            eot = (out_ds.ExtendedOffsetTable, out_ds.ExtendedOffsetTableLengths)
            theirs = list(generate_frames(out_ds.PixelData, number_of_frames=n, extended_offsets=eot))
            assert [_padded(a.encoded_frame(i)) for i in range(n)] == [_padded(f) for f in theirs]
            assert get_frame(out_ds.PixelData, n - 1, extended_offsets=eot) == theirs[-1]
        for i in range(n):
            ours, source = b.encoded_frame(i), a.encoded_frame(i)
            # Identical, but for the padding byte of an odd codestream that a source's
            # own Extended Offset Table may leave out of its length.
            assert ours == source or (a.index.kind == "EOT" and ours == _padded(source)), i
        for i in range(n):
            assert np.array_equal(b.frame(i), a.frame(i)), i
    # pydicom's file reader on the output; on the source, its reader of a data set, which
    # also takes an Implicit VR data set under a compressed syntax.
    assert np.array_equal(pydicom.pixels.pixel_array(out), pydicom.pixels.pixel_array(src_ds))


# -- sources of every kind --------------------------------------------------------------------------


@pytest.mark.parametrize("table", ["none", "bot", "eot"])
@pytest.mark.parametrize("syntax", ["rle", "jpegls", "j2k"])
def test_samples_of_every_table(syntax, table, tmp_path):
    src = write_sample(tmp_path / "in.dcm", frames=24, rows=48, columns=48, syntax=syntax, offset_table=table,
                       samples_per_pixel=3 if syntax == "rle" else 1)
    out = add_offset_table(src, tmp_path / "out.dcm")
    assert out == str(tmp_path / "out.dcm")
    check_output(src, out)
    _no_partial_files(tmp_path)


@pytest.mark.parametrize("name", [
    "color3d_jpeg_baseline.dcm",  # JPEG baseline, empty BOT: walked
    "examples_ybr_color.dcm",  # JPEG baseline, filled BOT
    "emri_small_jpeg_2k_lossless.dcm",
    "emri_small_jpeg_ls_lossless.dcm",
    "emri_small_RLE.dcm",
    "SC_rgb_rle_16bit_2frame.dcm",
    "rtdose_rle.dcm",
])
def test_pydicom_test_files(name, tmp_path):
    src = _testfile(name)
    out = add_offset_table(src, tmp_path / "out.dcm")
    check_output(src, out)


def test_reencoded_header_and_trailing_elements(tmp_path):
    """A data set in Implicit VR under a compressed syntax: re-encoded as Explicit VR Little
    Endian, before and after Pixel Data (as decompress does)."""
    ds = pydicom.dcmread(write_sample(tmp_path / "s.dcm", frames=6, rows=32, columns=32, syntax="jpegls"))
    ds.add_new(0xFFFCFFFC, "OB", b"\x00" * 6)  # Data Set Trailing Padding, after Pixel Data
    src = tmp_path / "implicit.dcm"
    ds.save_as(src, implicit_vr=True, little_endian=True, force_encoding=True)
    with dicomframes.open(src) as r:
        assert not r.header.explicit_vr
    out = add_offset_table(src, tmp_path / "out.dcm")
    check_output(src, out)
    out_ds = pydicom.dcmread(out)
    assert not out_ds.original_encoding[0]  # explicit VR now
    assert out_ds[0xFFFCFFFC].value == b"\x00" * 6


def test_wsidicom_style_lengths_are_rewritten_standard(tmp_path, caplog):
    """An Extended Offset Table whose lengths count each item's header (as wsidicom
    writes them): read with a warning; the copy's lengths are item value lengths."""
    src = write_sample(tmp_path / "in.dcm", frames=12, rows=32, columns=32, syntax="rle", offset_table="eot")
    raw = bytearray(Path(src).read_bytes())
    _, items = _items(src)
    at = raw.index(struct.pack("<HH", 0x7FE0, 2) + b"OV") + 12
    raw[at : at + 8 * 12] = np.asarray([8 + len(v) for _, v in items], dtype="<u8").tobytes()
    bad = tmp_path / "wsidicom_style.dcm"
    bad.write_bytes(raw)
    caplog.set_level(logging.WARNING, logger="dicomframes")
    out = add_offset_table(bad, tmp_path / "out.dcm")
    assert "count each item's 8-byte header" in caplog.text
    check_output(bad, out)
    caplog.clear()
    lengths = np.frombuffer(pydicom.dcmread(out).ExtendedOffsetTableLengths, dtype="<u8")
    assert lengths.tolist() == [len(v) for _, v in items]
    with dicomframes.open(out) as reader:
        reader.frame(11)
    assert "count each item" not in caplog.text


def test_frames_out_of_order_in_the_source(tmp_path):
    """An Extended Offset Table may point at items in any order: the copy writes them in frame order."""
    src = write_sample(tmp_path / "in.dcm", frames=5, rows=32, columns=32, syntax="rle", offset_table="eot")
    raw = bytearray(Path(src).read_bytes())
    _, items = _items(src)
    order = [3, 0, 4, 1, 2]  # stored item k holds frame order[k]
    where, pos = {}, 0
    for f in order:
        where[f] = pos
        pos += 8 + len(items[f][1])
    first = raw.index(ITEM.pack(0xFFFE, 0xE000, 0)) + 8
    end = first + pos
    raw[first:end] = b"".join(ITEM.pack(0xFFFE, 0xE000, len(items[f][1])) + items[f][1] for f in order)
    at = raw.index(struct.pack("<HH", 0x7FE0, 1) + b"OV") + 12
    raw[at : at + 40] = np.asarray([where[f] for f in range(5)], dtype="<u8").tobytes()
    shuffled = tmp_path / "shuffled.dcm"
    shuffled.write_bytes(raw)
    out = add_offset_table(shuffled, tmp_path / "out.dcm")
    _, out_items = _items(out)
    assert [v for _, v in out_items] == [v for _, v in items]  # frame order
    with dicomframes.open(shuffled) as a, dicomframes.open(out) as b:
        assert a.index.kind == b.index.kind == "EOT"
        for i in range(5):
            assert _padded(a.encoded_frame(i)) == b.encoded_frame(i)
            assert np.array_equal(a.frame(i), b.frame(i))


def test_last_frame_in_one_request(tmp_path):
    src = write_sample(tmp_path / "in.dcm", frames=300, rows=128, columns=128, syntax="rle", offset_table="none")
    out = add_offset_table(src, tmp_path / "out.dcm")
    with dicomframes.open(out) as reader:
        assert reader.index.kind == "EOT"
        before = reader.stats["requests"]
        data = reader.encoded_frame(299)
        assert reader.stats["requests"] == before + 1
    with dicomframes.open(src) as reader:
        assert reader.encoded_frame(299) == data


# -- other readers ------------------------------------------------------------------------------------


def test_highdicom_reads_frames_through_the_table(tmp_path):
    hd = pytest.importorskip("highdicom")
    src = write_sample(tmp_path / "in.dcm", frames=16, rows=64, columns=64, syntax="j2k", offset_table="none")
    out = add_offset_table(src, tmp_path / "out.dcm")
    expected = pydicom.pixels.pixel_array(src)
    image = hd.imread(out, lazy_frame_retrieval=True)  # frames located from the Extended Offset Table
    with dicomframes.open(src) as reader:
        for i in range(16):
            assert image.get_raw_frame(i + 1) == reader.encoded_frame(i)
            assert np.array_equal(image.get_stored_frame(i + 1), expected[i])
    eager = hd.imread(out)
    assert np.array_equal(eager.get_stored_frames(), expected)


@pytest.mark.parametrize("organization", ["TILED_FULL", "TILED_SPARSE"])
def test_wsidicom_reads_a_converted_pyramid(organization, tmp_path):
    wsidicom = pytest.importorskip("wsidicom")
    from tests.helpers.wsigen import write_pyramid

    source = tmp_path / "source"
    write_pyramid(source, width=700, height=500, levels=2, tile_size=(128, 96), codec="jpeg",
                  organizations=organization, basic_offset_table=False, shuffle=organization == "TILED_SPARSE",
                  absent_fraction=0.2 if organization == "TILED_SPARSE" else 0.0, overview=False, seed=7)
    converted = tmp_path / "converted"
    converted.mkdir()
    for path in sorted(source.glob("*.dcm")):
        with dicomframes.open(path) as reader:
            native = not reader.header.transfer_syntax.encapsulated
        if native:  # the label: nothing to index, copied as it is
            shutil.copy(path, converted / path.name)
            continue
        add_offset_table(path, converted / path.name)
        with dicomframes.open(converted / path.name) as reader:
            assert reader.index.kind == "EOT"
    with wsidicom.WsiDicom.open(source) as theirs, wsidicom.WsiDicom.open(converted) as ours:
        assert [lv.size.to_tuple() for lv in ours.levels] == [lv.size.to_tuple() for lv in theirs.levels]
        rng = np.random.default_rng(3)
        for k, level in enumerate(theirs.levels):
            w_all, h_all = level.size.to_tuple()
            for _ in range(5):
                w, h = (int(v) for v in rng.integers(1, 200, 2))
                x, y = int(rng.integers(0, max(1, w_all - w))), int(rng.integers(0, max(1, h_all - h)))
                a = np.asarray(theirs.read_region((x, y), k, (w, h)))
                b = np.asarray(ours.read_region((x, y), k, (w, h)))
                assert np.array_equal(a, b), (k, x, y, w, h)
        assert np.array_equal(np.asarray(theirs.read_label()), np.asarray(ours.read_label()))


@pytest.mark.parametrize("offset_table", ["none", "EOT"])
def test_wsidicomizer_files_are_fixed(offset_table, tmp_path):
    """wsidicomizer's files without a table item (Pixel Data starts with a fragment) and
    with lengths that count item headers: fixed, wsidicom reads them, regions equal."""
    wsidicom = pytest.importorskip("wsidicom")
    from tests.helpers.wsidicomizer import import_wsidicomizer

    # Its import turns on pydicom's future behaviour; tests/conftest.py undoes that after each test.
    WsiDicomizer = import_wsidicomizer()
    _convert_and_compare(WsiDicomizer, wsidicom, offset_table, tmp_path)


def _convert_and_compare(WsiDicomizer, wsidicom, offset_table: str, tmp_path: Path) -> None:
    from tests.helpers.wsidicomizer import write_ome_tiff

    tiff = tmp_path / "slide.ome.tiff"
    image = write_ome_tiff(tiff, 2048, 1536, 256)
    source, fixed = tmp_path / "source", tmp_path / "fixed"
    source.mkdir()
    fixed.mkdir()
    WsiDicomizer.convert(tiff, source, include_label=False, include_overview=False, workers=1,
                         offset_table=offset_table)
    for path in sorted(source.glob("*.dcm")):
        add_offset_table(path, fixed / path.name)
        with dicomframes.open(path) as a, dicomframes.open(fixed / path.name) as b:
            assert b.index.kind == "EOT"
            for i in range(len(a)):
                assert a.encoded_frame(i) == b.encoded_frame(i)
    with wsidicom.WsiDicom.open(fixed) as ours:
        region = np.asarray(ours.read_region((100, 50), 0, (400, 300)))[..., :3]
        assert np.abs(region.astype(int) - image[50:350, 100:500].astype(int)).mean() < 4  # lossy JPEG tiles
        if offset_table == "EOT":
            with wsidicom.WsiDicom.open(source) as theirs:
                for k in range(len(theirs.levels)):
                    a = np.asarray(theirs.read_region((10, 20), k, (300, 200)))
                    assert np.array_equal(a, np.asarray(ours.read_region((10, 20), k, (300, 200)))), k


# -- frames of several fragments ------------------------------------------------------------------------


def test_several_fragments_per_frame_get_a_basic_offset_table(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="dicomframes")
    src = write_sample(tmp_path / "in.dcm", frames=10, rows=48, columns=48, syntax="jpegls", offset_table="none",
                       fragments_per_frame=3)
    out = add_offset_table(src, tmp_path / "out.dcm")
    assert "frame 0 spans several fragments" in caplog.text
    check_output(src, out, multi_fragment=True)
    n = 10
    ds = pydicom.dcmread(out)
    frames = list(generate_fragmented_frames(ds.PixelData, number_of_frames=n))
    assert [len(f) for f in frames] == [3] * n  # pydicom, from the Basic Offset Table


def test_a_later_frame_of_several_fragments_switches_to_a_basic_offset_table(tmp_path, caplog):
    """Frames 0-5 one fragment each, frame 6 two: the EOT copy under way is discarded."""
    sample = write_sample(tmp_path / "s.dcm", frames=10, rows=48, columns=48, syntax="jpegls", offset_table="none")
    ds = pydicom.dcmread(sample)
    codestreams = [_padded(f) for f in generate_frames(ds.PixelData, number_of_frames=10)]
    frames = [[cs] if i != 6 else [cs[:100], cs[100:]] for i, cs in enumerate(codestreams)]
    value, _ = dicomgen.encapsulate(frames, bot=False)
    ds.PixelData = value
    src = tmp_path / "mixed.dcm"
    ds.save_as(src)
    caplog.set_level(logging.WARNING, logger="dicomframes")
    seen = []
    out = add_offset_table(src, tmp_path / "out.dcm", progress=lambda p: seen.append(p.frames_done))
    assert "frame 6 spans several fragments" in caplog.text
    assert seen == list(range(1, 7)) + list(range(1, 11))  # the first attempt stopped at frame 6
    check_output(src, out, multi_fragment=True)
    _no_partial_files(tmp_path)


def test_several_fragments_past_4_gib_are_refused_before_writing(tmp_path):
    """A Basic Offset Table holds 32-bit offsets; frames of several fragments past 4 GiB
    have no table the standard allows. (A sparse file: the 4 GiB fragment is a hole.)"""
    sample = pydicom.dcmread(write_sample(tmp_path / "s.dcm", frames=3, rows=16, columns=16, syntax="rle"))
    codestreams = [_padded(f) for f in generate_frames(sample.PixelData, number_of_frames=3)]
    elements = dicomgen.image_elements(frames=3, rows=16, columns=16)
    src = tmp_path / "huge.dcm"
    # Frame 2 starts 5 GiB in: its 32-bit offset wraps below frame 1's, which is how it is read.
    offsets = dicomgen.write_sparse_bot_file(src, dicomgen.RLE, elements, codestreams, holes={0: 3 << 30, 1: 2 << 30})
    with dicomframes.open(src) as reader:
        assert reader.index.kind == "BOT" and reader.index.span(2).offset - reader.index.span(0).offset == offsets[2]
    out = tmp_path / "out.dcm"
    with pytest.raises(TranscodeError, match="32-bit offsets") as info:
        add_offset_table(src, out)
    assert info.value.frame == 2 and info.value.offset is not None and info.value.path == str(src)
    assert not out.exists()
    _no_partial_files(tmp_path)


# -- refusals and safe writes ------------------------------------------------------------------------------


def test_native_and_deflated_sources_are_refused(tmp_path):
    native = write_sample(tmp_path / "native.dcm", frames=3, rows=16, columns=16, syntax="native")
    with pytest.raises(TranscodeError, match="nothing to index") as info:
        add_offset_table(native, tmp_path / "out.dcm")
    assert info.value.path == native
    with pytest.raises(TranscodeError, match="Deflated"):
        add_offset_table(_testfile("image_dfl.dcm"), tmp_path / "out.dcm")
    assert not (tmp_path / "out.dcm").exists()
    _no_partial_files(tmp_path)


def test_existing_destination_and_the_source_itself_are_refused(tmp_path):
    src = tmp_path / "src.dcm"
    shutil.copy(_testfile("emri_small_jpeg_ls_lossless.dcm"), src)
    before = (src.read_bytes(), os.stat(src).st_mtime_ns)
    out = tmp_path / "out.dcm"
    out.write_bytes(b"precious")
    with pytest.raises(DestinationExistsError) as info:
        add_offset_table(src, out)
    assert isinstance(info.value, FileExistsError) and "overwrite=True" in str(info.value)
    assert out.read_bytes() == b"precious"
    add_offset_table(src, out, overwrite=True)
    check_output(src, out)
    with pytest.raises(DestinationError, match="is the source"):
        add_offset_table(src, src, overwrite=True)
    with pytest.raises(DestinationExistsError):
        add_offset_table(src, src)
    assert (src.read_bytes(), os.stat(src).st_mtime_ns) == before
    _no_partial_files(tmp_path)


def test_interrupt_leaves_nothing(tmp_path):
    src = write_sample(tmp_path / "in.dcm", frames=40, rows=32, columns=32, syntax="rle", offset_table="none")
    out = tmp_path / "out.dcm"
    seen = []

    def interrupt(p: Progress) -> None:
        seen.append((p.frames_done, p.frames_total, p.bytes_done <= p.bytes_total))
        if p.frames_done == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        add_offset_table(src, out, progress=interrupt)
    assert seen == [(i, 40, True) for i in range(1, 6)]
    assert not out.exists()
    out.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        add_offset_table(src, out, progress=interrupt, overwrite=True)
    assert out.read_bytes() == b"old"
    _no_partial_files(tmp_path)


def test_truncated_source_names_the_frame(tmp_path):
    full = write_sample(tmp_path / "full.dcm", frames=40, rows=64, columns=64, syntax="rle", offset_table="bot")
    data = Path(full).read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(DicomFramesError) as info:
        add_offset_table(cut, tmp_path / "out.dcm")
    assert info.value.frame is not None and info.value.offset is not None
    assert not (tmp_path / "out.dcm").exists()
    _no_partial_files(tmp_path)


def test_a_table_that_disagrees_with_the_items_is_an_error(tmp_path):
    src = write_sample(tmp_path / "in.dcm", frames=8, rows=32, columns=32, syntax="rle", offset_table="eot")
    raw = bytearray(Path(src).read_bytes())
    at = raw.index(struct.pack("<HH", 0x7FE0, 2) + b"OV") + 12
    lengths = np.frombuffer(bytes(raw[at : at + 64]), dtype="<u8").copy()
    lengths[3] -= 40  # frame 3's item is longer than its table says
    raw[at : at + 64] = lengths.tobytes()
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(raw)
    with pytest.raises(FrameIndexError) as info:
        add_offset_table(bad, tmp_path / "out.dcm")
    assert info.value.frame == 3 and info.value.offset is not None
    assert not (tmp_path / "out.dcm").exists()


def test_memory_stays_flat(tmp_path):
    """96 MiB of fragments through a fresh process: the peak is the interpreter, the
    chunks (4 x 4 MiB) and the tables, not the file."""
    codestream = bytes(range(256)) * 1024  # 256 KiB frames (never decoded here)
    frames = 384
    src = tmp_path / "big.dcm"
    with open(src, "wb") as f:
        f.write(dicomgen.file_meta(dicomgen.RLE))
        for tag, vr, value in dicomgen.image_elements(frames=frames, rows=1024, columns=1024):
            f.write(dicomgen.element(tag, vr, value))
        f.write(dicomgen.element_header(0x7FE00010, "OB", 0xFFFFFFFF) + ITEM.pack(0xFFFE, 0xE000, 0))
        for _ in range(frames):
            f.write(ITEM.pack(0xFFFE, 0xE000, len(codestream)) + codestream)
        f.write(ITEM.pack(0xFFFE, 0xE0DD, 0))
    script = (
        f"import sys; sys.path.insert(0, {SRC!r}); import dicomframes, resource;"
        "dicomframes.add_offset_table(sys.argv[1], sys.argv[2]);"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)"
    )
    baseline = (
        f"import sys; sys.path.insert(0, {SRC!r}); import dicomframes, dicomframes.transcode.offset_table, resource;"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)"
    )
    peak = int(subprocess.run([sys.executable, "-c", script, str(src), str(tmp_path / "out.dcm")],
                              capture_output=True, text=True, check=True, timeout=300).stdout)
    base = int(subprocess.run([sys.executable, "-c", baseline], capture_output=True, text=True, check=True,
                              timeout=300).stdout)
    assert peak - base < 48 << 20, (peak, base)
    with dicomframes.open(tmp_path / "out.dcm") as reader:
        assert reader.index.kind == "EOT" and reader.encoded_frame(frames - 1) == codestream


# -- buckets --------------------------------------------------------------------------------------------


def test_to_s3_and_from_s3(s3, tmp_path):
    src = write_sample(tmp_path / "in.dcm", frames=300, rows=128, columns=128, syntax="jpegls", offset_table="none")
    local = add_offset_table(src, tmp_path / "local.dcm")
    url = s3.url(f"{tmp_path.name}/out.dcm")
    assert add_offset_table(src, url, **s3.options) == url
    client = s3.server.client()
    key = url.split("/", 3)[3]
    assert client.get_object(Bucket=s3.bucket, Key=key)["Body"].read() == Path(local).read_bytes()
    with pytest.raises(DestinationExistsError):
        add_offset_table(src, url, **s3.options)
    # From the bucket: the same bytes as converting a downloaded copy.
    back = add_offset_table(s3.url("walked.dcm"), tmp_path / "back.dcm", **s3.options)
    client.download_file(s3.bucket, "walked.dcm", str(tmp_path / "walked.dcm"))
    ref = add_offset_table(tmp_path / "walked.dcm", tmp_path / "ref.dcm")
    assert Path(back).read_bytes() == Path(ref).read_bytes()
    check_output(tmp_path / "walked.dcm", back)
    with pytest.raises(TypeError, match="unexpected options"):
        add_offset_table(src, tmp_path / "x.dcm", anon=True)


def test_interrupted_upload_leaves_no_object(s3, tmp_path):
    src = write_sample(tmp_path / "in.dcm", frames=400, rows=128, columns=128, syntax="rle", offset_table="none")
    url = s3.url(f"{tmp_path.name}/out.dcm")

    def interrupt(p: Progress) -> None:
        if p.frames_done == 390:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        add_offset_table(src, url, progress=interrupt, **s3.options)
    client = s3.server.client()
    assert client.list_objects_v2(Bucket=s3.bucket, Prefix=tmp_path.name).get("KeyCount", 0) == 0


# -- the package and the command -------------------------------------------------------------------------


def test_exported_lazily_from_the_package_root():
    assert dicomframes.add_offset_table is add_offset_table
    assert "add_offset_table" in dicomframes.__all__ and "add_offset_table" in dir(dicomframes)


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dicomframes", *map(str, args)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": SRC})


def _one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_command_line(tmp_path):
    src = write_sample(tmp_path / "in.dcm", frames=20, rows=32, columns=32, syntax="j2k", offset_table="none")
    out = tmp_path / "out.dcm"
    result = _cli("add-offset-table", src, out, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["output"] == str(out) and result.stderr == ""
    check_output(src, out)
    # Progress on request, on stderr; -q silences it.
    result = _cli("add-offset-table", src, out, "--force", "--progress")
    assert result.returncode == 0 and "20/20 frames" in result.stderr and result.stdout == ""
    result = _cli("add-offset-table", src, out, "--force", "--progress", "-q")
    assert result.returncode == 0 and result.stderr == ""

    _one_line_error(_cli("add-offset-table", src, out), "exists", "--force")
    native = write_sample(tmp_path / "native.dcm", frames=2, rows=8, columns=8, syntax="native")
    _one_line_error(_cli("add-offset-table", native, tmp_path / "n.dcm"), "nothing to index", "native.dcm")
    _one_line_error(_cli("add-offset-table", tmp_path / "missing.dcm", tmp_path / "m.dcm"), "missing.dcm")
    _one_line_error(_cli("add-offset-table", src, src, "--force"), "is the source")
    notes = tmp_path / "notes.txt"
    notes.write_text("not DICOM\n" * 30)
    _one_line_error(_cli("add-offset-table", notes, tmp_path / "x.dcm"))
    usage = _cli("add-offset-table", src)
    assert usage.returncode == 2 and len(usage.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "n.dcm").exists() and not (tmp_path / "x.dcm").exists()
    _no_partial_files(tmp_path)
