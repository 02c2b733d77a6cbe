"""Codec families: what dicomframes knows of each way of encoding frames, one module each.

- `jpeg`: JPEG. SOF/APP parameters, colour hints (component IDs, JFIF).
- `jpegls`: JPEG-LS. JPEG's parser and hints; sign extension from the precision.
- `j2k`: JPEG 2000 and HTJ2K. SIZ/COD parameters; YBR_ICT/YBR_RCT decode to RGB; sign rules.
- `rle`: RLE Lossless. Header (segment table) validation.
- `native`: native, Encapsulated Uncompressed, Deflated Image Frame Compression:
  the frame is the pixel bytes.

The byte-level parsing and start markers are in `dicomframes._dicom.codestream`
(pure, below every layer); the families add what they mean for pixels.
`family_for(ts)` returns the family of a transfer syntax; backends register
for a family's `Codec` in `dicomframes.frames.codecs`.
"""

from __future__ import annotations

from dicomframes._dicom.syntaxes import Codec, TransferSyntax
from dicomframes.frames.codecs.families.base import (
    MONOCHROME,
    CodecFamily,
    Image,
    Params,
    check_dimensions,
    shift_out_high_bits,
)
from dicomframes.frames.codecs.families.j2k import HTJ2K, J2K
from dicomframes.frames.codecs.families.jpeg import JPEG
from dicomframes.frames.codecs.families.jpegls import JPEG_LS
from dicomframes.frames.codecs.families.native import DEFLATE_FRAMES, ENCAPSULATED_NATIVE, NATIVE
from dicomframes.frames.codecs.families.rle import RLE

FAMILIES: dict[Codec, CodecFamily] = {
    family.codec: family for family in (NATIVE, ENCAPSULATED_NATIVE, DEFLATE_FRAMES, RLE, JPEG, JPEG_LS, J2K, HTJ2K)
}


def family_for(ts: TransferSyntax | Codec | str) -> CodecFamily:
    """The family of a transfer syntax (or of a codec, or its value such as ``"jpeg"``)."""
    return FAMILIES[ts.codec if isinstance(ts, TransferSyntax) else Codec(ts)]


__all__ = [
    "FAMILIES", "MONOCHROME", "CodecFamily", "Image", "Params", "check_dimensions", "family_for", "shift_out_high_bits",
    "NATIVE", "ENCAPSULATED_NATIVE", "DEFLATE_FRAMES", "RLE", "JPEG", "JPEG_LS", "J2K", "HTJ2K",
]
