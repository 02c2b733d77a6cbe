"""Remote reading against real servers on 127.0.0.1: nginx (HTTP) and moto (S3).

Requests and bytes are counted by the servers themselves (nginx's access log; a
proxy in front of moto, which keeps no log) and compared with `reader.stats`.
Faults are injected by a proxy in front of nginx. No storage is mocked.
"""

from __future__ import annotations

import math
import pickle
import random
import time

import numpy as np
import pytest

import dicomframes
from dicomframes import StorageError
from dicomframes.io.failures import is_transient
from dicomframes.io.remote import FsspecSource

KiB, MiB = 1 << 10, 1 << 20
INDEX_FILES = {"BOT": "bot.dcm", "EOT": "eot.dcm", "walked": "walked.dcm"}


# -- helpers ---------------------------------------------------------------------------------

class Remote:
    """One backend: opens sample files by name and counts what its server saw."""

    def __init__(self, kind: str, nginx=None, s3=None) -> None:
        self.kind = kind
        self.nginx, self.s3 = nginx, s3
        self.log = nginx if kind == "http" else s3.proxy

    def url(self, name: str) -> str:
        return f"{self.nginx.url}/{name}" if self.kind == "http" else self.s3.url(name)

    def open(self, name: str, **options) -> dicomframes.Reader:
        if self.kind == "s3":
            options = {**self.s3.options, **options}
        return dicomframes.open(self.url(name), **options)


@pytest.fixture(params=["http", "s3"])
def remote(request) -> Remote:
    if request.param == "http":
        return Remote("http", nginx=request.getfixturevalue("nginx"))
    return Remote("s3", s3=request.getfixturevalue("s3"))


@pytest.fixture
def http(nginx) -> Remote:
    return Remote("http", nginx=nginx)


def served(records) -> tuple[int, int]:
    """(requests, body bytes) of server records."""
    return len(records), sum(r.bytes for r in records)


def assert_stats_match(reader, records) -> None:
    """`reader.stats` counts exactly what the server saw."""
    requests, nbytes = served(records)
    assert reader.stats["requests"] == requests, (reader.stats, records)
    assert reader.stats["bytes"] == nbytes, (reader.stats, records)


def ranges_of(records) -> list[tuple[int, int]]:
    """[(first, last)] byte ranges of the GET requests with a Range header."""
    out = []
    for r in records:
        if r.method == "GET" and r.range:
            first, _, last = r.range.removeprefix("bytes=").partition("-")
            out.append((int(first), int(first) + r.bytes - 1))
    return out


def assert_no_byte_twice(records) -> None:
    spans = sorted(ranges_of(records))
    for (a0, a1), (b0, b1) in zip(spans, spans[1:]):
        assert b0 > a1, f"bytes {b0}..{min(a1, b1)} were fetched twice: {spans}"


def equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)


# -- correctness: remote frames equal local frames ----------------------------------------------

@pytest.mark.parametrize("name", ["bot.dcm", "eot.dcm", "walked.dcm", "walked_fragments.dcm", "native.dcm"])
def test_remote_frames_equal_local_frames(remote, remote_dir, name):
    with remote.open(name) as reader, dicomframes.open(remote_dir / name) as local:
        assert reader.info.index_kind == local.info.index_kind
        assert len(reader) == len(local)
        n = 0
        for a, b in zip(reader, local):
            assert equal(a, b), n
            n += 1
        assert n == len(local)
        rng = random.Random(name)
        for i in rng.sample(range(len(local)), 10) + [0, -1]:
            assert equal(reader.frame(i), local.frame(i)), i
            assert reader.encoded_frame(i) == local.encoded_frame(i), i


def test_index_kinds_are_the_ones_tested(remote_dir):
    for kind, name in INDEX_FILES.items():
        with dicomframes.open(remote_dir / name) as local:
            assert local.info.index_kind == kind
    with dicomframes.open(remote_dir / "walked_fragments.dcm") as local:
        assert local.info.index_kind == "walked"
        assert local.index.walk_all() == 2 * len(local)  # two fragments per frame


