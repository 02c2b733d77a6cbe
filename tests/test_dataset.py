"""FrameDataset: a map-style dataset over (file, frame) pairs, in worker processes.

Worker processes are started by fork and by spawn (as data loaders do); every
frame they return is compared with ``reader.frame(i)`` of a local reader, and
over HTTP the requests they make are read from nginx's access log.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dicomframes
from dicomframes import FrameDataset
from dicomframes.samples import write_sample

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("dataset")
    return [
        write_sample(d / "a.dcm", frames=30, rows=32, columns=40, syntax="jpegls"),
        write_sample(d / "b.dcm", frames=17, rows=32, columns=40, syntax="rle", offset_table="none", seed=1),
        write_sample(d / "c.dcm", frames=25, rows=32, columns=40, syntax="native", seed=2),
    ]


def all_frames(paths) -> list[np.ndarray]:
    out = []
    for p in paths:
        with dicomframes.open(p, workers=1) as reader:
            out += [reader.frame(i) for i in range(len(reader))]
    return out


def starts_at_zero(record) -> bool:
    return record.range is not None and record.range.startswith("bytes=0-")


def test_map_over_files_and_frames(files):
    expected = all_frames(files)
    with FrameDataset(files) as ds:
        assert len(ds) == 72 == len(expected)
        assert ds.frame_counts == [30, 17, 25]
        assert ds.paths == [str(p) for p in files]
        assert ds.locate(0) == (0, 0) and ds.locate(29) == (0, 29) and ds.locate(30) == (1, 0)
        assert ds.locate(47) == (2, 0) and ds.locate(-1) == (2, 24)
        for k in range(len(ds)):
            np.testing.assert_array_equal(ds[k], expected[k])
        np.testing.assert_array_equal(ds[-72], expected[0])
        for bad in (72, -73):
            with pytest.raises(IndexError):
                ds[bad]
        with pytest.raises(TypeError):
            ds[1.5]
        # iteration goes through every file in order
        got = list(ds)
        assert len(got) == 72 and all(np.array_equal(a, b) for a, b in zip(got, expected))
        # a batch: each file's frames fetched together; repeats and any order allowed
        keys = [71, 3, 30, 3, 46, 0, 47]
        batch = ds.__getitems__(keys)
        for k, item in zip(keys, batch):
            np.testing.assert_array_equal(item, expected[k])
        assert batch[1] is not batch[3]


def test_return_index_and_transform(files):
    expected = all_frames(files)
    ds = FrameDataset(files, return_index=True, transform=np.transpose)
    frame, where = ds[40]
    assert where == (1, 10)
    np.testing.assert_array_equal(frame, expected[40].T)
    (f1, w1), (f2, w2) = ds.__getitems__([40, 5])
    assert (w1, w2) == ((1, 10), (0, 5))
    np.testing.assert_array_equal(f2, expected[5].T)
    ds.close()


def test_readers_given_are_used_not_closed(files):
    reader = dicomframes.open(files[0])
    ds = FrameDataset([reader, files[2]])
    assert len(ds) == 55
    ds.close()
    reader.frame(0)  # still open: the dataset did not open it
    reader.close()
    with pytest.raises(TypeError, match="open readers"):
        FrameDataset([dicomframes.open(files[0])], as_rgb=False)
    assert len(FrameDataset(files[1])) == 17  # one source


def test_pickles_small_and_unpickling_reads_nothing(files, nginx, remote_dir):
    urls = [f"{nginx.url}/walked.dcm", f"{nginx.url}/eot.dcm"]
    ds = FrameDataset(urls + [files[0]])
    blob = pickle.dumps(ds)
    assert len(blob) < 80_000  # headers and compact indexes, no pixel data (the files hold 25 MB)
    mark = nginx.mark()
    clone = pickle.loads(blob)
    assert nginx.since(mark) == []
    # The walk over item headers was done when the dataset was made: the last
    # frame of the walked file is one request, in any process.
    frame = clone[999]
    recs = nginx.since(mark)
    assert len(recs) == 1 and not starts_at_zero(recs[0])
    with dicomframes.open(remote_dir / "walked.dcm") as local:
        np.testing.assert_array_equal(frame, local.frame(999))
    clone.close()
    ds.close()


# -- worker processes (fork and spawn, as data loaders start them) ------------------------------

_dataset = None


def _init(dataset):
    global _dataset
    _dataset = dataset


def _get(k):
    frame, where = _dataset[k]
    return k, where, frame, os.getpid()


def _get_batch(keys):
    return [(k, item[1], item[0]) for k, item in zip(keys, _dataset.__getitems__(keys))]


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_pool_workers_give_the_same_frames(files, method):
    expected = all_frames(files)
    ds = FrameDataset(files, return_index=True)
    ds[0]  # the parent has open handles before the workers start
    ctx = multiprocessing.get_context(method)
    with ctx.Pool(2, initializer=_init, initargs=(ds,)) as pool:
        got = pool.map(_get, range(len(ds)), chunksize=5)
        batches = pool.map(_get_batch, [list(range(k, len(ds), 7)) for k in range(7)])
    assert len({pid for *_, pid in got}) >= 1 and os.getpid() not in {pid for *_, pid in got}
    for k, where, frame, _ in got:
        assert where == ds.locate(k)
        np.testing.assert_array_equal(frame, expected[k])
    for batch in batches:
        for k, where, frame in batch:
            np.testing.assert_array_equal(frame, expected[k])
    np.testing.assert_array_equal(ds[71][0], expected[71])  # the parent's handles still work
    ds.close()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_pool_workers_over_http_do_not_reread_headers(nginx, remote_dir, method):
    names = ["bot.dcm", "walked.dcm"]
    mark = nginx.mark()
    ds = FrameDataset([f"{nginx.url}/{n}" for n in names], return_index=True)
    made = nginx.since(mark)
    assert len([r for r in made if starts_at_zero(r)]) == 2  # one header read per file, here
    ctx = multiprocessing.get_context(method)
    keys = sorted(set(range(0, 2000, 37)) | {999, 1000, 1999})
    mark = nginx.mark()
    with ctx.Pool(2, initializer=_init, initargs=(ds,)) as pool:
        got = pool.map(_get, keys, chunksize=4)
    used = nginx.since(mark)
    assert not [r for r in used if starts_at_zero(r)]  # no worker read a header
    # at most one request per frame (frames within the first read cost none), no HEAD:
    # the file sizes and the last frames' ends were found when the dataset was made
    assert len(used) <= len(keys)
    assert all(r.method == "GET" and r.range for r in used)
    locals_ = [dicomframes.open(remote_dir / n) for n in names]
    for k, (f, i), frame, _ in got:
        np.testing.assert_array_equal(frame, locals_[f].frame(i))
    for r in locals_:
        r.close()
    ds.close()


def test_torch_loader_example_runs():
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "torch_loader.py"), "--frames", "40"],
        capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stderr
    assert "frames" in done.stdout
    try:
        import torch  # noqa: F401
    except ImportError:
        assert "torch is not installed" in done.stdout


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_bytes_of_a_file_are_one_file(files, kind):
    """Bytes in any buffer type are one file's contents, never a sequence of files."""
    data = kind(Path(files[0]).read_bytes())
    expected = all_frames(files[:1])
    with FrameDataset(data) as ds:
        assert ds.frame_counts == [30]
        assert len(ds) == 30
        for k in (0, 17, 29):
            np.testing.assert_array_equal(ds[k], expected[k])
    with FrameDataset([data, files[2]]) as ds:  # in a list: one file among others
        assert ds.frame_counts == [30, 25]
