"""JPEG-LS (ISO 14495-1): lossless and near-lossless.

Its codestream is JPEG's marker syntax (SOF55), so it shares JPEG's parser and
colour hints; it differs in how signed pixels come out of the decoder.
"""

from __future__ import annotations

from dicomframes._dicom.codestream import JPEG_START_MARKERS, jpeg_parameters
from dicomframes._dicom.syntaxes import Codec
from dicomframes.frames.codecs.families.base import CodecFamily, Image, Params
from dicomframes.frames.codecs.families.jpeg import jpeg_colour_hint


def jpegls_sign_shift(params: Params, itemsize: int, pixel_representation: int, bits_stored: int) -> int:
    """JPEG-LS decoders return signed pixels as unsigned values of the codestream's
    precision: pydicom sign-extends them from that precision. Unsigned ones are
    left as decoded (no masking to Bits Stored)."""
    if pixel_representation != 1:
        return 0
    return 8 * itemsize - params.get("precision", bits_stored)


class JpegLsFamily(CodecFamily):
    start_markers = JPEG_START_MARKERS
    colour_hints = True

    def parameters(self, src: bytes) -> Params:
        return jpeg_parameters(src)

    def photometric(self, params: Params, image: Image) -> str:
        return jpeg_colour_hint(params, image.photometric_interpretation, image.samples_per_pixel, "YBR_FULL")

    def sign_shift(self, params: Params, pi: str, itemsize: int, image: Image) -> int:
        return jpegls_sign_shift(params, itemsize, image.pixel_representation, image.bits_stored)


JPEG_LS = JpegLsFamily(Codec.JPEGLS)
