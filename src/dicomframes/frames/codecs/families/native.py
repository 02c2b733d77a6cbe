"""Frames that are the pixel bytes themselves: native (not encapsulated),
Encapsulated Uncompressed, and Deflated Image Frame Compression (each frame a
deflate stream of its pixel bytes).

No codestream, so nothing to parse or check; unused high bits are masked (or
sign-extended) as for native pixel data.
"""

from __future__ import annotations

from dicomframes._dicom.syntaxes import Codec
from dicomframes.frames.codecs.families.base import CodecFamily


class PixelBytesFamily(CodecFamily):
    pixel_bytes = True


NATIVE = PixelBytesFamily(Codec.NATIVE)
ENCAPSULATED_NATIVE = PixelBytesFamily(Codec.ENCAPSULATED_NATIVE)
DEFLATE_FRAMES = PixelBytesFamily(Codec.DEFLATE_FRAMES)
