"""The persisted frame index (issue 15): index files, the index cache, `dicomframes index`.

A reader keeps what it learnt (the parsed header, where its frames lie, whole-slide
tile positions) in a versioned ``.npz`` file; a fresh reader given it (``index=``)
or finding it in the cache (on by default for URLs) opens with the identity read
only (the header's first block, kept for the header) and reads any frame with one
more request. Request counts come from the servers' own logs (nginx, the proxy in
front of moto). Damaged, truncated, foreign or stale index files never give wrong
frames: an `IndexFileError` for a given file, a rebuilt index for a cached one.
"""

from __future__ import annotations

import io
import json
import logging
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dicomframes
from dicomframes.errors import IndexFileError
from dicomframes.frames.index_cache import SUFFIX, IndexCache, entry_name
from dicomframes.samples import write_sample
from tests.helpers.wsigen import smooth_image, write_level
from tests.test_remote import Remote

FRAMES = 40
LAYOUTS = {
    "walked": dict(syntax="rle", offset_table="none"),
    "walked-fragments": dict(syntax="jpegls", offset_table="none", fragments_per_frame=2),
    "bot": dict(syntax="rle", offset_table="bot"),
    "eot": dict(syntax="rle", offset_table="eot"),
    "native": dict(syntax="native"),
}
KIND = {"walked": "walked", "walked-fragments": "walked", "bot": "BOT", "eot": "EOT", "native": "native"}


def _sample(tmp_path: Path, layout: str, seed: int = 0, name: str | None = None) -> str:
    return write_sample(tmp_path / (name or f"{layout}.dcm"), frames=FRAMES, rows=48, columns=40, seed=seed, **LAYOUTS[layout])


def _frames(path, **options) -> list[np.ndarray]:
    with dicomframes.open(path, **options) as reader:
        return list(reader)


def _kept(path, **options) -> bytes:
    with dicomframes.open(path, **options) as reader:
        reader.locate_all()
        return reader.keep_index()


# -- index files ------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_an_index_file_gives_the_same_frames_without_reading_the_header(tmp_path, layout):
    path = _sample(tmp_path, layout)
    data = _kept(path)
    with dicomframes.open(path, index=data) as reader:
        assert reader.index_origin == "file" and reader.index.kind == KIND[layout]
        assert len(reader) == FRAMES
        last = reader.frame(FRAMES - 1)
        # The identity block (which the header would have needed too) and the frame.
        assert reader.stats["requests"] == 2
        assert all(np.array_equal(a, b) for a, b in zip([*reader][:-1] + [last], _frames(path)))
        with dicomframes.open(path) as built:
            assert reader.info.as_dict() == built.info.as_dict()


def test_index_files_are_compact_arrays_and_travel_as_paths_and_urls(tmp_path, nginx, remote_dir):
    path = _sample(tmp_path, "walked")
    data = _kept(path)
    assert len(data) < 16 * 1024  # 40 frames: arrays, not an object per fragment
    archive = np.load(io.BytesIO(data), allow_pickle=False)
    meta = json.loads(bytes(archive["meta"]))
    assert meta["format"] == "dicomframes.frame-index" and meta["version"] == 1 and meta["kind"] == "walked"
    (tmp_path / "walked.dfindex").write_bytes(data)
    assert _frames(path, index=tmp_path / "walked.dfindex")[-1].shape == (48, 40)
    # Published beside the file on a web server, used from there for the served copy.
    (remote_dir / "published.dcm").write_bytes(Path(path).read_bytes())
    (remote_dir / "published.dfindex").write_bytes(data)
    with dicomframes.open(f"{nginx.url}/published.dcm", index=f"{nginx.url}/published.dfindex") as reader:
        assert reader.index_origin == "file"
        assert np.array_equal(reader.frame(FRAMES - 1), _frames(path)[-1])


def test_an_index_made_for_another_file_is_refused(tmp_path):
    a = _sample(tmp_path, "walked", seed=1, name="a.dcm")
    b = _sample(tmp_path, "walked", seed=2, name="b.dcm")
    with pytest.raises(IndexFileError, match="made for another object") as info:
        dicomframes.open(b, index=_kept(a))
    assert "b.dcm" in str(info.value) and info.value.hint


