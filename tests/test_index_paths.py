"""Every way dicomframes locates a frame, checked against pydicom frame by frame.

Encapsulated data: Basic Offset Table, empty BOT walked with one and with several
fragments per frame, Extended Offset Table, and a BOT whose 32-bit offsets wrap
around past 4 GiB (a sparse file). Native data: Bits Allocated 1 frames that do
not start on a byte, Explicit VR Big Endian (incl. 8-bit OW, whose byte pairs
are swapped, and odd-length frames), Deflated, Implicit VR, YBR_FULL_422,
signed 12-in-16-bit, float pixel data. Then iteration order, indexing, and the
errors for truncated files and garbage offset tables.
"""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
from pydicom.pixels import pixel_array

import dicomframes
from dicomframes.io.local import LocalFileSource
from dicomframes.io.policy import FetchPolicy
from dicomframes.samples import sample_frame, write_sample
from tests.helpers import dicomgen as g


def assert_same_as_pydicom(path, frames: int, kind: str | None = None, *, whole: bool = False, **open_kwargs) -> None:
    """Every frame equals pydicom's, by `frame(i)` and by iteration.

    pydicom's reference is ``pixel_array(path, index=i)``, or with `whole`
    frame i of ``pixel_array(path)`` (all frames decoded at once).
    """
    as_rgb = open_kwargs.get("as_rgb", True)
    with dicomframes.open(path, **open_kwargs) as reader:
        assert len(reader) == frames
        if kind is not None:
            assert reader.info.index_kind == kind
        if whole:
            everything = pixel_array(path, as_rgb=as_rgb)
            expected = list(everything) if frames > 1 else [everything]
        else:
            expected = [pixel_array(path, index=i, as_rgb=as_rgb) for i in range(frames)]
        # pydicom keeps big endian data big endian; dicomframes gives native byte order.
        dtypes = [e.dtype.newbyteorder("=") for e in expected]
        for i in range(frames):
            got = reader.frame(i)
            assert got.dtype == dtypes[i], i
            assert got.shape == expected[i].shape, i
            assert np.array_equal(got, expected[i]), i
        iterated = list(reader)
        assert len(iterated) == frames
        for i, got in enumerate(iterated):
            assert got.dtype == dtypes[i] and np.array_equal(got, expected[i]), i


# -- encapsulated ---------------------------------------------------------------------------


@pytest.mark.parametrize("syntax", ["rle", "jpegls", "j2k"])
def test_basic_offset_table(tmp_path, syntax):
    path = write_sample(tmp_path / "bot.dcm", frames=7, rows=40, columns=36, syntax=syntax, offset_table="bot")
    assert_same_as_pydicom(path, 7, "BOT")


@pytest.mark.parametrize("syntax", ["jpegls", "j2k"])
def test_basic_offset_table_several_fragments(tmp_path, syntax):
    path = write_sample(tmp_path / "bot3.dcm", frames=5, rows=40, columns=36, samples_per_pixel=3,
                        syntax=syntax, offset_table="bot", fragments_per_frame=3)
    assert_same_as_pydicom(path, 5, "BOT")


@pytest.mark.parametrize("syntax", ["rle", "jpegls", "j2k"])
def test_empty_bot_one_fragment_per_frame(tmp_path, syntax):
    # RLE has no start marker: one fragment per frame is decided by the counts.
    path = write_sample(tmp_path / "walk1.dcm", frames=6, rows=33, columns=40, syntax=syntax, offset_table="none")
    assert_same_as_pydicom(path, 6, "walked")


@pytest.mark.parametrize("syntax", ["jpegls", "j2k"])
@pytest.mark.parametrize("fragments", [2, 5])
def test_empty_bot_several_fragments_per_frame(tmp_path, syntax, fragments):
    # Start markers (FF D8 / FF 4F FF 51) decide where each frame begins.
    path = write_sample(tmp_path / "walkn.dcm", frames=6, rows=48, columns=40, syntax=syntax,
                        offset_table="none", fragments_per_frame=fragments)
    assert_same_as_pydicom(path, 6, "walked")