def test_filesystem_and_path_pair(s3, remote_dir):
    import s3fs

    fs = s3fs.S3FileSystem(**s3.options)
    with dicomframes.open((fs, f"{s3.bucket}/eot.dcm")) as reader, dicomframes.open(remote_dir / "eot.dcm") as local:
        assert reader.path == s3.url("eot.dcm")
        assert equal(reader.frame(123), local.frame(123))


# -- request counts ------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["BOT", "EOT", "walked"])
def test_open_and_first_frame_cost_one_request(remote, remote_dir, kind):
    """The 256 KiB first read holds the header, the offset table and the first frame."""
    mark = remote.log.mark()
    with remote.open(INDEX_FILES[kind]) as reader, dicomframes.open(remote_dir / INDEX_FILES[kind]) as local:
        records = remote.log.since(mark, 1)
        assert served(records) == (1, 256 * KiB)  # opening: one request
        first = reader.frame(0)
        records = remote.log.since(mark, 1)
        assert len(records) == 1  # the first frame came with it
        assert_stats_match(reader, records)
        assert equal(first, local.frame(0))


@pytest.mark.parametrize("name", ["bot_large_frames.dcm", "eot_large_frames.dcm"])
def test_open_is_one_request_and_first_frame_one_more(remote, remote_dir, name):
    """Frames larger than the first read: one request opens, one more is frame 0's bytes."""
    with dicomframes.open(remote_dir / name) as local:
        span = local.index.span(0)
        first_local = local.frame(0)
    assert span.offset + span.length > 256 * KiB
    mark = remote.log.mark()
    with remote.open(name) as reader:
        assert reader.info.index_kind == ("BOT" if name.startswith("bot") else "EOT")
        assert len(remote.log.since(mark, 1)) == 1
        frame = reader.frame(0)
        records = remote.log.since(mark, 2)
        assert len(records) == 2, records
        assert_stats_match(reader, records)
        # The second request: the frame's bytes the first read lacked, nothing more.
        first, last = ranges_of(records[1:])[0]
        assert first >= 256 * KiB and last == span.offset + span.length - 1
    assert equal(frame, first_local)


@pytest.mark.parametrize("kind", ["BOT", "EOT"])
def test_random_frame_is_one_request_of_its_bytes(remote, remote_dir, kind):
    name = INDEX_FILES[kind]
    with dicomframes.open(remote_dir / name) as local, remote.open(name) as reader:
        for i in (137, 512, 998, 421):
            span = local.index.span(i)
            mark = remote.log.mark()
            before = dict(reader.stats)
            frame = reader.frame(i)
            records = remote.log.since(mark, 1)
            assert len(records) == 1, records
            assert records[0].range == f"bytes={span.offset}-{span.offset + span.length - 1}"
            assert records[0].bytes == span.length
            assert reader.stats["requests"] - before["requests"] == 1
            assert reader.stats["bytes"] - before["bytes"] == span.length
            assert equal(frame, local.frame(i))


@pytest.mark.parametrize("kind", ["BOT", "EOT"])
@pytest.mark.parametrize("how", ["frame", "iter_frames"])
def test_k_random_frames_transfer_little_more_than_their_bytes(remote, remote_dir, kind, how):
    name = INDEX_FILES[kind]
    rng = random.Random(f"{kind}{how}")
    wanted = rng.sample(range(1000), 60)
    with dicomframes.open(remote_dir / name) as local:
        encoded = sum(local.index.span(i).length for i in wanted)
        expected = [local.frame(i) for i in wanted]
    mark = remote.log.mark()
    with remote.open(name) as reader:
        header = reader.stats["bytes"]
        got = [reader.frame(i) for i in wanted] if how == "frame" else list(reader.iter_frames(wanted))
        records = remote.log.since(mark, reader.stats["requests"])
        assert_stats_match(reader, records)
    _, nbytes = served(records)
    assert header == 256 * KiB
    assert nbytes <= 1.2 * encoded + header, (nbytes, encoded, header)
    assert all(equal(a, b) for a, b in zip(got, expected))


