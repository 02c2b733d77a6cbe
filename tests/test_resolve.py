"""The io layer's input resolution: what the user handed us -> a `Source`.

`source_for` for every kind of input (paths, ``file://`` URLs, bytes-like
objects, binary file objects, fsspec file objects, ``(filesystem, path)``
pairs, remote URLs), the refusals (storage options for local inputs,
unsupported types), and the predicates `is_single`, `is_url`, `is_fs_pair`.
Remote inputs go to the real nginx and moto S3 servers.
"""

from __future__ import annotations

import array
import io
import pathlib

import pytest

from dicomframes.errors import StorageError
from dicomframes.io.local import BytesSource, FileObjectSource, LocalFileSource
from dicomframes.io.remote import FsspecSource
from dicomframes.io.resolve import is_fs_pair, is_single, is_url, local_path, source_for
from dicomframes.io.source import Source

DATA = bytes(range(256)) * 16


@pytest.fixture
def path(tmp_path) -> pathlib.Path:
    p = tmp_path / "input.bin"
    p.write_bytes(DATA)
    return p


def reads_data(source: Source) -> bool:
    return source.read(0, len(DATA) + 10) == DATA and source.read(1000, 5) == DATA[1000:1005]


# -- local inputs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", [str, pathlib.Path], ids=["str", "Path"])
def test_a_path_is_a_local_file(path, form):
    source = source_for(form(path), {})
    assert type(source) is LocalFileSource and source.name == str(path)
    assert reads_data(source)
    source.close()


def test_a_file_url_is_a_local_file(path):
    source = source_for(f"file://{path}", {})
    assert type(source) is LocalFileSource and source.name == str(path)
    assert reads_data(source)
    source.close()


def test_a_missing_path_is_a_storage_error(tmp_path):
    with pytest.raises(StorageError) as info:
        source_for(str(tmp_path / "nope.dcm"), {})
    assert info.value.path == str(tmp_path / "nope.dcm")


@pytest.mark.parametrize("form", [bytes, bytearray, memoryview], ids=["bytes", "bytearray", "memoryview"])
def test_bytes_like_are_bytes_in_memory(form):
    source = source_for(form(DATA), {})
    assert type(source) is BytesSource and source.size == len(DATA)
    assert reads_data(source)


def test_a_memoryview_of_wider_items_is_read_as_bytes():
    words = array.array("H", [0x0102, 0x0304])
    source = source_for(memoryview(words), {})
    assert source.size == 4 and source.read(0, 4) == words.tobytes()


def test_a_binary_file_object_is_a_file_object_source(path):
    for fileobj in (io.BytesIO(DATA), open(path, "rb")):
        with fileobj:
            source = source_for(fileobj, {})
            assert type(source) is FileObjectSource and source.fileobj is fileobj
            assert reads_data(source)


def test_a_source_is_taken_as_it_is():
    source = BytesSource(DATA)
    assert source_for(source, {}) is source


# -- fsspec inputs -------------------------------------------------------------------------------------------


def test_an_fsspec_file_object_is_read_through_its_filesystem(path):
    import fsspec

    fs = fsspec.filesystem("file")
    with fs.open(str(path), "rb") as f:
        source = source_for(f, {})
        assert type(source) is FsspecSource and source.fs is fs
        assert source.name == f"file://{path}"
        assert reads_data(source)


def test_an_fsspec_memory_file_object(path):
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/resolve/input.bin", DATA)
    try:
        with fs.open("/resolve/input.bin", "rb") as f:
            source = source_for(f, {})
            assert type(source) is FsspecSource and source.name == "memory:///resolve/input.bin"
            assert reads_data(source)
    finally:
        fs.rm("/resolve/input.bin")


def test_an_http_file_object_is_read_by_ranges_not_through_the_file(nginx, remote_dir):
    import fsspec

    url = f"{nginx.url}/native.dcm"
    fs = fsspec.filesystem("http")
    with fs.open(url, "rb") as f:
        source = source_for(f, {})
        assert type(source) is FsspecSource and source.fs is fs
        mark = nginx.mark()
        assert source.read(128, 4) == b"DICM"
        (record,) = nginx.since(mark, at_least=1)
        assert record.range == "bytes=128-131" and record.bytes == 4  # no read-ahead


def test_an_s3_file_object(s3, remote_dir):
    import s3fs

    fs = s3fs.S3FileSystem(**s3.options)
    with fs.open(f"{s3.bucket}/native.dcm", "rb") as f:
        source = source_for(f, {})
        assert type(source) is FsspecSource
        assert source.name == s3.url("native.dcm")
        assert source.read(0, 200) == (remote_dir / "native.dcm").read_bytes()[:200]


