"""dicomframes: stream the frames of huge multi-frame DICOM files, one at a time.

>>> import dicomframes
>>> with dicomframes.open("cine.dcm") as reader:      # doctest: +SKIP
...     for frame in reader:
...         ...
"""

from __future__ import annotations

import os
from typing import Any, BinaryIO, Iterable, Iterator

import numpy as np

from .errors import (
    DecodeError,
    DicomFramesError,
    FrameIndexError,
    InvalidFileError,
    MissingDecoderError,
    NotDicomError,
    StorageError,
    TruncatedFileError,
    UnsupportedTransferSyntaxError,
)
from .fetcher import FetchPolicy
from .reader import ImageInfo, Reader
from .sources import BytesSource, FileObjectSource, LocalFileSource, Source
from .dataset import FrameDataset
from .wsi import open_slide
# Bound eagerly: a lazy import would let the submodule `dicomframes.decompress`
# replace this function as the package attribute of the same name.
from .decompress import decompress

__version__ = "0.1.0"


def _source_for(src: Any, storage_options: dict[str, Any]) -> Source:
    remote = isinstance(src, tuple) or (isinstance(src, (str, os.PathLike)) and "://" in os.fspath(src) and not os.fspath(src).startswith("file://"))
    if storage_options and not remote:
        raise TypeError(f"unexpected options for a local file: {', '.join(sorted(storage_options))}")
    if isinstance(src, Source):
        return src
    if isinstance(src, (bytes, bytearray, memoryview)):
        return BytesSource(src)
    if hasattr(src, "read") and hasattr(src, "seek"):
        fs, fs_path = getattr(src, "fs", None), getattr(src, "path", None)
        if fs is not None and isinstance(fs_path, str) and not isinstance(fs, type):
            # An fsspec file: read planned ranges through its filesystem, not
            # through the file's read-ahead cache (which multiplies the bytes).
            from .remote import FsspecSource

            return FsspecSource(fs_path, fs=fs)
        return FileObjectSource(src)
    if isinstance(src, tuple) and len(src) == 2:
        from .remote import FsspecSource

        return FsspecSource(src[1], fs=src[0], **storage_options)
    if isinstance(src, (str, os.PathLike)):
        text = os.fspath(src)
        if "://" in text and not text.startswith("file://"):
            from .remote import FsspecSource

            return FsspecSource(text, **storage_options)
        if text.startswith("file://"):
            text = text[len("file://") :]
        return LocalFileSource(text)
    raise TypeError(f"cannot open {type(src).__name__}: give a path, URL, (filesystem, path) or binary file object")


def open(
    src: str | os.PathLike | BinaryIO | Any,
    *,
    as_rgb: bool = True,
    decoder: str | None = None,
    workers: int | None = None,
    max_inflight: int | None = None,
    **storage_options: Any,
) -> Reader:
    """Open a DICOM file for frame-by-frame reading.

    Parameters
    ----------
    src : str, os.PathLike, binary file object, or (fsspec filesystem, path)
        A local path, any fsspec URL (``s3://``, ``gs://``, ``https://`` ...), an
        open binary file, or a ``(filesystem, path)`` pair.
    as_rgb : bool
        Convert YCbCr frames to RGB, as pydicom does by default.
    decoder : str, optional
        The decoder backend: ``"pylibjpeg"`` (the required packages) or
        ``"imagecodecs"`` (the ``[fast]`` extra); default: the fastest installed.
    workers : int, optional
        Frames decoded in parallel while iterating; default: the available cores.
        Decoders that hold the GIL (the pylibjpeg plugins, pyjpegls) run in
        worker processes, the others on threads.
    max_inflight : int, optional
        Bytes of fetched, not yet yielded frames held while iterating (default 64 MiB).
    **storage_options
        Passed to fsspec for URLs (e.g. ``anon=True``).

    Returns
    -------
    Reader
    """
    return Reader(
        _source_for(src, storage_options), as_rgb=as_rgb, decoder=decoder,
        workers=workers, max_inflight=max_inflight,
    )


def iter_frames(
    src: str | os.PathLike | BinaryIO | Any,
    indices: Iterable[int] | None = None,
    **options: Any,
) -> Iterator[np.ndarray]:
    """Yield frames of `src` (all, or those in `indices`), closing the file at the end."""
    with open(src, **options) as reader:
        yield from reader.iter_frames(indices)


def to_dask(src: Any, frames_per_chunk: int = 64, **open_options: Any):
    """The frames of one file (or of many, joined) as a lazy dask array.

    Shape (frames, rows, columns[, samples]); one task per chunk of
    `frames_per_chunk` frames. Needs the ``[dask]`` extra
    (``pip install "dicomframes[dask]"``); see `dicomframes.dask.to_dask`.
    """
    from .dask import to_dask as _to_dask

    return _to_dask(src, frames_per_chunk, **open_options)


__all__ = [
    "open", "iter_frames", "to_dask", "FrameDataset", "open_slide", "decompress", "Reader", "ImageInfo", "FetchPolicy",
    "DicomFramesError", "NotDicomError", "TruncatedFileError", "InvalidFileError",
    "FrameIndexError", "UnsupportedTransferSyntaxError", "MissingDecoderError",
    "DecodeError", "StorageError",
]
