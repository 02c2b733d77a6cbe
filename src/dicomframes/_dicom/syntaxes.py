"""The transfer syntaxes dicomframes reads, and what each implies for parsing."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from dicomframes._dicom.codestream import J2K_START_MARKERS, JPEG_START_MARKERS


class Codec(str, Enum):
    """How a transfer syntax encodes its frames: the key of a codec family.

    A `str` so that backends may name the families they handle with plain
    strings (``"jpeg"``) and members compare equal to them.
    """

    NATIVE = "native"
    RLE = "rle"
    JPEG = "jpeg"
    JPEGLS = "jpegls"
    J2K = "j2k"
    HTJ2K = "htj2k"
    ENCAPSULATED_NATIVE = "encapsulated-native"
    DEFLATE_FRAMES = "deflate-frames"

    # The value, not "Codec.JPEG", in messages and f-strings on every Python version.
    def __str__(self) -> str:
        return self.value


# The frame index needs these below the frames layer; they are the same
# constants the codec families declare (tests/test_codec_families.py checks).
_START_MARKERS: dict[Codec, tuple[bytes, ...]] = {
    Codec.JPEG: JPEG_START_MARKERS,
    Codec.JPEGLS: JPEG_START_MARKERS,
    Codec.J2K: J2K_START_MARKERS,
    Codec.HTJ2K: J2K_START_MARKERS,
}


@dataclass(frozen=True)
class TransferSyntax:
    uid: str
    name: str
    codec: Codec
    explicit_vr: bool = True
    little_endian: bool = True
    deflated: bool = False
    lossy: bool = False

    @property
    def encapsulated(self) -> bool:
        return self.codec is not Codec.NATIVE

    @property
    def frame_start_markers(self) -> tuple[bytes, ...]:
        """Byte strings a frame's first fragment starts with, when the codec has one."""
        return _START_MARKERS.get(self.codec, ())


_P = "1.2.840.10008.1.2"
_C = Codec

SYNTAXES: dict[str, TransferSyntax] = {
    ts.uid: ts
    for ts in [
        TransferSyntax(_P, "Implicit VR Little Endian", _C.NATIVE, explicit_vr=False),
        TransferSyntax(_P + ".1", "Explicit VR Little Endian", _C.NATIVE),
        TransferSyntax(_P + ".2", "Explicit VR Big Endian", _C.NATIVE, little_endian=False),
        TransferSyntax(_P + ".1.99", "Deflated Explicit VR Little Endian", _C.NATIVE, deflated=True),
        TransferSyntax(_P + ".1.98", "Encapsulated Uncompressed Explicit VR Little Endian", _C.ENCAPSULATED_NATIVE),
        TransferSyntax(_P + ".8.1", "Deflated Image Frame Compression", _C.DEFLATE_FRAMES),
        TransferSyntax(_P + ".5", "RLE Lossless", _C.RLE),
        TransferSyntax(_P + ".4.50", "JPEG Baseline (Process 1)", _C.JPEG, lossy=True),
        TransferSyntax(_P + ".4.51", "JPEG Extended (Process 2 & 4)", _C.JPEG, lossy=True),
        TransferSyntax(_P + ".4.57", "JPEG Lossless, Non-Hierarchical (Process 14)", _C.JPEG),
        TransferSyntax(_P + ".4.70", "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 [Selection Value 1])", _C.JPEG),
        TransferSyntax(_P + ".4.80", "JPEG-LS Lossless", _C.JPEGLS),
        TransferSyntax(_P + ".4.81", "JPEG-LS Near-Lossless", _C.JPEGLS, lossy=True),
        TransferSyntax(_P + ".4.90", "JPEG 2000 Image Compression (Lossless Only)", _C.J2K),
        TransferSyntax(_P + ".4.91", "JPEG 2000 Image Compression", _C.J2K, lossy=True),
        TransferSyntax(_P + ".4.201", "High-Throughput JPEG 2000 (Lossless Only)", _C.HTJ2K),
        TransferSyntax(_P + ".4.202", "High-Throughput JPEG 2000 with RPCL Options (Lossless Only)", _C.HTJ2K),
        TransferSyntax(_P + ".4.203", "High-Throughput JPEG 2000", _C.HTJ2K, lossy=True),
    ]
}

#: JPEG Baseline: its YCbCr codestreams are 4:2:2 subsampled (pydicom reports YBR_FULL_422)
JPEG_BASELINE = SYNTAXES[_P + ".4.50"]
EXPLICIT_VR_LITTLE_ENDIAN = SYNTAXES[_P + ".1"]
IMPLICIT_VR_LITTLE_ENDIAN = SYNTAXES[_P]


def lookup(uid: str) -> TransferSyntax | None:
    """Return the known transfer syntax for `uid`, or None."""
    return SYNTAXES.get(uid.strip("\x00 "))


#: the image media type of each compressed transfer syntax (PS3.18 Table 8.7.3-5): DICOMweb
#: frames in that syntax come as parts of this type
MEDIA_OF_SYNTAX = {
    "1.2.840.10008.1.2.4.50": "image/jpeg", "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg", "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls", "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2", "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx", "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc", "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}
