"""RLE Lossless (PS3.5 Annex G): one byte-plane segment per sample and byte."""

from __future__ import annotations

from dicomframes._dicom.codestream import RLE_HEADER_LENGTH, rle_parameters
from dicomframes._dicom.syntaxes import Codec
from dicomframes.errors import DecodeError
from dicomframes.frames.codecs.families.base import CodecFamily, Image, Params


def validate_rle_header(
    params: Params, samples_per_pixel: int, bits_allocated: int, *, path: str | None = None, frame: int | None = None
) -> None:
    """Raise `DecodeError` unless the header declares one segment per sample and byte
    of Bits Allocated, the first right after the header, in increasing order and all
    inside the frame. Decoders trust these offsets; a corrupt header crashed one of them."""
    expected = samples_per_pixel * max(1, bits_allocated // 8)
    offsets = params.get("offsets", [])
    ok = (
        params.get("segments") == expected and offsets and offsets[0] == RLE_HEADER_LENGTH
        and all(a < b for a, b in zip(offsets, offsets[1:])) and offsets[-1] < params["length"]
    )
    if not ok:
        raise DecodeError(
            f"the RLE header is invalid: {params.get('segments')} segments at {offsets} "
            f"(expected {expected} segments in {params.get('length', 0)} bytes)",
            path=path, frame=frame,
        )


class RleFamily(CodecFamily):
    def parameters(self, src: bytes) -> Params:
        return rle_parameters(src)

    def check(self, params: Params, image: Image, frame: int) -> None:
        # The header declares no dimensions; its segment table is what decoders trust.
        validate_rle_header(params, image.samples_per_pixel, image.bits_allocated, path=image.name, frame=frame)


RLE = RleFamily(Codec.RLE)
