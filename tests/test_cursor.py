"""The io layer's cursor and read cache: `Cursor`, `BlockCache`, `read_through`.

Requests are counted by the source itself (``source.stats``); the sources are
real ones over bytes in memory and a local file.
"""

from __future__ import annotations

import pickle
import random

import pytest

from dicomframes.errors import TruncatedFileError
from dicomframes.io.cursor import BlockCache, Cursor, read_through
from dicomframes.io.local import BytesSource, LocalFileSource

DATA = random.Random(7).randbytes(50_000)
N = len(DATA)


@pytest.fixture
def src() -> BytesSource:
    return BytesSource(DATA, name="cursor.bin")


# -- Cursor ---------------------------------------------------------------------------------------------


class _CallsSource(BytesSource):
    """A BytesSource that records each call's ranges (one call: concurrent where the source can)."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data, name="calls.bin")
        self.calls: list[list[tuple[int, int]]] = []

    def read_ranges(self, ranges):
        self.calls.append(list(ranges))
        return [super(_CallsSource, self).read(o, n) for o, n in ranges]

    def read(self, offset, size):
        self.calls.append([(offset, size)])
        return super().read(offset, size)


def test_readahead_reads_the_next_blocks_in_one_call_and_each_byte_once():
    source = _CallsSource(DATA)
    cache = BlockCache(64 * 1024)
    cur = Cursor(source, 0, 4096, cache, readahead=4)
    out = b""
    while not cur.at_end():
        chunk = cur.read(min(100, N - cur.pos))
        out += chunk
        cur.skip(0)
    assert out == DATA
    assert source.calls[0] == [(0, 4096), (4096, 4096), (8192, 4096), (12288, 4096)]
    assert all(len(c) <= 4 for c in source.calls)
    # Each byte read once: the ranges (cut at the end of the data) tile it.
    read = sorted((o, min(n, N - o)) for c in source.calls for o, n in c if o < N)
    assert sum(n for _, n in read) == N and all(a + n == b for (a, n), (b, _) in zip(read, read[1:]))
    assert len(source.calls) <= -(-N // (4 * 4096)) + 2


def test_without_a_cache_or_with_readahead_1_a_cursor_reads_one_block(src):
    for cur in (Cursor(src, 0, 4096, None, readahead=4), Cursor(src, 0, 4096, BlockCache(1 << 20))):
        before = src.stats.requests
        cur.read(10)
        assert src.stats.requests - before == 1


def test_peek_does_not_move_and_read_does(src):
    cur = Cursor(src, 100, block=1000)
    assert cur.peek(8) == DATA[100:108] and cur.pos == 100
    assert cur.read(8) == DATA[100:108] and cur.pos == 108
    assert cur.read(100) == DATA[108:208] and cur.pos == 208
    assert src.stats.requests == 1 and src.stats.bytes == 1000  # one block served them all


def test_reads_across_a_block_boundary_keep_the_rest_and_read_one_block_more(src):
    cur = Cursor(src, 0, block=1000)
    cur.read(990)
    assert cur.read(20) == DATA[990:1010]
    assert src.stats.requests == 2
    assert src.stats.bytes == 1000 + 990  # the 10 bytes still ahead were kept, not read again
    assert cur.read(970) == DATA[1010:1980]
    assert src.stats.requests == 2


def test_a_read_larger_than_the_block_is_one_request(src):
    cur = Cursor(src, 5, block=100)
    assert cur.read(5000) == DATA[5:5005]
    assert src.stats.requests == 1 and src.stats.bytes == 5000


def test_skip_inside_the_buffer_costs_nothing(src):
    cur = Cursor(src, 0, block=4096)
    cur.read(8)
    cur.skip(3000)
    assert cur.pos == 3008
    assert cur.read(8) == DATA[3008:3016]
    assert src.stats.requests == 1


def test_skipped_bytes_are_never_read(src):
    cur = Cursor(src, 0, block=1000)
    for start in range(0, N - 8, 10_000):
        assert cur.pos == start
        assert cur.read(8) == DATA[start : start + 8]
        cur.skip(10_000 - 8)
    assert src.stats.requests == 5
    assert src.stats.bytes == 5 * 1000  # one block per element header, none of the 9992-byte skips


def test_skip_backwards_rereads(src):
    cur = Cursor(src, 5000, block=1000)
    cur.read(10)
    cur.skip(-3000)
    assert cur.read(10) == DATA[2010:2020]


def test_read_past_the_end_is_truncated_file_error_with_offset(src):
    cur = Cursor(src, N - 4, block=1000)
    assert cur.peek(8) == DATA[-4:]  # peek is short at the end
    with pytest.raises(TruncatedFileError) as info:
        cur.read(8, "an element header")
    err = info.value
    assert err.offset == N - 4 and err.path == "cursor.bin"
    assert "an element header" in err.message and "needed 8 bytes, 4 left" in err.message
    assert cur.pos == N - 4  # the position did not move
    assert cur.read(4) == DATA[-4:]


def test_truncated_after_a_skip_past_the_end(src):
    cur = Cursor(src, 0, block=64)
    cur.skip(N + 10)
    with pytest.raises(TruncatedFileError) as info:
        cur.read(1)
    assert info.value.offset == N + 10


def test_at_end(src):
    assert Cursor(src, N).at_end()
    assert Cursor(src, N + 5).at_end()
    assert not Cursor(src, N - 1).at_end()
    cur = Cursor(src, N - 2, block=16)
    cur.read(2)
    assert cur.at_end()


def test_buffered_from(src):
    cur = Cursor(src, 1000, block=500)
    cur.read(10)
    assert cur.buffered_from(1200) == DATA[1200:1500]
    assert cur.buffered_from(999) == b""  # before the buffer
    assert cur.buffered_from(1500) == b""  # after it


def test_cursor_over_a_local_file(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(DATA)
    source = LocalFileSource(path)
    cur = Cursor(source, 0, block=4096)
    out = []
    while not cur.at_end():
        out.append(cur.read(min(777, N - cur.pos)))
    assert b"".join(out) == DATA
    assert source.stats.requests == -(-N // 4096)  # one request per block
    source.close()


def test_cursor_with_a_cache_adds_the_blocks_it_reads(src):
    cache = BlockCache(100_000)
    cur = Cursor(src, 0, block=1000, cache=cache)
    cur.read(10)
    cur.skip(5000)
    cur.read(10)
    assert len(cache) == 2 and cache.nbytes == 2000
    held, missing = cache.pieces(0, 1000)
    assert held == [(0, DATA[:1000])] and missing == []
    # A second cursor over the same cache reads those bytes without a request.
    requests = src.stats.requests
    again = Cursor(src, 0, block=1000, cache=cache)
    assert again.read(900) == DATA[:900]
    assert src.stats.requests == requests


def test_a_short_skip_past_the_buffer_reads_on_from_its_end(src):
    """With a cache, a skip of less than half a block past the buffer reads on from
    the buffer's end, so the cached blocks stay contiguous."""
    cache = BlockCache(100_000)
    cur = Cursor(src, 0, block=1000, cache=cache)
    cur.read(1000)
    cur.skip(200)  # to 1200: 200 bytes past the buffer
    assert cur.read(8) == DATA[1200:1208]
    held, missing = cache.pieces(0, 2000)
    assert missing == [] and b"".join(d for _, d in held) == DATA[:2000]


