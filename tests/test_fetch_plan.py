"""The frames layer's fetch planning: `plan` (merging spans into requests) and
`fetch` (reading them, naming the frame when storage fails or the file is short).

Failing sources are real: a local file removed and closed, an nginx URL that
answers 404, files cut short on disk and on the server.
"""

from __future__ import annotations

import os
import random

import pytest

from dicomframes.errors import StorageError, TruncatedFileError
from dicomframes.frames.fetch import fetch, plan
from dicomframes.frames.span import FrameSpan
from dicomframes.io.cursor import BlockCache
from dicomframes.io.local import BytesSource, LocalFileSource
from dicomframes.io.policy import FetchPolicy
from dicomframes.io.remote import FsspecSource

DATA = random.Random(11).randbytes(100_000)


def spans_at(*ranges: tuple[int, int], first: int = 0) -> list[FrameSpan]:
    return [FrameSpan(first + k, o, n) for k, (o, n) in enumerate(ranges)]


def shape(requests) -> list[tuple[int, int, list[int]]]:
    """(offset, size, frames) of each planned request."""
    return [(o, n, [s.frame for s in members]) for o, n, members in requests]


# -- plan ---------------------------------------------------------------------------------------------------


def test_plan_of_nothing_is_nothing():
    assert plan([], FetchPolicy()) == []


def test_adjacent_spans_merge_with_no_gap_allowed():
    spans = spans_at((0, 100), (100, 50), (150, 10))
    assert shape(plan(spans, FetchPolicy(max_gap=0))) == [(0, 160, [0, 1, 2])]


def test_a_gap_of_one_byte_splits_with_no_gap_allowed():
    spans = spans_at((0, 100), (101, 50))
    assert shape(plan(spans, FetchPolicy(max_gap=0))) == [(0, 100, [0]), (101, 50, [1])]


@pytest.mark.parametrize("gap, merged", [(99, True), (100, True), (101, False)])
def test_merging_by_max_gap(gap, merged):
    spans = spans_at((0, 100), (100 + gap, 100))
    got = shape(plan(spans, FetchPolicy(max_gap=100)))
    if merged:
        assert got == [(0, 200 + gap, [0, 1])]  # the gap's bytes are read too
    else:
        assert got == [(0, 100, [0]), (100 + gap, 100, [1])]


@pytest.mark.parametrize("max_request, expected", [
    (300, [(0, 300, [0, 1, 2]), (300, 100, [3])]),  # exactly max_request still merges
    (299, [(0, 200, [0, 1]), (200, 200, [2, 3])]),
    (100, [(0, 100, [0]), (100, 100, [1]), (200, 100, [2]), (300, 100, [3])]),
])
def test_merging_by_max_request(max_request, expected):
    spans = spans_at((0, 100), (100, 100), (200, 100), (300, 100))
    assert shape(plan(spans, FetchPolicy(max_gap=0, max_request=max_request))) == expected


def test_a_span_larger_than_max_request_is_one_request_of_its_own():
    spans = spans_at((0, 10), (10, 5000), (5010, 10))
    assert shape(plan(spans, FetchPolicy(max_gap=0, max_request=1000))) == [
        (0, 10, [0]), (10, 5000, [1]), (5010, 10, [2])]


def test_duplicate_spans_are_planned_once():
    a, b = FrameSpan(0, 0, 100), FrameSpan(1, 100, 100)
    assert shape(plan([a, b, a, b, a], FetchPolicy())) == [(0, 200, [0, 1])]


def test_unsorted_spans_are_planned_in_offset_order():
    spans = spans_at((400, 100), (0, 100), (300, 100), (100, 100), first=10)
    got = shape(plan(spans, FetchPolicy(max_gap=50)))
    assert got == [(0, 200, [11, 13]), (300, 200, [12, 10])]


def test_overlapping_spans_merge_whatever_the_gap():
    # One span inside another (two frames sharing bytes), and one reaching past it.
    spans = [FrameSpan(0, 0, 1000), FrameSpan(1, 200, 100), FrameSpan(2, 900, 300)]
    assert shape(plan(spans, FetchPolicy(max_gap=0))) == [(0, 1200, [0, 1, 2])]


def test_two_frames_with_the_same_bytes_are_both_planned():
    spans = [FrameSpan(4, 100, 50), FrameSpan(5, 100, 50)]
    (request,) = plan(spans, FetchPolicy())
    assert request[:2] == (100, 50) and sorted(s.frame for s in request[2]) == [4, 5]


def test_plan_of_random_spans_covers_each_span_once():
    rng = random.Random(1)
    spans = [FrameSpan(k, rng.randrange(90_000), rng.randrange(1, 5000)) for k in range(300)]
    policy = FetchPolicy(max_gap=2000, max_request=20_000)
    requests = plan(spans, policy)
    planned = [s for _, _, members in requests for s in members]
    assert sorted(planned, key=lambda s: s.frame) == spans
    for (o, n, members), nxt in zip(requests, requests[1:] + [None]):
        assert all(o <= s.offset and s.offset + s.length <= o + n for s in members)
        assert n <= policy.max_request or len(members) == 1
        if nxt is not None:  # in offset order (overlapping spans may make requests overlap)
            assert o <= nxt[0]
            first = nxt[2][0]  # not merged into this request: the gap or the size forbade it
            assert first.offset - (o + n) > policy.max_gap or max(o + n, first.offset + first.length) - o > policy.max_request


