"""The frame index, one class per kind, on bytes in memory.

`build_index` picks `NativeFrameIndex`, `ExtendedOffsetTableIndex`,
`BasicOffsetTableIndex` or `WalkedIndex` for a file; the three encapsulated
kinds agree on where the same frames lie; a Basic Offset Table that wraps
around past 4 GiB is unwrapped (a sparse, synthetic source); the walk falls
back to one fragment per frame; indexes pickle without their source; and the
source's block cache only grows when readers reserve room in it.
"""

from __future__ import annotations

import pickle
import struct

import numpy as np
import pytest

from dicomframes.errors import FrameIndexError, InvalidFileError
from dicomframes.frames.fetch import fetch
from dicomframes.frames.header import parse_header
from dicomframes.frames.index import (
    BasicOffsetTableIndex,
    ExtendedOffsetTableIndex,
    FrameIndex,
    NativeFrameIndex,
    WalkedIndex,
    build_index,
    cache_capacity,
    unwrap_offsets,
)
from dicomframes.frames.span import FrameSpan, unwrap
from dicomframes.io.cursor import BlockCache
from dicomframes.io.local import BytesSource
from dicomframes.io.source import Source
from dicomframes.samples import write_sample
from tests.helpers import dicomgen as g

FRAMES = 6
KINDS = {"bot": BasicOffsetTableIndex, "eot": ExtendedOffsetTableIndex, "none": WalkedIndex}


def _file(tmp_path, name: str, **kw) -> bytes:
    path = write_sample(tmp_path / name, **{"frames": FRAMES, "rows": 24, "columns": 20, **kw})
    with open(path, "rb") as f:
        return f.read()


def _index(data: bytes, **kw) -> tuple[FrameIndex, BytesSource]:
    """The index `build_index` makes for `data`, over a fresh BytesSource."""
    source = BytesSource(data)
    header, data_source = parse_header(source, source.header_block)
    return build_index(header, data_source, block=source.walk_block, **kw), source


def _codestreams(index: FrameIndex, source: Source) -> list[bytes]:
    out = []
    for i in range(len(index)):
        span = index.span(i)
        out.append(bytes(unwrap(span, source.read(span.offset, span.length), "<bytes>")))
    return out


def _encapsulated(syntax: str, fragments: list[list[bytes]], *, bot: bool = False, frames: int | None = None) -> bytes:
    """A hand-made encapsulated file: `fragments` per frame, behind a filled or empty BOT."""
    n = len(fragments) if frames is None else frames
    items, _ = g.encapsulate(fragments, bot=bot)
    parts = [g.file_meta(syntax)]
    parts += [g.element(tag, vr, value) for tag, vr, value in g.image_elements(frames=n, rows=4, columns=4)]
    parts.append(g.element_header(0x7FE00010, "OB", g.UNDEFINED))
    parts.append(items)
    parts.append(struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))
    return b"".join(parts)


# -- the factory -----------------------------------------------------------------------------------


@pytest.mark.parametrize("table", sorted(KINDS))
def test_factory_picks_the_class_of_the_offset_table(tmp_path, table):
    index, _ = _index(_file(tmp_path, f"{table}.dcm", syntax="rle", offset_table=table))
    assert type(index) is KINDS[table]
    assert index.kind == {"bot": "BOT", "eot": "EOT", "none": "walked"}[table]
    assert type(index).kind == index.kind  # a class attribute, not set per instance
    assert len(index) == FRAMES


def test_factory_picks_native(tmp_path):
    data = _file(tmp_path, "native.dcm", syntax="native")
    source = BytesSource(data)
    header, _ = parse_header(source)
    index = build_index(header, source, frame_bits=24 * 20 * 8)
    assert type(index) is NativeFrameIndex and index.kind == "native"
    span = index.span(2)
    assert span.offset == header.pixel_offset + 2 * 24 * 20 and span.length == 24 * 20
    # Native data needs the frame size; encapsulated data does not.
    with pytest.raises(ValueError, match="frame_bits"):
        build_index(parse_header(BytesSource(data))[0], BytesSource(data))


def test_factory_walks_when_the_bot_is_empty_or_disagrees():
    fragments = [[b"\xff\xd8" + bytes([k]) * 6] for k in range(3)]
    filled = _encapsulated(g.JPEG_LS, fragments, bot=True)
    assert type(_index(filled)[0]) is BasicOffsetTableIndex
    assert type(_index(_encapsulated(g.JPEG_LS, fragments))[0]) is WalkedIndex
    # Three offsets, but Number of Frames says 4 (and then 2): the table is not used.
    for frames in (4, 2):
        disagrees = _encapsulated(g.JPEG_LS, fragments, bot=True, frames=frames)
        index, _ = _index(disagrees)
        assert type(index) is WalkedIndex and len(index) == frames
    # Constructed directly, a BOT index refuses a table of the wrong size.
    source = BytesSource(_encapsulated(g.JPEG_LS, fragments, bot=True, frames=4))
    header, _ = parse_header(source)
    with pytest.raises(FrameIndexError, match="3 offsets for 4 frames"):
        BasicOffsetTableIndex(header, source, 4)