def test_a_long_skip_past_the_buffer_leaves_a_gap(src):
    cache = BlockCache(100_000)
    cur = Cursor(src, 0, block=1000, cache=cache)
    cur.read(1000)
    cur.skip(600)  # more than half a block
    cur.read(8)
    _, missing = cache.pieces(0, 2600)
    assert missing == [(1000, 600)]


def test_without_a_cache_the_sources_cache_is_read_but_not_added_to(src):
    src.block_cache = BlockCache(100_000)
    src.block_cache.add(0, DATA[:3000])
    cur = Cursor(src, 0, block=1000)
    assert cur.read(2500) == DATA[:2500]
    assert src.stats.requests == 0
    assert cur.read(1000) == DATA[2500:3500]  # the rest from the source
    assert src.stats.requests == 1
    assert len(src.block_cache) == 1  # nothing added


# -- BlockCache -------------------------------------------------------------------------------------------


def test_add_keeps_blocks_and_counts_bytes():
    cache = BlockCache(1000)
    cache.add(0, b"a" * 100)
    cache.add(500, bytearray(b"b" * 50))
    assert len(cache) == 2 and cache.nbytes == 150
    assert cache.run(500, 50) == b"b" * 50 and type(cache.run(500, 50)) is bytes


def test_blocks_evicted_by_capacity_oldest_first():
    cache = BlockCache(100)
    cache.add(0, b"a" * 40)
    cache.add(100, b"b" * 40)
    cache.add(200, b"c" * 40)
    assert len(cache) == 2 and cache.nbytes == 80
    assert cache.run(0, 40) == b""  # the oldest went
    assert cache.run(100, 40) == b"b" * 40 and cache.run(200, 40) == b"c" * 40


