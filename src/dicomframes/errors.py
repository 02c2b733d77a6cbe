"""The one exception hierarchy of dicomframes: every public exception lives here.

Every error names what is known of *where* it happened: the file (path or URL),
the frame index and the byte offset, and where possible what to do about it.
Errors that stand for a built-in case also derive from the built-in type
(`RegionError` is a `ValueError`, `DestinationExistsError` a `FileExistsError`),
so callers may catch either.
"""

from __future__ import annotations


class DicomFramesError(Exception):
    """Base class of every error dicomframes raises on purpose.

    Attributes
    ----------
    path : str or None
        The file or URL the error concerns.
    frame : int or None
        The 0-based frame index, where the error concerns one frame.
    offset : int or None
        The byte offset in the file (or in the inflated data set of a deflated
        file) where the problem was found.
    hint : str or None
        What to do about it (which package to install, which option to use).
    byte_range : (int, int) or None
        ``(offset, size)`` of the read that failed, for storage errors.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        frame: int | None = None,
        offset: int | None = None,
        hint: str | None = None,
        byte_range: tuple[int, int] | None = None,
    ) -> None:
        self.message = message
        self.path = path
        self.frame = frame
        self.offset = offset
        self.hint = hint
        self.byte_range = byte_range
        super().__init__(str(self))

    def __str__(self) -> str:
        where = []
        if self.path is not None:
            where.append(str(self.path))
        if self.frame is not None:
            where.append(f"frame {self.frame}")
        if self.offset is not None:
            where.append(f"byte offset {self.offset}")
        text = (", ".join(where) + ": " if where else "") + self.message
        if self.hint:
            text += f" ({self.hint})"
        return text

    def with_frame(self, frame: int, message: str | None = None) -> "DicomFramesError":
        """This error naming `frame` (a new one of the same type), unless it names one already."""
        if self.frame is not None and message is None:
            return self
        return type(self)(
            self.message if message is None else message, path=self.path, frame=frame,
            offset=self.offset, hint=self.hint, byte_range=self.byte_range,
        )

    def __reduce__(self):  # keep keyword arguments across pickling (process pools)
        return (
            _rebuild,
            (type(self), self.message, self.path, self.frame, self.offset, self.hint, self.byte_range),
        )


def _rebuild(cls, message, path, frame, offset, hint, byte_range=None):
    return cls(message, path=path, frame=frame, offset=offset, hint=hint, byte_range=byte_range)


class NotDicomError(DicomFramesError):
    """The input is not a DICOM file (or not one with pixel data)."""


class TruncatedFileError(DicomFramesError):
    """The file ends before the data it declares (a partial download, say)."""


class InvalidFileError(DicomFramesError):
    """The file's structure contradicts itself: lying lengths, bad nesting."""


class FrameIndexError(InvalidFileError):
    """Offset tables or fragments do not describe the frames consistently."""


class UnsupportedTransferSyntaxError(DicomFramesError):
    """The transfer syntax is not one dicomframes can decode."""


class MissingDecoderError(DicomFramesError):
    """No installed package can decode this transfer syntax."""


class DecodeError(DicomFramesError):
    """A codec failed on a frame, or its output disagrees with the header."""


class StorageError(DicomFramesError):
    """Reading from storage failed for good (after retries)."""

    #: the HTTP status a server answered with, where one did (DICOMweb); not kept across pickling
    status: int | None = None


class MissingDependencyError(DicomFramesError, ImportError):
    """An optional package that this operation needs is not installed (the hint names it)."""


# -- using a reader ----------------------------------------------------------------------
class FrameNumberError(DicomFramesError, IndexError):
    """A frame index outside the file's frames (an `IndexError` too, as sequences raise)."""


class ClosedReaderError(DicomFramesError, ValueError):
    """An operation on a closed reader (a `ValueError` too, as closed files raise)."""


class ArrayTooLargeError(DicomFramesError):
    """The frames asked for as one array would take more than `Reader.max_array_bytes`."""


# -- whole-slide images ----------------------------------------------------------------
class NotTiledError(DicomFramesError, ValueError):
    """The file is not a tiled image (no Total Pixel Matrix Columns/Rows)."""


class RegionError(DicomFramesError, ValueError):
    """A region, focal plane or optical path that the image does not have."""


class SlideError(DicomFramesError, ValueError):
    """The instances given do not make a slide (no pyramid level, several series)."""


# -- arrays of many files ----------------------------------------------------------------
class FrameMismatchError(DicomFramesError, ValueError):
    """Files joined into one array do not share frame shape and dtype."""


# -- writing files -------------------------------------------------------------------------
class TranscodeError(DicomFramesError):
    """The file cannot be written in the form asked for (a limit of the format or of re-encoding)."""


class DestinationError(DicomFramesError):
    """The destination cannot take the output (a directory, or the source itself)."""


class DestinationExistsError(DestinationError, FileExistsError):
    """The destination exists and overwriting was not asked for."""


__all__ = [
    "DicomFramesError", "NotDicomError", "TruncatedFileError", "InvalidFileError", "FrameIndexError",
    "UnsupportedTransferSyntaxError", "MissingDecoderError", "DecodeError", "StorageError",
    "MissingDependencyError", "FrameNumberError", "ClosedReaderError", "ArrayTooLargeError", "NotTiledError", "RegionError", "SlideError", "FrameMismatchError",
    "TranscodeError", "DestinationError", "DestinationExistsError",
]


class IndexFileError(DicomFramesError):
    """A persisted frame index (``index=`` or the index cache) that cannot be used:
    not an index file, another version, damaged, or made for another object."""



class RequestError(DicomFramesError, ValueError):
    """A request the server refuses (a malformed frame list, too many frames):
    `status` is the HTTP status code it is answered with."""

    status = 400


class NotFoundError(RequestError, LookupError):
    """A request for a study, series, instance or frame the server does not have."""

    status = 404


class NotAcceptableError(RequestError):
    """A request for frames in a media type or transfer syntax the server cannot send."""

    status = 406


class ServerBusyError(RequestError):
    """The server has as much decoding under way as it takes: try again shortly (503)."""

    status = 503