def test_factory_checks_number_of_frames_and_pixel_data_length(tmp_path):
    data = _file(tmp_path, "bot.dcm", syntax="rle", offset_table="bot")
    header, _ = parse_header(BytesSource(data))
    for bad in (0, -3):
        with pytest.raises(InvalidFileError, match="Number of Frames"):
            build_index(header, BytesSource(data), bad)
    header.pixel_length = 100  # an encapsulated syntax with a defined length
    with pytest.raises(InvalidFileError, match="needs encapsulated Pixel Data"):
        build_index(header, BytesSource(data))


def test_an_eot_index_needs_the_table(tmp_path):
    source = BytesSource(_file(tmp_path, "bot.dcm", syntax="rle", offset_table="bot"))
    header, _ = parse_header(source)
    with pytest.raises(FrameIndexError, match="no Extended Offset Table"):
        ExtendedOffsetTableIndex(header, source, FRAMES)


# -- the kinds agree -------------------------------------------------------------------------------


def test_the_three_kinds_agree_on_the_same_frames(tmp_path):
    built = {t: _index(_file(tmp_path, f"{t}.dcm", syntax="rle", offset_table=t)) for t in KINDS}
    streams = {t: _codestreams(index, source) for t, (index, source) in built.items()}
    assert streams["bot"] == streams["eot"] == streams["none"]
    assert len(set(streams["bot"])) == FRAMES  # the frames differ from each other
    # Offsets from the first item after the BOT are the same in the three files.
    rel = {t: [index.span(i).offset - index.first_item for i in range(FRAMES)]
           for t, (index, _) in built.items()}
    assert rel["bot"] == rel["eot"] == rel["none"]
    bot, walked = built["bot"][0], built["none"][0]
    assert [bot.span(i).length for i in range(FRAMES)] == [walked.span(i).length for i in range(FRAMES)]
    eot = built["eot"][0]
    assert all(eot.span(i).payload == len(streams["eot"][i]) for i in range(FRAMES))


def test_bot_and_walk_agree_on_frames_of_several_fragments(tmp_path):
    kw = dict(syntax="jpegls", fragments_per_frame=2)
    bot, bsrc = _index(_file(tmp_path, "bot.dcm", offset_table="bot", **kw))
    walked, wsrc = _index(_file(tmp_path, "walk.dcm", offset_table="none", **kw))
    assert type(bot) is BasicOffsetTableIndex and type(walked) is WalkedIndex
    assert _codestreams(bot, bsrc) == _codestreams(walked, wsrc)
    for i in range(FRAMES):
        b, w = bot.span(i), walked.span(i)
        assert (b.offset - bot.first_item, b.length) == (w.offset - walked.first_item, w.length)
    assert walked.walk_all() == 2 * FRAMES and bot.walk_all() == -1


# -- Basic Offset Table: 32-bit offsets past 4 GiB ----------------------------------------------------


class _Sparse(Source):
    """A large file of zeros with a few regions of bytes (never materialised)."""

    def __init__(self, regions: dict[int, bytes], size: int) -> None:
        super().__init__()
        self.regions = regions
        self.size = size
        self.name = "<sparse>"

    def _read(self, offset: int, size: int) -> bytes:
        out = bytearray(size)
        for start, data in self.regions.items():
            lo, hi = max(offset, start), min(offset + size, start + len(data))
            if lo < hi:
                out[lo - offset : hi - offset] = data[lo - start : hi - start]
        return bytes(out)


def test_unwrap_offsets_adds_4_gib_at_every_step_down():
    true = np.array([0, 100, 3_000_000_000, 5_000_000_000, 9_000_000_000, 9_000_000_010], np.int64)
    raw = (true % (1 << 32)).astype("<u4")
    assert (np.diff(raw.astype(np.int64)) < 0).sum() == 2  # two wraps
    assert unwrap_offsets(raw).tolist() == true.tolist()


