"""The one exception hierarchy of dicomframes.

Every error names what is known of *where* it happened: the file (path or URL),
the frame index and the byte offset, and where possible what to do about it.
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
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        frame: int | None = None,
        offset: int | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.path = path
        self.frame = frame
        self.offset = offset
        self.hint = hint
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

    def __reduce__(self):  # keep keyword arguments across pickling (process pools)
        return (
            _rebuild,
            (type(self), self.message, self.path, self.frame, self.offset, self.hint),
        )


def _rebuild(cls, message, path, frame, offset, hint):
    return cls(message, path=path, frame=frame, offset=offset, hint=hint)


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