@pytest.mark.parametrize("kind", ["BOT", "EOT", "walked"])
def test_full_iteration_transfers_the_file_once(remote, remote_dir, kind):
    name = INDEX_FILES[kind]
    size = (remote_dir / name).stat().st_size
    mark = remote.log.mark()
    with remote.open(name) as reader:
        n = sum(1 for _ in reader)
        records = remote.log.since(mark, reader.stats["requests"])
        assert_stats_match(reader, records)
    assert n == 1000
    requests, nbytes = served(records)
    assert nbytes <= 1.05 * size, (nbytes, size)
    # Large requests, not one per frame: the file in 4 MiB pieces, plus the
    # first read and the size (asked once, when a read reaches the end).
    assert requests <= math.ceil(size / (4 * MiB)) + 4, records
    assert_no_byte_twice(records)


def test_walked_iteration_reads_each_byte_once_in_walk_blocks(remote, remote_dir):
    """No offset table: the walk reads ahead in blocks, and iteration reuses them."""
    name = "walked.dcm"
    size = (remote_dir / name).stat().st_size
    mark = remote.log.mark()
    # Small blocks and batches: many batches, and the cache must evict as it goes.
    options = dict(walk_block=256 * KiB, batch_bytes=1 * MiB, request_size=512 * KiB)
    with remote.open(name, **options) as reader, dicomframes.open(remote_dir / name) as local:
        assert reader.info.index_kind == "walked"
        cache = reader.index.cache
        for k, (a, b) in enumerate(zip(reader, local)):
            assert equal(a, b), k
            assert cache.nbytes <= cache.capacity
        records = remote.log.since(mark, reader.stats["requests"])
        assert_stats_match(reader, records)
    assert_no_byte_twice(records)
    requests, nbytes = served(records)
    assert nbytes <= size
    gets = [r for r in records if r.method == "GET"]
    assert len(gets) <= math.ceil(size / (256 * KiB)) + 2, [r.range for r in gets]
    # Two batches and two walk blocks, and the walk's read-ahead blocks (remote walks read a few at once).
    assert cache.capacity <= 2 * MiB + 2 * 256 * KiB + (reader.index.readahead - 1) * 256 * KiB


def test_walk_to_a_far_frame_reads_blocks_not_fragments(remote, remote_dir):
    name = "walked.dcm"
    size = (remote_dir / name).stat().st_size
    mark = remote.log.mark()
    with remote.open(name) as reader, dicomframes.open(remote_dir / name) as local:
        assert equal(reader.frame(990), local.frame(990))
        records = remote.log.since(mark, reader.stats["requests"])
        assert_stats_match(reader, records)
        # 1000 fragments; the walk needs a handful of 4 MiB reads, not 1000 requests.
        assert len(records) <= math.ceil(size / (4 * MiB)) + 2, records
        # Frames after that come from the blocks the walk read: no new request.
        before = reader.stats["requests"]
        assert equal(reader.frame(995), local.frame(995))
        assert reader.stats["requests"] == before
    assert_no_byte_twice(records)


def test_walk_over_multi_fragment_frames(http, remote_dir):
    name = "walked_fragments.dcm"
    size = (remote_dir / name).stat().st_size
    mark = http.log.mark()
    with http.open(name) as reader, dicomframes.open(remote_dir / name) as local:
        for k in (599, 3, 300):
            assert equal(reader.frame(k), local.frame(k)), k
        records = http.log.since(mark, reader.stats["requests"])
        assert_stats_match(reader, records)
    assert served(records)[1] <= size
    assert_no_byte_twice(records)


# -- pickling (readers shipped to Dask workers) -----------------------------------------------------

def test_source_pickles_small_and_reconnects(remote, remote_dir):
    with remote.open("eot.dcm") as reader, dicomframes.open(remote_dir / "eot.dcm") as local:
        reader.frame(500)
        source = reader.source
        blob = pickle.dumps(source)
        assert len(blob) < 4 * KiB
        again = pickle.loads(blob)
        assert again.name == source.name and again.size == source.size
        assert again.stats.requests == 0 and again._fs is None  # connects lazily
        span = local.index.span(700)
        assert again.read(span.offset, span.length) == local.source.read(span.offset, span.length)
        # The frame index pickles without its cache and binds to the new source.
        index = pickle.loads(pickle.dumps(reader.index))
        index.bind(again)
        assert index.read(span.offset, span.length, frame=700) == local.source.read(span.offset, span.length)
        fresh = source.reopen()
        assert fresh is not source and fresh.read(0, 132)[128:] == b"DICM"


