"""Reading the few parameters a frame's own codestream declares, one section per family.

Pure parsing of bytes, below every other layer. The codec families
(`dicomframes.frames.codecs.families`) use it to match pydicom's handling
(precision, signedness, colour space hints) and to refuse a codestream whose
dimensions disagree with the header before a decoder allocates for it.
"""

from __future__ import annotations

import struct
from typing import Any

# -- JPEG and JPEG-LS (ISO 10918-1, ISO 14495-1) --------------------------------------
#: SOI: every JPEG and JPEG-LS codestream starts with it
JPEG_START_MARKERS: tuple[bytes, ...] = (b"\xff\xd8",)

_SOF = {bytes([0xFF, m]) for m in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7)}
_APP = {bytes([0xFF, m]) for m in range(0xE0, 0xF0)}


def jpeg_parameters(src: bytes) -> dict[str, Any]:
    """Parameters of a JPEG or JPEG-LS codestream; {} if it cannot be parsed."""
    info: dict[str, Any] = {}
    try:
        if src[:2] not in JPEG_START_MARKERS:
            return info
        offset = 2
        app = {}
        limit = min(len(src), 1 << 20)
        while (marker := src[offset : offset + 2]) not in _SOF:
            if offset >= limit or marker[:1] != b"\xff":
                return {}
            length = struct.unpack(">H", src[offset + 2 : offset + 4])[0]
            if marker in _APP:
                app[marker] = src[offset + 4 : offset + 2 + length]
            offset += length + 2
        if app:
            info["app"] = app
        offset += 2
        info["precision"] = src[offset + 2]
        info["height"], info["width"] = struct.unpack(">HH", src[offset + 3 : offset + 7])
        info["components"] = src[offset + 7]
        info["component_ids"] = [src[offset + 8 + 3 * k] for k in range(info["components"])]
        info["jpegls"] = marker == b"\xff\xf7"
        # SOF0..SOF2 (and arithmetic SOF9..SOF10) are DCT, i.e. lossy, processes.
        info["dct"] = marker[1] in (0xC0, 0xC1, 0xC2, 0xC9, 0xCA)
    except (IndexError, struct.error):
        return {}
    return info


# -- JPEG 2000 and HTJ2K (ISO 15444-1, -15) ----------------------------------------------
_SOC_SIZ = b"\xff\x4f\xff\x51"
#: a raw codestream (SOC + SIZ) or, seen in the wild, a JP2 file (its signature box header)
J2K_START_MARKERS: tuple[bytes, ...] = (_SOC_SIZ, b"\x00\x00\x00\x0cjP")


def j2k_parameters(src: bytes) -> dict[str, Any]:
    """Parameters of a JPEG 2000 codestream's SIZ segment; {} if not found."""
    try:
        start = 0
        if src[:4] != _SOC_SIZ:
            # A JP2 file: find the codestream box ('jp2c').
            start = src.find(b"jp2c", 0, 4096)
            if start < 0:
                return {}
            start += 4
            if src[start : start + 4] != _SOC_SIZ:
                return {}
        siz = start + 4
        # Lsiz(2) Rsiz(2) Xsiz(4) Ysiz(4) XOsiz(4) YOsiz(4) XTsiz YTsiz XTOsiz YTOsiz Csiz(2) then Ssiz...
        xsiz, ysiz, xo, yo = struct.unpack(">IIII", src[siz + 4 : siz + 20])
        csiz = struct.unpack(">H", src[siz + 36 : siz + 38])[0]
        ssiz = src[siz + 38]
        # COD follows SIZ in the main header; its last SPcod byte names the
        # wavelet: 1 = reversible 5/3, 0 = irreversible 9/7.
        lsiz = struct.unpack(">H", src[siz : siz + 2])[0]
        reversible = None
        pos = siz + lsiz
        for _ in range(64):
            marker, length = struct.unpack(">HH", src[pos : pos + 4])
            if marker == 0xFF52:
                reversible = src[pos + 4 + 9] == 1
                break
            if marker in (0xFF90, 0xFF93) or marker >> 8 != 0xFF:
                break  # first tile-part or not a marker: no COD found
            pos += 2 + length
        return {
            "reversible": reversible,
            "width": xsiz - xo,
            "height": ysiz - yo,
            "components": csiz,
            "precision": (ssiz & 0x7F) + 1,
            "is_signed": bool(ssiz & 0x80),
        }
    except (IndexError, struct.error):
        return {}


# -- RLE Lossless (PS3.5 Annex G) -------------------------------------------------------
#: the RLE header: a segment count and 15 segment offsets, little-endian 32-bit
RLE_HEADER_LENGTH = 64


def rle_parameters(src: bytes) -> dict[str, Any]:
    """The RLE header (PS3.5 G.5): segment count and offsets; {} if too short."""
    if len(src) < RLE_HEADER_LENGTH:
        return {}
    header = struct.unpack("<16I", src[:RLE_HEADER_LENGTH])
    count = header[0]
    return {"segments": count, "offsets": list(header[1 : 1 + min(count, 15)]), "length": len(src)}
