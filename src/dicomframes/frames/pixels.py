"""Pixels: raw frame bytes or a codec's output -> the array users get.

The one place that reproduces ``pydicom.pixels.pixel_array``: dtype from Bits
Allocated and Pixel Representation, unused-bit and sign corrections, planar
configuration, YBR_FULL_422 expansion and YBR -> RGB conversion. Arrays come
back writeable and in native byte order. What depends on the codec (codestream
parameters and checks, colour hints, sign corrections) is asked of its family
(`dicomframes.frames.codecs.families`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Literal

import numpy as np

from dicomframes._dicom.syntaxes import TransferSyntax
from dicomframes.errors import DecodeError, InvalidFileError
from dicomframes.frames.codecs import Decoded, FrameContext
from dicomframes.frames.codecs.families import CodecFamily, Params, family_for, shift_out_high_bits
from dicomframes.frames.header import Header
from dicomframes.frames.span import FrameBytes, FrameSpan

_YBR = ("YBR_FULL", "YBR_FULL_422")
_YBR_TO_RGB = np.asarray(
    [
        [1.000, 1.000, 1.000],
        [0.000, -0.114 * 1.772 / 0.587, 1.772],
        [1.402, -0.299 * 1.402 / 0.587, 0.000],
    ],
    dtype=np.float32,
)


def _ybr_full_to_rgb_float(arr: np.ndarray) -> np.ndarray:
    """YCbCr (full range) -> RGB, with the same float32 arithmetic as pydicom."""
    out = arr.astype(np.float32)
    out -= [0, 128, 128]
    np.matmul(out, _YBR_TO_RGB, out=out)
    out += 0.5
    np.floor(out, out=out)
    np.clip(out, 0, 255, out=out)
    return out.astype(arr.dtype)


_LUT_LOCK = threading.Lock()
_LUTS: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None


def _ybr_luts() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tables of pydicom's result for every 8-bit YCbCr triple.

    R depends on (Y, Cr) only and B on (Y, Cb) only (their third coefficient is
    an exact zero), G on all three: 64 KiB + 16 MiB + 64 KiB, built once per
    process (~0.1 s) with pydicom's own float32 arithmetic over every triple,
    so a lookup returns exactly what that arithmetic returns. The steps but
    the product are exact on these integers whatever way they are computed,
    so only the product is done as pydicom does it (the same `matmul` over
    rows of 256 pixels); the offsets are taken off once, not per block as
    `_ybr_full_to_rgb_float` would (that cost three times as much: each
    worker process spent 0.33 s of its first frame here).
    """
    global _LUTS
    with _LUT_LOCK:
        if _LUTS is None:
            r = np.empty(1 << 16, np.uint8)  # index Y << 8 | Cr
            g = np.empty(1 << 24, np.uint8)  # index Cb << 16 | Y << 8 | Cr
            b = np.empty(1 << 16, np.uint8)  # index Cb << 8 | Y
            block = np.empty((256, 256, 3), np.float32)  # all (Y, Cr) for one Cb, less pydicom's offsets
            block[..., 0] = np.arange(256, dtype=np.float32)[:, None]
            block[..., 2] = np.arange(-128, 128, dtype=np.float32)[None, :]
            out = np.empty_like(block)
            for cb in range(256):
                block[..., 1] = cb - 128
                np.matmul(block, _YBR_TO_RGB, out=out)
                out += 0.5
                np.floor(out, out=out)
                np.clip(out, 0, 255, out=out)
                g[cb << 16 : (cb + 1) << 16] = out[..., 1].reshape(-1)  # whole numbers: the cast is exact
                b[cb << 8 : (cb + 1) << 8] = out[:, 0, 2]
                if cb == 0:
                    r[:] = out[..., 0].reshape(-1)
            _LUTS = (r, g, b)
    return _LUTS