def _frames_sum(reader, indices) -> tuple[int, dict]:
    """In another process: the sum of some frames, and what reading them cost."""
    total = sum(int(reader.frame(i).sum()) for i in indices)
    return total, dict(reader.stats)


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_remote_reader_pickles_small_and_reads_in_another_process(remote, remote_dir, method):
    import concurrent.futures
    import multiprocessing

    indices = [5, 400, 999]
    with remote.open("walked.dcm") as reader, dicomframes.open(remote_dir / "walked.dcm") as local:
        reader.frame(999)  # the walk is done: the index travels with the reader
        blob = pickle.dumps(reader)
        assert len(blob) < 64 * KiB
        expected = sum(int(local.frame(i).sum()) for i in indices)
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context(method)) as pool:
            total, stats = pool.submit(_frames_sum, reader, indices).result(timeout=120)
    assert total == expected
    # It neither re-read the header nor walked again: one request per frame.
    assert stats["requests"] == len(indices)


def _sum_in_child(reader, i, queue) -> None:
    queue.put(int(reader.frame(i).sum()))


def test_forked_child_does_not_break_the_parents_connections(remote, remote_dir):
    """A data loader forks workers that inherit the reader (not a pickle of it).

    The child reconnects; it must leave the parent's pooled connections alone
    (closing them in the child would unregister the parent's sockets from the
    epoll instance they share, and the parent's next request would hang).
    """
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    with remote.open("eot.dcm", request_timeout=5.0, tries=1) as reader, dicomframes.open(remote_dir / "eot.dcm") as local:
        reader.frame(10)  # the parent's connection pool is in use
        for i in (20, 30):
            queue = ctx.Queue()
            child = ctx.Process(target=_sum_in_child, args=(reader, i, queue))
            child.start()
            assert queue.get(timeout=60) == int(local.frame(i).sum())
            child.join(60)
            assert child.exitcode == 0
            started = time.monotonic()
            for k in (100, 600, 900):  # the parent goes on reading, promptly
                assert equal(reader.frame(k), local.frame(k))
            assert time.monotonic() - started < 5
            assert reader.stats["retries"] == 0


# -- faults (a proxy in front of nginx) ---------------------------------------------------------------

def faulty_open(proxy, name, **options):
    options = {"backoff": 0.01, **options}
    return dicomframes.open(f"{proxy.url}/{name}", **options)


@pytest.mark.parametrize("faults", [("drop", "drop"), ("503", "503", "503"), ("drop", "503", "short")])
def test_transient_faults_are_retried(faulty_http, remote_dir, faults):
    with dicomframes.open(remote_dir / "bot.dcm") as local, faulty_open(faulty_http, "bot.dcm") as reader:
        faulty_http.inject(*faults)
        assert equal(reader.frame(700), local.frame(700))
        assert faulty_http.pending_faults() == 0
        assert reader.stats["retries"] == len(faults)
        faulty_http.inject(*faults)
        for a, b in zip(reader.iter_frames(range(100, 400)), (local.frame(i) for i in range(100, 400))):
            assert equal(a, b)
        assert reader.stats["retries"] == 2 * len(faults)
        records = faulty_http.settled()
        assert reader.stats["requests"] == len(records)


def test_connections_reset_before_any_response_are_retried(faulty_http, remote_dir):
    # aiohttp itself retries once a request whose reused connection the server
    # closed; the second reset in a row reaches us. So the server sees one
    # request more than we count.
    with dicomframes.open(remote_dir / "bot.dcm") as local, faulty_open(faulty_http, "bot.dcm") as reader:
        faulty_http.inject("reset", "reset", "reset")
        assert equal(reader.frame(700), local.frame(700))
        assert faulty_http.pending_faults() == 0
        assert 1 <= reader.stats["retries"] <= 3


