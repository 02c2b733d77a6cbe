"""Native frames of a local file, read on the calling thread: a positional read each.

Native frames need no decoding, so the pipeline's threads would only add
hand-offs, and its batches read ahead keep many frame buffers alive at once,
each in fresh memory the kernel must fault in page by page (that, not the
copy, is most of what a 196 kB frame costs). Here each frame is read straight
into the array that is handed out (or into the caller's ``out[k]``) while the
one before it may already be freed, so its memory is reused warm, as in a
plain ``readinto`` loop; frames one after another in the file going into
`out` take one ``preadv`` together. Sequential reads still get the kernel's
readahead.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from dicomframes.errors import DicomFramesError, StorageError
from dicomframes.frames.fetch import fetch, fetch_into
from dicomframes.frames.frame_source import FrameSource, IndexedFrames
from dicomframes.frames.index import FrameIndex, NativeFrameIndex
from dicomframes.frames.pixels import PixelFormat, store
from dicomframes.frames.span import FrameSpan
from dicomframes.io.policy import FetchPolicy
from dicomframes.io.source import Source


def local_source(frames: FrameSource, fmt: PixelFormat) -> Source | None:
    """The source to read `frames` from here, where they are native frames of a
    file on this machine read with positional reads into buffers; else None
    (a bucket, say: there a request is a round trip, which the pipeline's
    large, overlapped requests save)."""
    if fmt.ts.encapsulated or not isinstance(frames, IndexedFrames) or frames.index.rechecks:
        return None
    source = frames.source
    return source if source.direct_reads and not source.remote and source.size is not None else None


def iterate(
    indices: Iterable[int], index: FrameIndex, source: Source, fmt: PixelFormat, as_rgb: bool,
    policy: FetchPolicy, out: np.ndarray | None = None,
) -> Iterator[np.ndarray]:
    """The frames of `indices` (valid frame numbers) located by `index` in
    `source` (see `local_source`), in order; with `out`, the k-th written into
    ``out[k]`` (and yielded). Errors come at their frame, as from the pipeline."""
    size = source.size
    assert size is not None  # `local_source`
    raw = fmt.native_as_stored(as_rgb)
    shape, dtype = fmt.shape, fmt.dtype
    frame_bytes = fmt.pixels_per_frame * dtype.itemsize
    # Frames at regular places, read as stored: no span made per frame (half the
    # fixed cost of a small frame); any failure is taken again the long way.
    regular = index.regular() if raw and out is None and isinstance(index, NativeFrameIndex) else None
    if regular is not None and regular[1] == frame_bytes:
        start, _, whole = regular
        whole = min(whole, max(0, (size - start) // frame_bytes)) if frame_bytes else 0
    else:
        whole = 0
    run: list[tuple[FrameSpan, np.ndarray]] = []  # frames going straight into `out`, one after another in the file
    for k, i in enumerate(indices):
        if i < whole:
            arr = np.empty(shape, dtype)
            try:
                got = source.read_into(start + i * frame_bytes, [arr.data])
            except StorageError:
                got = -1
            if got != frame_bytes:
                fetch_into(source, index.span(i), arr)  # again, to fail naming the frame (or succeed)
            yield arr
            continue
        target = None if out is None else out[k]
        try:
            span = index.span(i)
        except DicomFramesError:  # a frame that cannot be located: the frames before it first
            yield from _read_run(source, run)
            raise
        direct = raw and span.length == frame_bytes and span.offset + span.length <= size
        if direct and target is not None and target.flags.c_contiguous:
            if run and (span.offset != run[-1][0].offset + frame_bytes or (len(run) + 1) * frame_bytes > policy.batch_bytes):
                yield from _read_run(source, run)
                run = []
            run.append((span, target))
            continue
        if run:
            yield from _read_run(source, run)
            run = []
        if direct:
            arr = np.empty(shape, dtype)
            fetch_into(source, span, arr)
            yield arr if target is None else store(arr, target)  # a strided `out`: copied in
        elif span.offset + span.length > size:
            # Past the end of the file (a partial file): read what is there, which
            # raises TruncatedFileError for the frame; nothing sized by the header.
            yield fmt.from_native(fetch(source, [span], policy)[span], span, as_rgb, target)
        else:
            buffer = np.empty(span.length, np.uint8)
            fetch_into(source, span, buffer)
            yield fmt.from_native(buffer.data, span, as_rgb, target)
    yield from _read_run(source, run)


def _read_run(source: Source, run: list[tuple[FrameSpan, np.ndarray]]) -> Iterator[np.ndarray]:
    """Frames adjacent in the file read into their arrays with one ``preadv``
    (a Dask chunk, a batch: one request); where that fails, frame by frame, so
    that the error comes at its own frame."""
    if not run:
        return
    if len(run) > 1:
        try:
            got = source.read_into(run[0][0].offset, [target.data for _, target in run])
        except StorageError:
            got = -1
        if got == sum(span.length for span, _ in run):
            for _, target in run:
                yield target
            return
    for span, target in run:
        fetch_into(source, span, target)
        yield target