def store(arr: np.ndarray, out: np.ndarray) -> np.ndarray:
    """`out` holding `arr`: nothing to copy where a codec decoded into it (`arr`
    is `out`'s own memory, laid out alike), else a copy."""
    if arr.shape != out.shape:
        raise ValueError(f"a frame of shape {arr.shape} does not fit an out array of shape {out.shape}")
    if arr.ctypes.data == out.ctypes.data and arr.strides == out.strides and arr.dtype == out.dtype:
        return out
    if np.shares_memory(arr, out):
        arr = arr.copy()
    if arr.ndim == 3 and not arr.flags.c_contiguous:
        # Planar frames (a transposed view): sample by sample is ~3.5x faster than
        # NumPy's copy of the transposed array (235 vs 860 us at 512x512 RGB).
        for k in range(arr.shape[2]):
            out[..., k] = arr[..., k]
    else:
        np.copyto(out, arr)
    return out


def ybr_full_to_rgb(arr: np.ndarray) -> np.ndarray:
    """YCbCr (full range) -> RGB, identical to pydicom's ``convert_color_space``.

    8-bit frames use lookup tables (about 3x faster than the float32 matrix
    product on real images); other depths use pydicom's arithmetic.
    """
    if arr.dtype != np.uint8 or arr.shape[-1] != 3:
        return _ybr_full_to_rgb_float(arr)
    r_lut, g_lut, b_lut = _ybr_luts()
    flat = arr.reshape(-1, 3)
    n = flat.shape[0]
    # Bytes [Cr, Y, Cb, 0] per pixel: as little-endian uint16 the first pair is
    # the R key (Y << 8 | Cr); as uint32 the G key; shifted right 8, the B key.
    key = np.empty((n, 4), np.uint8)
    key[:, 0] = flat[:, 2]
    key[:, 1] = flat[:, 0]
    key[:, 2] = flat[:, 1]
    key[:, 3] = 0
    k32 = key.view("<u4").reshape(n)
    out = np.empty((n, 3), np.uint8)
    out[:, 0] = r_lut.take(key.view("<u2")[:, 0], mode="clip")
    out[:, 1] = g_lut.take(k32, mode="clip")
    k32 >>= 8
    out[:, 2] = b_lut.take(k32, mode="clip")
    return out.reshape(arr.shape)


def _dtype(bits_allocated: int, pixel_representation: int) -> np.dtype:
    if bits_allocated == 1:
        return np.dtype("u1")
    if bits_allocated <= 0 or bits_allocated % 8 or bits_allocated > 64:
        raise ValueError(f"Bits Allocated {bits_allocated} has no NumPy dtype")
    return np.dtype(f"{'ui'[pixel_representation]}{bits_allocated // 8}")


