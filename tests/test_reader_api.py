"""The Reader API's edges: frame numbers out of range, closed readers, indices
checked before any read, slices and stacks, ``np.asarray(reader)`` and its size
limit, and file objects that cannot seek."""

from __future__ import annotations

import io
import os
import pickle
import socket

import numpy as np
import pytest

import dicomframes
from dicomframes import ArrayTooLargeError, ClosedReaderError, DicomFramesError, FrameNumberError, Reader, StorageError
from dicomframes.samples import sample_frame, write_sample

N = 100
KINDS = [("native", "bot"), ("rle", "bot"), ("rle", "eot"), ("rle", "none")]


@pytest.fixture(scope="module", params=KINDS, ids=[f"{s}-{t}" for s, t in KINDS])
def hundred(request, tmp_path_factory) -> str:
    """A 100-frame file of 64x64 frames (4 KiB each: more than the header read brings)."""
    syntax, table = request.param
    path = tmp_path_factory.mktemp("reader_api") / f"{syntax}-{table}.dcm"
    return write_sample(path, frames=N, rows=64, columns=64, syntax=syntax, offset_table=table, seed=3)


@pytest.fixture(scope="module")
def native(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("reader_api") / "native.dcm"
    return write_sample(path, frames=N, rows=64, columns=64, syntax="native", seed=3)


def expected(i: int, **kw) -> np.ndarray:
    return sample_frame(i, kw.get("rows", 64), kw.get("columns", 64), kw.get("samples_per_pixel", 1), 8, 3)


# -- the error classes --------------------------------------------------------------------


@pytest.mark.parametrize("cls,builtin", [(FrameNumberError, IndexError), (ClosedReaderError, ValueError)])
def test_errors_are_both_kinds_and_exported(cls, builtin):
    assert issubclass(cls, DicomFramesError) and issubclass(cls, builtin)
    assert cls.__name__ in dicomframes.__all__ and getattr(dicomframes, cls.__name__) is cls
    err = cls("frame index 7 out of range for 3 frames", path="a.dcm", hint="h")
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is cls and str(copy) == str(err) == "a.dcm: frame index 7 out of range for 3 frames (h)"
    assert issubclass(ArrayTooLargeError, DicomFramesError) and "ArrayTooLargeError" in dicomframes.__all__


def test_out_of_range_frame_numbers(native):
    with dicomframes.open(native) as reader:
        for bad in (N, -N - 1, 10**12):
            for call in (reader.frame, reader.encoded_frame, reader.__getitem__):
                with pytest.raises(FrameNumberError) as info:
                    call(bad)
                assert isinstance(info.value, IndexError)
                assert str(info.value) == f"{native}: frame index {bad} out of range for {N} frames"
        with pytest.raises(FrameNumberError, match=f"frame index {N} out of range for {N} frames"):
            reader.index.span(N)  # the index raises it too
        with pytest.raises(TypeError, match="integers, not float"):
            reader.frame(1.0)


def test_closed_reader(native):
    reader = dicomframes.open(native)
    reader.close()
    calls = [
        lambda: reader.frame(0), lambda: reader.encoded_frame(0), lambda: next(reader.iter_frames()),
        lambda: reader[0:2], lambda: reader[[0]], lambda: np.asarray(reader), lambda: pickle.dumps(reader),
        reader.check_open,
    ]
    for call in calls:
        with pytest.raises(ClosedReaderError, match="closed reader") as info:
            call()
        assert isinstance(info.value, ValueError) and info.value.path == native


# -- indices checked before any read ------------------------------------------------------------


def test_readme_example_fails_before_any_request(hundred):
    with dicomframes.open(hundred) as reader:
        before = reader.stats["requests"]
        with pytest.raises(FrameNumberError) as info:
            list(reader.iter_frames(range(0, 1000, 10)))
        assert str(info.value) == f"{hundred}: frame index 100 out of range for 100 frames"
        assert reader.stats["requests"] == before
        # what works on any file: a range within len(reader)
        got = list(reader.iter_frames(range(0, len(reader), 10)))
        assert len(got) == 10 and all(np.array_equal(a, expected(i)) for a, i in zip(got, range(0, N, 10)))


@pytest.mark.parametrize("indices,first_bad", [
    (range(0, 1000, 10), 100),
    (range(5, -1000, -1), -101),
    (range(-1000, 0), -1000),
    (range(10**15, 0, -1), 10**15),  # huge: checked without going through it
    ([0, 5, 200, 300, -500], 200),
    ((3, -101), -101),
    (np.array([1, 2, -7, 100, 101]), 100),
    (np.array([4, 2**40], dtype=np.uint64), 2**40),
    ({1, 2, 300}, 300),
], ids=["step", "down", "below", "huge", "list", "tuple", "array", "uint64", "set"])
def test_collections_are_checked_up_front(native, indices, first_bad):
    with dicomframes.open(native) as reader:
        before = reader.stats["requests"]
        with pytest.raises(FrameNumberError, match=f"frame index {first_bad} out of range for {N} frames"):
            next(reader.iter_frames(indices))
        assert reader.stats["requests"] == before


@pytest.mark.parametrize("indices,message", [
    ([0, 1, 2.0], "integers, not float"),
    (np.array([0.0, 1.0]), "integers, not an array of float64"),
    (np.zeros((2, 2), dtype=int), r"one-dimensional, not an array of shape \(2, 2\)"),
    ("012", "integers, not str"),
])
def test_collections_of_non_integers_are_refused_up_front(native, indices, message):
    with dicomframes.open(native) as reader:
        before = reader.stats["requests"]
        with pytest.raises(TypeError, match=message):
            next(reader.iter_frames(indices))
        assert reader.stats["requests"] == before


def test_valid_collections_read_as_before(native):
    with dicomframes.open(native) as reader:
        for indices in ([3, -1, 3, 0], np.array([99, -100], dtype=np.int8), range(-1, -N - 1, -33), (), np.array([], int)):
            got = list(reader.iter_frames(indices))
            assert len(got) == len(indices)
            for arr, i in zip(got, indices):
                assert np.array_equal(arr, expected(int(i) % N))


@pytest.mark.parametrize("bad", [N, -N - 1, "x"])
def test_generators_are_checked_lazily_at_their_place(hundred, bad):
    """A one-shot iterator cannot be checked first: the frames before the bad
    index come out, then the error."""
    with dicomframes.open(hundred) as reader:
        got = []
        with pytest.raises(FrameNumberError if bad != "x" else TypeError):
            for frame in reader.iter_frames(i for i in [0, 1, 2, bad, 4]):
                got.append(frame)
        assert len(got) == 3 and all(np.array_equal(a, expected(i)) for i, a in enumerate(got))


# -- slices and stacks -------------------------------------------------------------------------


@pytest.mark.parametrize("key", [
    slice(10, 20), slice(None), slice(None, None, -1), slice(-5, None), slice(90, 200), slice(5, 2),
    slice(1, 80, 7), slice(-1, -60, -9),
], ids=str)
def test_slices_stack_as_python_slicing(hundred, key):
    with dicomframes.open(hundred) as reader:
        got = reader[key]
        wanted = list(range(N))[key]
        assert got.shape == (len(wanted), 64, 64) and got.dtype == np.uint8
        for k, i in enumerate(wanted):
            assert np.array_equal(got[k], expected(i)), i


@pytest.mark.parametrize("key", [[1, 5, 9], [9, 1, 9, -1], np.array([3, -3]), np.arange(4, dtype=np.uint16), [], np.int64(7)],
                         ids=["list", "repeats", "array", "uint16", "empty", "numpy int"])
def test_lists_and_arrays_stack(hundred, key):
    with dicomframes.open(hundred) as reader:
        got = reader[key]
        if isinstance(key, np.integer):
            assert np.array_equal(got, expected(int(key)))  # one frame, as reader[i]
            return
        assert got.shape == (len(key), 64, 64)
        for k, i in enumerate(key):
            assert np.array_equal(got[k], expected(int(i) % N))


def test_colour_frames_stack_with_samples_last(tmp_path):
    path = write_sample(tmp_path / "rgb.dcm", frames=6, rows=16, columns=24, samples_per_pixel=3, syntax="rle", seed=3)
    with dicomframes.open(path) as reader:
        got = reader[1:4]
        assert got.shape == (3, 16, 24, 3)
        for k in range(3):
            assert np.array_equal(got[k], sample_frame(1 + k, 16, 24, 3, 8, 3))
        assert np.asarray(reader).shape == (6, 16, 24, 3)


def test_a_stack_is_one_planned_iteration(hundred):
    with dicomframes.open(hundred) as stacked, dicomframes.open(hundred) as iterated, dicomframes.open(hundred) as one_by_one:
        counts = [r.stats["requests"] for r in (stacked, iterated, one_by_one)]
        stacked[50:70]
        list(iterated.iter_frames(range(50, 70)))
        for i in range(50, 70):
            one_by_one.frame(i)
        used = [r.stats["requests"] - c for r, c in zip((stacked, iterated, one_by_one), counts)]
        if stacked.format.ts.encapsulated:
            assert used[0] == used[1] <= used[2]
        else:  # native frames of a local file are iterated one read each (test_native_reads); a stack is one read
            assert used == [1, 20, 20]
        if stacked.index.kind != "walked":  # (a walk reads the blocks that frames are then taken from)
            assert used[0] < used[2]


def test_bad_keys(native):
    with dicomframes.open(native) as reader:
        before = reader.stats["requests"]
        with pytest.raises(FrameNumberError, match=f"frame index 100 out of range for {N} frames"):
            reader[[1, 100]]
        with pytest.raises(TypeError, match="boolean masks"):
            reader[np.ones(N, dtype=bool)]
        with pytest.raises(TypeError, match="boolean masks"):
            reader[[True, False]]
        with pytest.raises(TypeError, match=r"not tuple \(index the frames first"):
            reader[1, 2]
        with pytest.raises(TypeError, match="not float"):
            reader[1.5]
        with pytest.raises(TypeError):
            reader[1.0:3]
        assert reader.stats["requests"] == before


# -- np.asarray(reader) ----------------------------------------------------------------------


def test_asarray_stacks_every_frame(hundred):
    with dicomframes.open(hundred) as reader:
        got = np.asarray(reader)
        assert got.shape == (N, 64, 64) and got.dtype == np.uint8
        assert all(np.array_equal(got[i], expected(i)) for i in range(N))
        as_float = np.asarray(reader, dtype=np.float32)
        assert as_float.dtype == np.float32 and np.array_equal(as_float, got)
        assert np.array_equal(np.array(reader), got)


def test_asarray_is_refused_above_the_limit(native, monkeypatch):
    assert Reader.max_array_bytes == 4 << 30
    with dicomframes.open(native) as reader:
        before = reader.stats["requests"]
        reader.max_array_bytes = 100_000  # 100 frames of 4 KiB: 400 KiB
        with pytest.raises(ArrayTooLargeError) as info:
            np.asarray(reader)
        text = str(info.value)
        assert "100 frames of (64, 64) uint8 take 400.0 KiB, above the limit of 97.7 KiB" in text
        assert "dicomframes.Reader.max_array_bytes = 409600" in text
        with pytest.raises(ArrayTooLargeError):
            reader[:30]
        assert reader[:20].shape == (20, 64, 64)  # 80 KiB: within the limit
        assert reader.stats["requests"] > before
        reader.max_array_bytes = 409_600
        assert np.asarray(reader).shape == (N, 64, 64)
    monkeypatch.setattr(Reader, "max_array_bytes", 4096)  # on the class: every reader
    with dicomframes.open(native) as reader:
        assert reader[3:4].shape == (1, 64, 64)
        with pytest.raises(ArrayTooLargeError, match="2 frames"):
            reader[3:5]


# -- file objects that cannot seek --------------------------------------------------------------


def test_pipes_are_refused_clearly(native):
    with open(native, "rb") as f:
        data = f.read()
    r, w = os.pipe()
    with os.fdopen(r, "rb") as reading, os.fdopen(w, "wb", buffering=0) as writing:
        writing.write(data[:4096])
        for src in (reading, io.BufferedReader(io.FileIO(os.dup(r), "rb"))):
            with pytest.raises(StorageError) as info:
                dicomframes.open(src)
            assert "not seekable" in str(info.value)
            assert info.value.hint == "random access needs a seekable source: save the stream to a file, or pass a path or URL"
            with pytest.raises(StorageError, match="seekable"):
                next(dicomframes.iter_frames(src))
            if src is not reading:
                src.close()
        assert reading.read(4) == data[:4]  # nothing was read from the stream


def test_sockets_and_objects_without_seek_are_refused(native):
    a, b = socket.socketpair()
    with a, b, a.makefile("rb") as stream:
        with pytest.raises(StorageError, match="not seekable"):
            dicomframes.open(stream)

    class ReadOnly:
        def read(self, size=-1):
            return b""

    with pytest.raises(StorageError, match="random access needs a seekable source"):
        dicomframes.open(ReadOnly())
    with open(native, "rb") as f:  # a seekable file object still opens
        with dicomframes.open(f) as reader:
            assert np.array_equal(reader[-1], expected(N - 1))
