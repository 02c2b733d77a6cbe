"""Frames by number from a DICOMweb service (WADO-RS frame retrieval, PS3.18 8.7.4 and 10.4).

A batch of frames is one request, ``.../frames/3,4,5``, whose multipart
answer is read as a stream, one part per frame, in the order asked. The
pipeline sizes batches by the spans' lengths: exact for uncompressed frames,
an estimate for compressed ones. Frames come in the transfer syntax the
header names (asked for as stored: decoding stays here, where it is fast);
a part that says it is in another syntax is refused rather than misdecoded.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from dicomframes._dicom.syntaxes import MEDIA_OF_SYNTAX
from dicomframes.errors import StorageError
from dicomframes.frames.frame_source import FrameSource
from dicomframes.frames.header import Header
from dicomframes.frames.index import FrameIndex
from dicomframes.frames.span import FrameBytes, FrameSpan
from dicomframes.io.multipart import header_param
from dicomframes.io.policy import FetchPolicy
from dicomframes.io.source import Source
from dicomframes.io.web_session import Traffic, WebSession

#: the most frames one request asks for (servers bound it: ours at 512 by default); the
#: pipeline's batches are smaller (64), reads of many frames at once take these
MAX_FRAMES_PER_REQUEST = 256
#: a compressed frame is expected at this fraction of its decoded size (batches are sized by it)
_EXPECTED_RATIO = 8


class NumberedIndex(FrameIndex):
    """Frames by number alone: a span is a frame number and the bytes it is
    expected to take (the exact size of an uncompressed frame)."""

    kind = "dicomweb"

    def __init__(self, header: Header, source: Source, number_of_frames: int, expected: int) -> None:
        super().__init__(header, source, number_of_frames)
        self.expected = max(1, expected)

    def span(self, i: int) -> FrameSpan:
        self.check(i)
        return FrameSpan(i, 0, self.expected)


class WebFrames(FrameSource):
    """The frames of one instance of a DICOMweb service: a pipeline batch a request
    (at most `MAX_FRAMES_PER_REQUEST` frames), `concurrency` requests at once where
    a caller asks for more frames than one request takes. Closing it closes this
    thread's connections of the session (shared by a service's readers, which reconnect)."""

    def __init__(self, session: WebSession, instance: str, index: NumberedIndex, accept: str, syntax: str,
                 max_part: int, concurrency: int = 4, traffic: Traffic | None = None) -> None:
        self.session = session
        #: this instance's requests (its metadata's too, where it was asked for alone)
        self.counted = traffic if traffic is not None else Traffic()
        self.instance = instance  # the instance's path under the service root
        self.index = index
        self.accept = accept
        self.syntax = syntax
        self.max_part = max_part
        self.concurrency = max(1, concurrency)
        self.name = f"{session.url}/{instance}"

    def locate(self, i: int) -> FrameSpan:
        return self.index.span(i)

    def read(self, span: FrameSpan) -> FrameBytes:
        return self._fetch([span])[span]

    def read_many(self, spans: list[FrameSpan], policy: FetchPolicy) -> dict[FrameSpan, FrameBytes]:
        ordered = sorted(dict.fromkeys(spans), key=lambda s: s.frame)
        # One request per pipeline batch (which `batch_bytes` bounds), up to the frames a request may name.
        size = max(1, min(MAX_FRAMES_PER_REQUEST, max(policy.batch_bytes, policy.max_request) // self.index.expected))
        groups = [ordered[k : k + size] for k in range(0, len(ordered), size)]
        if len(groups) <= 1:
            return self._fetch(ordered) if ordered else {}
        got: dict[FrameSpan, FrameBytes] = {}
        with ThreadPoolExecutor(min(self.concurrency, len(groups)), thread_name_prefix="dicomframes-web") as pool:
            for part in pool.map(self._fetch, groups):
                got.update(part)
        return got

    def _fetch(self, spans: list[FrameSpan]) -> dict[FrameSpan, FrameBytes]:
        numbers = ",".join(str(span.frame + 1) for span in spans)  # 1-based, as PS3.18 numbers them
        try:
            answer = self._get(f"{self.instance}/frames/{numbers}")
        except StorageError as exc:
            if len(spans) == 1:
                raise exc.with_frame(spans[0].frame) from None
            raise
        if len(answer) != len(spans):
            raise StorageError(f"asked for {len(spans)} frames ({numbers}), the answer has {len(answer)} parts",
                               path=self.name, frame=spans[0].frame)
        out: dict[FrameSpan, FrameBytes] = {}
        for span, (headers, body) in zip(spans, answer):
            said = syntax_of(headers.get("content-type", ""))
            if said is not None and said != self.syntax:
                raise StorageError(f"the server sent frame {span.frame + 1} in transfer syntax {said}, not "
                                   f"{self.syntax} as asked", path=self.name, frame=span.frame)
            out[span] = body
        return out

    def _get(self, path: str) -> list[tuple[dict[str, str], bytes]]:
        try:
            return self.session.get_parts(path, self.accept, self.max_part, traffic=self.counted)
        except StorageError as exc:
            # "As stored" (transfer-syntax=*) refused: the stored syntax by its own media type
            # (image/jpeg, image/jp2 ...), which PS3.18 names for it; once, then for good.
            fallback = MEDIA_OF_SYNTAX.get(self.syntax)
            if exc.status not in (400, 406) or fallback is None or "transfer-syntax=*" not in self.accept:
                raise
            self.accept = f'multipart/related; type="{fallback}"; transfer-syntax={self.syntax}'
            return self.session.get_parts(path, self.accept, self.max_part, traffic=self.counted)

    def traffic(self) -> Traffic:
        return self.counted

    def close(self) -> None:
        self.session.close()


def syntax_of(content_type: str) -> str | None:
    """The ``transfer-syntax`` parameter of a part's Content-Type, if any."""
    return header_param(content_type, "transfer-syntax") or None


def expected_bytes(decoded: int, encapsulated: bool) -> int:
    """What a frame of `decoded` bytes is expected to take as sent (batches are sized by it)."""
    return decoded // _EXPECTED_RATIO if encapsulated else decoded
