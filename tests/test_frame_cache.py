"""The tile cache: decoded frames that regions reuse, bounded in bytes, shared by readers."""

from __future__ import annotations

import multiprocessing
import pickle
import threading

import numpy as np
import pytest

import dicomframes
from dicomframes.frames import frame_cache
from dicomframes.frames.frame_cache import FrameCache
from dicomframes.samples import write_sample
from tests.helpers.wsigen import write_pyramid


def test_least_recently_used_frames_go_beyond_the_bound():
    cache = FrameCache(max_bytes=3000, second_chance=False)
    arrays = {k: np.full(1000, k, np.uint8) for k in range(5)}
    for k in range(3):
        cache.put(("r", k), arrays[k])
    assert cache.get(("r", 0)) is not None  # 0 is now the most recently used
    cache.put(("r", 3), arrays[3])  # drops 1, the least recently used
    assert cache.get(("r", 1)) is None
    assert [cache.get(("r", k)) is not None for k in (0, 2, 3)] == [True, True, True]
    assert cache.nbytes == 3000 and len(cache) == 3
    stats = cache.stats()
    assert stats["evictions"] == 1 and stats["hits"] == 4 and stats["misses"] == 1
    cache.put(("r", 4), np.zeros(4000, np.uint8))  # larger than the bound: not kept
    assert cache.get(("r", 4)) is None and cache.nbytes == 3000


def test_kept_arrays_are_read_only_and_hold_only_their_bytes():
    cache = FrameCache(1 << 20, second_chance=False)
    big = np.arange(100_000, dtype=np.uint8)
    kept = cache.put(("r", 0), big[:100])  # a view into 100 kB: copied
    assert kept.base is None and kept.nbytes == 100 and cache.nbytes == 100
    with pytest.raises(ValueError):
        kept[0] = 1
    assert big.flags.writeable  # the caller's array is left alone


def test_a_closed_readers_entries_are_dropped(tmp_path):
    path = write_sample(tmp_path / "a.dcm", frames=8, rows=32, columns=32, syntax="rle")
    cache = FrameCache(1 << 20, second_chance=False)
    with dicomframes.open(path, tile_cache=cache) as a, dicomframes.open(path, tile_cache=cache) as b:
        a.read_frames([0, 1, 2])
        b.read_frames([0])
        assert len(cache) == 4
        a.close()
        assert len(cache) == 1
    assert len(cache) == 0


def test_read_frames_equal_frames_and_read_nothing_twice(tmp_path):
    path = write_sample(tmp_path / "a.dcm", frames=12, rows=48, columns=40, syntax="jpegls")
    with dicomframes.open(path, tile_cache=FrameCache(1 << 20, second_chance=False)) as reader:
        expected = [reader.frame(i) for i in range(12)]
        got = reader.read_frames([5, 1, 5, -1])
        assert all(np.array_equal(g, expected[k]) for g, k in zip(got, [5, 1, 5, 11]))
        assert got[0] is got[2]
        before = dict(reader.stats)
        again = reader.read_frames([1, 5, 11])
        assert reader.stats["bytes"] == before["bytes"] and reader.stats["requests"] == before["requests"]
        assert reader.stats["tile_cache_hits"] - before["tile_cache_hits"] == 3
        assert again[0] is got[1]
        with pytest.raises(ValueError):
            again[0][0, 0] = 1
        with pytest.raises(IndexError):
            reader.read_frames([12])
    with dicomframes.open(path, tile_cache=False) as reader:
        assert reader.tile_cache is None
        first, second = reader.read_frames([2]), reader.read_frames([2])
        assert first[0] is not second[0] and np.array_equal(first[0], second[0])
        assert reader.stats["tile_cache_hits"] == 0


def test_overlapping_regions_read_only_their_new_tiles(tmp_path):
    pyramid = write_pyramid(tmp_path / "slide", width=1024, height=768, levels=1, tile_size=(128, 128), codec="jpeg")
    path = pyramid.levels[0].paths[0]
    cache = FrameCache(64 << 20, second_chance=False)
    with dicomframes.open(path, tile_cache=cache) as reader, dicomframes.open(path, tile_cache=False) as plain:
        first = reader.read_region((100, 100), (300, 300))  # tiles (0..3) x (0..3)
        assert np.array_equal(first, plain.read_region((100, 100), (300, 300)))
        before = dict(reader.stats)
        second = reader.read_region((300, 100), (300, 300))  # one column of tiles more
        assert np.array_equal(second, plain.read_region((300, 100), (300, 300)))
        new = set(reader.tile_geometry.tiles_in(300, 100, 300, 300)[0].tolist()) - set(
            reader.tile_geometry.tiles_in(100, 100, 300, 300)[0].tolist())
        encoded = sum(reader.index.span(f).length for f in new)
        assert reader.stats["tile_cache_misses"] - before["tile_cache_misses"] == len(new) == 4
        assert reader.stats["bytes"] - before["bytes"] <= encoded + 8192


def test_a_slides_levels_share_one_bounded_cache(tmp_path):
    write_pyramid(tmp_path / "slide", width=1024, height=768, levels=3, tile_size=(128, 128), codec="jpeg")
    cache = FrameCache(max_bytes=400_000, second_chance=False)  # about 8 tiles of 128x128 RGB
    rng = np.random.default_rng(0)
    with dicomframes.open_slide(tmp_path / "slide", tile_cache=cache) as slide, \
            dicomframes.open_slide(tmp_path / "slide", tile_cache=False) as plain:
        assert all(r.tile_cache is cache for level in slide.levels for r in level.readers)
        for _ in range(30):
            k = int(rng.integers(0, 3))
            level = slide.levels[k]
            x, y = (int(v) for v in rng.integers(0, 600, 2))
            region = slide.read_region((x, y), k, (200, 150))
            assert np.array_equal(region, plain.read_region((x, y), k, (200, 150)))
            assert cache.nbytes <= cache.max_bytes
            assert level.readers[0].stats["tile_cache_misses"] > 0
        assert cache.stats()["evictions"] > 0 and cache.stats()["hits"] > 0


