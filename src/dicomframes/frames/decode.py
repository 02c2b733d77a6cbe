"""Decoding one frame: bytes of its span -> the array users get.

A module-level function (not a Reader method) so that worker processes can
run it with only small, picklable arguments.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from dicomframes.errors import DecodeError, DicomFramesError
from dicomframes.frames import codecs
from dicomframes.frames.pixels import PixelFormat
from dicomframes.frames.span import FrameBytes, FrameSpan, unwrap


def decode_span(
    fmt: PixelFormat, backend: codecs.Backend | None, span: FrameSpan, data: FrameBytes, as_rgb: bool
) -> np.ndarray:
    """Decode the bytes of `span` (as read from the data set source).

    Whatever goes wrong with hostile bytes surfaces as a `DecodeError` naming
    the frame; nothing else escapes (MemoryError and interrupts aside).
    """
    name = fmt.name if backend is None else backend.name
    try:
        if not fmt.ts.encapsulated:
            return fmt.from_native(data, span, as_rgb)
        src = bytes(unwrap(span, data, fmt.name))
        params = fmt.codestream_parameters(src)
        fmt.check_codestream(params, span.frame)
        assert backend is not None
        decoded = backend.decode(src, fmt.context(params, as_rgb), params)
        return fmt.from_decoded(decoded, params, span.frame, as_rgb)
    except DicomFramesError as exc:
        if exc.offset is None:  # name where the frame's bytes are
            exc.offset = span.offset
        raise
    except (MemoryError, KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # also Rust panics from pylibjpeg-rle (a BaseException)
        raise DecodeError(
            f"{name} could not decode the frame: {type(exc).__name__}: {exc}",
            path=fmt.name, frame=span.frame, offset=span.offset,
        ) from exc


# -- worker processes ------------------------------------------------------------
_WORKER_BACKENDS: dict[tuple[str, str | None], codecs.Backend] = {}


def decode_in_worker(fmt: PixelFormat, decoder: str | None, span: FrameSpan, data: bytes, as_rgb: bool) -> np.ndarray:
    """`decode_span` in a worker process, selecting the backend there by name."""
    key = (fmt.ts.uid, decoder)
    backend = _WORKER_BACKENDS.get(key)
    if backend is None and fmt.ts.encapsulated:
        backend = _WORKER_BACKENDS[key] = codecs.select(fmt.ts, decoder, fmt.name)
    return decode_span(fmt, backend, span, data, as_rgb)


def decode_chunk(decode_one, items: list[tuple[FrameSpan, bytes]]) -> list:
    """`decode_one(span, data)` over several frames in one pool task; the list
    ends early with a failed frame's error."""
    out: list = []
    for span, data in items:
        try:
            out.append(decode_one(span, data))
        except DicomFramesError as exc:
            out.append(exc)
            break
    return out


def decode_chunk_in_worker(
    fmt: PixelFormat, decoder: str | None, items: list[tuple[FrameSpan, bytes]], as_rgb: bool
) -> list:
    """`decode_chunk` in a worker process, selecting the backend there by name."""
    return decode_chunk(partial(decode_in_worker, fmt, decoder, as_rgb=as_rgb), items)