def test_eviction_is_least_recently_used():
    cache = BlockCache(100)
    cache.add(0, b"a" * 40)
    cache.add(100, b"b" * 40)
    assert cache.run(0, 1) == b"a"  # use the older block
    cache.add(200, b"c" * 40)
    assert cache.run(0, 40) == b"a" * 40
    assert cache.run(100, 40) == b""
    cache.pieces(200, 10)  # pieces counts as use too
    cache.add(300, b"d" * 40)
    assert cache.run(0, 1) == b"" and cache.run(200, 1) == b"c"


def test_a_block_larger_than_the_capacity_or_empty_is_not_kept():
    cache = BlockCache(100)
    cache.add(0, b"x" * 101)
    cache.add(500, b"")
    assert len(cache) == 0 and cache.nbytes == 0
    cache.add(0, b"x" * 100)  # exactly the capacity fits
    assert len(cache) == 1
    assert BlockCache(-5).capacity == 0


def test_reserve_grows_the_capacity_and_never_shrinks_it():
    cache = BlockCache(0)
    cache.add(0, b"x")
    assert len(cache) == 0  # no room yet
    cache.reserve(100)
    cache.add(0, b"x" * 100)
    assert cache.capacity == 100 and len(cache) == 1
    cache.reserve(10)  # another reader needs less: the capacity stays
    assert cache.capacity == 100 and cache.nbytes == 100


def test_every_source_owns_an_empty_cache():
    source = BytesSource(DATA)
    assert isinstance(source.block_cache, BlockCache) and len(source.block_cache) == 0
    assert BytesSource(DATA).block_cache is not source.block_cache


def test_adding_at_the_same_offset_keeps_the_longer_block():
    cache = BlockCache(1000)
    cache.add(10, b"y" * 300)
    cache.add(10, b"y" * 100)
    assert len(cache) == 1 and cache.nbytes == 300
    cache.add(10, b"z" * 400)
    assert cache.nbytes == 400 and cache.run(10, 400) == b"z" * 400


def test_pieces_tile_the_range_in_order():
    cache = BlockCache(10_000)
    cache.add(100, DATA[100:200])
    cache.add(300, DATA[300:350])
    held, missing = cache.pieces(50, 350)  # [50, 400)
    assert held == [(100, DATA[100:200]), (300, DATA[300:350])]
    assert missing == [(50, 50), (200, 100), (350, 50)]
    spans = sorted([(o, len(d)) for o, d in held] + missing)
    pos = 50
    for o, n in spans:  # contiguous, no overlap
        assert o == pos
        pos += n
    assert pos == 400
    assert cache.hits == 150


def test_pieces_prefer_the_block_that_reaches_furthest():
    cache = BlockCache(10_000)
    cache.add(0, DATA[0:100])
    cache.add(50, DATA[50:400])
    held, missing = cache.pieces(60, 300)
    assert held == [(60, DATA[60:360])] and missing == []


def test_pieces_of_an_empty_cache_or_an_empty_range():
    cache = BlockCache(100)
    assert cache.pieces(5, 10) == ([], [(5, 10)])
    assert cache.pieces(5, 0) == ([], [])
    cache.add(0, b"q" * 10)
    assert cache.pieces(5, 0) == ([], [])