def test_bot_wraps_around_past_4_gib():
    true = [0, 100, 3_000_000_000, 5_000_000_000, 9_000_000_000]
    n = len(true)
    table = struct.pack(f"<{n}I", *[t % (1 << 32) for t in true])
    prefix = b"".join([
        g.file_meta(g.J2K),
        *[g.element(tag, vr, value) for tag, vr, value in g.image_elements(frames=n, rows=4, columns=4)],
        g.element_header(0x7FE00010, "OB", g.UNDEFINED),
        g.item(table),
    ])
    first_item = len(prefix)
    last = g.item(b"abcd") + g.item(b"ef") + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    at = first_item + true[-1]
    source = _Sparse({0: prefix, at: last}, at + len(last))
    header, _ = parse_header(source)
    index = build_index(header, source)
    assert type(index) is BasicOffsetTableIndex and index.first_item == first_item
    spans = [index.span(i) for i in range(n)]
    assert [s.offset - first_item for s in spans] == true
    assert [s.length for s in spans[:-1]] == [b - a for a, b in zip(true, true[1:])]
    assert spans[-1].length == len(last) - 8  # its two items, found by walking them
    assert unwrap(spans[-1], source.read(spans[-1].offset, spans[-1].length), "x") == b"abcdef"


# -- the walk ------------------------------------------------------------------------------------------


def test_walk_reconciles_one_fragment_per_frame():
    # JPEG-LS frames start with FF D8; these fragments do not, but there are
    # as many as frames: each is a frame (decided at the end of the walk).
    fragments = [[b"abcd"], [b"efgh12"], [b"ij"]]
    index, source = _index(_encapsulated(g.JPEG_LS, fragments))
    assert type(index) is WalkedIndex and index.start_markers
    assert _codestreams(index, source) == [b"abcd", b"efgh12", b"ij"]
    assert index.walk_all() == 3


def test_walk_without_markers_or_matching_counts_is_an_error():
    # Four fragments without start markers for three frames: frame 0 is all of them.
    fragments = [[b"abcd", b"efgh", b"ijkl", b"mnop"]]
    index, source = _index(_encapsulated(g.JPEG_LS, fragments, frames=3))
    first = index.span(0)
    assert unwrap(first, source.read(first.offset, first.length), "x") == b"abcdefghijklmnop"
    with pytest.raises(FrameIndexError, match="holds only 1 frames") as info:
        index.span(2)
    assert info.value.frame == 2


def test_walk_is_lazy_and_stops_at_the_frames_asked_for(tmp_path):
    index, _ = _index(_file(tmp_path, "walk.dcm", frames=40, syntax="jpegls", offset_table="none", fragments_per_frame=2))
    assert isinstance(index, WalkedIndex)
    index.span(3)
    assert not index._walk_done and index._frag_offsets.n < 2 * 40
    index.locate_all()
    assert index._walk_done and index._frag_offsets.n == 2 * 40


# -- pickling ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("table", sorted(KINDS))
def test_indexes_pickle_without_their_source_and_bind(tmp_path, table):
    data = _file(tmp_path, f"{table}.dcm", syntax="jpegls", offset_table=table)
    index, source = _index(data)
    expected = [index.span(i) for i in range(FRAMES)]
    if isinstance(index, WalkedIndex):  # part-walked: the copy walks on from there
        index = _index(data)[0]
        index.span(1)
    blob = pickle.dumps(index)
    assert data[-64:] not in blob  # no file bytes in it (the cache pickles empty)
    again = pickle.loads(blob)
    assert again.source is None and type(again) is type(index) and again.kind == index.kind
    fresh = BytesSource(data)
    again.bind(fresh)
    assert again.source is fresh and again.cache is fresh.block_cache
    assert fresh.block_cache.capacity >= index.cache.capacity
    assert [again.span(i) for i in range(FRAMES)] == expected
    assert _codestreams(again, fresh) == _codestreams(index, source)


# -- the source's block cache ------------------------------------------------------------------------


def test_reserve_grows_the_capacity_and_never_shrinks_it():
    cache = BlockCache(0)
    cache.add(0, b"x" * 10)
    assert len(cache) == 0  # no room yet: nothing kept
    cache.reserve(100)
    assert cache.capacity == 100
    cache.reserve(20)
    assert cache.capacity == 100
    cache.add(0, b"x" * 60)
    cache.add(60, b"y" * 40)
    assert cache.nbytes == 100 and cache.run(0, 100) == b"x" * 60 + b"y" * 40
    again = pickle.loads(pickle.dumps(cache))
    assert again.capacity == 100 and len(again) == 0  # pickles empty