def test_a_frame_is_kept_when_it_is_asked_for_the_second_time(tmp_path):
    """Regions that share no tile keep nothing; a tile two regions share is kept
    at its second decode and found at its third."""
    pyramid = write_pyramid(tmp_path / "slide", width=1024, height=768, levels=1, tile_size=(128, 128), codec="jpeg")
    path = pyramid.levels[0].paths[0]
    cache = FrameCache(64 << 20)
    with dicomframes.open(path, tile_cache=cache) as reader:
        for x in (0, 256, 512, 768):  # disjoint: 2x2 tiles each
            reader.read_region((x, 0), (256, 256))
        assert len(cache) == 0 and cache.nbytes == 0
        reader.read_region((0, 0), (256, 256))  # its tiles' second decode: kept
        assert len(cache) == 4
        before = reader.stats["tile_cache_hits"]
        reader.read_region((64, 0), (256, 256))  # 3x2 tiles: the 4 kept ones, and 2 of the next column
        assert reader.stats["tile_cache_hits"] - before == 4
    assert pickle.loads(pickle.dumps(cache)).second_chance is True


def test_the_default_is_one_cache_per_process_and_readers_pickle_without_it(tmp_path):
    path = write_sample(tmp_path / "a.dcm", frames=4, rows=32, columns=32, syntax="rle")
    with dicomframes.open(path) as a, dicomframes.open(path) as b:
        assert a.tile_cache is b.tile_cache is frame_cache.shared_cache()
        assert a.tile_cache.max_bytes == 64 << 20
        a.read_frames([0, 1])
        copy = pickle.loads(pickle.dumps(a))
        assert copy.tile_cache is frame_cache.shared_cache() and copy._token != a._token
        assert copy.stats["tile_cache_hits"] == 0
        assert np.array_equal(copy.read_frames([1])[0], a.read_frames([1])[0])
        copy.close()
    assert pickle.loads(pickle.dumps(FrameCache(123))).max_bytes == 123
    with pytest.raises(TypeError):
        dicomframes.open(path, tile_cache="big")


def _child_region(path, queue):
    with dicomframes.open(path) as reader:
        queue.put(reader.read_region((10, 10), (200, 100)).sum())


def test_a_forked_child_reads_regions_with_a_cache_a_parent_thread_held(tmp_path):
    """The parent holds the shared cache's lock in another thread while it forks."""
    pyramid = write_pyramid(tmp_path / "slide", width=512, height=384, levels=1, tile_size=(128, 128), codec="jpeg")
    path = pyramid.levels[0].paths[0]
    with dicomframes.open(path) as reader:
        expected = int(reader.read_region((10, 10), (200, 100)).sum())
    cache = frame_cache.shared_cache()
    held, release = threading.Event(), threading.Event()

    def hold():
        with cache._lock:
            held.set()
            release.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(10)
    try:
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        child = ctx.Process(target=_child_region, args=(str(path), queue))
        child.start()
        got = queue.get(timeout=60)
        child.join(30)
    finally:
        release.set()
        thread.join()
    assert child.exitcode == 0 and int(got) == expected


def test_threads_share_a_cache_safely(tmp_path):
    path = write_sample(tmp_path / "a.dcm", frames=64, rows=32, columns=32, syntax="rle")
    cache = FrameCache(max_bytes=20 * 32 * 32)  # 20 of 64 frames, kept when asked for twice
    errors = []
    with dicomframes.open(path, tile_cache=cache) as reader:
        expected = [reader.frame(i) for i in range(64)]

        def work(seed):
            rng = np.random.default_rng(seed)
            try:
                for _ in range(200):
                    ks = [int(k) for k in rng.integers(0, 64, 3)]
                    for k, got in zip(ks, reader.read_frames(ks)):
                        assert np.array_equal(got, expected[k])
                    assert cache.nbytes <= cache.max_bytes
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors
    assert cache.stats()["hits"] > 0


def test_a_remote_tiles_second_decode_costs_no_request(nginx, remote_dir):
    """The doorkeeper keeps a tile on its second decode; for a remote file its encoded
    bytes were kept at the first, so that second decode reads nothing."""
    pyramid = write_pyramid(remote_dir / "cached-slide", width=1024, height=768, levels=1, tile_size=(128, 128),
                            codec="jpeg")
    path = pyramid.levels[0].paths[0]
    url = f"{nginx.url}/cached-slide/{path.name}"
    cache = FrameCache(64 << 20)
    with dicomframes.open(url, tile_cache=cache) as reader, dicomframes.open(path, tile_cache=False) as local:
        expected = local.read_region((100, 100), (300, 300))
        first = reader.read_region((100, 100), (300, 300))
        after_first = dict(reader.stats)
        second = reader.read_region((100, 100), (300, 300))  # decoded again, from the kept bytes
        assert reader.stats["requests"] == after_first["requests"]
        third = reader.read_region((100, 100), (300, 300))  # now decoded frames
        assert reader.stats["tile_cache_hits"] - after_first["tile_cache_hits"] == 16
        assert reader.stats["requests"] == after_first["requests"]
        for region in (first, second, third):
            assert np.array_equal(region, expected)
        assert cache.nbytes <= cache.max_bytes
    assert len(cache) == 0