def _damaged(data: bytes) -> dict[str, bytes]:
    archive = np.load(io.BytesIO(data), allow_pickle=False)
    files = {k: archive[k] for k in archive.files}
    meta = json.loads(bytes(files["meta"]))

    def rebuilt(meta=meta, **arrays) -> bytes:
        out = io.BytesIO()
        merged = {**files, **arrays, "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
        np.savez(out, **merged)
        return out.getvalue()

    far = files["index._frag_offsets"].copy()
    far[3] = 1 << 40
    return {
        "truncated": data[: len(data) // 2],
        "not an archive": b"DICM" * 100,
        "empty": b"",
        "another version": rebuilt({**meta, "version": 99}),
        "another format": rebuilt({**meta, "format": "something else"}),
        "unknown kind": rebuilt({**meta, "kind": "magic"}),
        "an offset past the end": rebuilt(**{"index._frag_offsets": far}),
        "a negative length": rebuilt(**{"index._frag_lengths": -files["index._frag_lengths"]}),
        "fragments that do not add up": rebuilt(**{"index._frame_starts": files["index._frame_starts"][::-1].copy()}),
        "a float array": rebuilt(**{"index._frag_offsets": files["index._frag_offsets"].astype(float)}),
        "a header without values": rebuilt({**meta, "header": {**meta["header"], "values": None}}),
        "no identity": rebuilt({**meta, "identity": {}}),
    }


def test_damaged_index_files_are_clear_errors(tmp_path):
    path = _sample(tmp_path, "walked")
    for what, data in _damaged(_kept(path)).items():
        with pytest.raises(IndexFileError) as info:
            dicomframes.open(path, index=data)
        assert "walked.dcm" in str(info.value), what
    with pytest.raises(IndexFileError, match="cannot read the index file"):
        dicomframes.open(path, index=tmp_path / "missing.dfindex")


def test_damaged_cache_entries_are_dropped_and_the_index_rebuilt(tmp_path, caplog):
    path = _sample(tmp_path, "walked")
    expected = _frames(path)
    cache = IndexCache(tmp_path / "cache")
    with dicomframes.open(path, index_cache=cache) as reader:
        identity = reader.source.identity()
        url = reader.source.name
    for what, data in _damaged(_kept(path)).items():
        if what == "no identity":
            continue  # an entry is found by identity: one without never matches
        cache.store(url, identity, data)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="dicomframes"):
            got = _frames(path, index_cache=cache)
        assert all(np.array_equal(a, b) for a, b in zip(got, expected)), what
        assert "ignoring the cached frame index" in caplog.text, what


# -- the cache ---------------------------------------------------------------------------------------


def test_local_files_use_the_cache_only_when_asked(tmp_path):
    path = _sample(tmp_path, "walked")
    folder = Path(os.environ["DICOMFRAMES_CACHE"])
    _frames(path)
    assert not folder.exists() or not list(folder.iterdir())
    with dicomframes.open(path, index_cache=True) as reader:
        reader.frame(FRAMES - 1)
    (entry,) = folder.glob("*" + SUFFIX)
    inode = entry.stat().st_ino
    with dicomframes.open(path, index_cache=True) as reader:
        assert reader.index_origin == "cache"
        reader.frame(FRAMES - 1)
        assert reader.stats["requests"] == 2
    assert entry.stat().st_ino == inode  # nothing new learnt: the entry is not written again
    with pytest.raises(TypeError, match="index_cache"):
        dicomframes.open(path, index_cache=3)


def _other_of_the_same_size(path, out) -> str:
    """`path` with another instance UID (one digit) and other pixels (the last KiB): the same size."""
    data = bytearray(Path(path).read_bytes())
    at = data.index(b"2.25.") + 6
    data[at] = ord("1") if data[at] != ord("1") else ord("2")
    data[-1024:] = bytes(255 - b for b in data[-1024:])
    Path(out).write_bytes(bytes(data))
    return str(out)


def test_a_changed_file_is_never_served_from_a_stale_entry(tmp_path):
    path = tmp_path / "changing.dcm"
    write_sample(path, frames=FRAMES, rows=48, columns=40, syntax="native", seed=1)
    cache = IndexCache(tmp_path / "cache")
    before = _frames(path, index_cache=cache)
    with dicomframes.open(path, index_cache=cache) as reader:
        reader.frame(0)
        identity = reader.source.identity()
        cache.store(reader.source.name, identity, reader.keep_index())
    # The same size, other pixels and UIDs.
    size = path.stat().st_size
    _other_of_the_same_size(path, tmp_path / "other.dcm")
    os.replace(tmp_path / "other.dcm", path)
    assert path.stat().st_size == size
    with dicomframes.open(path, index_cache=cache) as reader:
        assert reader.index_origin == "built"
        after = list(reader)
    assert not all(np.array_equal(a, b) for a, b in zip(before, after))
    assert all(np.array_equal(a, b) for a, b in zip(after, _frames(path)))


def test_the_cache_is_bounded_and_drops_the_least_recently_used(tmp_path):
    cache = IndexCache(tmp_path / "bounded", max_bytes=2500)
    for k in range(5):
        cache.store(f"u{k}", {"head": str(k)}, bytes(1000))
        os.utime(cache._path(entry_name(f"u{k}", {"head": str(k)})), ns=(k * 10**9, k * 10**9))
    names = sorted(p.name for p in (tmp_path / "bounded").iterdir())
    assert len(names) == 2 and names == sorted([entry_name("u3", {"head": "3"}), entry_name("u4", {"head": "4"})])
    assert cache.load("u0", {"head": "0"}) is None and cache.load("u4", {"head": "4"}) == bytes(1000)


def _write_many(folder: str, payload: int) -> None:
    cache = IndexCache(folder)
    for _ in range(50):
        cache.store("same", {"head": "h"}, bytes([payload]) * 200_000)


def test_two_processes_writing_one_entry_leave_one_whole_entry(tmp_path):
    folder = str(tmp_path / "shared")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_many, args=(folder, k)) for k in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    data = IndexCache(folder).load("same", {"head": "h"})
    assert data in (bytes([1]) * 200_000, bytes([2]) * 200_000)
    assert sorted(os.listdir(folder)) == [entry_name("same", {"head": "h"})]  # no temporary files left


