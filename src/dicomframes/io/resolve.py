"""What the user handed us -> a `Source`: paths, URLs, ``(filesystem, path)``, file objects, bytes.

One place decides what an input is, so `dicomframes.open`, whole-slide folders,
Dask arrays and data loaders agree (`is_single` says whether an input names one
file or is a collection of them; `inputs` lists what it names).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from dicomframes.errors import StorageError
from dicomframes.io.local import BytesSource, FileObjectSource, LocalFileSource
from dicomframes.io.source import Source


def is_url(src: Any) -> bool:
    """A string or path that names a remote file (``scheme://``, not ``file://``)."""
    if not isinstance(src, (str, os.PathLike)):
        return False
    text = os.fspath(src)
    return isinstance(text, str) and "://" in text and not text.startswith("file://")


def local_path(text: str) -> str:
    """A local path with any ``file://`` prefix removed."""
    return text[len("file://") :] if text.startswith("file://") else text


def is_filesystem(fs: Any) -> bool:
    """An fsspec filesystem instance: it has the range reads `FsspecSource` makes."""
    return not isinstance(fs, type) and callable(getattr(fs, "cat_file", None)) and hasattr(fs, "protocol")


def is_fs_pair(src: Any) -> bool:
    """An ``(fsspec filesystem, path)`` pair (not a pair of paths, files or readers)."""
    return isinstance(src, tuple) and len(src) == 2 and isinstance(src[1], (str, os.PathLike)) and is_filesystem(src[0])


def is_single(src: Any) -> bool:
    """Whether `src` names one file (or is an open one), rather than a collection of them."""
    if isinstance(src, (str, bytes, bytearray, memoryview, os.PathLike, Source)) or is_fs_pair(src):
        return True
    return hasattr(src, "read") or hasattr(src, "frame")  # a file object, or a reader


def inputs(src: Any) -> list[Any]:
    """The inputs `src` names, as a list: ``[src]`` for one file, else its items.

    Anything neither single nor iterable is one input too, so that opening it
    says what it cannot open rather than that it is not iterable.
    """
    if is_single(src) or not isinstance(src, Iterable):
        return [src]
    return list(src)


def _seekable(fileobj: Any) -> bool:
    """Whether a file object can seek (pipes, sockets and standard input cannot).

    A closed or odd object that cannot say is taken at its word later."""
    if not hasattr(fileobj, "seek"):
        return False
    seekable = getattr(fileobj, "seekable", None)
    if not callable(seekable):
        return True
    try:
        return bool(seekable())
    except (OSError, ValueError):
        return True


def source_for(src: Any, storage_options: dict[str, Any]) -> Source:
    """The `Source` for one input; storage options only apply to remote ones."""
    remote = is_fs_pair(src) or is_url(src)
    if storage_options and not remote:
        raise TypeError(f"unexpected options for a local file: {', '.join(sorted(storage_options))}")
    if isinstance(src, Source):
        return src
    if isinstance(src, (bytes, bytearray, memoryview)):
        return BytesSource(src)
    if hasattr(src, "read") and not _seekable(src):
        raise StorageError(
            f"cannot open {getattr(src, 'name', None) or type(src).__name__}: the file object is not seekable",
            hint="random access needs a seekable source: save the stream to a file, or pass a path or URL",
        )
    if hasattr(src, "read") and hasattr(src, "seek"):
        fs, fs_path = getattr(src, "fs", None), getattr(src, "path", None)
        if isinstance(fs_path, str) and is_filesystem(fs):
            # An fsspec file: read planned ranges through its filesystem, not
            # through the file's read-ahead cache (which multiplies the bytes).
            from dicomframes.io.remote import FsspecSource

            return FsspecSource(fs_path, fs=fs)
        return FileObjectSource(src)
    if is_fs_pair(src):
        from dicomframes.io.remote import FsspecSource

        return FsspecSource(src[1], fs=src[0], **storage_options)
    if isinstance(src, (str, os.PathLike)):
        text = os.fspath(src)
        if is_url(text):
            from dicomframes.io.remote import FsspecSource

            return FsspecSource(text, **storage_options)
        return LocalFileSource(local_path(text))
    raise TypeError(f"cannot open {type(src).__name__}: give a path, URL, (filesystem, path) or binary file object")