def test_empty_bot_walk_is_lazy_and_random_access_works(tmp_path):
    path = write_sample(tmp_path / "walk.dcm", frames=9, rows=32, columns=32, syntax="j2k",
                        offset_table="none", fragments_per_frame=2)
    with dicomframes.open(path) as reader:
        # Backwards, then forwards again: the walk is built once, as far as needed.
        for i in (8, 3, 0, 5):
            assert np.array_equal(reader.frame(i), pixel_array(path, index=i))


@pytest.mark.parametrize("syntax", ["rle", "jpegls", "j2k"])
@pytest.mark.parametrize("spp", [1, 3])
def test_extended_offset_table(tmp_path, syntax, spp):
    path = write_sample(tmp_path / "eot.dcm", frames=5, rows=33, columns=35, samples_per_pixel=spp,
                        syntax=syntax, offset_table="eot")
    assert_same_as_pydicom(path, 5, "EOT")


@pytest.mark.parametrize("table,fragments,kind", [
    ("bot", 1, "BOT"), ("none", 1, "walked"), ("eot", 1, "EOT"), ("bot", 3, "BOT"), ("none", 3, "walked"),
])
def test_single_frame_encapsulated(tmp_path, table, fragments, kind):
    path = write_sample(tmp_path / "one.dcm", frames=1, rows=32, columns=32, syntax="j2k",
                        offset_table=table, fragments_per_frame=fragments)
    assert_same_as_pydicom(path, 1, kind)


def test_bot_wraps_around_past_4_gib(tmp_path):
    """32-bit BOT offsets of the frames after 4 GiB wrap around; the reader unwraps them.

    Frames 1 and 2 each carry, after their codestream, a ~2.2 GiB padding fragment
    written as a hole (so the file is sparse and costs no disk). No single frame
    spans 4 GiB, so each wrap shows as a step down in the table. pydicom is not
    used (it would read gigabytes): frames are compared with what was encoded.
    """
    from openjpeg.utils import encode_array

    n, rows, columns = 6, 32, 40
    frames = [sample_frame(i, rows, columns, seed=3) for i in range(n)]
    codestreams = [bytes(encode_array(f, bits_stored=8, use_mct=False)) for f in frames]
    hole = 2_200_000_000  # bytes; two of them push frames 3.. past 4 GiB
    path = tmp_path / "wrapped.dcm"
    offsets = g.write_sparse_bot_file(
        path, g.J2K, g.image_elements(frames=n, rows=rows, columns=columns), codestreams, {1: hole, 2: hole},
    )
    try:
        st = os.stat(path)
        if st.st_blocks * 512 > 256 << 20:
            pytest.skip(f"the file system at {tmp_path} does not keep holes (sparse files)")
        assert st.st_size > 1 << 32
        assert offsets[3] >= 1 << 32 and offsets[2] < 1 << 32  # frames 3.. really wrapped
        with open(path, "rb") as f:
            raw = f.read(64 * 1024)
        bot_at = raw.index(b"\xe0\x7f\x10\x00OB") + 12 + 8
        table = np.frombuffer(raw[bot_at : bot_at + 4 * n], "<u4")
        assert table[3] < table[2]  # the step down that marks the wrap

        with dicomframes.open(path) as reader:
            assert reader.info.index_kind == "BOT"
            assert len(reader) == n
            for i in (0, 3, 4, 5, -1):  # 5 is the last frame: its end is found by walking
                got = reader.frame(i)
                assert got.dtype == np.uint8 and np.array_equal(got, frames[i]), i
            assert reader.encoded_frame(4) == codestreams[4] + b"\x00" * (len(codestreams[4]) % 2)
            got = list(reader.iter_frames([5, 0, 3, 4]))
            for i, arr in zip([5, 0, 3, 4], got):
                assert np.array_equal(arr, frames[i]), i
            assert reader.stats["bytes"] < 1 << 20  # the holes were never read
    finally:
        os.unlink(path)


# -- native ---------------------------------------------------------------------------------


