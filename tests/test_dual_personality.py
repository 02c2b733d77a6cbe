"""Dual-personality DICOM-TIFF files: the preamble's TIFF tile table as the offset table.

The DICOM files are written by pydicom (a multi-frame image, empty Basic Offset
Table) and by wsidicomizer (a whole-slide pyramid); tifffile writes their TIFF
structure (tests/helpers/dual_personality.py). Frames are compared with
pydicom's (pylibjpeg's decoder on both sides), regions with wsidicom's, and
tifffile reads the same files as TIFFs.
"""

from __future__ import annotations

import logging
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

import dicomframes
from tests.helpers.dual_personality import add_tiff, overwrite_tiles, tile_table
from tests.helpers.encapsulated import write_encapsulated

FRAMES, TILE = 40, 128


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Path:
    """A JPEG multi-frame file written by pydicom, its Basic Offset Table empty,
    its frames noise (no two codestreams of the same length)."""
    imagecodecs = pytest.importorskip("imagecodecs")
    from pydicom.uid import JPEGBaseline8Bit

    rng = np.random.default_rng(7)
    frames = [rng.integers(0, 256, (TILE, TILE, 3), dtype=np.uint8) for _ in range(FRAMES)]
    codestreams = [imagecodecs.jpeg8_encode(f, level=80) for f in frames]
    path = tmp_path_factory.mktemp("dual") / "plain.dcm"
    return write_encapsulated(path, frames, codestreams, JPEGBaseline8Bit, bits_stored=8,
                              photometric="YBR_FULL_422", bot=False)


@pytest.fixture
def dual(plain, tmp_path) -> Path:
    return add_tiff(plain, tmp_path / "dual.dcm")


def _pydicom_frames(path: Path) -> list[np.ndarray]:
    pydicom = pytest.importorskip("pydicom")
    return list(pydicom.iter_pixels(path))


def _all_equal_pydicom(reader: dicomframes.Reader, path: Path) -> None:
    theirs = _pydicom_frames(path)
    assert len(reader) == len(theirs)
    for i, (ours, expected) in enumerate(zip(reader, theirs)):
        assert np.array_equal(ours, expected), i


def _quiet(caplog) -> str:
    return " ".join(r.getMessage() for r in caplog.records if r.name == "dicomframes")


@pytest.mark.parametrize("layout", [{}, {"bigtiff": True}, {"byteorder": ">"}, {"exact_counts": False}],
                         ids=["classic", "bigtiff", "big-endian", "item-length-counts"])
def test_frames_are_located_from_the_tiff_tile_table(plain, tmp_path, layout, caplog):
    path = add_tiff(plain, tmp_path / "dual.dcm", **layout)
    size = path.stat().st_size
    caplog.set_level(logging.WARNING, logger="dicomframes")
    with dicomframes.open(path, decoder="pylibjpeg") as reader:
        assert reader.index.kind == "TIFF"
        reader.frame(FRAMES - 1)
        # the header's block, the IFD at the end, the frame: not a walk over the file
        assert reader.stats["bytes"] < size / 4, (reader.stats, size)
        _all_equal_pydicom(reader, path)
    with dicomframes.open(plain) as walked:
        walked.frame(FRAMES - 1)
        assert walked.index.kind == "walked" and walked.stats["bytes"] > size / 2
    assert not _quiet(caplog)


def test_tifffile_reads_the_same_file_as_a_tiff(dual):
    """The other personality: tifffile finds each frame's codestream, and decodes the
    image our frames tile (the same libjpeg-turbo through imagecodecs on both sides)."""
    tifffile = pytest.importorskip("tifffile")
    offsets, counts = tile_table(dual)
    image = tifffile.imread(dual)
    assert image.shape == (TILE, TILE * FRAMES, 3)
    data = dual.read_bytes()
    with dicomframes.open(dual, decoder="imagecodecs") as reader:
        for i in range(FRAMES):
            span = reader.index.span(i)
            assert span.offset + 8 == offsets[i]
            assert data[offsets[i] : offsets[i] + counts[i]] == reader.encoded_frame(i)[: counts[i]]
            assert np.array_equal(image[:, i * TILE : (i + 1) * TILE], reader.frame(i)), i


