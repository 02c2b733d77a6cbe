"""Frames by number: the seam between locating frames and reading their bytes.

The Reader and the pipeline ask a `FrameSource` where frame i is (`locate`)
and for the bytes of one frame or of many at once. Files and buckets are
sources of bytes by range, so their frames come from `IndexedFrames`: a
`FrameIndex` over the data set's `Source`, read with the fetcher's planned,
coalesced requests. A server that hands out frames by number (DICOMweb's
WADO-RS frame retrieval) implements `FrameSource` itself: its spans carry no
item headers (``items=False``: the bytes are the codestream, `unwrap` passes
them through), and everything above — pipeline, decoding, Pixels, Reader and
the consumers — stays the same.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from dicomframes.frames.fetch import fetch
from dicomframes.frames.index import FrameIndex
from dicomframes.frames.span import FrameBytes, FrameSpan
from dicomframes.io.policy import FetchPolicy
from dicomframes.io.source import Source


class FrameSource(ABC):
    """Where each frame is, and its bytes: one frame, or many in planned requests."""

    #: the path or URL, for error messages
    name: str = "<frames>"

    @abstractmethod
    def locate(self, i: int) -> FrameSpan:
        """Frame `i`'s span (0 <= i < number of frames; the caller checks the range)."""

    @abstractmethod
    def read(self, span: FrameSpan) -> FrameBytes:
        """The bytes of one frame, reusing any already read."""

    @abstractmethod
    def read_many(self, spans: list[FrameSpan], policy: FetchPolicy) -> dict[FrameSpan, FrameBytes]:
        """The bytes of each span, in as few requests as `policy` allows; a
        failure names its frame (`StorageError`, `TruncatedFileError`)."""

    def traffic(self) -> Any:
        """The requests it makes itself, where it does not read through its source
        (a `SourceStats` with `retries`: DICOMweb's); None where the source counts them."""
        return None

    def close(self) -> None:  # noqa: B027  (most hold nothing of their own)
        """Let go of what it holds beyond the source (connections of its own); the reader closes the source."""


class IndexedFrames(FrameSource):
    """Frames of a file: its `FrameIndex` locates them, byte-range reads of `source` fetch them.

    An index that doubts its spans (`FrameIndex.recheck`) sees each frame's
    bytes first; a frame it relocates is read again from where it really is
    (its bytes handed out under the span asked for: whole items either way).
    """

    def __init__(self, index: FrameIndex, source: Source) -> None:
        self.index = index
        self.source = source
        self.name = source.name

    def locate(self, i: int) -> FrameSpan:
        return self.index.span(i)

    def read(self, span: FrameSpan) -> FrameBytes:
        data = self.index.read(span.offset, span.length, frame=span.frame)
        moved = self.index.recheck(span, data)
        return data if moved is None else self.index.read(moved.offset, moved.length, frame=moved.frame)

    def read_many(self, spans: list[FrameSpan], policy: FetchPolicy) -> dict[FrameSpan, FrameBytes]:
        got = fetch(self.source, spans, policy)
        if self.index.rechecks:
            moved = {span: where for span in spans if (where := self.index.recheck(span, got[span])) is not None}
            if moved:
                again = fetch(self.source, list(moved.values()), policy)
                got.update((span, again[where]) for span, where in moved.items())
        return got
