"""JPEG 2000 (ISO 15444-1) and High-Throughput JPEG 2000 (ISO 15444-15).

HTJ2K changes the block coder, not the main header: both share the SIZ/COD
parser, the start markers and pydicom's corrections.
"""

from __future__ import annotations

from dicomframes._dicom.codestream import J2K_START_MARKERS, j2k_parameters
from dicomframes._dicom.syntaxes import Codec
from dicomframes.frames.codecs.families.base import MONOCHROME, CodecFamily, Image, Params


def j2k_decoded_photometric(pi: str) -> str:
    """YBR_ICT and YBR_RCT name the codestream's multi-component transform, which
    the decoder inverts: its output is RGB."""
    return "RGB" if pi in ("YBR_ICT", "YBR_RCT") else pi


def j2k_sign_shift(params: Params, pi: str, itemsize: int, pixel_representation: int, bits_stored: int) -> int:
    """Where the codestream's signedness (SIZ Ssiz) disagrees with Pixel Representation,
    pydicom reinterprets a monochrome frame's values at the codestream's precision;
    otherwise the decoder's output stands as it is (no masking to Bits Stored)."""
    precision = params.get("precision", bits_stored)
    signed = params.get("is_signed", bool(pixel_representation))
    if pi in MONOCHROME and signed != bool(pixel_representation):
        return 8 * itemsize - precision
    return 0


class J2kFamily(CodecFamily):
    start_markers = J2K_START_MARKERS

    def parameters(self, src: bytes) -> Params:
        return j2k_parameters(src)

    def decoded_photometric(self, pi: str) -> str:
        return j2k_decoded_photometric(pi)

    def sign_shift(self, params: Params, pi: str, itemsize: int, image: Image) -> int:
        return j2k_sign_shift(params, pi, itemsize, image.pixel_representation, image.bits_stored)


J2K = J2kFamily(Codec.J2K)
HTJ2K = J2kFamily(Codec.HTJ2K)