@dataclass(frozen=True)
class PixelFormat:
    """The image pixel description of a file, and how to finish its frames."""

    name: str
    ts: TransferSyntax
    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric_interpretation: str
    planar_configuration: int
    keyword: str
    vr: str

    @classmethod
    def from_header(cls, header: Header) -> "PixelFormat":
        v = header.values
        name = header.name

        def need(key: str) -> int:
            value = v.get(key)
            if not isinstance(value, int):
                raise InvalidFileError(f"the image has no valid {key} ({value!r})", path=name)
            return value

        rows, columns = need("Rows"), need("Columns")
        ba = need("BitsAllocated") if header.pixel_keyword == "PixelData" else {"FloatPixelData": 32, "DoubleFloatPixelData": 64}[header.pixel_keyword]
        spp = v.get("SamplesPerPixel") or 1
        bs = v.get("BitsStored") or ba
        pr = v.get("PixelRepresentation") or 0
        if rows <= 0 or columns <= 0 or spp not in (1, 3, 4) or pr not in (0, 1):
            raise InvalidFileError(f"unusable image description: {rows}x{columns}, {spp} samples, Pixel Representation {pr}", path=name)
        if ba != 1 and (ba % 8 or ba > 64) or bs > ba:
            raise InvalidFileError(f"unusable Bits Allocated {ba} / Bits Stored {bs}", path=name)
        pi = v.get("PhotometricInterpretation") or ("MONOCHROME2" if spp == 1 else "RGB")
        if isinstance(pi, list):
            pi = pi[0]
        return cls(
            name=name, ts=header.transfer_syntax, rows=rows, columns=columns,
            samples_per_pixel=spp, bits_allocated=ba, bits_stored=bs, pixel_representation=pr,
            photometric_interpretation=pi, planar_configuration=v.get("PlanarConfiguration") or 0,
            keyword=header.pixel_keyword, vr=header.pixel_vr,
        )

    # -- sizes ---------------------------------------------------------------------
    @property
    def pixels_per_frame(self) -> int:
        return self.rows * self.columns * self.samples_per_pixel

    @property
    def native_frame_bits(self) -> int:
        """Bits of one native frame as stored (YBR_FULL_422 is subsampled)."""
        bits = self.pixels_per_frame * self.bits_allocated
        if self.photometric_interpretation == "YBR_FULL_422" and self.bits_allocated != 1:
            bits = bits // 8 // 3 * 2 * 8
        return bits

    @property
    def dtype(self) -> np.dtype:
        if self.keyword == "FloatPixelData":
            return np.dtype("float32")
        if self.keyword == "DoubleFloatPixelData":
            return np.dtype("float64")
        return _dtype(self.bits_allocated, self.pixel_representation)

    @property
    def shape(self) -> tuple[int, ...]:
        if self.samples_per_pixel == 1:
            return (self.rows, self.columns)
        return (self.rows, self.columns, self.samples_per_pixel)

    @property
    def family(self) -> CodecFamily:
        return family_for(self.ts)

    @property
    def be_swap_ow(self) -> bool:
        return (
            not self.ts.little_endian and self.bits_allocated == 8
            and self.keyword == "PixelData" and self.vr == "OW"
        )

    def context(self, params: Params | None = None, as_rgb: bool = True) -> FrameContext:
        """What a backend needs to know; the colour space as the codestream reveals it."""
        return FrameContext(
            self.rows, self.columns, self.samples_per_pixel, self.bits_allocated, self.bits_stored,
            self.pixel_representation, self.photometric_for(params or {}), self.planar_configuration,
            as_rgb,
        )

    # -- native --------------------------------------------------------------------
    def native_as_stored(self, as_rgb: bool = True) -> bool:
        """Whether a native frame's stored bytes are, as they are, the array
        `from_native` returns (so they can be read straight into it): whole bytes
        in this machine's order, interleaved samples, no unused high bits, no
        colour conversion."""
        dtype = self.dtype
        return (
            not self.ts.encapsulated and self.bits_allocated % 8 == 0 and not self.be_swap_ow
            and (self.ts.little_endian or dtype.itemsize == 1) and dtype.newbyteorder("<") == dtype
            and (self.samples_per_pixel == 1 or self.planar_configuration == 0)
            and self.photometric_interpretation != "YBR_FULL_422"
            and not (self.keyword == "PixelData" and self.bits_allocated > self.bits_stored)
            and not (as_rgb and self.samples_per_pixel == 3 and self.photometric_interpretation in _YBR)
        )

    def from_native(
        self, data: FrameBytes, span: FrameSpan, as_rgb: bool = True, out: np.ndarray | None = None,
    ) -> np.ndarray:
        dtype = self.dtype
        stored_bytes = -(-self.native_frame_bits // 8)
        if self.be_swap_ow:
            if len(data) % 2:
                data = bytes(data) + b"\x00"
            arr = np.frombuffer(data, dtype="<u2").byteswap().view("u1")[span.skip : span.skip + stored_bytes]
        elif self.bits_allocated == 1:
            bits = np.unpackbits(np.frombuffer(data, dtype="u1"), bitorder="little")
            arr = bits[span.bit_offset : span.bit_offset + self.pixels_per_frame]
        else:
            order: Literal["<", ">"] = "<" if self.ts.little_endian else ">"
            arr = np.frombuffer(data, dtype=dtype.newbyteorder(order))
            if order == ">":
                arr = arr.astype(dtype.newbyteorder("="))
        pi = self.photometric_interpretation
        if pi == "YBR_FULL_422" and self.bits_allocated != 1:
            # PS3.3 C.7.6.3.1.2: Y1 Y2 Cb Cr -> Y1 Cb Cr Y2 Cb Cr
            full = np.empty(arr.shape[0] // 2 * 3, dtype=dtype)
            full[::6] = arr[::4]
            full[3::6] = arr[1::4]
            full[1::6] = full[4::6] = arr[2::4]
            full[2::6] = full[5::6] = arr[3::4]
            arr, pi = full, "YBR_FULL"
        arr = self._reshape(arr, self.planar_configuration)
        if self.keyword == "PixelData" and self.bits_allocated > self.bits_stored:
            arr = shift_out_high_bits(arr, self.bits_allocated - self.bits_stored)
        return self._colour(arr, pi, as_rgb, out)

    # -- encapsulated ----------------------------------------------------------------
    def codestream_parameters(self, src: bytes) -> Params:
        return self.family.parameters(src)

    def check_codestream(self, params: Params, frame: int) -> None:
        """Refuse a codestream the header contradicts (size, RLE segments) before decoding it."""
        self.family.check(params, self, frame)

    def photometric_for(self, params: Params) -> str:
        """pydicom's reading of the colour space, with the codestream's hints (JPEG, JPEG-LS)."""
        return self.family.photometric(params, self)

    @property
    def colour_from_codestream(self) -> bool:
        """The frames' colour space depends on their codestream, not on the header alone."""
        return self.family.colour_hints and self.samples_per_pixel == 3

    def output_photometric(self, params: Params, as_rgb: bool) -> str:
        """The colour space of the frames `from_native` / `from_decoded` return, for a
        codestream declaring `params` (the first frame's, where `colour_from_codestream`)."""
        pi = self.family.decoded_photometric(self.photometric_for(params))
        spp = self.samples_per_pixel
        if spp == 3 and pi == "YBR_FULL_422" and self.bits_allocated != 1:
            pi = "YBR_FULL"  # expanded (native) or upsampled by the codec: full resolution
        if as_rgb and spp == 3 and pi == "YBR_FULL":
            pi = "RGB"
        return pi

    def from_decoded(
        self, decoded: Decoded, params: Params, frame: int, as_rgb: bool = True, out: np.ndarray | None = None,
    ) -> np.ndarray:
        family = self.family
        pi = family.decoded_photometric(decoded.photometric_interpretation or family.photometric(params, self))
        dtype = self.dtype
        src_dtype = _dtype(decoded.bits_allocated or self.bits_allocated, self.pixel_representation)
        buf = decoded.data
        n = self.pixels_per_frame
        if self.bits_allocated == 1 and family.pixel_bytes:
            bits = np.unpackbits(np.frombuffer(buf, dtype="u1"), bitorder="little")
            if len(bits) < n:
                raise DecodeError(f"the frame holds {len(bits)} pixels, expected {n}", path=self.name, frame=frame)
            arr = bits[:n].copy()
        else:
            raw = np.frombuffer(buf, dtype=src_dtype.newbyteorder("<"))
            if raw.size < n or (raw.size > n and not family.pixel_bytes):
                raise DecodeError(
                    f"the decoder returned {raw.size} values, expected {n} "
                    f"({self.rows}x{self.columns}x{self.samples_per_pixel})",
                    path=self.name, frame=frame,
                )
            if raw.dtype == dtype and raw.flags.writeable:
                arr = raw[:n]  # the codec's own fresh buffer: no copy needed
            else:
                arr = np.empty(n, dtype=dtype)
                arr[:] = raw[:n]
        planar = decoded.planar_configuration
        if planar is None:
            planar = self.planar_configuration if family.pixel_bytes else 0
        arr = self._reshape(arr, planar)
        arr = shift_out_high_bits(arr, family.sign_shift(params, pi, arr.dtype.itemsize, self))
        return self._colour(arr, pi, as_rgb, out)

    # -- shared steps ------------------------------------------------------------------
    def _reshape(self, arr: np.ndarray, planar: int) -> np.ndarray:
        if self.samples_per_pixel == 1:
            return arr.reshape(self.rows, self.columns)
        if planar == 0:
            return arr.reshape(self.rows, self.columns, self.samples_per_pixel)
        return arr.reshape(self.samples_per_pixel, self.rows, self.columns).transpose(1, 2, 0)

    @staticmethod
    def _colour(arr: np.ndarray, pi: str, as_rgb: bool, out: np.ndarray | None = None) -> np.ndarray:
        """The finished frame: `arr` in RGB where asked, writeable; in `out` where given."""
        if as_rgb and pi in _YBR and arr.ndim == 3:
            arr = ybr_full_to_rgb(arr)
        if out is not None:
            return store(arr, out)
        if not arr.flags.writeable:
            arr = arr.copy()
        return arr
