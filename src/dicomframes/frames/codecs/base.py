"""The contract between the reader and a decoder backend."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np


@dataclass(frozen=True)
class FrameContext:
    """What a backend may need to know about the frame it decodes."""

    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric_interpretation: str
    planar_configuration: int
    #: the caller wants YCbCr converted to RGB (a codec may do it itself)
    as_rgb: bool = True


@dataclass
class Decoded:
    """A decoded frame as the codec returned it, and how it differs from the header."""

    data: bytes | bytearray | memoryview | np.ndarray
    bits_allocated: int | None = None
    planar_configuration: int | None = None
    photometric_interpretation: str | None = None
    #: set when `data` is already an array of the final shape and dtype
    is_array: bool = False


@dataclass
class Backend:
    """One way of decoding a family of codecs."""

    name: str
    #: the codec families it decodes: `Codec` members (plain strings such as
    #: ``"jpeg"`` compare equal to them)
    codecs: frozenset[str]
    #: pip packages it needs (named in errors)
    packages: tuple[str, ...]
    #: importable modules that must all be present
    modules: tuple[str, ...]
    #: ``decode(codestream, context, params)`` (and ``out=`` where `decodes_into`)
    decode: Callable[..., Decoded]
    #: True where the backend releases the GIL (threads decode in parallel)
    releases_gil: bool = False
    #: decoding costs about as much as pickling the frame between processes:
    #: an executor's process pool would be slower than one thread (measured
    #: for RLE); shared-memory workers, which pickle no pixels, are still used
    cheap: bool = False
    #: `decode` takes ``out=``: the array the finished frame goes to (its
    #: shape and dtype, writeable, C-contiguous, or None), which it decodes
    #: into where its own output would have exactly that shape and dtype; it
    #: returns its output as usual, which is then `out` (see `decode_target`)
    decodes_into: bool = False
    _available: bool | None = field(default=None, repr=False)

    def available(self) -> bool:
        if self._available is None:
            self._available = all(importlib.util.find_spec(m) is not None for m in self.modules)
        return self._available


def decode_target(out: np.ndarray | None, params: dict[str, Any]) -> np.ndarray | None:
    """`out` where a codec that follows the codestream's `params` (``width``,
    ``height``, ``components``, ``precision``) writes exactly its shape and an
    unsigned dtype of that precision into it, else None.

    Signed data is never decoded in place: pydicom's sign corrections (and
    some codecs' own signed output) work on the unsigned values first.
    """
    if out is None or params.get("is_signed") or not (out.flags.c_contiguous and out.flags.writeable):
        return None
    try:
        height, width, components, precision = (params[k] for k in ("height", "width", "components", "precision"))
    except KeyError:
        return None
    shape = (height, width) if components == 1 else (height, width, components)
    dtype = np.uint8 if precision <= 8 else np.uint16 if precision <= 16 else None
    return out if dtype is not None and out.shape == shape and out.dtype == dtype else None