def test_a_whole_slide_pyramid_from_wsidicomizer_with_a_tiff_personality(tmp_path, caplog):
    from tests.helpers.wsidicomizer import import_wsidicomizer, write_ome_tiff

    WsiDicomizer = import_wsidicomizer()
    tifffile = pytest.importorskip("tifffile")
    tiff = tmp_path / "slide.ome.tiff"
    write_ome_tiff(tiff, 1024, 768, 256)
    converted, dual = tmp_path / "converted", tmp_path / "dual"
    converted.mkdir()
    dual.mkdir()
    WsiDicomizer.convert(tiff, converted, include_label=False, include_overview=False, workers=1, offset_table="empty")
    for path in converted.glob("*.dcm"):
        add_tiff(path, dual / path.name)
    caplog.set_level(logging.WARNING, logger="dicomframes")
    with dicomframes.open_slide(dual, decoder="pylibjpeg") as slide:
        assert len(slide.levels) == 3
        for level in slide.levels:
            for reader in level.readers:
                assert reader.index.kind == "TIFF"
                _all_equal_pydicom(reader, Path(reader.path))
    # The TIFF personality's image is the level's pixels (libjpeg-turbo on both sides).
    with dicomframes.open_slide(dual, decoder="imagecodecs") as slide:
        for level in slide.levels:
            whole = level.read_region((0, 0), (level.width, level.height))
            image = tifffile.imread(level.readers[0].path)
            assert np.array_equal(image[: level.height, : level.width], whole)
    wsidicom = pytest.importorskip("wsidicom")
    with wsidicom.WsiDicom.open(dual) as theirs, dicomframes.open_slide(dual) as ours:
        for k, level in enumerate(ours.levels):
            for x, y, w, h in [(0, 0, 300, 200), (level.width - 90, level.height - 70, 90, 70), (100, 37, 256, 301)]:
                w, h = min(w, level.width - x), min(h, level.height - y)
                expected = np.asarray(theirs.read_region((x, y), k, (w, h)).convert("RGB"))
                # wsidicom's location is in the level's pixels, the slide's (like OpenSlide's) in level 0's.
                got = ours.read_region((int(x * level.downsample), int(y * level.downsample)), k, (w, h))
                assert np.array_equal(expected, got), (k, x, y)
    assert not _quiet(caplog)


def _lengths_differ(counts: list[int]) -> int:
    """A tile whose item is longer than the next one's."""
    items = [c + c % 2 for c in counts]
    return next(k for k in range(1, len(items) - 1) if items[k] > items[k + 1])


def test_a_table_that_lies_about_one_tile_falls_back_to_the_walk(dual, caplog):
    """Two tiles' byte counts swapped (and the offset between them moved to match):
    the table is whole, but tile k's item is not the length it says. The frame's
    item header gives it away as it is read; from there on, the walk."""
    offsets, counts = tile_table(dual)
    k = _lengths_differ(counts)
    offsets[k + 1] = offsets[k] + counts[k + 1] + counts[k + 1] % 2 + 8
    counts[k], counts[k + 1] = counts[k + 1], counts[k]
    overwrite_tiles(dual, offsets=offsets, counts=counts)
    caplog.set_level(logging.WARNING, logger="dicomframes")
    with dicomframes.open(dual, decoder="pylibjpeg") as reader:
        assert reader.index.kind == "TIFF"
        assert reader.index.walk is None
        _all_equal_pydicom(reader, dual)
        assert reader.index.walk is not None
        assert np.array_equal(reader.frame(k + 1), _pydicom_frames(dual)[k + 1])
        kept = reader.keep_index()
    assert f"frame {k}: the TIFF tile table points at an item" in _quiet(caplog)
    with dicomframes.open(dual, index=kept) as again:
        assert again.index.kind == "walked"


def test_single_frame_reads_recheck_too(dual, caplog):
    offsets, counts = tile_table(dual)
    k = _lengths_differ(counts)
    offsets[k + 1] = offsets[k] + counts[k + 1] + counts[k + 1] % 2 + 8
    counts[k], counts[k + 1] = counts[k + 1], counts[k]
    overwrite_tiles(dual, offsets=offsets, counts=counts)
    expected = _pydicom_frames(dual)
    with dicomframes.open(dual, decoder="pylibjpeg") as reader:
        for i in (k + 1, k, FRAMES - 1, 0):
            assert np.array_equal(reader.frame(i), expected[i]), i
    assert "walking the item headers instead" in caplog.text


