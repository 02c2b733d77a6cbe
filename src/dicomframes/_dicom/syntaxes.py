"""The transfer syntaxes dicomframes reads, and what each implies for parsing."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TransferSyntax:
    uid: str
    name: str
    #: ``"native"``, ``"rle"``, ``"jpeg"``, ``"jpegls"``, ``"j2k"``, ``"htj2k"``,
    #: ``"encapsulated-native"`` or ``"deflate-frames"``
    codec: str
    explicit_vr: bool = True
    little_endian: bool = True
    deflated: bool = False
    lossy: bool = False

    @property
    def encapsulated(self) -> bool:
        return self.codec != "native"

    @property
    def frame_start_markers(self) -> tuple[bytes, ...]:
        """Byte strings a frame's first fragment starts with, when the codec has one."""
        if self.codec in ("jpeg", "jpegls"):
            return (b"\xff\xd8",)
        if self.codec in ("j2k", "htj2k"):
            # A raw codestream (SOC + SIZ) or, seen in the wild, a JP2 box header.
            return (b"\xff\x4f\xff\x51", b"\x00\x00\x00\x0cjP")
        return ()


_P = "1.2.840.10008.1.2"

SYNTAXES: dict[str, TransferSyntax] = {
    ts.uid: ts
    for ts in [
        TransferSyntax(_P, "Implicit VR Little Endian", "native", explicit_vr=False),
        TransferSyntax(_P + ".1", "Explicit VR Little Endian", "native"),
        TransferSyntax(_P + ".2", "Explicit VR Big Endian", "native", little_endian=False),
        TransferSyntax(_P + ".1.99", "Deflated Explicit VR Little Endian", "native", deflated=True),
        TransferSyntax(_P + ".1.98", "Encapsulated Uncompressed Explicit VR Little Endian", "encapsulated-native"),
        TransferSyntax(_P + ".8.1", "Deflated Image Frame Compression", "deflate-frames"),
        TransferSyntax(_P + ".5", "RLE Lossless", "rle"),
        TransferSyntax(_P + ".4.50", "JPEG Baseline (Process 1)", "jpeg", lossy=True),
        TransferSyntax(_P + ".4.51", "JPEG Extended (Process 2 & 4)", "jpeg", lossy=True),
        TransferSyntax(_P + ".4.57", "JPEG Lossless, Non-Hierarchical (Process 14)", "jpeg"),
        TransferSyntax(_P + ".4.70", "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 [Selection Value 1])", "jpeg"),
        TransferSyntax(_P + ".4.80", "JPEG-LS Lossless", "jpegls"),
        TransferSyntax(_P + ".4.81", "JPEG-LS Near-Lossless", "jpegls", lossy=True),
        TransferSyntax(_P + ".4.90", "JPEG 2000 Image Compression (Lossless Only)", "j2k"),
        TransferSyntax(_P + ".4.91", "JPEG 2000 Image Compression", "j2k", lossy=True),
        TransferSyntax(_P + ".4.201", "High-Throughput JPEG 2000 (Lossless Only)", "htj2k"),
        TransferSyntax(_P + ".4.202", "High-Throughput JPEG 2000 with RPCL Options (Lossless Only)", "htj2k"),
        TransferSyntax(_P + ".4.203", "High-Throughput JPEG 2000", "htj2k", lossy=True),
    ]
}

EXPLICIT_VR_LITTLE_ENDIAN = SYNTAXES[_P + ".1"]
IMPLICIT_VR_LITTLE_ENDIAN = SYNTAXES[_P]


def lookup(uid: str) -> TransferSyntax | None:
    """Return the known transfer syntax for `uid`, or None."""
    return SYNTAXES.get(uid.strip("\x00 "))