@pytest.mark.parametrize("frames,rows,columns", [(3, 5, 5), (4, 3, 7), (2, 8, 8)])
def test_bits_allocated_1_frames_not_byte_aligned(tmp_path, frames, rows, columns):
    rng = np.random.default_rng(1)
    bits = rng.integers(0, 2, frames * rows * columns, dtype=np.uint8)
    data = np.packbits(bits, bitorder="little").tobytes()
    path = g.write_file(
        tmp_path / "ba1.dcm", g.EXPLICIT_LE,
        g.image_elements(frames=frames, rows=rows, columns=columns, bits_allocated=1, sop_class=g.SC_MF_SINGLE_BIT),
        data, pixel_vr="OB", sop_class=g.SC_MF_SINGLE_BIT,
    )
    # pydicom 3.0.2's pixel_array(path, index=i) fails on some of these (e.g. 4 frames
    # of 3x7: "cannot reshape array of size 19"); its whole-array decode is right.
    assert_same_as_pydicom(path, frames, "native", whole=True)
    with dicomframes.open(path) as reader:
        for i in range(frames):
            expected = bits[i * rows * columns : (i + 1) * rows * columns].reshape(rows, columns)
            assert np.array_equal(reader.frame(i), expected)


@pytest.mark.parametrize("spp", [1, 3])
def test_big_endian_16_bit(tmp_path, spp):
    rng = np.random.default_rng(2)
    shape = (4, 6, 7) + ((3,) if spp == 3 else ())
    arr = rng.integers(0, 65536, shape, dtype=np.uint16)
    path = g.write_file(
        tmp_path / "be16.dcm", g.EXPLICIT_BE,
        g.image_elements(frames=4, rows=6, columns=7, samples_per_pixel=spp, bits_allocated=16, sop_class=g.SC_MF_WORD),
        arr.astype(">u2").tobytes(), pixel_vr="OW",
    )
    assert_same_as_pydicom(path, 4, "native")
    with dicomframes.open(path) as reader:
        for i in range(4):
            assert np.array_equal(reader.frame(i), arr[i])
            assert reader.frame(i).dtype == np.dtype("uint16")  # native byte order


def test_big_endian_signed_12_bit(tmp_path):
    rng = np.random.default_rng(3)
    arr = rng.integers(0, 65536, (3, 5, 6), dtype=np.uint16)  # garbage above bit 11
    path = g.write_file(
        tmp_path / "be12.dcm", g.EXPLICIT_BE,
        g.image_elements(frames=3, rows=5, columns=6, bits_allocated=16, bits_stored=12,
                         pixel_representation=1, sop_class=g.SC_MF_WORD),
        arr.astype(">u2").tobytes(), pixel_vr="OW",
    )
    assert_same_as_pydicom(path, 3, "native")


@pytest.mark.parametrize(
    "frames,rows,columns,spp",
    [
        (3, 3, 5, 1),  # 15-byte frames: every other frame starts on an odd byte
        (4, 4, 4, 1),  # even frames
        (3, 3, 3, 3),  # 27-byte RGB frames
        (1, 1, 1, 1),  # a single byte
    ],
)
@pytest.mark.parametrize("vr", ["OW", "OB"])
def test_big_endian_8_bit(tmp_path, frames, rows, columns, spp, vr):
    """8-bit OW in big endian stores pixel pairs as swapped 16-bit words; OB does not."""
    rng = np.random.default_rng(4)
    arr = rng.integers(0, 256, frames * rows * columns * spp, dtype=np.uint8)
    data = arr.tobytes()
    if vr == "OW":
        data += b"\x00" * (len(data) % 2)
        data = np.frombuffer(data, "<u2").byteswap().tobytes()
    path = g.write_file(
        tmp_path / "be8.dcm", g.EXPLICIT_BE,
        g.image_elements(frames=frames, rows=rows, columns=columns, samples_per_pixel=spp,
                         sop_class=g.SC_MF_BYTE if spp == 1 else g.SC_MF_TRUE_COLOR),
        data, pixel_vr=vr,
    )
    assert_same_as_pydicom(path, frames, "native")
    shape = (rows, columns) + ((spp,) if spp > 1 else ())
    n = rows * columns * spp
    with dicomframes.open(path) as reader:
        for i in range(frames):
            assert np.array_equal(reader.frame(i), arr[i * n : (i + 1) * n].reshape(shape)), i


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("spp", [1, 3])
def test_deflated(tmp_path, bits, spp):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid

    frames, rows, columns = 5, 24, 20
    arr = np.stack([sample_frame(i, rows, columns, spp, bits) for i in range(frames)])
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.SOPClassUID = g.SC_MF_TRUE_COLOR if spp == 3 else (g.SC_MF_BYTE if bits == 8 else g.SC_MF_WORD)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientName = "Deflated^Test"
    ds.SamplesPerPixel = spp
    ds.PhotometricInterpretation = "RGB" if spp == 3 else "MONOCHROME2"
    if spp == 3:
        ds.PlanarConfiguration = 0
    ds.NumberOfFrames = frames
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.PixelData = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
    path = tmp_path / "deflated.dcm"
    ds.save_as(path, enforce_file_format=True)
    raw = path.read_bytes()
    assert b"Deflated^Test" not in raw  # really deflated

    # pixel_array(path) cannot read deflated files; dcmread can.
    reference = pydicom.dcmread(path).pixel_array
    with dicomframes.open(path) as reader:
        assert reader.info.transfer_syntax_uid == DeflatedExplicitVRLittleEndian
        assert reader.info.index_kind == "native"
        for i in (0, 4, 2, 1, 3):  # out of order: the inflated stream is re-entered
            got = reader.frame(i)
            assert got.dtype == reference.dtype and np.array_equal(got, reference[i]), i
            assert np.array_equal(got, arr[i])
        assert all(np.array_equal(a, b) for a, b in zip(reader, reference))