def test_fault_during_open_is_retried(faulty_http, remote_dir):
    faulty_http.inject("drop", "503")
    with dicomframes.open(remote_dir / "walked.dcm") as local, faulty_open(faulty_http, "walked.dcm") as reader:
        assert equal(reader.frame(10), local.frame(10))
        assert reader.stats["retries"] == 2


def test_stalled_request_times_out_and_is_retried(faulty_http, remote_dir):
    with dicomframes.open(remote_dir / "eot.dcm") as local, faulty_open(faulty_http, "eot.dcm", request_timeout=1.0) as reader:
        faulty_http.inject("stall")
        started = time.monotonic()
        assert equal(reader.frame(321), local.frame(321))
        assert time.monotonic() - started < 15  # the stall lasts 20 s: it was abandoned
        assert reader.stats["retries"] == 1


@pytest.mark.parametrize("fault", ["503", "drop", "reset", "short"])
def test_persistent_failure_names_url_frame_and_range(faulty_http, remote_dir, fault):
    with dicomframes.open(remote_dir / "bot.dcm") as local, faulty_open(faulty_http, "bot.dcm", tries=3) as reader:
        span = local.index.span(777)
        faulty_http.fail_always(fault)
        started = time.monotonic()
        with pytest.raises(StorageError) as info:
            reader.frame(777)
        assert time.monotonic() - started < 30
        err = info.value
        url = f"{faulty_http.url}/bot.dcm"
        assert err.path == url and err.frame == 777 and err.offset == span.offset
        text = str(err)
        assert url in text and "frame 777" in text
        assert f"bytes {span.offset}..{span.offset + span.length - 1}" in text
        assert "3 tries" in text
        assert len(faulty_http.since(0)) >= 4  # the open, then three tries
        assert reader.stats["retries"] == 2


def test_persistent_failure_while_iterating(faulty_http, remote_dir):
    with dicomframes.open(remote_dir / "walked.dcm") as local, faulty_open(
        faulty_http, "walked.dcm", tries=2, walk_block=256 * KiB, batch_bytes=1 * MiB
    ) as reader:
        got = 0
        with pytest.raises(StorageError) as info:
            for k, frame in enumerate(reader):
                assert equal(frame, local.frame(k))  # never a partial or wrong frame
                got += 1
                if k == 200:
                    faulty_http.fail_always("drop")
        err = info.value
        assert err.frame is not None and err.frame > 200 and err.frame >= got
        assert f"{faulty_http.url}/walked.dcm" in str(err) and "bytes " in str(err)


def test_short_range_is_never_a_partial_frame(faulty_http, remote_dir):
    with dicomframes.open(remote_dir / "eot.dcm") as local, faulty_open(faulty_http, "eot.dcm") as reader:
        faulty_http.inject("short")
        assert reader.encoded_frame(600) == local.encoded_frame(600)
        assert reader.stats["retries"] == 1


def test_missing_file_fails_at_once(http):
    started = time.monotonic()
    with pytest.raises(StorageError) as info:
        http.open("no-such-file.dcm")
    assert time.monotonic() - started < 10
    assert http.url("no-such-file.dcm") in str(info.value) and "no such file" in str(info.value)


def test_server_ignoring_range_is_an_error(faulty_http, remote_dir):
    faulty_http.fail_always("norange")
    with pytest.raises(StorageError) as info:
        faulty_open(faulty_http, "bot.dcm")
    assert "Range" in str(info.value)


def test_transient_classification():
    import aiohttp

    assert is_transient(ConnectionResetError())
    assert is_transient(TimeoutError())
    assert is_transient(aiohttp.ServerDisconnectedError())
    assert not is_transient(FileNotFoundError("x"))
    assert not is_transient(PermissionError("x"))
    err = OSError("boom")
    err.__cause__ = aiohttp.ClientResponseError(None, (), status=503)
    assert is_transient(err)
    assert not is_transient(aiohttp.ClientResponseError(None, (), status=403))


def test_fsspec_source_refuses_options_with_a_filesystem():
    import fsspec

    with pytest.raises(TypeError):
        FsspecSource("x", fs=fsspec.filesystem("memory"), anon=True)
