"""Codecs: transfer syntax -> an ordered list of decoder backends, and its codec family.

A backend turns one frame's encoded bytes into a raw decoded buffer plus the
few facts about it that differ from the header (e.g. a JPEG 2000 codestream of
8-bit precision in a 16-bit file). It knows nothing of files or pixels
post-processing; `dicomframes.frames.pixels` does that, asking the codec
family (`dicomframes.frames.codecs.families`) what the codestream declares and
how pydicom finishes its frames.
"""

from __future__ import annotations

from dicomframes._dicom.syntaxes import Codec, TransferSyntax
from dicomframes.errors import MissingDecoderError, UnsupportedTransferSyntaxError
from dicomframes.frames.codecs.base import Backend, Decoded, FrameContext
from dicomframes.frames.codecs.builtin import BUILTIN_BACKENDS
from dicomframes.frames.codecs.families import CodecFamily, family_for
from dicomframes.frames.codecs.imagecodecs_backend import (
    IMAGECODECS_BACKENDS,
    IMAGECODECS_RLE,
)

# Preference order: for a syntax, the first registered backend that is
# installed is the default.
_BACKENDS: list[Backend] = []


def register(backend: Backend, first: bool = False) -> None:
    """Add a decoder backend, last in the preference order (or first, to make it the default).

    Registering a backend that is registered already moves it.
    """
    unregister(backend)
    if first:
        _BACKENDS.insert(0, backend)
    else:
        _BACKENDS.append(backend)


def unregister(backend: Backend) -> None:
    """Remove a backend added by `register` (a no-op if it is not registered)."""
    # By identity: two Backends with equal fields are still two registrations.
    _BACKENDS[:] = [b for b in _BACKENDS if b is not backend]


# imagecodecs first where installed (it releases the GIL and is the faster
# one), the required pylibjpeg plugins next; imagecodecs' RLE only by name.
for _backend in IMAGECODECS_BACKENDS:
    register(_backend)
for _backend in BUILTIN_BACKENDS:
    register(_backend)
register(IMAGECODECS_RLE)
del _backend


def backends_for(ts: TransferSyntax) -> list[Backend]:
    """The backends registered for `ts`'s codec family, in preference order."""
    return [b for b in _BACKENDS if ts.codec in b.codecs]


def fallbacks(ts: TransferSyntax, chosen: Backend) -> list[Backend]:
    """The installed backends to try, in preference order, when `chosen` fails on a frame of `ts`."""
    if family_for(ts).pixel_bytes:
        return []
    return [b for b in backends_for(ts) if b is not chosen and b.available()]


def select(ts: TransferSyntax, name: str | None = None, path: str | None = None) -> Backend:
    """The backend that decodes `ts`: the one called `name`, or the first installed."""
    candidates = backends_for(ts)
    if not candidates:
        raise UnsupportedTransferSyntaxError(f"no decoder exists for {ts.name} ({ts.uid})", path=path)
    # Frames that are pixel bytes have one way of being read: the name is moot.
    if name is not None and not family_for(ts).pixel_bytes:
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


__all__ = [
    "Backend", "Codec", "CodecFamily", "Decoded", "FrameContext",
    "backends_for", "fallbacks", "family_for", "register", "select", "unregister",
]