# -- fetch ---------------------------------------------------------------------------------------------------


def test_fetch_reads_each_span_with_the_planned_requests():
    source = BytesSource(DATA)
    spans = spans_at((0, 100), (150, 100), (10_000, 500), (10_500, 20), (50_000, 1))
    policy = FetchPolicy(max_gap=100)
    out = fetch(source, spans, policy)
    assert {s: bytes(b) for s, b in out.items()} == {s: DATA[s.offset : s.offset + s.length] for s in spans}
    assert source.stats.requests == len(plan(spans, policy)) == 3
    assert source.stats.bytes == 250 + 520 + 1


def test_fetch_overlapping_and_unsorted_spans():
    source = BytesSource(DATA)
    spans = [FrameSpan(2, 5000, 300), FrameSpan(0, 0, 1000), FrameSpan(1, 200, 100), FrameSpan(3, 900, 300)]
    out = fetch(source, spans, FetchPolicy())
    for s in spans:
        assert bytes(out[s]) == DATA[s.offset : s.offset + s.length]


def test_fetch_takes_what_the_cache_holds():
    source = BytesSource(DATA)
    cache = BlockCache(100_000)
    cache.add(0, DATA[:4000])
    spans = spans_at((100, 1000), (3500, 1000))
    out = fetch(source, spans, FetchPolicy(), cache=cache)
    assert [bytes(out[s]) for s in spans] == [DATA[100:1100], DATA[3500:4500]]
    assert source.stats.bytes == 500  # only [4000, 4500) came from the source


@pytest.fixture
def local_file(tmp_path):
    path = tmp_path / "frames.bin"
    path.write_bytes(DATA)
    return path


@pytest.mark.parametrize("cached", [False, True], ids=["direct-reads", "through-cache"])
def test_fetch_from_a_removed_and_closed_file_is_storage_error(local_file, cached):
    source = LocalFileSource(local_file)
    os.remove(local_file)
    source.close()
    cache = BlockCache(1000) if cached else None
    if cached:
        cache.add(50_000, b"x")  # a non-empty cache takes the general path
    with pytest.raises(StorageError) as info:
        fetch(source, spans_at((1000, 100), (1100, 100), first=3), FetchPolicy(), cache=cache)
    assert info.value.path == str(local_file)


@pytest.mark.parametrize("cached", [False, True], ids=["direct-reads", "through-cache"])
def test_fetch_from_a_removed_and_closed_file_names_the_frame(local_file, cached):
    source = LocalFileSource(local_file)
    os.remove(local_file)
    source.close()
    cache = BlockCache(1000) if cached else None
    if cached:
        cache.add(50_000, b"x")
    with pytest.raises(StorageError) as info:
        fetch(source, spans_at((1000, 100), (1100, 100), first=3), FetchPolicy(), cache=cache)
    assert info.value.frame == 3


def test_fetch_from_a_url_that_404s_names_the_frame_and_range(nginx):
    url = f"{nginx.url}/no-such-dir/missing.bin"
    source = FsspecSource(url, tries=1)
    spans = spans_at((1000, 100), (1100, 100), first=7)  # one request holding frames 7 and 8
    with pytest.raises(StorageError) as info:
        fetch(source, spans, FetchPolicy())
    err = info.value
    assert err.frame == 7 and err.path == url and err.byte_range == (1000, 200)
    assert "no such file" in err.message and "frames 7..8" in err.message
    assert "frame 7" in str(err) and url in str(err)


def test_fetch_from_a_url_that_404s_one_frame_per_request(nginx):
    url = f"{nginx.url}/no-such-dir/missing.bin"
    source = FsspecSource(url, tries=1)
    spans = spans_at((1000, 100), first=42)
    with pytest.raises(StorageError) as info:
        fetch(source, spans, FetchPolicy())
    assert info.value.frame == 42 and "the range holds" not in info.value.message


@pytest.mark.parametrize("kind", ["local", "bytes"])
def test_fetch_from_a_partial_file_is_truncated_naming_the_frame(tmp_path, kind):
    partial = DATA[:10_050]
    if kind == "local":  # direct reads (preadv) where the platform has them
        path = tmp_path / "partial.bin"
        path.write_bytes(partial)
        source = LocalFileSource(path)
    else:
        source = BytesSource(partial, name="partial.bin")
    spans = spans_at((0, 5000), (5000, 5000), (10_000, 5000), (15_000, 5000))
    with pytest.raises(TruncatedFileError) as info:
        fetch(source, spans, FetchPolicy())
    err = info.value
    assert err.frame == 2 and err.offset == 10_000 and err.path == source.name
    assert "file ends at 10050" in err.message
    # The frames before the cut are whole.
    out = fetch(source, spans[:2], FetchPolicy())
    assert bytes(out[spans[1]]) == DATA[5000:10_000]


def test_fetch_over_http_from_a_partial_file_is_truncated_naming_the_frame(nginx, remote_dir):
    folder = remote_dir / "fetch_plan"
    folder.mkdir(exist_ok=True)
    (folder / "partial.bin").write_bytes(DATA[:10_050])
    source = FsspecSource(f"{nginx.url}/fetch_plan/partial.bin")
    spans = spans_at((0, 5000), (5000, 5000), (10_000, 5000), first=20)
    with pytest.raises(TruncatedFileError) as info:
        fetch(source, spans, FetchPolicy(max_request=1 << 20))
    assert info.value.frame == 22 and info.value.offset == 10_000