def test_a_filesystem_and_path_pair(path):
    import fsspec

    fs = fsspec.filesystem("file")
    source = source_for((fs, str(path)), {})
    assert type(source) is FsspecSource and source.fs is fs and source.name == f"file://{path}"
    assert reads_data(source)


def test_a_pair_refuses_storage_options(path):
    import fsspec

    with pytest.raises(TypeError) as info:
        source_for((fsspec.filesystem("file"), str(path)), {"anon": True})
    assert "anon" in str(info.value)


def test_an_http_url(nginx, remote_dir):
    url = f"{nginx.url}/native.dcm"
    source = source_for(url, {})
    assert type(source) is FsspecSource and source.name == url
    assert source.read(128, 4) == b"DICM"


def test_an_s3_url_with_storage_options(s3, remote_dir):
    source = source_for(s3.url("native.dcm"), s3.options)
    assert type(source) is FsspecSource and source.name == s3.url("native.dcm")
    assert source.storage_options == s3.options
    assert source.read(0, 200) == (remote_dir / "native.dcm").read_bytes()[:200]


# -- refusals --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["str", "Path", "file URL", "bytes", "bytearray", "memoryview", "BytesIO", "Source"])
def test_storage_options_are_refused_for_local_inputs(path, kind):
    src = {
        "str": str(path), "Path": path, "file URL": f"file://{path}", "bytes": DATA,
        "bytearray": bytearray(DATA), "memoryview": memoryview(DATA), "BytesIO": io.BytesIO(DATA),
        "Source": BytesSource(DATA),
    }[kind]
    with pytest.raises(TypeError) as info:
        source_for(src, {"anon": True, "key": "k"})
    assert "unexpected options for a local file: anon, key" in str(info.value)


@pytest.mark.parametrize("src", [None, 42, 3.5, ["a.dcm"], {"path": "a.dcm"}, ("a.dcm", "b.dcm"), object(), iter([b"x"])],
                         ids=["None", "int", "float", "list", "dict", "pair of paths", "object", "iterator"])
def test_unsupported_types_are_type_errors(src):
    with pytest.raises(TypeError) as info:
        source_for(src, {})
    assert f"cannot open {type(src).__name__}" in str(info.value)


@pytest.mark.parametrize("src", [(42, "x.dcm"), (object(), "x.dcm")], ids=["int", "object"])
def test_a_pair_whose_first_item_is_no_filesystem_is_a_type_error(src):
    with pytest.raises(TypeError):
        source_for(src, {})


# -- the predicates ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("src, expected", [
    ("s3://bucket/key.dcm", True), ("https://host/a.dcm", True), ("gs://b/k", True),
    ("file:///tmp/a.dcm", False), ("/tmp/a.dcm", False), ("a.dcm", False),
    (pathlib.Path("/tmp/a.dcm"), False), (b"s3://bucket/key", False), (None, False), (42, False),
])
def test_is_url(src, expected):
    assert is_url(src) is expected


def test_local_path():
    assert local_path("file:///tmp/a.dcm") == "/tmp/a.dcm"
    assert local_path("/tmp/a.dcm") == "/tmp/a.dcm"
    assert local_path("s3://b/k") == "s3://b/k"


def test_is_fs_pair():
    import fsspec

    fs = fsspec.filesystem("memory")
    assert is_fs_pair((fs, "/a.dcm"))
    assert not is_fs_pair(("a.dcm", "b.dcm"))
    assert not is_fs_pair((pathlib.Path("a.dcm"), "b.dcm"))
    assert not is_fs_pair((b"a", "b"))
    assert not is_fs_pair([fs, "/a.dcm"])  # a list is a collection
    assert not is_fs_pair((fs, "/a.dcm", "/b.dcm"))
    assert not is_fs_pair(fs)


def test_is_single(path):
    import fsspec

    fs = fsspec.filesystem("memory")
    singles = [str(path), path, "s3://b/k", b"\x00", bytearray(b"\x00"), memoryview(b"\x00"),
               io.BytesIO(b""), BytesSource(b""), (fs, "/a.dcm")]
    for src in singles:
        assert is_single(src), src
    with open(path, "rb") as f:
        assert is_single(f)
    collections = [["a.dcm", "b.dcm"], ("a.dcm", "b.dcm"), ("a.dcm", "b.dcm", "c.dcm"), iter(["a.dcm"]), {"a.dcm"}, []]
    for src in collections:
        assert not is_single(src), src


def test_is_single_takes_a_reader(path):
    import dicomframes
    from dicomframes.samples import write_sample

    write_sample(path, frames=2, rows=8, columns=8, syntax="native")
    with dicomframes.open(path) as reader:
        assert is_single(reader)