def test_a_cache_that_cannot_be_written_never_fails_a_read(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    path = _sample(tmp_path, "walked")
    with caplog.at_level(logging.WARNING, logger="dicomframes"):
        frames = _frames(path, index_cache=blocker / "below-a-file")
    assert len(frames) == FRAMES and "cannot write" in caplog.text


# -- remote: the default, request counts from the servers ---------------------------------------------


@pytest.fixture(params=["http", "s3"])
def remote(request) -> Remote:
    if request.param == "http":
        return Remote("http", nginx=request.getfixturevalue("nginx"))
    return Remote("s3", s3=request.getfixturevalue("s3"))


def test_a_fresh_reader_of_a_walked_url_uses_the_kept_walk(remote, remote_dir):
    name = "walked.dcm"
    with remote.open(name) as first:
        assert first.index_origin == "built"
        first.frame(999)  # walks the whole file
        walked_requests = first.stats["requests"]
    assert walked_requests > 3
    mark = remote.log.mark()
    with remote.open(name) as again:
        assert again.index_origin == "cache"
        again.frame(999)
        assert again.stats["requests"] == 2
        records = remote.log.since(mark, 2)
    assert len(records) == 2  # what the server saw: the identity block and the frame
    with dicomframes.open(remote_dir / name) as local:
        with remote.open(name) as third:
            assert np.array_equal(third.frame(500), local.frame(500))


def test_a_replaced_object_of_the_same_size_is_read_anew(remote, remote_dir, tmp_path):
    name = f"replaced-{remote.kind}.dcm"
    first = write_sample(tmp_path / "one.dcm", frames=FRAMES, rows=48, columns=40, syntax="native", seed=1)
    second = _other_of_the_same_size(first, tmp_path / "two.dcm")
    assert os.path.getsize(first) == os.path.getsize(second)

    def put(path):
        if remote.kind == "http":
            (remote_dir / name).write_bytes(Path(path).read_bytes())
        else:
            remote.s3.server.client().upload_file(str(path), remote.s3.bucket, name)

    put(first)
    with remote.open(name, index_cache=True) as reader:
        reader.frame(FRAMES - 1)
        # Native data is arithmetic: force an entry to exist, as `dicomframes index` would write one.
        IndexCache().store(reader.source.name, reader.source.identity(), reader.keep_index())
    with remote.open(name) as reader:
        assert reader.index_origin == "cache"
    put(second)
    with remote.open(name) as reader:
        assert reader.index_origin == "built"
        assert all(np.array_equal(a, b) for a, b in zip(reader, _frames(second)))


def test_a_fresh_process_opens_with_the_cache(nginx, remote_dir):
    url = f"{nginx.url}/walked.dcm"
    with dicomframes.open(url) as reader:
        reader.frame(999)
    code = (
        "import dicomframes, json\n"
        f"r = dicomframes.open({url!r}); r.frame(999)\n"
        "print(json.dumps([r.index_origin, r.stats['requests']]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=os.environ.copy())
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == ["cache", 2]


# -- whole-slide tile positions ------------------------------------------------------------------------


def test_sparse_tile_positions_are_kept(tmp_path):
    image = smooth_image(768, 512)
    level = write_level(tmp_path, "sparse", image, tile_size=(64, 64), codec="native", organization="TILED_SPARSE",
                        absent_fraction=0.2, shuffle=True, seed=3)
    path = level.paths[0]
    with dicomframes.open(path) as reader:
        region = reader.read_region((30, 40), (500, 300))
        data = reader.keep_index()
    with dicomframes.open(path, index=data) as reader:
        geometry = reader.tile_geometry
        assert geometry.kept_positions() is not None
        before = reader.stats["requests"]
        assert np.array_equal(reader.read_region((30, 40), (500, 300)), region)
        # The positions came from the index: only the tiles were read.
        assert reader.stats["requests"] - before <= len(geometry.tiles_in(30, 40, 500, 300)[0])
    archive = np.load(io.BytesIO(data), allow_pickle=False)
    assert {"extra.tile.rows", "extra.tile.columns"} <= set(archive.files)


def test_damaged_tile_positions_are_refused(tmp_path):
    image = smooth_image(256, 256)
    level = write_level(tmp_path, "sparse", image, tile_size=(64, 64), codec="native", organization="TILED_SPARSE")
    path = level.paths[0]
    with dicomframes.open(path) as reader:
        reader.tile_geometry.positions()
        data = reader.keep_index()
    archive = np.load(io.BytesIO(data), allow_pickle=False)
    files = {k: archive[k] for k in archive.files}
    files["extra.tile.focal"] = files["extra.tile.focal"] + 5
    out = io.BytesIO()
    np.savez(out, **files)
    with dicomframes.open(path, index=out.getvalue()) as reader:
        with pytest.raises(dicomframes.DicomFramesError, match="absent focal planes"):
            reader.read_region((0, 0), (10, 10))


# -- the command -------------------------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dicomframes", *args], capture_output=True, text=True, timeout=120)


def test_cli_index_writes_a_file_or_the_cache(tmp_path):
    path = _sample(tmp_path, "walked")
    out = tmp_path / "w.dfindex"
    done = _cli("index", path, "--out", str(out), "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["frames"] == FRAMES and result["index_kind"] == "walked" and out.stat().st_size == result["bytes"]
    assert np.array_equal(_frames(path, index=out)[-1], _frames(path)[-1])
    again = _cli("index", path, "--out", str(out))
    assert again.returncode == 1 and "exists" in again.stderr and "Traceback" not in again.stderr
    cached = _cli("index", path, "--cache", str(tmp_path / "c"))
    assert cached.returncode == 0, cached.stderr
    with dicomframes.open(path, index_cache=tmp_path / "c") as reader:
        assert reader.index_origin == "cache"
    bad = _cli("index", str(tmp_path / "missing.dcm"))
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


def test_a_slide_in_a_bucket_keeps_its_sparse_positions_for_the_next_open(nginx, remote_dir):
    folder = remote_dir / "kept-sparse"
    folder.mkdir(exist_ok=True)
    image = smooth_image(640, 384)
    level = write_level(folder, "level0", image, tile_size=(64, 64), codec="native", organization="TILED_SPARSE",
                        absent_fraction=0.1, shuffle=True, seed=5)
    url = f"{nginx.url}/kept-sparse/{level.paths[0].name}"
    with dicomframes.open_slide([url]) as slide:
        expected = slide.read_region((10, 20), 0, (300, 200))
        assert [r.index_origin for r in slide.levels[0].readers] == ["built"]
    with dicomframes.open_slide([url]) as slide:
        reader = slide.levels[0].readers[0]
        assert reader.index_origin == "cache" and reader._kept_positions
        assert np.array_equal(slide.read_region((10, 20), 0, (300, 200)), expected)