def test_every_source_owns_one_cache_that_indexes_reserve(tmp_path):
    data = _file(tmp_path, "walk.dcm", syntax="rle", offset_table="none")
    source = BytesSource(data)
    assert isinstance(source.block_cache, BlockCache) and source.block_cache.capacity == 0
    header, _ = parse_header(source)
    head = len(header.pixel_head)
    assert head  # the header's read ran past the Pixel Data element
    index = build_index(header, source)
    assert index.cache is source.block_cache
    assert source.block_cache.capacity == max(cache_capacity(source, index.block), head)
    assert header.pixel_head == b"" and source.block_cache.nbytes == head  # taken over
    # A second index over the same source asks for less: the capacity stays.
    source.block_cache.reserve(10 * source.block_cache.capacity)
    grown = source.block_cache.capacity
    build_index(parse_header(source)[0], source)
    assert source.block_cache.capacity == grown
    # A source pickles with an empty cache of its own.
    copy = pickle.loads(pickle.dumps(source))
    assert copy.block_cache is not source.block_cache and len(copy.block_cache) == 0


def test_fetch_takes_the_bytes_the_walk_read_from_the_sources_cache(tmp_path):
    data = _file(tmp_path, "walk.dcm", syntax="rle", offset_table="none")
    index, source = _index(data)
    index.locate_all()
    spans: list[FrameSpan] = [index.span(i) for i in range(FRAMES)]
    before = source.stats.requests
    got = fetch(source, spans, source.fetch_policy())  # the cache is found on the source
    assert source.stats.requests == before  # all of it came from the walk's blocks
    assert [bytes(got[s]) for s in spans] == [data[s.offset : s.offset + s.length] for s in spans]


# -- offset tables as some writers write them (wsidicom; tests/test_wsidicomizer.py has its files) ----


def _without_table_item(data: bytes) -> bytes:
    """`data` (an empty Basic Offset Table) with the table item left out."""
    empty_table = struct.pack("<HHI", 0xFFFE, 0xE000, 0)
    at = data.index(struct.pack("<HH", 0x7FE0, 0x0010) + b"OB\0\0" + struct.pack("<I", 0xFFFFFFFF)) + 12
    assert data[at : at + 8] == empty_table
    return data[:at] + data[at + 8 :]


def _with_eot_lengths(data: bytes, change) -> bytes:
    """`data` (with an Extended Offset Table) with its lengths replaced by change(lengths)."""
    at = data.index(struct.pack("<HH", 0x7FE0, 0x0002) + b"OV")
    (size,) = struct.unpack_from("<I", data, at + 8)
    lengths = np.frombuffer(data, "<u8", size // 8, at + 12)
    return data[: at + 12] + np.asarray(change(lengths.copy()), "<u8").tobytes() + data[at + 12 + size :]


def _warned(caplog) -> str:
    return " ".join(r.getMessage() for r in caplog.records if r.name == "dicomframes")


def test_a_missing_table_item_is_read_as_fragments_when_the_first_starts_a_codestream(tmp_path, caplog):
    data = _file(tmp_path, "j2k.dcm", syntax="j2k", offset_table="none", rows=32, columns=32)
    expected = _codestreams(*_index(data))
    index, source = _index(_without_table_item(data))
    assert type(index) is WalkedIndex
    assert _codestreams(index, source) == expected
    assert "left it out" in _warned(caplog)


def test_a_missing_table_item_is_refused_where_nothing_marks_a_codestream(tmp_path):
    # RLE frames start with a segment count, not a marker: no way to tell a table from a frame.
    data = _without_table_item(_file(tmp_path, "rle.dcm", syntax="rle", offset_table="none"))
    with pytest.raises(FrameIndexError, match="Basic Offset Table"):
        _index(data)


def test_eot_lengths_that_count_item_headers_are_read_as_the_items(tmp_path, caplog):
    data = _file(tmp_path, "eot.dcm", syntax="rle", offset_table="eot")
    expected = _codestreams(*_index(data))
    for last in (0, 8):  # wsidicom leaves the last length as it is; a writer may add 8 there too
        def counted(lengths, last=last):
            lengths[:-1] += 8
            lengths[-1] += last
            return lengths

        caplog.clear()
        index, source = _index(_with_eot_lengths(data, counted))
        assert type(index) is ExtendedOffsetTableIndex
        assert _codestreams(index, source) == expected
        assert "count each item's 8-byte header" in _warned(caplog)


def test_eot_lengths_that_fit_no_known_writer_stay_an_error(tmp_path, caplog):
    data = _file(tmp_path, "eot.dcm", syntax="rle", offset_table="eot")
    index, source = _index(_with_eot_lengths(data, lambda lengths: lengths + 16))
    assert "8-byte header" not in _warned(caplog)
    span = index.span(0)
    with pytest.raises(FrameIndexError, match="does not point at an item of the frame's length"):
        unwrap(span, source.read(span.offset, span.length), "<bytes>")
