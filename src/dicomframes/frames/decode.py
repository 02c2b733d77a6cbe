"""Decoding one frame: bytes of its span -> the array users get.

A module-level function (not a Reader method) so that worker processes can
run it with only small, picklable arguments.
"""

from __future__ import annotations

import logging
from functools import partial

import numpy as np

from dicomframes.errors import DecodeError, DicomFramesError
from dicomframes.frames import codecs
from dicomframes.frames.pixels import PixelFormat
from dicomframes.frames.span import FrameBytes, FrameSpan, unwrap

log = logging.getLogger("dicomframes")

# Errors that are never a backend's failure on a frame: no fallback, no wrapping.
_FATAL = (MemoryError, KeyboardInterrupt, SystemExit, GeneratorExit)

# (file, backends that failed, backend used) already logged: one warning each.
_LOGGED: set[tuple[str | None, tuple[str, ...], str]] = set()


def decode_span(
    fmt: PixelFormat,
    backend: codecs.Backend | None,
    span: FrameSpan,
    data: FrameBytes,
    as_rgb: bool,
    *,
    fallback: bool | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Decode the bytes of `span` (as read from the data set source).

    With `out` (an array of the frame's shape and dtype, C-contiguous), the
    frame is written there and `out` returned: decoded straight into it where
    the backend can (`Backend.decodes_into`), else copied in.

    When `backend` fails on the frame, the other installed backends for the
    syntax are tried in preference order (`codecs.fallbacks`), the first
    fallback per file and backend logged at WARNING on the ``dicomframes``
    logger. `fallback` says whether to: True where the backend is the default
    one, False where the user named it; None (the default) falls back only
    when `backend` is the syntax's default backend.

    Whatever goes wrong with hostile bytes surfaces as a `DecodeError` naming
    the frame (and, after fallbacks, every backend tried with its error);
    nothing else escapes (MemoryError and interrupts aside).
    """
    name = fmt.name if backend is None else backend.name
    try:
        if not fmt.ts.encapsulated:
            return fmt.from_native(data, span, as_rgb, out)
        src = bytes(unwrap(span, data, fmt.name))
        params = fmt.codestream_parameters(src)
        fmt.check_codestream(params, span.frame)
        assert backend is not None
        ctx = fmt.context(params, as_rgb)
        try:
            decoded = backend.decode(src, ctx, params, out=out) if backend.decodes_into else backend.decode(src, ctx, params)
            return fmt.from_decoded(decoded, params, span.frame, as_rgb, out)
        except _FATAL:
            raise
        except BaseException as exc:
            others = codecs.fallbacks(fmt.ts, backend) if _may_fall_back(fmt, backend, fallback) else []
            if not others:
                raise
            failures: list[tuple[codecs.Backend, BaseException]] = [(backend, exc)]
            for other in others:
                try:
                    result = fmt.from_decoded(other.decode(src, ctx, params), params, span.frame, as_rgb, out)
                except _FATAL:
                    raise
                except BaseException as again:
                    failures.append((other, again))
                    continue
                _log_fallback(fmt, span.frame, [b for b, _ in failures], other, exc)
                return result
            raise DecodeError(
                "no installed decoder could decode the frame: "
                + "; ".join(f"{_label(b)}: {_describe(e)}" for b, e in failures),
                path=fmt.name, frame=span.frame, offset=span.offset,
            ) from exc
    except DicomFramesError as exc:
        if exc.offset is None:  # name where the frame's bytes are
            exc.offset = span.offset
        raise
    except _FATAL:
        raise
    except BaseException as exc:  # also Rust panics from pylibjpeg-rle (a BaseException)
        raise DecodeError(
            f"{name} could not decode the frame: {type(exc).__name__}: {exc}",
            path=fmt.name, frame=span.frame, offset=span.offset,
        ) from exc


def _may_fall_back(fmt: PixelFormat, backend: codecs.Backend, fallback: bool | None) -> bool:
    if fallback is not None:
        return fallback
    try:  # not told: fall back from the default backend only, never from another one chosen by name
        return codecs.select(fmt.ts) is backend
    except DicomFramesError:
        return False


def _label(backend: codecs.Backend) -> str:
    return f"{backend.name} ({', '.join(backend.packages)})"


def _describe(exc: BaseException) -> str:
    text = exc.message if isinstance(exc, DicomFramesError) else str(exc)
    return f"{type(exc).__name__}: {text}"


def _log_fallback(
    fmt: PixelFormat, frame: int, failed: list[codecs.Backend], used: codecs.Backend, first: BaseException
) -> None:
    key = (fmt.name, tuple(_label(b) for b in failed), _label(used))
    if key in _LOGGED:
        return
    if len(_LOGGED) >= 4096:  # bounded over a long-lived process reading many files
        _LOGGED.clear()
    _LOGGED.add(key)
    log.warning(
        "%s: frame %d: %s could not decode it (%s); decoded with %s instead "
        "(logged once per file and decoders)",
        fmt.name or "<file>", frame, ", ".join(key[1]), _describe(first), key[2],
    )


# -- worker processes ------------------------------------------------------------
_WORKER_BACKENDS: dict[tuple[str, str | None], codecs.Backend] = {}


def decode_in_worker(fmt: PixelFormat, decoder: str | None, span: FrameSpan, data: bytes, as_rgb: bool) -> np.ndarray:
    """`decode_span` in a worker process, selecting the backend there by name
    (falling back as in-process: only where `decoder` is None)."""
    key = (fmt.ts.uid, decoder)
    backend = _WORKER_BACKENDS.get(key)
    if backend is None and fmt.ts.encapsulated:
        backend = _WORKER_BACKENDS[key] = codecs.select(fmt.ts, decoder, fmt.name)
    return decode_span(fmt, backend, span, data, as_rgb, fallback=decoder is None)


def decode_chunk(decode_one, items: list[tuple[FrameSpan, bytes]], outs: list | None = None) -> list:
    """`decode_one(span, data)` over several frames in one pool task (each into
    its array of `outs` where given); the list ends early with a failed frame's error."""
    results: list = []
    for k, (span, data) in enumerate(items):
        try:
            results.append(decode_one(span, data) if outs is None else decode_one(span, data, out=outs[k]))
        except DicomFramesError as exc:
            results.append(exc)
            break
    return results


def decode_chunk_in_worker(
    fmt: PixelFormat, decoder: str | None, items: list[tuple[FrameSpan, bytes]], as_rgb: bool
) -> list:
    """`decode_chunk` in a worker process, selecting the backend there by name."""
    return decode_chunk(partial(decode_in_worker, fmt, decoder, as_rgb=as_rgb), items)
