"""What every codec family answers, and the defaults most of them share."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from dicomframes._dicom.syntaxes import Codec, TransferSyntax
from dicomframes.errors import DecodeError

#: what a family reads from one frame's codestream (and hands to its backends)
Params = dict[str, Any]

MONOCHROME = ("MONOCHROME1", "MONOCHROME2")


class Image(Protocol):
    """The file's pixel description as a family reads it (`PixelFormat` is one)."""

    @property
    def name(self) -> str: ...
    @property
    def ts(self) -> TransferSyntax: ...
    @property
    def rows(self) -> int: ...
    @property
    def columns(self) -> int: ...
    @property
    def samples_per_pixel(self) -> int: ...
    @property
    def bits_allocated(self) -> int: ...
    @property
    def bits_stored(self) -> int: ...
    @property
    def pixel_representation(self) -> int: ...
    @property
    def photometric_interpretation(self) -> str: ...


def shift_out_high_bits(arr: np.ndarray, bits: int) -> np.ndarray:
    """Drop the top `bits` of each value: masks unsigned values, sign-extends signed ones
    (a left shift, then an arithmetic right shift, in place where `arr` allows)."""
    if bits <= 0:
        return arr
    if not arr.flags.writeable:
        arr = arr.copy()
    np.left_shift(arr, bits, out=arr)
    np.right_shift(arr, bits, out=arr)
    return arr


def check_dimensions(params: Params, image: Image, frame: int) -> None:
    """Refuse a codestream whose declared size disagrees with the header before a
    decoder allocates for it (hostile files declare huge ones)."""
    height, width = params.get("height"), params.get("width")
    if height and width and (height, width) != (image.rows, image.columns):
        raise DecodeError(
            f"the codestream is {width}x{height} but the header says {image.columns}x{image.rows}",
            path=image.name, frame=frame,
        )


class CodecFamily:
    """One way of encoding frames: what dicomframes must know of it besides decoding.

    Backends (`dicomframes.frames.codecs.Backend`) decode; the family says what
    the codestream declares, whether it is sound enough to hand to a decoder,
    the colour space pydicom reports for it, and how pydicom corrects the
    decoder's output. The defaults suit a codec that declares nothing.
    """

    #: byte strings a frame's first fragment starts with (empty: no such marker)
    start_markers: tuple[bytes, ...] = ()
    #: the colour space of a 3-sample image may be read from the codestream
    colour_hints: bool = False
    #: frames are the pixel bytes themselves (perhaps deflated), not a codestream:
    #: Bits Allocated 1 stays packed, the header's Planar Configuration applies,
    #: trailing padding is allowed and the backend is never chosen by name
    pixel_bytes: bool = False

    def __init__(self, codec: Codec) -> None:
        self.codec = codec

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.codec}>"

    def parameters(self, src: bytes) -> Params:
        """What the frame's codestream declares; {} where it declares nothing or cannot be parsed."""
        return {}

    def check(self, params: Params, image: Image, frame: int) -> None:
        """Raise `DecodeError` for a codestream no decoder should be given."""
        check_dimensions(params, image, frame)

    def photometric(self, params: Params, image: Image) -> str:
        """The colour space of the encoded frame: the header's unless the codestream says otherwise."""
        return image.photometric_interpretation

    def decoded_photometric(self, pi: str) -> str:
        """The colour space of the decoder's output for an encoded frame in colour space `pi`."""
        return pi

    def sign_shift(self, params: Params, pi: str, itemsize: int, image: Image) -> int:
        """How many high bits of each decoded value `shift_out_high_bits` drops, as pydicom does:
        by default those above Bits Stored (masking, or sign-extending signed pixels)."""
        return image.bits_allocated - image.bits_stored
