"""Readers shared by threads, shipped to processes, opened and dropped by the thousand."""

from __future__ import annotations

import gc
import multiprocessing
import pickle
import threading
import tracemalloc

import numpy as np
import pytest

import dicomframes
from dicomframes.frames.workers import available_cores
from dicomframes.samples import write_sample

psutil = pytest.importorskip("psutil")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("life")
    return {
        "bot": write_sample(str(d / "bot.dcm"), frames=60, rows=32, columns=40, syntax="jpegls"),
        "walked": write_sample(str(d / "walk.dcm"), frames=60, rows=32, columns=40, syntax="rle", offset_table="none"),
        "native": write_sample(str(d / "nat.dcm"), frames=60, rows=32, columns=40, syntax="native"),
    }


def _frames(path):
    with dicomframes.open(path, workers=1) as reader:
        return [reader.frame(i) for i in range(len(reader))]


@pytest.mark.parametrize("kind", ["bot", "walked", "native"])
def test_many_threads_one_reader(files, kind):
    path = files[kind]
    expected = _frames(path)
    errors, results = [], {}
    with dicomframes.open(path) as reader:

        def random_frames(seed):
            rng = np.random.default_rng(seed)
            try:
                for i in rng.integers(0, len(expected), 40):
                    np.testing.assert_array_equal(reader.frame(int(i)), expected[int(i)])
            except BaseException as exc:  # reported below
                errors.append(exc)

        def iterate(seed):
            try:
                results[seed] = list(reader.iter_frames(workers=2))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=random_frames, args=(k,)) for k in range(6)]
        threads += [threading.Thread(target=iterate, args=(k,)) for k in range(100, 103)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads)
    assert not errors, errors[:3]
    for got in results.values():
        assert len(got) == len(expected)
        for a, b in zip(got, expected):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", ["bot", "walked", "native"])
def test_pickle_is_small_and_does_not_reread_the_header(files, kind):
    path = files[kind]
    expected = _frames(path)
    with dicomframes.open(path) as reader:
        reader.frame(len(reader) - 1)  # index built (a walk, for the walked file)
        blob = pickle.dumps(reader)
    assert len(blob) < 16_000
    clone = pickle.loads(blob)
    try:
        assert clone.stats["requests"] == 0  # unpickling read nothing
        np.testing.assert_array_equal(clone.frame(17), expected[17])
        assert clone.stats["requests"] == 1  # one read: the frame, no header
        assert all(np.array_equal(a, b) for a, b in zip(clone, expected))
    finally:
        clone.close()


def _child_sums(reader, indices, queue):
    queue.put([int(reader.frame(i).astype(np.int64).sum()) for i in indices])


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_reader_in_child_processes(files, method):
    path = files["bot"]
    expected = [int(f.astype(np.int64).sum()) for f in _frames(path)]
    ctx = multiprocessing.get_context(method)
    with dicomframes.open(path) as reader:
        reader.frame(0)  # the parent has an open handle and a built index
        queue = ctx.Queue()
        procs = [ctx.Process(target=_child_sums, args=(reader, list(range(k, 60, 3)), queue)) for k in range(3)]
        for p in procs:
            p.start()
        got = sorted(x for _ in procs for x in queue.get(timeout=60))
        for p in procs:
            p.join(30)
            assert p.exitcode == 0
        # the parent's handle still works after the children used theirs
        assert int(reader.frame(5).astype(np.int64).sum()) == expected[5]
    assert got == sorted(expected[k] for k in range(60))


def _resources(paths=()):
    """Our resources only: other tests' servers and clusters may come and go. The
    process's region decode threads (one pool, at most one thread per core, started
    once: `frames.workers.decode_threads`) belong to no reader and are counted apart."""
    proc = psutil.Process()
    open_files = sum(1 for f in proc.open_files() if f.path in paths)
    names = [t.name for t in threading.enumerate() if t.name.startswith("dicomframes")]
    shared = sum(1 for n in names if n.startswith("dicomframes-region"))
    assert shared <= available_cores()
    return open_files, len(names) - shared, len(proc.children(recursive=True))


def test_open_close_thousands_of_readers_leaks_nothing(files):
    path = files["bot"]
    for _ in range(20):  # warm up caches and lazily built tables
        with dicomframes.open(path) as reader:
            reader.frame(3)
    gc.collect()
    before = _resources([path])
    assert before[:2] == (0, 0)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for k in range(1500):
            if k % 3 == 0:
                with dicomframes.open(path) as reader:
                    reader.frame(k % 60)
            elif k % 3 == 1:
                reader = dicomframes.open(path)  # dropped without close()
                next(iter(reader))
                del reader
            else:
                reader = dicomframes.open(path, workers=2)
                it = reader.iter_frames()
                next(it)
                del it, reader  # abandoned mid-iteration
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert _resources([path]) == before
    assert grown < 2 * 2**20, f"{grown} bytes not returned"


def test_process_pool_closes_with_the_reader(files):
    path = files["bot"]
    before = len(psutil.Process().children(recursive=True))
    reader = dicomframes.open(path, workers=2, decoder="pylibjpeg")
    assert len(list(reader)) == 60
    assert len(psutil.Process().children(recursive=True)) > before  # the pool ran
    reader.close()
    assert len(psutil.Process().children(recursive=True)) == before


@pytest.mark.parametrize("name", ["bot.dcm", "walked_fragments.dcm"])
def test_many_threads_one_remote_reader(nginx, remote_dir, name):
    """Eight threads share one reader over real HTTP: random frames and
    concurrent iterations give exactly the single-threaded frames."""
    if not (remote_dir / name).exists():
        pytest.fail(f"{name} is not among the served samples")
    with dicomframes.open(remote_dir / name) as local:
        n = min(len(local), 120)
        expected = [local.frame(i) for i in range(n)]
    errors, iterated = [], []
    with dicomframes.open(f"{nginx.url}/{name}") as reader:

        def random_frames(seed):
            rng = np.random.default_rng(seed)
            try:
                for i in rng.integers(0, n, 25):
                    np.testing.assert_array_equal(reader.frame(int(i)), expected[int(i)])
            except BaseException as exc:
                errors.append(exc)

        def iterate():
            try:
                iterated.append(list(reader.iter_frames(range(n), workers=2)))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=random_frames, args=(k,)) for k in range(6)]
        threads += [threading.Thread(target=iterate) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads)
    assert not errors, errors[:3]
    assert len(iterated) == 2
    for got in iterated:
        for a, b in zip(got, expected):
            np.testing.assert_array_equal(a, b)
