"""Dask arrays of frames and of whole slides, computed on a real dask.distributed cluster.

The cluster is a `LocalCluster` of two worker processes (one thread each). Files
are read locally, from the real nginx server and from the real S3-compatible
server of tests/conftest.py; requests and bytes are counted from the servers'
own logs (nginx's access log, the S3 proxy's log). Every frame computed is
compared with ``reader.frame(i)`` of a local reader.
"""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

try:
    import dask.array  # noqa: F401
    import distributed  # noqa: F401
except ImportError:  # the [test] extra installs them; CI must have them
    if os.environ.get("CI"):
        raise
    pytest.skip('dask is not installed: pip install "dicomframes[dask]" (CI runs these tests)', allow_module_level=True)

import dicomframes
from dicomframes import (
    DicomFramesError,
    FrameMismatchError,
    Reader,
)
from dicomframes.integrations.dask import slide_to_dask
from dicomframes.samples import write_sample
from tests.helpers import wsigen

# -- fixtures ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def client():
    """Two worker processes, one thread each; closed at the end of the module."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    client = Client(cluster, set_as_default=False)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


@pytest.fixture(scope="module")
def local_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("dask")
    return {
        "bot": write_sample(d / "bot.dcm", frames=150, rows=48, columns=40, syntax="jpegls"),
        "walked": write_sample(d / "walked.dcm", frames=130, rows=32, columns=40, syntax="rle", offset_table="none"),
        "native": write_sample(d / "native.dcm", frames=100, rows=32, columns=40, syntax="native"),
        "rgb": write_sample(d / "rgb.dcm", frames=70, rows=32, columns=40, samples_per_pixel=3, syntax="rle"),
        # the same frame shape as "native", more frames, another syntax: joins with it
        "native2": write_sample(d / "native2.dcm", frames=37, rows=32, columns=40, syntax="rle", seed=3),
        "wide": write_sample(d / "wide.dcm", frames=10, rows=32, columns=41, syntax="native"),
        "deep": write_sample(d / "deep.dcm", frames=10, rows=32, columns=40, bits_allocated=16, syntax="native"),
        "big_frames": write_sample(d / "big_frames.dcm", frames=150, rows=256, columns=256, syntax="native"),
    }


def frames_of(path, **options) -> np.ndarray:
    with dicomframes.open(path, workers=1, **options) as reader:
        return np.stack([reader.frame(i) for i in range(len(reader))])


def graph_readers(array) -> list:
    """The readers the array's graph holds (values of the graph that are readers)."""
    return [v for v in dict(array.__dask_graph__()).values() if isinstance(v, Reader)]


def model_requests(reader: Reader, frames_per_chunk: int) -> dict:
    """Requests and bytes a fresh copy of the graph's reader needs for every chunk, in-process."""
    copy = pickle.loads(pickle.dumps(reader))
    for start in range(0, len(copy), frames_per_chunk):
        for _ in copy.iter_frames(range(start, min(start + frames_per_chunk, len(copy))), workers=1):
            pass
    stats = copy.stats
    copy.close()
    return stats


def starts_at_zero(record) -> bool:
    return record.range is not None and record.range.startswith("bytes=0-")


# -- dask stays optional --------------------------------------------------------------------------