@pytest.mark.parametrize("damage", ["shifted", "out-of-order", "longer", "past-the-end"])
def test_a_table_that_does_not_list_the_fragments_is_not_used(dual, damage, caplog):
    offsets, counts = tile_table(dual)
    size = dual.stat().st_size
    if damage == "shifted":
        offsets = [o + 2 for o in offsets]
    elif damage == "out-of-order":
        offsets[3], offsets[4] = offsets[4], offsets[3]
    elif damage == "longer":
        counts = [c + 2 for c in counts]
    else:
        offsets[-1] = size - 4
    overwrite_tiles(dual, offsets=offsets, counts=counts)
    caplog.set_level(logging.WARNING, logger="dicomframes")
    with dicomframes.open(dual, decoder="pylibjpeg") as reader:
        assert reader.index.kind == "walked"
        _all_equal_pydicom(reader, dual)
    assert "its tile table is not used" in _quiet(caplog)


def _ifd_entry(data: bytes, tag: int) -> int:
    """Where the classic little-endian TIFF's first IFD holds `tag`'s entry."""
    ifd = struct.unpack_from("<I", data, 4)[0]
    for k in range(struct.unpack_from("<H", data, ifd)[0]):
        at = ifd + 2 + 12 * k
        if struct.unpack_from("<H", data, at)[0] == tag:
            return at
    raise KeyError(tag)


def _hostile(data: bytearray, kind: str) -> None:
    """Damage the TIFF structure by hand, as an attacker would."""
    ifd = struct.unpack_from("<I", data, 4)[0]
    entries = struct.unpack_from("<H", data, ifd)[0]
    if kind == "ifd-past-the-end":
        struct.pack_into("<I", data, 4, len(data) + 1000)
    elif kind == "ifd-loop":
        struct.pack_into("<I", data, ifd + 2 + 12 * entries, ifd)  # next IFD: itself
        struct.pack_into("<I", data, _ifd_entry(data, 322) + 8, 7)  # and no IFD matches
    elif kind == "huge-entry-count":
        struct.pack_into("<H", data, ifd, 0xFFFF)
    elif kind == "first-ifd-zero":
        struct.pack_into("<I", data, 4, 0)
    elif kind == "bigtiff-bad-offset-size":
        data[0:16] = b"II+\0" + struct.pack("<HHQ", 4, 0, ifd)
    elif kind == "array-past-the-end":
        struct.pack_into("<I", data, _ifd_entry(data, 324) + 8, len(data) - 8)
    elif kind == "tile-count-huge":
        at = _ifd_entry(data, 324)
        struct.pack_into("<I", data, at + 4, 2**31)
    elif kind == "non-integer-type":
        struct.pack_into("<H", data, _ifd_entry(data, 325) + 2, 2)  # ASCII
    else:
        raise AssertionError(kind)


HOSTILE = ["ifd-past-the-end", "ifd-loop", "huge-entry-count", "first-ifd-zero", "bigtiff-bad-offset-size",
           "array-past-the-end", "tile-count-huge", "non-integer-type"]


@pytest.mark.parametrize("kind", HOSTILE)
def test_hostile_tiff_structures_are_walked_past(dual, kind, caplog):
    data = bytearray(dual.read_bytes())
    _hostile(data, kind)
    dual.write_bytes(bytes(data))
    caplog.set_level(logging.WARNING, logger="dicomframes")
    with dicomframes.open(dual, decoder="pylibjpeg") as reader:
        assert reader.index.kind == "walked"
        _all_equal_pydicom(reader, dual)
    assert "its tile table is not used" in _quiet(caplog)


def test_an_offset_table_in_the_file_comes_first(tmp_path):
    """A Basic Offset Table that lists every frame is the standard's: used as before."""
    imagecodecs = pytest.importorskip("imagecodecs")
    from pydicom.uid import JPEGBaseline8Bit

    frames = [np.full((16, 16, 3), v, np.uint8) for v in (10, 90, 200)]
    path = write_encapsulated(tmp_path / "bot.dcm", frames, [imagecodecs.jpeg8_encode(f) for f in frames],
                              JPEGBaseline8Bit, bits_stored=8, photometric="YBR_FULL_422")
    dual = add_tiff(path, tmp_path / "dual.dcm")
    with dicomframes.open(dual) as reader:
        assert reader.index.kind == "BOT"


def test_an_index_file_keeps_the_tiff_table(dual):
    with dicomframes.open(dual) as reader:
        kept = reader.keep_index()
        expected = [reader.encoded_frame(i) for i in range(FRAMES)]
    with dicomframes.open(dual, index=kept) as again:
        assert again.index_origin == "file" and again.index.kind == "TIFF"
        assert [again.encoded_frame(i) for i in range(FRAMES)] == expected


