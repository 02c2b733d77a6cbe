"""Decoders from imagecodecs (the ``[fast]`` extra).

imagecodecs releases the GIL, so frames decode in parallel on threads, and its
JPEG (libjpeg-turbo) and HTJ2K decoders are several times faster than the
pylibjpeg plugins. Lossless results are identical to pylibjpeg's; lossy JPEG
may differ by a grey level or two (a different IDCT and chroma upsampling),
see docs/performance.md.
"""

from __future__ import annotations

import numpy as np

from dicomframes._dicom.syntaxes import Codec
from dicomframes.frames.codecs.base import Backend, Decoded, FrameContext, decode_target


def _as_decoded(arr: np.ndarray, planar: int | None = 0) -> Decoded:
    arr = np.ascontiguousarray(arr)
    return Decoded(arr.reshape(-1).view(np.uint8), bits_allocated=arr.dtype.itemsize * 8, planar_configuration=planar)


def _jpeg(src: bytes, ctx: FrameContext, params, out: np.ndarray | None = None) -> Decoded:
    import imagecodecs

    space = "YCBCR" if params.get("components", ctx.samples_per_pixel) == 3 else "GRAYSCALE"
    out_space, pi = space, None
    if (
        space == "YCBCR" and params.get("dct") and ctx.as_rgb
        and ctx.photometric_interpretation in ("YBR_FULL", "YBR_FULL_422")
    ):
        # libjpeg-turbo's integer YCbCr->RGB costs a fraction of pydicom's float
        # conversion; it differs from it by at most 1, within the lossy tolerance.
        out_space, pi = "RGB", "RGB"
    try:
        arr = imagecodecs.jpeg8_decode(src, colorspace=space, outcolorspace=out_space, out=decode_target(out, params))
    except Exception:
        if pi is not None:
            raise
        arr = imagecodecs.jpeg_decode(src)  # other processes (e.g. lossless with odd precision)
    decoded = _as_decoded(arr)
    decoded.photometric_interpretation = pi
    return decoded


def _jpegls(src: bytes, ctx: FrameContext, params, out: np.ndarray | None = None) -> Decoded:
    import imagecodecs

    return _as_decoded(imagecodecs.jpegls_decode(src, out=decode_target(out, params)))


def _j2k(src: bytes, ctx: FrameContext, params, out: np.ndarray | None = None) -> Decoded:
    import imagecodecs

    return _as_decoded(imagecodecs.jpeg2k_decode(src, planar=False, out=decode_target(out, params)))


def _htj2k(src: bytes, ctx: FrameContext, params, out: np.ndarray | None = None) -> Decoded:
    import imagecodecs

    # OpenJPH (htj2k_decode) is the fast one, but on irreversible (9/7)
    # codestreams written by OpenJPEG it returned values off by up to 255 in
    # our measurements; OpenJPEG (jpeg2k_decode) matches pylibjpeg exactly.
    if params.get("reversible"):
        try:
            return _as_decoded(imagecodecs.htj2k_decode(src, planar=False, out=decode_target(out, params)))
        except Exception:
            pass
    return _j2k(src, ctx, params, out)


def _rle(src: bytes, ctx: FrameContext, params) -> Decoded:
    import imagecodecs

    data = imagecodecs.dicomrle_decode(src, f"<u{max(ctx.bits_allocated // 8, 1)}")
    return Decoded(data, planar_configuration=1)


_PKG = ("imagecodecs",)
_MOD = ("imagecodecs",)
IMAGECODECS_BACKENDS = [
    Backend("imagecodecs", frozenset({Codec.JPEG}), _PKG, _MOD, _jpeg, releases_gil=True, decodes_into=True),
    Backend("imagecodecs", frozenset({Codec.JPEGLS}), _PKG, _MOD, _jpegls, releases_gil=True, decodes_into=True),
    Backend("imagecodecs", frozenset({Codec.J2K}), _PKG, _MOD, _j2k, releases_gil=True, decodes_into=True),
    Backend("imagecodecs", frozenset({Codec.HTJ2K}), _PKG, _MOD, _htj2k, releases_gil=True, decodes_into=True),
]
# RLE: no faster than pylibjpeg-rle in our measurements, and it crashed on a
# corrupt segment; available by name (decoder="imagecodecs"), never the default.
IMAGECODECS_RLE = Backend("imagecodecs", frozenset({Codec.RLE}), _PKG, _MOD, _rle, releases_gil=True)