@pytest.mark.parametrize("bits", [8, 16])
def test_implicit_vr_little_endian(tmp_path, bits):
    rng = np.random.default_rng(5)
    arr = rng.integers(0, 1 << bits, (4, 9, 11), dtype=np.uint8 if bits == 8 else np.uint16)
    path = g.write_file(
        tmp_path / "implicit.dcm", g.IMPLICIT_LE,
        g.image_elements(frames=4, rows=9, columns=11, bits_allocated=bits,
                         sop_class=g.SC_MF_BYTE if bits == 8 else g.SC_MF_WORD),
        arr.astype(arr.dtype.newbyteorder("<")).tobytes(),
    )
    assert_same_as_pydicom(path, 4, "native")


@pytest.mark.parametrize("as_rgb", [True, False])
def test_ybr_full_422(tmp_path, as_rgb):
    frames, rows, columns = 3, 4, 6
    rng = np.random.default_rng(6)
    data = rng.integers(0, 256, frames * rows * columns * 2, dtype=np.uint8).tobytes()  # Y1 Y2 Cb Cr
    path = g.write_file(
        tmp_path / "ybr422.dcm", g.EXPLICIT_LE,
        g.image_elements(frames=frames, rows=rows, columns=columns, samples_per_pixel=3,
                         photometric="YBR_FULL_422", sop_class=g.SC_MF_TRUE_COLOR),
        data,
    )
    assert_same_as_pydicom(path, frames, "native", as_rgb=as_rgb)


@pytest.mark.parametrize("bits_stored", [12, 16])
def test_signed_16_bit(tmp_path, bits_stored):
    rng = np.random.default_rng(7)
    arr = rng.integers(0, 65536, (3, 5, 7), dtype=np.uint16)  # garbage above Bits Stored
    path = g.write_file(
        tmp_path / "signed.dcm", g.EXPLICIT_LE,
        g.image_elements(frames=3, rows=5, columns=7, bits_allocated=16, bits_stored=bits_stored,
                         pixel_representation=1, sop_class=g.SC_MF_WORD),
        arr.tobytes(), pixel_vr="OW",
    )
    assert_same_as_pydicom(path, 3, "native")
    with dicomframes.open(path) as reader:
        frame = reader.frame(1)
        assert frame.dtype == np.int16
        if bits_stored == 12:
            assert frame.min() >= -2048 and frame.max() <= 2047
            expected = ((arr[1].astype(np.int32) & 0xFFF) ^ 0x800) - 0x800
            assert np.array_equal(frame, expected)


@pytest.mark.parametrize("keyword,tag,vr,dtype", [
    ("FloatPixelData", 0x7FE00008, "OF", "<f4"),
    ("DoubleFloatPixelData", 0x7FE00009, "OD", "<f8"),
])
def test_float_pixel_data(tmp_path, keyword, tag, vr, dtype):
    rng = np.random.default_rng(8)
    arr = rng.standard_normal((3, 4, 5)).astype(dtype)
    bits = np.dtype(dtype).itemsize * 8
    els = [e for e in g.image_elements(frames=3, rows=4, columns=5, bits_allocated=bits)
           if e[0] not in (0x00280101, 0x00280102, 0x00280103)]  # no Bits Stored etc. for float data
    path = g.write_file(tmp_path / "float.dcm", g.EXPLICIT_LE, els, arr.tobytes(), pixel_vr=vr, pixel_tag=tag)
    assert_same_as_pydicom(path, 3, "native")
    with dicomframes.open(path) as reader:
        assert reader.frame(2).dtype == np.dtype(dtype).newbyteorder("=")
        assert np.array_equal(reader.frame(2), arr[2])


