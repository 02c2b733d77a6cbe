"""Codecs: transfer syntax -> an ordered list of decoder backends.

A backend turns one frame's encoded bytes into a raw decoded buffer plus the
few facts about it that differ from the header (e.g. a JPEG 2000 codestream of
8-bit precision in a 16-bit file). It knows nothing of files or pixels
post-processing; `dicomframes.pixels` does that.
"""

from __future__ import annotations

from dicomframes._dicom.syntaxes import TransferSyntax
from dicomframes.errors import MissingDecoderError, UnsupportedTransferSyntaxError
from dicomframes.frames.codecs.base import Backend, Decoded, FrameContext
from dicomframes.frames.codecs.builtin import BUILTIN_BACKENDS
from dicomframes.frames.codecs.imagecodecs_backend import (
    IMAGECODECS_BACKENDS,
    IMAGECODECS_RLE,
)

# Preference order: the first available backend for a syntax is the default
# (imagecodecs, where installed, is the faster one).
_BACKENDS: list[Backend] = list(IMAGECODECS_BACKENDS) + list(BUILTIN_BACKENDS) + [IMAGECODECS_RLE]


def register(backend: Backend, first: bool = False) -> None:
    """Add a decoder backend (optional extras register themselves here)."""
    if first:
        _BACKENDS.insert(0, backend)
    else:
        _BACKENDS.append(backend)


def backends_for(ts: TransferSyntax) -> list[Backend]:
    return [b for b in _BACKENDS if ts.codec in b.codecs]


def select(ts: TransferSyntax, name: str | None = None, path: str | None = None) -> Backend:
    """The backend that decodes `ts`: the one called `name`, or the first installed."""
    candidates = backends_for(ts)
    if not candidates:
        raise UnsupportedTransferSyntaxError(f"no decoder exists for {ts.name} ({ts.uid})", path=path)
    if name is not None and ts.codec not in ("encapsulated-native", "deflate-frames"):
        named = [b for b in candidates if b.name == name]
        if not named:
            raise MissingDecoderError(
                f"decoder {name!r} does not handle {ts.name}",
                path=path, hint="choose one of: " + ", ".join(sorted({b.name for b in candidates})),
            )
        candidates = named
    for backend in candidates:
        if backend.available():
            return backend
    if name is not None:
        raise MissingDecoderError(
            f"decoder {name!r} for {ts.name} is not installed",
            path=path, hint="install " + " and ".join(sorted({p for b in candidates for p in b.packages})),
        )
    packages = sorted({p for b in candidates for p in b.packages})
    raise MissingDecoderError(
        f"no installed decoder for {ts.name} ({ts.uid})",
        path=path, hint="install " + " or ".join(packages),
    )


__all__ = ["Backend", "Decoded", "FrameContext", "register", "select", "backends_for"]
