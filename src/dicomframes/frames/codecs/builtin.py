"""Backends built on the required packages (and zlib/NumPy for the simple ones)."""

from __future__ import annotations

import zlib

from dicomframes._dicom.syntaxes import Codec
from dicomframes.frames.codecs.base import Backend, Decoded, FrameContext


def _precision_bits(precision: int, default: int) -> int:
    if 0 < precision <= 8:
        return 8
    if 8 < precision <= 16:
        return 16
    if 16 < precision <= 32:
        return 32
    return default


def _libjpeg(src: bytes, ctx: FrameContext, params) -> Decoded:
    from libjpeg.utils import decode_pixel_data

    return Decoded(decode_pixel_data(src, version=2))


def _openjpeg(src: bytes, ctx: FrameContext, params) -> Decoded:
    from openjpeg.utils import decode_pixel_data

    data = decode_pixel_data(src, version=2)
    precision = params.get("precision", ctx.bits_stored)
    return Decoded(data, bits_allocated=_precision_bits(precision, ctx.bits_allocated))


def _rle(src: bytes, ctx: FrameContext, params) -> Decoded:
    from rle.utils import decode_pixel_data

    data = decode_pixel_data(
        src, version=2, rows=ctx.rows, columns=ctx.columns,
        bits_allocated=ctx.bits_allocated, samples_per_pixel=ctx.samples_per_pixel, byteorder="<",
    )
    return Decoded(data, planar_configuration=1)


def _pyjpegls(src: bytes, ctx: FrameContext, params) -> Decoded:
    import jpeg_ls

    data, info = jpeg_ls.decode_pixel_data(src)
    planar = None
    if info["components"] > 1:
        planar = 1 if info["interleave_mode"] == 0 else 0
    bits = info["bits_per_sample"]
    return Decoded(data, bits_allocated=_precision_bits(bits, ctx.bits_allocated) if bits <= 16 else None, planar_configuration=planar)


def _libjpeg_ls(src: bytes, ctx: FrameContext, params) -> Decoded:
    # libjpeg also reads JPEG-LS, including some codestreams CharLS refuses
    # (e.g. one without its End Of Image marker); always sample-interleaved.
    from libjpeg.utils import decode_pixel_data

    data = decode_pixel_data(src, version=2)
    precision = params.get("precision", ctx.bits_stored)
    planar = 0 if params.get("components", ctx.samples_per_pixel) > 1 else None
    return Decoded(data, bits_allocated=_precision_bits(precision, ctx.bits_allocated), planar_configuration=planar)


def frame_bytes(ctx: FrameContext) -> int:
    """Bytes of one uncompressed frame (Bits Allocated 1 packed into whole bytes)."""
    pixels = ctx.rows * ctx.columns * ctx.samples_per_pixel
    if ctx.bits_allocated == 1:
        return -(-pixels // 8)
    return pixels * (ctx.bits_allocated // 8)


def _raw(src: bytes, ctx: FrameContext, params) -> Decoded:
    return Decoded(src)


def _inflate(src: bytes, ctx: FrameContext, params) -> Decoded:
    expected = frame_bytes(ctx)
    # Bounded: a frame never inflates past its expected size (deflate bombs).
    for wbits in (-zlib.MAX_WBITS, zlib.MAX_WBITS | 32):
        d = zlib.decompressobj(wbits)
        try:
            data = d.decompress(src, expected + 1)
        except zlib.error:
            continue
        return Decoded(data)
    raise ValueError("the frame is not a valid deflate stream")


_JPEG = ("pylibjpeg", "pylibjpeg-libjpeg")
BUILTIN_BACKENDS = [
    Backend("pylibjpeg", frozenset({Codec.JPEG}), _JPEG, ("libjpeg",), _libjpeg),
    Backend("pylibjpeg", frozenset({Codec.J2K, Codec.HTJ2K}), ("pylibjpeg", "pylibjpeg-openjpeg"), ("openjpeg",), _openjpeg),
    Backend("pylibjpeg", frozenset({Codec.RLE}), ("pylibjpeg", "pylibjpeg-rle"), ("rle",), _rle, cheap=True),
    Backend("pylibjpeg", frozenset({Codec.JPEGLS}), ("pyjpegls",), ("jpeg_ls",), _pyjpegls),
    # After CharLS (pyjpegls): the fallback for JPEG-LS frames it refuses.
    Backend("libjpeg", frozenset({Codec.JPEGLS}), _JPEG, ("libjpeg",), _libjpeg_ls),
    Backend("numpy", frozenset({Codec.ENCAPSULATED_NATIVE}), ("numpy",), ("numpy",), _raw, releases_gil=True),
    Backend("numpy", frozenset({Codec.DEFLATE_FRAMES}), ("numpy",), ("zlib",), _inflate, releases_gil=True),
]
