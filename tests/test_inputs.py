"""One classification of inputs for every entry point that takes one file or many.

`FrameDataset`, `to_dask` and `open_slide` are each given the same kinds of
input (a path, a Path, a file:// URL, bytes, an open binary file, a reader, an
(fs, path) pair, and collections of them) and must agree on what is one file
and what is many (`dicomframes.io.resolve.inputs`).
"""

from __future__ import annotations

import io
from pathlib import Path

import fsspec
import numpy as np
import pytest

import dicomframes
from dicomframes import FrameDataset
from dicomframes.io.local import BytesSource
from dicomframes.io.resolve import inputs, is_fs_pair, is_single, is_url, local_path
from tests.helpers import wsigen


@pytest.fixture(scope="module")
def levels(tmp_path_factory) -> list[Path]:
    """Two levels of one series (tiles of one shape, so that their frames join)."""
    pyr = wsigen.write_pyramid(tmp_path_factory.mktemp("inputs"), width=300, height=200, levels=2,
                               codec="native", label=False, overview=False)
    return [level.paths[0] for level in pyr.levels]


def frame_counts(paths) -> list[int]:
    out = []
    for p in paths:
        with dicomframes.open(p) as reader:
            out.append(len(reader))
    return out


# Each makes one input naming `path` (fresh each time: readers and files are used up).
ONE = {
    "str": lambda p: str(p),
    "Path": lambda p: Path(p),
    "file-url": lambda p: f"file://{p}",
    "bytes": lambda p: p.read_bytes(),
    "bytearray": lambda p: bytearray(p.read_bytes()),
    "memoryview": lambda p: memoryview(p.read_bytes()),
    "binary-file": lambda p: open(p, "rb"),
    "bytes-io": lambda p: io.BytesIO(p.read_bytes()),
    "fs-pair": lambda p: (fsspec.filesystem("file"), str(p)),
    "reader": lambda p: dicomframes.open(p),
}


def _list_of(make):
    return lambda paths: [make(p) for p in paths]


MANY = {"list-of-" + name: _list_of(make) for name, make in ONE.items()}
MANY.update({
    "tuple-of-paths": lambda ps: tuple(str(p) for p in ps),
    "tuple-of-Paths": lambda ps: tuple(ps),
    "tuple-of-readers": lambda ps: tuple(dicomframes.open(p) for p in ps),
    "tuple-of-files": lambda ps: tuple(open(p, "rb") for p in ps),
    "generator": lambda ps: (str(p) for p in ps),
})


def _opened(src) -> list:
    """The readers and files in `src` (which the test opened and must close)."""
    items = src if isinstance(src, (list, tuple)) and not is_fs_pair(src) else [src]
    return [i for i in items if isinstance(i, (dicomframes.Reader, io.IOBase))]


def _close(opened) -> None:
    for thing in opened:
        thing.close()


# -- the classification itself -------------------------------------------------------------------

def test_classification_of_each_kind(levels):
    path = levels[0]
    for name, make in ONE.items():
        src = make(path)
        opened = _opened(src)
        try:
            assert is_single(src), name
            found = inputs(src)
            assert len(found) == 1 and found[0] is src, name
        finally:
            _close(opened)
    for name, make in MANY.items():
        src = make(levels)
        opened = _opened(src)
        try:
            assert not is_single(src), name
            assert len(inputs(src)) == 2, name
        finally:
            _close(opened)
    fs = fsspec.filesystem("file")
    assert is_fs_pair((fs, "a.dcm")) and is_fs_pair((fs, Path("a.dcm")))
    assert not is_fs_pair(("a.dcm", "b.dcm")) and not is_fs_pair((Path("a"), Path("b")))
    assert not is_fs_pair((b"DICM", "a.dcm")) and not is_fs_pair((BytesSource(b""), "a.dcm"))
    assert not is_fs_pair((io.BytesIO(), io.BytesIO())) and not is_fs_pair((fs, fs))
    assert inputs(5) == [5]  # not a collection: opening it says what is wrong
    assert inputs([]) == []
    assert is_url("s3://bucket/a.dcm") and is_url("https://host/a.dcm")
    assert not is_url("file:///tmp/a.dcm") and not is_url("/tmp/a.dcm") and not is_url(b"s3://x")
    assert local_path("file:///tmp/a.dcm") == "/tmp/a.dcm" and local_path("/tmp/a.dcm") == "/tmp/a.dcm"


# -- FrameDataset ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", list(ONE))
def test_frame_dataset_of_one(levels, kind):
    src = ONE[kind](levels[0])
    opened = _opened(src)
    want = frame_counts(levels[:1])
    try:
        with FrameDataset(src) as ds:
            assert ds.frame_counts == want
            with dicomframes.open(levels[0]) as reader:
                np.testing.assert_array_equal(ds[len(ds) - 1], reader.frame(len(reader) - 1))
    finally:
        _close(opened)


@pytest.mark.parametrize("kind", list(MANY))
def test_frame_dataset_of_many(levels, kind):
    src = MANY[kind](levels)
    opened = _opened(src)
    try:
        with FrameDataset(src) as ds:
            assert ds.frame_counts == frame_counts(levels)
    finally:
        _close(opened)


# -- to_dask -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", list(ONE))
def test_to_dask_of_one(levels, kind):
    pytest.importorskip("dask.array")
    src = ONE[kind](levels[0])
    opened = _opened(src)
    try:
        array = dicomframes.to_dask(src, frames_per_chunk=4)
        n = frame_counts(levels[:1])[0]
        assert array.shape[0] == n
        with dicomframes.open(levels[0]) as reader:
            np.testing.assert_array_equal(array[n - 1].compute(scheduler="sync"), reader.frame(n - 1))
    finally:
        _close(opened)


@pytest.mark.parametrize("kind", list(MANY))
def test_to_dask_of_many(levels, kind):
    pytest.importorskip("dask.array")
    src = MANY[kind](levels)
    opened = _opened(src)
    try:
        array = dicomframes.to_dask(src, frames_per_chunk=4)
        counts = frame_counts(levels)
        assert array.shape[0] == sum(counts)
        with dicomframes.open(levels[1]) as reader:
            np.testing.assert_array_equal(array[counts[0]].compute(scheduler="sync"), reader.frame(0))
    finally:
        _close(opened)


# -- open_slide --------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", [k for k in ONE if k != "reader"])
def test_open_slide_of_one(levels, kind):
    src = ONE[kind](levels[0])
    opened = _opened(src)
    try:
        with dicomframes.open_slide(src) as slide:
            assert [lv.size for lv in slide.levels] == [(300, 200)]
    finally:
        _close(opened)


@pytest.mark.parametrize("kind", [k for k in MANY if "reader" not in k])
def test_open_slide_of_many(levels, kind):
    src = MANY[kind](levels)
    opened = _opened(src)
    try:
        with dicomframes.open_slide(src) as slide:
            assert [lv.size for lv in slide.levels] == [(300, 200), (150, 100)]
    finally:
        _close(opened)


@pytest.mark.parametrize("kind", ["reader", "list-of-reader", "tuple-of-readers"])
def test_open_slide_opens_its_instances_itself(levels, kind):
    """A reader is one input to open_slide too, and one it cannot open (it is not iterated)."""
    src = (ONE if kind == "reader" else MANY)[kind](levels[0] if kind == "reader" else levels)
    opened = _opened(src)
    try:
        with pytest.raises(TypeError, match="cannot open Reader"):
            dicomframes.open_slide(src)
    finally:
        _close(opened)