def test_run_joins_adjacent_blocks_and_stops_at_a_gap():
    cache = BlockCache(10_000)
    cache.add(0, DATA[:100])
    cache.add(100, DATA[100:250])
    cache.add(300, DATA[300:400])
    assert cache.run(50, 1000) == DATA[50:250]
    assert cache.run(50, 100) == DATA[50:150]  # at most `limit`
    assert cache.run(260, 10) == b""
    assert cache.run(320, 0) == b""


def test_consumed_drops_the_blocks_that_end_inside_the_range():
    cache = BlockCache(10_000)
    cache.add(0, b"a" * 100)  # ends at 100
    cache.add(100, b"b" * 100)  # ends at 200
    cache.add(200, b"c" * 100)  # ends at 300
    cache.consumed(50, 200)
    assert cache.run(0, 1) == b"" and cache.run(100, 1) == b""
    assert cache.run(200, 100) == b"c" * 100  # ends after the range: kept
    assert cache.nbytes == 100
    cache.consumed(0, 200)  # a block ending at the range's start is not touched
    assert len(cache) == 1


def test_clear_and_pickle_keep_no_bytes():
    cache = BlockCache(1000)
    cache.add(0, b"x" * 10)
    again = pickle.loads(pickle.dumps(cache))
    assert again.capacity == 1000 and len(again) == 0 and again.nbytes == 0
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0


# -- read_through -------------------------------------------------------------------------------------------


def test_read_through_without_a_cache_reads_every_range(src):
    ranges = [(10, 20), (40_000, 100), (5, 5)]
    for cache in (None, BlockCache(1000)):  # none, or an empty one
        before = src.stats.requests
        assert read_through(src, cache, ranges) == [DATA[o : o + n] for o, n in ranges]
        assert src.stats.requests == before + 3


def test_read_through_serves_from_the_cache_without_requests(src):
    cache = BlockCache(100_000)
    cache.add(1000, DATA[1000:5000])
    assert read_through(src, cache, [(1200, 100), (2000, 50)]) == [DATA[1200:1300], DATA[2000:2050]]
    assert src.stats.requests == 0 and src.stats.bytes == 0
    assert cache.hits == 150


def test_read_through_fetches_only_the_gaps(src):
    cache = BlockCache(100_000)
    cache.add(1000, DATA[1000:2000])
    cache.add(3000, DATA[3000:4000])
    ranges = [(500, 4000), (10_000, 10)]  # [500, 4500): gaps before, between and after; and one outside
    assert read_through(src, cache, ranges) == [DATA[500:4500], DATA[10_000:10_010]]
    assert src.stats.requests == 4  # [500,1000) [2000,3000) [4000,4500) and the other range
    assert src.stats.bytes == 500 + 1000 + 500 + 10


def test_read_through_drops_the_blocks_read_through(src):
    cache = BlockCache(100_000)
    cache.add(1000, DATA[1000:2000])
    cache.add(5000, DATA[5000:6000])
    read_through(src, cache, [(900, 1200)])  # runs through the first block's end
    assert cache.run(1000, 1) == b""
    assert cache.run(5000, 1000) == DATA[5000:6000]


def test_read_through_is_short_only_where_the_source_ends(src):
    cache = BlockCache(100_000)
    cache.add(N - 1000, DATA[-1000:])
    out = read_through(src, cache, [(N - 2000, 5000), (N + 10, 5), (N - 500, 100)])
    assert out == [DATA[-2000:], b"", DATA[N - 500 : N - 400]]


def test_read_through_ranges_in_any_order_and_repeated(src):
    cache = BlockCache(100_000)
    cache.add(20_000, DATA[20_000:30_000])
    rng = random.Random(3)
    ranges = [(rng.randrange(N), rng.randrange(1, 4000)) for _ in range(40)]
    ranges += ranges[:5]
    # no range reads through the block's end: it stays and every range is checked against it
    ranges = [(o, n) for o, n in ranges if not (o < 30_000 <= o + n)]
    assert read_through(src, cache, ranges) == [DATA[o : o + n] for o, n in ranges]