# -- iteration and indexing -------------------------------------------------------------------


@pytest.fixture
def eight_frames(tmp_path):
    return write_sample(tmp_path / "eight.dcm", frames=8, rows=32, columns=32, syntax="rle")


def test_iteration_equals_frame_by_frame(eight_frames):
    with dicomframes.open(eight_frames) as reader:
        by_index = [reader.frame(i) for i in range(len(reader))]
        iterated = list(reader)
        assert len(iterated) == 8
        assert all(np.array_equal(a, b) for a, b in zip(iterated, by_index))
        assert all(np.array_equal(a, sample_frame(i, 32, 32)) for i, a in enumerate(iterated))
        assert all(np.array_equal(a, b) for a, b in zip(dicomframes.iter_frames(eight_frames), by_index))


@pytest.mark.parametrize(
    "policy",
    [None, FetchPolicy(batch_bytes=1), FetchPolicy(max_frames=2), FetchPolicy(max_gap=1 << 20)],
    ids=["default", "one-frame-batches", "two-frame-batches", "merged"],
)
def test_iter_frames_honours_order_and_repeats(eight_frames, policy):
    indices = [5, 1, 5, 0, -1, 7, 7, 2]
    reader = dicomframes.Reader(LocalFileSource(eight_frames), policy=policy)
    with reader:
        got = list(reader.iter_frames(indices))
        assert len(got) == len(indices)
        for i, arr in zip(indices, got):
            assert np.array_equal(arr, reader.frame(i)), i
        assert np.array_equal(got[0], got[2]) and got[0] is not got[2]
        got[0][0, 0] ^= 1  # frames are independent, writeable arrays
        assert not np.array_equal(got[0], got[2])
        assert list(reader.iter_frames([])) == []


def test_negative_index_and_out_of_range(eight_frames):
    with dicomframes.open(eight_frames) as reader:
        assert np.array_equal(reader.frame(-1), reader.frame(7))
        assert np.array_equal(reader[-8], reader[0])
        assert np.array_equal(reader.frame(np.int64(3)), reader.frame(3))
        for bad in (8, -9, 100):
            with pytest.raises(IndexError):
                reader.frame(bad)
            with pytest.raises(IndexError):
                reader.encoded_frame(bad)
            with pytest.raises(IndexError):
                list(reader.iter_frames([0, bad]))


# -- errors ---------------------------------------------------------------------------------


def _truncate_inside(path: str, frame: int) -> int:
    """Cut the file in the middle of `frame`'s bytes; return the new size."""
    with dicomframes.open(path) as reader:
        span = reader.index.span(frame)
    cut = span.offset + span.length // 2
    os.truncate(path, cut)
    return cut


@pytest.mark.parametrize("syntax,table", [("j2k", "bot"), ("j2k", "none"), ("jpegls", "eot"), ("rle", "bot"), ("native", "bot")])
def test_truncated_file(tmp_path, syntax, table):
    n, bad = 10, 7
    path = write_sample(tmp_path / "partial.dcm", frames=n, rows=32, columns=48, syntax=syntax, offset_table=table, seed=9)
    _truncate_inside(path, bad)
    with dicomframes.open(path) as reader:
        # The whole frames before the cut still read correctly ...
        for i in range(bad):
            assert np.array_equal(reader.frame(i), sample_frame(i, 32, 48, seed=9)), i
        assert [f.shape for f in reader.iter_frames(range(bad))] == [(32, 48)] * bad
        # ... the cut one is a TruncatedFileError that says where.
        with pytest.raises(dicomframes.TruncatedFileError) as info:
            reader.frame(bad)
        message = str(info.value)
        assert str(path) in message and f"frame {bad}" in message and "byte offset" in message
        assert info.value.frame == bad and info.value.offset is not None
        # Frames wholly beyond the end: an error that names the frame.
        for i in range(bad + 1, n):
            with pytest.raises(dicomframes.DicomFramesError, match=f"frame {i}") as info:
                reader.frame(i)
            assert str(path) in str(info.value) and "byte offset" in str(info.value)


