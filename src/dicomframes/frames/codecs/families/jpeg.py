"""JPEG (ISO 10918-1): Baseline, Extended and Lossless processes."""

from __future__ import annotations

from dicomframes._dicom.codestream import JPEG_START_MARKERS, jpeg_parameters
from dicomframes._dicom.syntaxes import JPEG_BASELINE, Codec
from dicomframes.frames.codecs.families.base import CodecFamily, Image, Params

#: component identifiers 'R', 'G', 'B' (either case): an Adobe-style RGB codestream
_RGB_COMPONENT_IDS = ([82, 71, 66], [114, 103, 98])


def jpeg_colour_hint(params: Params, photometric: str, samples_per_pixel: int, ybr: str) -> str:
    """pydicom's reading of a colour codestream's space from its hints.

    RGB component identifiers mean RGB; a JFIF APP0 segment means YCbCr (`ybr`)
    unless the header already names a YBR space. Otherwise the header's `photometric`.
    """
    if samples_per_pixel != 3:
        return photometric
    if params.get("component_ids") in _RGB_COMPONENT_IDS:
        return "RGB"
    for segment in params.get("app", {}).values():
        if segment.startswith(b"JFIF") and "YBR" not in photometric:
            return ybr
    return photometric


class JpegFamily(CodecFamily):
    start_markers = JPEG_START_MARKERS
    colour_hints = True

    def parameters(self, src: bytes) -> Params:
        return jpeg_parameters(src)

    def photometric(self, params: Params, image: Image) -> str:
        # Baseline YCbCr is 4:2:2 subsampled; pydicom says so.
        ybr = "YBR_FULL_422" if image.ts.uid == JPEG_BASELINE.uid else "YBR_FULL"
        return jpeg_colour_hint(params, image.photometric_interpretation, image.samples_per_pixel, ybr)


JPEG = JpegFamily(Codec.JPEG)