def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_importing_dicomframes_does_not_import_dask():
    done = _python("import sys, dicomframes; print('dask' in sys.modules, 'distributed' in sys.modules)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]


def test_without_dask_to_dask_names_the_extra(local_files):
    code = (
        "import sys\n"
        "sys.modules['dask'] = None\n"
        "import dicomframes\n"
        "from dicomframes import MissingDependencyError\n"
        f"path = {str(local_files['native'])!r}\n"
        "for call in (lambda: dicomframes.to_dask(path), lambda: dicomframes.open(path).to_dask()):\n"
        "    try:\n"
        "        call()\n"
        "    except MissingDependencyError as exc:\n"
        "        assert isinstance(exc, ImportError) and isinstance(exc, dicomframes.DicomFramesError)\n"
        "        print(exc)\n"
        "    else:\n"
        "        raise SystemExit('no error')\n"
    )
    done = _python(code)
    assert done.returncode == 0, done.stderr + done.stdout
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2
    for line in lines:
        assert 'pip install "dicomframes[dask]"' in line


# -- the graph -----------------------------------------------------------------------------------

def test_array_shape_dtype_and_chunks(local_files):
    arr = dicomframes.to_dask(local_files["bot"], frames_per_chunk=64)
    with dicomframes.open(local_files["bot"]) as reader:
        info = reader.info
    assert arr.shape == (150, 48, 40) == (info.number_of_frames,) + tuple(info.shape)
    assert arr.dtype == np.dtype(info.dtype)
    assert arr.chunks == ((64, 64, 22), (48,), (40,))
    rgb = dicomframes.to_dask(local_files["rgb"], frames_per_chunk=32)
    assert rgb.shape == (70, 32, 40, 3) and rgb.chunks == ((32, 32, 6), (32,), (40,), (3,))
    deep = dicomframes.to_dask(local_files["deep"])
    assert deep.dtype == np.uint16 and deep.chunks == ((10,), (32,), (40,))
    with pytest.raises(ValueError, match="frames_per_chunk"):
        dicomframes.to_dask(local_files["bot"], frames_per_chunk=0)


def test_graph_is_small_holds_the_reader_once_and_no_pixel_data(local_files):
    small = dicomframes.to_dask(local_files["native"], frames_per_chunk=4)  # 100 frames of 1.3 KB
    big = dicomframes.to_dask(local_files["big_frames"], frames_per_chunk=4)  # 150 frames of 64 KB
    for arr, path in ((small, local_files["native"]), (big, local_files["big_frames"])):
        graph = dict(arr.__dask_graph__())
        readers = graph_readers(arr)
        assert len(readers) == 1  # one key holds the reader...
        tasks = [v for v in graph.values() if not isinstance(v, Reader)]
        assert len(tasks) == arr.numblocks[0]
        for task in tasks:  # ...and every task refers to it by key: a few hundred bytes each
            assert len(pickle.dumps(task)) < 400
        blob = pickle.dumps(arr.__dask_graph__())
        assert len(blob) < 30_000, len(blob)
        assert len(blob) < os.path.getsize(path) / 3
    # Independent of pixel data: 50x bigger frames, about the same graph.
    size_small = len(pickle.dumps(small.__dask_graph__())) / small.numblocks[0]
    size_big = len(pickle.dumps(big.__dask_graph__())) / big.numblocks[0]
    assert size_big < 2 * size_small


def test_threaded_scheduler_equals_frames(local_files):
    for kind in ("bot", "walked", "rgb"):
        got = dicomframes.to_dask(local_files[kind], frames_per_chunk=16).compute(scheduler="threads")
        np.testing.assert_array_equal(got, frames_of(local_files[kind]))


def test_slices_compute_only_their_chunks(local_files):
    arr = dicomframes.to_dask(local_files["bot"], frames_per_chunk=16)
    part = arr[40:50]
    optimized = part.__dask_optimize__(part.__dask_graph__(), part.__dask_keys__())
    chunk_tasks = [k for k in dict(optimized) if isinstance(k, tuple) and k[0].startswith("dicomframes-frames")]
    assert len(chunk_tasks) <= 2  # frames 40..49 lie in chunks 2 and 3
    np.testing.assert_array_equal(part.compute(scheduler="sync"), frames_of(local_files["bot"])[40:50])


@pytest.mark.parametrize("kind", ["bot", "walked", "native", "rgb"])
def test_cluster_local_files(client, local_files, kind):
    arr = dicomframes.to_dask(local_files[kind], frames_per_chunk=32)
    got = arr.compute(scheduler=client)
    np.testing.assert_array_equal(got, frames_of(local_files[kind]))
    # a reduction and a slice, as users write them
    expected = frames_of(local_files[kind])
    means = arr.mean(axis=tuple(range(1, arr.ndim))).compute(scheduler=client)
    np.testing.assert_allclose(means, expected.reshape(len(expected), -1).mean(axis=1))
    np.testing.assert_array_equal(arr[5:40:3].compute(scheduler=client), expected[5:40:3])


def test_workers_read_only_frames(client, local_files):
    """On local files too: the workers' readers read frame bytes only, each once."""
    from dicomframes.integrations.dask import io_stats, reset_io_stats

    path = local_files["big_frames"]
    client.run(reset_io_stats)
    arr = dicomframes.to_dask(path, frames_per_chunk=25)
    arr.sum().compute(scheduler=client)
    per_worker = client.run(io_stats)
    total = sum(s["bytes"] for s in per_worker.values())
    with dicomframes.open(path) as reader:
        pixel_bytes = sum(reader.index.span(i).length for i in range(len(reader)))
    assert total == pixel_bytes
    assert sum(s["requests"] for s in per_worker.values()) <= 2 * arr.numblocks[0]


# -- real servers --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["bot.dcm", "eot.dcm", "walked.dcm", "walked_fragments.dcm"])
def test_cluster_over_http(client, nginx, remote_dir, name):
    path = remote_dir / name
    size = os.path.getsize(path)
    url = f"{nginx.url}/{name}"
    mark = nginx.mark()
    arr = dicomframes.to_dask(url, frames_per_chunk=64)
    opened = nginx.since(mark)  # the client: the header (and, without an offset table, the item walk)
    header_requests = [r for r in opened if starts_at_zero(r)]
    assert len(header_requests) == 1

    mark = nginx.mark()
    got = arr.compute(scheduler=client)
    computed = nginx.since(mark)
    np.testing.assert_array_equal(got, frames_of(path))

    # The workers never read the header again: no request at the start of the file...
    assert not [r for r in computed if starts_at_zero(r)]
    # ...they make exactly the planned frame requests (as an in-process copy of the reader would)...
    (reader,) = graph_readers(arr)
    mark = nginx.mark()
    model = model_requests(reader, 64)
    assert len(nginx.since(mark)) == model["requests"]
    assert len(computed) == model["requests"]
    assert all(r.status == 206 and r.method == "GET" for r in computed)  # ranged reads only, no HEAD
    # ...and move the file about once.
    moved = sum(r.bytes for r in computed)
    assert moved <= 1.1 * size, (moved, size)
    if "walked" not in name:  # with an offset table, opening costs the first read only
        assert moved + sum(r.bytes for r in opened) <= 1.1 * size


def test_cluster_over_s3(client, s3, remote_dir):
    name = "eot.dcm"
    size = os.path.getsize(remote_dir / name)
    log = s3.proxy
    mark = log.mark()
    arr = dicomframes.to_dask(s3.url(name), frames_per_chunk=100, **s3.options)
    opened = log.since(mark)
    assert len([r for r in opened if starts_at_zero(r)]) == 1
    mark = log.mark()
    got = arr.compute(scheduler=client)
    computed = log.since(mark)
    np.testing.assert_array_equal(got, frames_of(remote_dir / name))
    assert not [r for r in computed if starts_at_zero(r)]
    assert all(r.method == "GET" and r.range for r in computed)  # ranged reads only: no listing, no HEAD
    (reader,) = graph_readers(arr)
    assert len(computed) == model_requests(reader, 100)["requests"]
    assert sum(r.bytes for r in computed) + sum(r.bytes for r in opened) <= 1.1 * size


def test_many_files_over_http_join(client, nginx, remote_dir):
    names = ["bot.dcm", "eot.dcm", "walked.dcm"]
    arr = dicomframes.to_dask([f"{nginx.url}/{n}" for n in names], frames_per_chunk=300)
    assert arr.shape == (3000, 128, 128)
    assert arr.chunks[0] == (300, 300, 300, 100) * 3  # no chunk spans two files
    assert len(graph_readers(arr)) == 3
    picks = [0, 999, 1000, 1500, 1999, 2000, 2999]
    got = arr[picks].compute(scheduler=client)
    for k, p in enumerate(picks):
        with dicomframes.open(remote_dir / names[p // 1000]) as reader:
            np.testing.assert_array_equal(got[k], reader.frame(p % 1000))


# -- many files, mismatches ---------------------------------------------------------------------

def test_many_files_join_along_frames(client, local_files):
    paths = [local_files["native"], local_files["native2"], local_files["native"]]
    arr = dicomframes.to_dask(paths, frames_per_chunk=40)
    assert arr.shape == (237, 32, 40)
    assert arr.chunks[0] == (40, 40, 20, 37, 40, 40, 20)
    assert len(graph_readers(arr)) == 3
    expected = np.concatenate([frames_of(p) for p in paths])
    np.testing.assert_array_equal(arr.compute(scheduler=client), expected)
    np.testing.assert_array_equal(arr[95:145].compute(scheduler="threads"), expected[95:145])


@pytest.mark.parametrize("odd", ["wide", "deep", "rgb"])
def test_mismatch_names_the_first_file_that_differs(local_files, odd):
    paths = [local_files["native"], local_files["native2"], local_files[odd], local_files["bot"]]
    with pytest.raises(FrameMismatchError) as caught:
        dicomframes.to_dask(paths)
    err = caught.value
    assert isinstance(err, DicomFramesError) and isinstance(err, ValueError)
    assert err.path == str(local_files[odd])
    assert str(local_files[odd]) in str(err) and str(local_files["native"]) in str(err)


def test_a_missing_file_in_a_list_is_a_clear_error(local_files, tmp_path):
    with pytest.raises(DicomFramesError, match="nothere"):
        dicomframes.to_dask([local_files["native"], tmp_path / "nothere.dcm"])


# -- from an open reader, pickling -----------------------------------------------------------------

def test_reader_to_dask(client, local_files, nginx, remote_dir):
    expected = frames_of(local_files["walked"])
    with dicomframes.open(local_files["walked"]) as reader:
        arr = reader.to_dask(frames_per_chunk=50)
        assert arr.chunks[0] == (50, 50, 30)
    # the array holds its own copy: closing the reader does not break it
    np.testing.assert_array_equal(arr.compute(scheduler="threads"), expected)
    np.testing.assert_array_equal(arr.compute(scheduler=client), expected)
    with dicomframes.open(local_files["walked"]) as reader:
        reader.close()
        with pytest.raises(ValueError, match="closed"):
            reader.to_dask()
    # the same name for the same file and chunks: Dask can share results
    with dicomframes.open(local_files["walked"]) as reader:
        assert reader.to_dask(frames_per_chunk=50).name == arr.name
        assert reader.to_dask(frames_per_chunk=51).name != arr.name
    assert dicomframes.to_dask(local_files["walked"], frames_per_chunk=50).name == arr.name

    # from a remote reader: the same request accounting as to_dask(url)
    with dicomframes.open(f"{nginx.url}/eot.dcm") as reader:
        remote = reader.to_dask(frames_per_chunk=128)
    mark = nginx.mark()
    got = remote.compute(scheduler=client)
    computed = nginx.since(mark)
    np.testing.assert_array_equal(got, frames_of(remote_dir / "eot.dcm"))
    assert not [r for r in computed if starts_at_zero(r)]
    assert sum(r.bytes for r in computed) <= 1.1 * os.path.getsize(remote_dir / "eot.dcm")


def test_arrays_and_readers_pickle_round_trip(local_files, nginx):
    for src in (local_files["walked"], f"{nginx.url}/bot.dcm"):
        arr = dicomframes.to_dask(src, frames_per_chunk=64)
        blob = pickle.dumps(arr)
        assert len(blob) < 40_000
        mark = nginx.mark()
        again = pickle.loads(blob)
        assert nginx.since(mark) == []  # unpickling reads nothing
        assert again.name == arr.name and again.chunks == arr.chunks
        np.testing.assert_array_equal(again[:70].compute(scheduler="threads"), arr[:70].compute(scheduler="threads"))
        (reader,) = graph_readers(arr)
        clone = pickle.loads(pickle.dumps(reader))
        assert clone.stats["requests"] == 0
        np.testing.assert_array_equal(clone.frame(len(clone) - 1), reader.frame(len(reader) - 1))
        clone.close()


# -- whole slides ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pyramids(tmp_path_factory):
    root = tmp_path_factory.mktemp("dask-wsi")
    return {
        "full": wsigen.write_pyramid(root / "full", width=1000, height=700, levels=2, tile_size=(128, 96),
                                     codec="j2k", seed=5, label=False, overview=True),
        "sparse": wsigen.write_pyramid(root / "sparse", width=1000, height=700, levels=2, tile_size=(128, 96),
                                       codec="j2k", organizations="TILED_SPARSE", absent_fraction=0.25,
                                       shuffle=True, seed=6, label=True, overview=False),
    }


def _random_windows(width, height, rng, count):
    out = [(0, height, 0, width), (height - 1, height, width - 1, width), (0, 1, 0, 1), (95, 97, 127, 129)]
    while len(out) < count:
        y0, y1 = sorted(rng.integers(0, height + 1, 2).tolist())
        x0, x1 = sorted(rng.integers(0, width + 1, 2).tolist())
        if y1 > y0 and x1 > x0:
            out.append((y0, y1, x0, x1))
    return out


@pytest.mark.parametrize("which", ["full", "sparse"])
def test_slide_to_dask_equals_read_region(pyramids, which):
    pyr = pyramids[which]
    rng = np.random.default_rng(7)
    with dicomframes.open_slide([str(p) for p in pyr.paths]) as slide:
        for k, level in enumerate(slide.levels):
            image = slide_to_dask(slide, level=k)
            assert image.shape == (level.height, level.width, 3) and image.dtype == np.uint8
            # one chunk per tile, the last row and column clipped at the edge
            tw, th = level.tile_size
            assert image.chunks[0] == (th,) * (level.height // th) + ((level.height % th,) if level.height % th else ())
            assert image.chunks[1] == (tw,) * (level.width // tw) + ((level.width % tw,) if level.width % tw else ())
            whole = image.compute(scheduler="threads")
            assert np.array_equal(whole, level.read_region((0, 0), level.size))
            if which == "full":  # lossless: the image written
                assert np.array_equal(whole, pyr.levels[k].image)
            else:  # absent tiles are the background read_region uses (white)
                for r, c, _, _ in pyr.levels[k].absent:
                    assert (whole[r : r + th, c : c + tw] == 255).all()
            for y0, y1, x0, x1 in _random_windows(level.width, level.height, rng, 12):
                got = image[y0:y1, x0:x1].compute(scheduler="threads")
                assert np.array_equal(got, level.read_region((x0, y0), (x1 - x0, y1 - y0))), (k, y0, y1, x0, x1)


def test_slide_to_dask_options(pyramids):
    pyr = pyramids["sparse"]
    with dicomframes.open_slide([str(p) for p in pyr.paths]) as slide:
        level = slide.levels[0]
        plain = slide_to_dask(level).compute(scheduler="threads")
        blocks = slide_to_dask(slide, 0, tiles_per_chunk=(2, 3))
        assert blocks.chunks[0] == (192, 192, 192, 124) and blocks.chunks[1] == (384, 384, 232)
        assert np.array_equal(blocks.compute(scheduler="threads"), plain)
        squares = slide_to_dask(slide, 0, tiles_per_chunk=4)
        assert squares.chunks[:2] == ((384, 316), (512, 488))
        black = slide_to_dask(slide, background=0).compute(scheduler="threads")
        assert np.array_equal(black, level.read_region((0, 0), level.size, background=0))
        assert not np.array_equal(black, plain)
        # one tiled instance, from its reader
        with dicomframes.open(pyr.levels[1].paths[0]) as reader:
            img = slide_to_dask(reader)
            assert np.array_equal(img.compute(scheduler="threads"), reader.read_region((0, 0), (500, 350)))
        with pytest.raises(DicomFramesError, match="focal plane"):
            slide_to_dask(slide, focal_plane=3)
        with pytest.raises(ValueError, match="tiles_per_chunk"):
            slide_to_dask(slide, tiles_per_chunk=0)
        graph = dict(blocks.__dask_graph__())
        assert len(pickle.dumps(blocks.__dask_graph__())) < 60_000
        assert sum(1 for v in graph.values() if not isinstance(v, tuple)) == 1  # the level, once


def test_slide_on_cluster_fetches_only_touched_tiles(client, pyramids, nginx, remote_dir):
    import shutil

    pyr = pyramids["sparse"]
    served = remote_dir / "dask-wsi-sparse"
    if not served.exists():
        shutil.copytree(pyr.levels[0].paths[0].parent, served)
    urls = [f"{nginx.url}/dask-wsi-sparse/{p.name}" for p in pyr.paths]
    with dicomframes.open_slide(urls) as slide:
        level = slide.levels[0]
        image = slide_to_dask(slide, 0)
        local = dicomframes.open(pyr.levels[0].paths[0])
        geometry = local.tile_geometry
        y0, y1, x0, x1 = 150, 420, 200, 530
        frames = geometry.tiles_in(x0, y0, x1 - x0, y1 - y0)[0].tolist()
        want_bytes = sum(local.index.span(f).length for f in frames)
        mark = nginx.mark()
        got = image[y0:y1, x0:x1].compute(scheduler=client)
        computed = nginx.since(mark)
        assert np.array_equal(got, local.read_region((x0, y0), (x1 - x0, y1 - y0)))
        assert np.array_equal(got, level.read_region((x0, y0), (x1 - x0, y1 - y0)))
        # one request per tile present in the window, exactly its bytes; no header re-read
        assert not [r for r in computed if starts_at_zero(r)]
        assert len(computed) == len(frames)
        assert sum(r.bytes for r in computed) == want_bytes
        # the whole level on the cluster equals the local stitching
        whole = image.compute(scheduler=client)
        assert np.array_equal(whole, local.read_region((0, 0), level.size))
        local.close()


def test_slide_to_dask_method_equals_read_region(pyramids):
    """`slide.to_dask(level)` is the documented entry point for whole slides."""
    pyr = pyramids["sparse"]
    with dicomframes.open_slide([str(p) for p in pyr.paths]) as slide:
        image = slide.to_dask(level=0)
        level = slide.levels[0]
        h, w = image.shape[:2]
        y0, y1, x0, x1 = h // 4, h // 2, w // 3, w // 3 + 50
        got = image[y0:y1, x0:x1].compute(scheduler="threads")
        np.testing.assert_array_equal(got, level.read_region((x0, y0), (x1 - x0, y1 - y0)))
