"""Where a transcoded file goes: a temporary name beside the destination, renamed when complete.

`decompress` and `add_offset_table` write through these: a local path is
written as ``.NAME.<random>.part`` in the same folder and linked (or renamed)
into place only on success, never over a file that appeared meanwhile unless
overwriting was asked for; an object store's object is uploaded directly and
committed only when the upload completes (an aborted multipart upload leaves
nothing); other fsspec file systems get a temporary name beside, then a move.
"""

from __future__ import annotations

import os
import uuid
from abc import ABC, abstractmethod
from contextlib import contextmanager
from typing import Any, BinaryIO, Iterator

from dicomframes.errors import DestinationError, DestinationExistsError, DicomFramesError, StorageError
from dicomframes.io.source import Source

_OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oci", "oss", "r2", "b2", "tos", "cos"}
_UPLOAD_BLOCK = 8 << 20  # multipart upload part size (S3's minimum is 5 MiB)


def _is_remote(target: Any) -> bool:
    if isinstance(target, tuple):
        return True
    if isinstance(target, (str, os.PathLike)):
        text = os.fspath(target)
        return "://" in text and not text.startswith("file://")
    return False


def _local_path(target: str | os.PathLike) -> str:
    text = os.fspath(target)
    return text[len("file://") :] if text.startswith("file://") else text


def _exists_error(name: str) -> DestinationExistsError:
    return DestinationExistsError(
        "the destination exists", path=name, hint="pass overwrite=True (or --force) to replace it",
    )


class _Destination(ABC):
    """Where the output goes, and how it is committed only when complete."""

    name: str

    @abstractmethod
    def check(self, overwrite: bool) -> None:
        """Raise if the destination exists and may not be replaced."""

    @abstractmethod
    def open(self, overwrite: bool):
        """A context manager giving a writable file, committed only on success."""


class _LocalDestination(_Destination):
    def __init__(self, path: str) -> None:
        self.path = path
        self.name = path

    def check(self, overwrite: bool) -> None:
        if os.path.lexists(self.path):
            if not overwrite:
                raise _exists_error(self.name)
            if os.path.isdir(self.path):
                raise DestinationError("the destination is a directory", path=self.name)

    def same_as(self, source: Source) -> bool:
        path = getattr(source, "path", None)
        if not isinstance(path, str) or not os.path.exists(self.path):
            return False
        try:
            return os.path.samefile(path, self.path)
        except OSError:
            return False

    @contextmanager
    def open(self, overwrite: bool) -> Iterator[BinaryIO]:
        directory, base = os.path.split(os.path.abspath(self.path))
        tmp = os.path.join(directory, f".{base}.{uuid.uuid4().hex[:12]}.part")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except OSError as exc:
            raise StorageError(f"cannot write beside the destination: {exc.strerror}", path=self.name) from exc
        try:
            with os.fdopen(fd, "wb", buffering=1 << 20) as f:
                yield f
            if overwrite:
                os.replace(tmp, self.path)
            else:
                # Never replace a file that appeared meanwhile: link, which fails if it exists.
                try:
                    os.link(tmp, self.path)
                except FileExistsError:
                    raise _exists_error(self.name) from None
                except OSError:  # no hard links here (some network or FAT file systems)
                    if os.path.lexists(self.path):
                        raise _exists_error(self.name) from None
                    os.rename(tmp, self.path)
                else:
                    os.unlink(tmp)
        except BaseException as exc:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            if isinstance(exc, OSError) and not isinstance(exc, DicomFramesError):
                raise StorageError(f"writing failed: {exc.strerror or exc}", path=self.name) from exc
            raise


class _FsspecDestination(_Destination):
    def __init__(self, target: Any, storage_options: dict[str, Any]) -> None:
        import fsspec

        if isinstance(target, tuple):
            self.fs, self.path = target
            self.name = self.fs.unstrip_protocol(self.path) if hasattr(self.fs, "unstrip_protocol") else self.path
        else:
            self.fs, self.path = fsspec.core.url_to_fs(os.fspath(target), **storage_options)
            self.name = os.fspath(target)
        protocols = self.fs.protocol if isinstance(self.fs.protocol, (tuple, list)) else (self.fs.protocol,)
        #: object stores commit an object only when its upload completes: write the final key directly
        self.direct = any(p in _OBJECT_STORES for p in protocols)

    def check(self, overwrite: bool) -> None:
        if self.fs.exists(self.path):
            if not overwrite:
                raise _exists_error(self.name)
            if self.fs.isdir(self.path):
                raise DestinationError("the destination is a directory", path=self.name)

    def same_as(self, source: Source) -> bool:
        other = getattr(source, "name", None)
        return other in (self.name, self.path)

    def _discard(self, f, path: str) -> None:
        discard = getattr(f, "discard", None)
        try:
            if self.direct and callable(discard):
                discard()  # s3fs: aborts the multipart upload; nothing was committed
                f.closed = True  # closing now would commit what was written
            else:
                f.close()
        except Exception:
            pass
        if not self.direct or not callable(discard):
            try:
                if self.fs.exists(path):
                    self.fs.rm(path)
            except Exception:
                pass

    @contextmanager
    def open(self, overwrite: bool) -> Iterator[BinaryIO]:
        if self.direct:
            target = self.path
        else:
            parent, base = self.path.rsplit("/", 1) if "/" in self.path else ("", self.path)
            target = (parent + "/" if parent else "") + f".{base}.{uuid.uuid4().hex[:12]}.part"
        try:
            f = self.fs.open(target, "wb", block_size=_UPLOAD_BLOCK)
        except TypeError:  # a file system whose open takes no block_size
            f = self.fs.open(target, "wb")
        try:
            yield f
            f.close()  # on object stores: completes the upload, the object appears now
        except BaseException as exc:
            self._discard(f, target)
            if isinstance(exc, OSError) and not isinstance(exc, DicomFramesError):
                raise StorageError(f"writing failed: {exc}", path=self.name) from exc
            raise
        if not self.direct:
            try:
                if not overwrite and self.fs.exists(self.path):
                    raise _exists_error(self.name)
                self.fs.mv(target, self.path)
            except BaseException:
                try:
                    self.fs.rm(target)
                except Exception:
                    pass
                raise


def _destination(dst: Any, storage_options: dict[str, Any]) -> _Destination:
    if _is_remote(dst):
        return _FsspecDestination(dst, storage_options)
    if isinstance(dst, (str, os.PathLike)):
        return _LocalDestination(_local_path(dst))
    raise TypeError(f"cannot write to {type(dst).__name__}: give a path, an fsspec URL or (filesystem, path)")


def write_bytes(dst: Any, data: bytes, *, overwrite: bool = False, **storage_options: Any) -> str:
    """Write `data` to `dst` (a path or an fsspec URL) with the same rules as
    the transcoders: refused if it exists (unless `overwrite`), committed whole
    or not at all. Returns the destination's name."""
    destination = _destination(dst, storage_options)
    destination.check(overwrite)
    with destination.open(overwrite) as f:
        f.write(data)
    return destination.name
