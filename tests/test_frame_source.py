"""The seam between locating frames and reading them: a source of frames by number.

A DICOMweb server hands out frames by number, not bytes by range. `FrameSource`
is where it plugs in: the pipeline, decoding and Pixels take its frames as they
take a file's. Here a source serving codestreams from memory (as WADO-RS frame
retrieval would) goes through the same pipeline as the file they came from.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

import dicomframes
from dicomframes.frames.decode import decode_span
from dicomframes.frames.fetch import FrameBytes
from dicomframes.frames.frame_source import FrameSource, IndexedFrames
from dicomframes.frames.pipeline import iterate
from dicomframes.frames.span import FrameSpan
from dicomframes.io.policy import FetchPolicy
from dicomframes.samples import write_sample


class ServedFrames(FrameSource):
    """Frames by number from memory: each span is a frame's codestream, no offsets, no item headers."""

    def __init__(self, codestreams: list[bytes]) -> None:
        self.codestreams = codestreams
        self.name = "served"
        self.batches: list[list[int]] = []

    def locate(self, i: int) -> FrameSpan:
        return FrameSpan(i, 0, len(self.codestreams[i]))

    def read(self, span: FrameSpan) -> FrameBytes:
        return self.codestreams[span.frame]

    def read_many(self, spans: list[FrameSpan], policy: FetchPolicy) -> dict[FrameSpan, FrameBytes]:
        self.batches.append([s.frame for s in spans])
        return {s: self.codestreams[s.frame] for s in spans}


@pytest.mark.parametrize("syntax", ["rle", "jpegls", "native"])
def test_frames_served_by_number_decode_like_the_file(tmp_path, syntax):
    path = write_sample(tmp_path / f"{syntax}.dcm", frames=40, rows=32, columns=48, syntax=syntax, fragments_per_frame=1)
    with dicomframes.open(path) as reader:
        served = ServedFrames([reader.encoded_frame(i) for i in range(len(reader))])
        decode = partial(decode_span, reader.format, reader.backend, as_rgb=True)
        order = [5, 0, 39, 5, *range(10, 30)]
        got = list(iterate(order, served, FetchPolicy(max_frames=8), decode, None, depth=4))
        assert len(got) == len(order)
        for i, frame in zip(order, got):
            np.testing.assert_array_equal(frame, reader.frame(i))
    # frames were asked for in batches (as one WADO-RS request would carry several), in order
    assert [i for batch in served.batches for i in batch] == order
    assert max(len(b) for b in served.batches) <= 8 and len(served.batches) < len(order)


def test_indexed_frames_read_the_files_bytes(tmp_path):
    path = write_sample(tmp_path / "bot.dcm", frames=12, rows=16, columns=16, syntax="rle", offset_table="none")
    with dicomframes.open(path) as reader:
        frames = IndexedFrames(reader.index, reader.data_source)
        spans = [frames.locate(i) for i in range(12)]
        many = frames.read_many(spans, FetchPolicy())
        for span in spans:
            assert bytes(frames.read(span)) == bytes(many[span])
            assert reader.data_source.read(span.offset, span.length) == bytes(many[span])