def test_a_dual_personality_url_opens_in_four_requests_then_two(dual, nginx, remote_dir):
    """Remote: the header's block, the object's size, the IFD, the frame; the table
    is kept in the index cache (it cost reads), so a fresh reader needs the
    identity block and the frame."""
    name = "dual-personality.dcm"
    shutil.copy(dual, remote_dir / name)
    url = f"{nginx.url}/{name}"
    size = dual.stat().st_size
    with dicomframes.open(url) as first:
        assert first.index.kind == "TIFF" and first.index_origin == "built"
        first.frame(FRAMES - 1)
        beyond_the_header = first.stats["bytes"] - first.source.header_block
        assert first.stats["requests"] <= 4 and beyond_the_header < size / 4, first.stats
    mark = nginx.mark()
    with dicomframes.open(url) as again:
        assert again.index_origin == "cache" and again.index.kind == "TIFF"
        frame = again.frame(FRAMES - 1)
        assert again.stats["requests"] == 2
    assert len(nginx.since(mark, 2)) == 2
    with dicomframes.open(dual) as local:
        assert np.array_equal(frame, local.frame(FRAMES - 1))


def test_kerchunk_references_are_the_tiff_table(dual):
    pytest.importorskip("zarr")
    from dicomframes.views.kerchunk import frame_ranges

    offsets, counts = tile_table(dual)
    with dicomframes.open(dual) as reader:
        starts, lengths = frame_ranges(reader)
        assert reader.index.walk is None  # checked by the item headers, not by a walk
    assert starts.tolist() == offsets
    assert all(n - c in (0, 1) for n, c in zip(lengths.tolist(), counts))  # items pad to even


@pytest.mark.parametrize("transcode", ["add_offset_table", "decompress"])
def test_copies_are_dicom_only(dual, tmp_path, transcode, caplog):
    """The copy's fragments move (a table before them, or decoded pixels): a TIFF
    header in its preamble would point where they are not, so it is left out."""
    out = tmp_path / "copy.dcm"
    caplog.set_level(logging.WARNING, logger="dicomframes")
    getattr(dicomframes, transcode)(dual, out)
    assert out.read_bytes()[:128] == bytes(128)
    assert "TIFF header in the preamble is not copied" in _quiet(caplog)
    with dicomframes.open(out) as copy, dicomframes.open(dual) as source:
        assert copy.index.kind == ("EOT" if transcode == "add_offset_table" else "native")
        assert copy.header.tiff_signature == b""
        if transcode == "add_offset_table":
            assert all(copy.encoded_frame(i) == source.encoded_frame(i) for i in range(FRAMES))


def test_random_bytes_after_a_tiff_header_are_a_clear_refusal():
    """Whatever the bytes, reading the table ends in a table or a FrameIndexError,
    reading nothing outside the file and nothing sized by a count it holds."""
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import strategies as st

    from dicomframes.errors import FrameIndexError
    from dicomframes.frames.tiff_tiles import MAGICS, WINDOW, read_tile_table

    @hypothesis.settings(max_examples=300, deadline=None)
    @hypothesis.given(st.sampled_from(sorted(MAGICS)), st.binary(min_size=12, max_size=600), st.integers(1, 50))
    def check(magic, body, tiles):
        data = magic + body
        reads = []

        def read(offset, n):
            reads.append((offset, n))
            return data[offset : offset + n]

        try:
            read_tile_table(data[:16], read, len(data), tiles=tiles, tile_shape=(16, 16), samples=1)
        except FrameIndexError:
            pass
        assert all(0 <= o and o + n <= len(data) and n <= WINDOW + 16 * tiles for o, n in reads)

    check()


def test_a_table_of_many_tiles_costs_one_read(tmp_path):
    """20,000 tiles: 120 kB of offsets and counts after the IFD, read with it."""
    imagecodecs = pytest.importorskip("imagecodecs")
    from pydicom.uid import JPEGBaseline8Bit

    n = 20_000
    distinct = [np.full((16, 16, 3), v, np.uint8) for v in range(0, 250, 10)]  # TIFF tiles: 16s
    codestreams = [imagecodecs.jpeg8_encode(f) for f in distinct]
    path = write_encapsulated(tmp_path / "many.dcm", [distinct[i % 25] for i in range(n)],
                              [codestreams[i % 25] for i in range(n)], JPEGBaseline8Bit, bits_stored=8,
                              photometric="YBR_FULL_422", bot=False)
    dual = add_tiff(path, tmp_path / "dual.dcm")
    with dicomframes.open(dual) as reader:
        assert reader.index.kind == "TIFF"
        assert reader.stats["requests"] == 2  # the header's read; the IFD and its arrays
        assert np.array_equal(reader.frame(n - 1), reader.frame((n - 1) % 25))