@pytest.mark.parametrize("syntax,table", [("j2k", "bot"), ("native", "bot")])
def test_truncated_file_iteration_yields_whole_frames_first(tmp_path, syntax, table):
    """`for frame in reader` over a partial file gives every whole frame, then the error."""
    n, bad = 10, 7
    path = write_sample(tmp_path / "partial.dcm", frames=n, rows=32, columns=48, syntax=syntax, offset_table=table)
    _truncate_inside(path, bad)
    got = []
    with dicomframes.open(path) as reader:
        with pytest.raises(dicomframes.TruncatedFileError, match=f"frame {bad}"):
            for frame in reader:
                got.append(frame)
    assert len(got) == bad
    assert all(np.array_equal(a, sample_frame(i, 32, 48)) for i, a in enumerate(got))


def _patch_bot(path: str, n: int, change) -> np.ndarray:
    raw = bytearray(open(path, "rb").read())
    at = raw.index(b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff") + 12
    group, elem, length = struct.unpack_from("<HHI", raw, at)
    assert (group, elem, length) == (0xFFFE, 0xE000, 4 * n)
    table = np.frombuffer(bytes(raw[at + 8 : at + 8 + 4 * n]), "<u4").copy()
    new = change(table.copy())
    raw[at + 8 : at + 8 + 4 * n] = np.asarray(new, dtype="<u4").tobytes()
    with open(path, "wb") as f:
        f.write(raw)
    return table


def test_garbage_bot_points_into_fragments(tmp_path):
    n = 6
    path = write_sample(tmp_path / "garbage.dcm", frames=n, rows=32, columns=32, syntax="j2k", offset_table="bot")

    def into_the_middle(table):
        table[1:] += 100  # still increasing, but 100 bytes into each frame's fragment
        return table

    _patch_bot(path, n, into_the_middle)
    with dicomframes.open(path) as reader:
        assert reader.info.index_kind == "BOT"
        for i in range(n):
            with pytest.raises(dicomframes.DicomFramesError) as info:
                reader.frame(i)
            assert f"frame {i}" in str(info.value) and str(path) in str(info.value), str(info.value)
            assert info.value.frame == i
        with pytest.raises(dicomframes.DicomFramesError):
            list(reader)


def test_garbage_bot_beyond_the_file(tmp_path):
    n = 6
    path = write_sample(tmp_path / "garbage2.dcm", frames=n, rows=32, columns=32, syntax="rle", offset_table="bot")

    def scrambled(table):
        table[3] = 0xFFFFFF00  # far past the end of the file
        return table

    _patch_bot(path, n, scrambled)
    with dicomframes.open(path) as reader:
        assert np.array_equal(reader.frame(0), sample_frame(0, 32, 32))
        assert np.array_equal(reader.frame(1), sample_frame(1, 32, 32))
        for i in (2, 3, 4):
            with pytest.raises(dicomframes.DicomFramesError) as info:
                reader.frame(i)
            assert f"frame {i}" in str(info.value), str(info.value)


def test_garbage_extended_offset_table(tmp_path):
    n = 5
    path = write_sample(tmp_path / "garbage-eot.dcm", frames=n, rows=32, columns=32, syntax="jpegls", offset_table="eot")
    raw = bytearray(open(path, "rb").read())
    at = raw.index(b"\xe0\x7f\x01\x00OV\x00\x00") + 12
    offsets = np.frombuffer(bytes(raw[at : at + 8 * n]), "<u8").copy()
    offsets[2] += 6  # into frame 2's codestream
    raw[at : at + 8 * n] = offsets.astype("<u8").tobytes()
    open(path, "wb").write(raw)
    with dicomframes.open(path) as reader:
        assert reader.info.index_kind == "EOT"
        assert np.array_equal(reader.frame(1), sample_frame(1, 32, 32))
        with pytest.raises(dicomframes.DicomFramesError) as info:
            reader.frame(2)
        assert "frame 2" in str(info.value) and str(path) in str(info.value)
        assert np.array_equal(reader.frame(3), sample_frame(3, 32, 32))
