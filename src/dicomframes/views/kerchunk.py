"""Kerchunk references: a file's frames, or a whole-slide level, as a zarr array
that zarr and xarray read through fsspec's reference filesystem, with no
dicomframes at read time.

The result is reference-filesystem JSON, kerchunk's "version 1" format::

    {"version": 1, "refs": {".zgroup": "...", "frames/.zarray": "...",
                            "frames/0.0.0": ["s3://bucket/cine.dcm", 1234, 5678], ...}}

- **zarr_format 2.** Metadata are the classic kerchunk keys (``.zgroup``,
  ``.zattrs``, ``<array>/.zarray``, ``<array>/.zattrs`` with xarray's
  ``_ARRAY_DIMENSIONS``), which zarr-python 2 and 3, xarray and GDAL read.
- **One chunk per frame.** A reference is ``[url, offset, length]`` of exactly
  the frame's codestream: the value of its one item, after the 8-byte item
  header. A frame of several fragments has no such range: refused.
- **Codecs from imagecodecs.** Chunks decode through ``imagecodecs.numcodecs``
  (``imagecodecs_jpeg``, ``imagecodecs_jpeg2k``, ``imagecodecs_jpegls``,
  ``imagecodecs_dicomrle``) with the arguments dicomframes' own imagecodecs
  backend uses, so the values equal what dicomframes returns (its default
  decoder when imagecodecs is installed); native frames need no codec.
  Where dicomframes corrects a decoder's output in a way no numcodec does
  (YCbCr converted with pydicom's arithmetic, planar or subsampled native
  pixels, bits above Bits Stored masked or sign-extended, packed 1-bit
  pixels, planar RLE colour), the file is refused instead of described wrongly.
  The first frame is also decoded both ways, once, as a check (``verify``).
- **Levels as one image.** A whole-slide level is a (height, width[, samples])
  array chunked (tile_height, tile_width[, samples]), chunk ``"row.col[.0]"``
  per tile. DICOM edge tiles are whole tiles (the matrix is padded) and zarr
  cuts edge chunks to the array's shape: the same pixels as ``read_region``.
  Absent tiles of TILED_SPARSE levels have no key: they read as the array's
  ``fill_value``, by default ``read_region``'s background.

Views sit below the Reader: these functions take reader-like objects (a
`Reader`, the readers of a level) and never open a file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from dicomframes._dicom.syntaxes import Codec
from dicomframes.errors import MissingDependencyError, RegionError, TranscodeError
from dicomframes.frames.fetch import fetch
from dicomframes.frames.index import ExtendedOffsetTableIndex, NativeFrameIndex, WalkedIndex
from dicomframes.frames.span import ITEM_HEADER, FrameSpan
from dicomframes.io.local import LocalFileSource
from dicomframes.views.regions import default_background

if TYPE_CHECKING:  # pragma: no cover
    from dicomframes.reader import Reader

__all__ = ["reader_references", "level_references", "KERCHUNK_HINT"]

KERCHUNK_HINT = 'pip install "dicomframes[kerchunk]"'
_YBR = ("YBR_FULL", "YBR_FULL_422")
#: item headers read per batch (Basic Offset Table files)
_HEADER_BATCH = 4096

Url = str | Mapping[str, str] | Callable[[str], str] | None


def _refuse(reader: "Reader", why: str, hint: str | None = None, frame: int | None = None) -> TranscodeError:
    return TranscodeError(
        f"cannot be described as kerchunk references: {why}", path=reader.path, frame=frame,
        hint=hint or "read it through dicomframes instead (reader.to_dask(), slide.to_dask())",
    )


# -- where the references point ---------------------------------------------------------------
def _url_for(reader: "Reader", url: Url) -> str:
    """The url the references to `reader`'s frames name."""
    if isinstance(url, str):
        return url
    if isinstance(url, Mapping):
        if reader.path not in url:
            raise ValueError(f"url= names no url for {reader.path!r} (it has {sorted(url)})")
        return url[reader.path]
    if callable(url):
        return str(url(reader.path))
    source = reader.source
    if isinstance(source, LocalFileSource):
        return os.path.abspath(source.path)  # readable from any working directory
    if isinstance(getattr(source, "url", None), str):  # fsspec sources: the name is the full URL
        return reader.path
    raise _refuse(
        reader, f"it was opened from a {type(source).__name__}, which no url names",
        hint="pass url= (where the file will be read from, e.g. an s3:// URL)",
    )


# -- what decodes a chunk ---------------------------------------------------------------------
def _first_params(reader: "Reader") -> dict[str, Any]:
    """What the first frame's codestream declares (colour hints, precision)."""
    return reader.format.codestream_parameters(reader.encoded_frame(0))


def codec_config(reader: "Reader") -> dict[str, Any] | None:
    """The numcodecs configuration that decodes one of `reader`'s frames into what
    dicomframes returns for it (None: the chunk is the pixel bytes), or a
    `TranscodeError` where no imagecodecs numcodec decodes it identically."""
    fmt = reader.format
    ts = fmt.ts
    codec = ts.codec
    if reader.data_source is not reader.source:
        raise _refuse(reader, f"{ts.name} deflates the whole data set: its frames lie at no offset of the file")
    if fmt.bits_allocated == 1:
        raise _refuse(reader, "Bits Allocated 1: pixels are packed 8 to a byte, across frame boundaries")
    if codec in (Codec.NATIVE, Codec.ENCAPSULATED_NATIVE):
        _check_native(reader)
        return None  # the chunk is the pixel bytes
    if codec is Codec.DEFLATE_FRAMES:
        raise _refuse(reader, f"{ts.name}: no numcodec reads its raw deflate streams")
    params = _first_params(reader)
    pi = fmt.photometric_for(params)
    family = fmt.family
    out_pi = fmt.output_photometric(params, reader.as_rgb)
    if codec is Codec.RLE:
        if fmt.samples_per_pixel != 1:
            raise _refuse(reader, "RLE colour frames decode to planes (samples, rows, columns), not interleaved pixels")
        _check_bits(reader, "RLE segments hold whole bytes")
        return {"id": "imagecodecs_dicomrle", "dtype": f"<u{fmt.dtype.itemsize}"}
    shift = family.sign_shift(params, pi, fmt.dtype.itemsize, fmt)
    precision = int(params.get("precision", fmt.bits_stored))
    # Masking to Bits Stored changes nothing where the codestream's unsigned
    # values cannot reach above it; sign extension (or a signed codestream) may.
    signed = fmt.pixel_representation or params.get("is_signed", False)
    if shift and (signed or precision > 8 * fmt.dtype.itemsize - shift):
        raise _refuse(
            reader, f"dicomframes drops the top {shift} bits of each decoded value (Bits Stored "
            f"{fmt.bits_stored}, Pixel Representation {fmt.pixel_representation}, codestream precision "
            f"{precision}); no numcodec does",
        )
    if codec is Codec.JPEG:
        three = params.get("components", fmt.samples_per_pixel) == 3
        space = "YCBCR" if three else "GRAYSCALE"
        out = space
        if three and params.get("dct") and reader.as_rgb and pi in _YBR:
            out = "RGB"  # libjpeg-turbo's conversion: what dicomframes' imagecodecs backend returns
        elif three and reader.as_rgb and pi in _YBR:
            raise _refuse(reader, f"{ts.name} in {pi}: dicomframes converts it to RGB with pydicom's arithmetic")
        return {"id": "imagecodecs_jpeg", "colorspace_jpeg": space, "colorspace_data": out}
    decoded_pi = family.decoded_photometric(pi)
    if out_pi != decoded_pi:
        raise _refuse(
            reader, f"{ts.name} in {pi}: the decoder returns {decoded_pi}, which dicomframes converts to {out_pi}",
            hint="open the file with as_rgb=False to describe the frames as stored, or read it through dicomframes",
        )
    if codec is Codec.JPEGLS:
        return {"id": "imagecodecs_jpegls"}
    if codec in (Codec.J2K, Codec.HTJ2K):
        # OpenJPEG for HTJ2K too: it is what dicomframes uses for irreversible
        # codestreams, and lossless ones decode to the same values whatever the decoder.
        return {"id": "imagecodecs_jpeg2k", "planar": False}
    raise _refuse(reader, f"no numcodec is known for {ts.name}")  # pragma: no cover - every codec is listed


def _check_bits(reader: "Reader", what: str) -> None:
    fmt = reader.format
    if fmt.keyword == "PixelData" and fmt.bits_stored < fmt.bits_allocated:
        raise _refuse(
            reader, f"{what}, and dicomframes {'sign-extends' if fmt.pixel_representation else 'masks'} "
            f"them from Bits Stored {fmt.bits_stored} of Bits Allocated {fmt.bits_allocated}; no numcodec does",
        )


def _check_native(reader: "Reader") -> None:
    """Refuse native pixels that zarr would read differently from dicomframes."""
    fmt = reader.format
    pi = fmt.photometric_interpretation
    if fmt.be_swap_ow:
        raise _refuse(reader, "8-bit pixels in big endian OW are stored swapped in pairs")
    if pi == "YBR_FULL_422":
        raise _refuse(reader, "native YBR_FULL_422 is subsampled; dicomframes expands it")
    if fmt.samples_per_pixel > 1 and fmt.planar_configuration == 1:
        raise _refuse(reader, "Planar Configuration 1 stores colour planes, not interleaved pixels")
    if fmt.samples_per_pixel == 3 and pi in _YBR and reader.as_rgb:
        raise _refuse(
            reader, f"{pi} pixels, which dicomframes converts to RGB",
            hint="open the file with as_rgb=False to describe the pixels as stored",
        )
    _check_bits(reader, "native pixels are stored as they are")


def _zarr_dtype(reader: "Reader", compressor: dict[str, Any] | None) -> str:
    dtype = reader.format.dtype
    if compressor is None and not reader.format.ts.little_endian and dtype.itemsize > 1:
        return dtype.newbyteorder(">").str  # native big endian bytes, read as they are
    return dtype.newbyteorder("<").str


# -- where each frame's codestream lies --------------------------------------------------------
def frame_ranges(reader: "Reader", frames: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, lengths) in the file of the codestream (native: the pixel bytes) of
    each frame of `frames` (default: all), as int64 arrays; `TranscodeError` for a
    frame of several fragments.

    Needs the frame index complete: for files without an offset table, every
    frame is located first (``reader.locate_all()``: a walk over the item headers).
    """
    index = reader.index
    wanted = np.arange(len(reader)) if frames is None else np.asarray(frames, dtype=np.int64)
    fmt = reader.format
    frame_bytes = -(-fmt.native_frame_bits // 8)
    spans = [index.span(int(i)) for i in wanted]
    offsets = np.fromiter((s.offset for s in spans), np.int64, len(spans))
    lengths = np.fromiter((s.length for s in spans), np.int64, len(spans))
    if isinstance(index, NativeFrameIndex):
        return offsets, lengths
    offsets += 8  # past the item header
    lengths -= 8
    if isinstance(index, ExtendedOffsetTableIndex):
        # One item per frame; the table's lengths are the items' (or, wsidicom's
        # quirk on the last frame, may count its header): the header decides there.
        lengths = np.fromiter((s.payload for s in spans), np.int64, len(spans))
        slack = [k for k, s in enumerate(spans) if s.payload_slack]
        item_lengths = _item_lengths(reader, [spans[k] for k in slack])
        for k, n in zip(slack, item_lengths):
            lengths[k] = min(int(n), int(lengths[k]))
    elif isinstance(index, WalkedIndex) and index.walk_all() == len(reader):
        pass  # as many fragments as frames: each frame is exactly one item
    else:
        # Basic Offset Table (or a walk that found more fragments than frames):
        # a frame is one fragment when its first item fills its range.
        item_lengths = _item_lengths(reader, spans)
        several = np.flatnonzero(item_lengths != lengths)
        if len(several):
            k = int(several[0])
            raise _refuse(
                reader, f"the frame is made of several fragments ({int(lengths[k]) + 8} bytes of items, the first "
                f"holding {int(item_lengths[k])}); a reference is one byte range",
                hint="re-encapsulate the file with one fragment per frame, or read it through dicomframes",
                frame=int(wanted[k]),
            )
    if fmt.ts.codec is Codec.ENCAPSULATED_NATIVE:
        short = np.flatnonzero(lengths < frame_bytes)
        if len(short):
            raise _refuse(reader, f"the frame's item holds {int(lengths[short[0]])} bytes, fewer than its "
                          f"{frame_bytes} pixel bytes", frame=int(wanted[short[0]]))
        lengths = np.full_like(lengths, frame_bytes)  # without the item's padding byte
    return offsets, lengths


def _item_lengths(reader: "Reader", spans: Sequence[FrameSpan]) -> np.ndarray:
    """The value length of the item each span starts with: 8-byte reads, batched and
    planned as the reader plans frames (neighbours closer than the source's merge gap
    share a request: remote files of small tiles are read about whole)."""
    out = np.empty(len(spans), np.int64)
    policy = reader.policy
    for start in range(0, len(spans), _HEADER_BATCH):
        batch = [FrameSpan(s.frame, s.offset, 8) for s in spans[start : start + _HEADER_BATCH]]
        got = fetch(reader.data_source, batch, policy)
        for k, head in enumerate(batch):
            out[start + k] = ITEM_HEADER.unpack(bytes(got[head]))[2]
    return out


# -- the JSON ------------------------------------------------------------------------------------
def _dump(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _zarray(shape, chunks, dtype: str, compressor, fill_value) -> str:
    return _dump({
        "zarr_format": 2, "shape": list(shape), "chunks": list(chunks), "dtype": dtype,
        "compressor": compressor, "fill_value": fill_value, "filters": None, "order": "C",
        "dimension_separator": ".",
    })


def _attributes(reader: "Reader", out_pi: str) -> dict[str, Any]:
    header = reader.header
    return {
        "sop_instance_uid": header.get("SOPInstanceUID"),
        "sop_class_uid": header.get("SOPClassUID"),
        "transfer_syntax_uid": header.transfer_syntax.uid,
        "photometric_interpretation": out_pi,
    }


def _output_photometric(reader: "Reader") -> str:
    fmt = reader.format
    params = _first_params(reader) if fmt.ts.encapsulated and fmt.colour_from_codestream else {}
    return fmt.output_photometric(params, reader.as_rgb)


def reader_references(reader: "Reader", *, url: Url = None, verify: bool = True) -> dict[str, Any]:
    """The frames of `reader` as kerchunk references (see `dicomframes.Reader.to_kerchunk`).

    One array ``frames`` of shape (frames, rows, columns[, samples]), one chunk
    (key ``"i.0.0[.0]"``) per frame.
    """
    reader.check_open()
    compressor = codec_config(reader)
    target = _url_for(reader, url)
    reader.locate_all()  # files without an offset table: walk the items once
    offsets, lengths = frame_ranges(reader)
    fmt = reader.format
    shape = (len(reader),) + tuple(fmt.shape)
    zeros = ".0" * len(fmt.shape)
    refs: dict[str, Any] = {
        ".zgroup": _dump({"zarr_format": 2}),
        ".zattrs": _dump({"dicomframes": {**_attributes(reader, _output_photometric(reader)), "url": target}}),
        "frames/.zarray": _zarray(shape, (1,) + tuple(fmt.shape), _zarr_dtype(reader, compressor), compressor, None),
        "frames/.zattrs": _dump({"_ARRAY_DIMENSIONS": ["frame", "y", "x", "sample"][: len(shape)]}),
    }
    for i, (off, n) in enumerate(zip(offsets.tolist(), lengths.tolist())):
        refs[f"frames/{i}{zeros}"] = [target, off, n]
    if verify:
        _verify(reader, 0, int(offsets[0]), int(lengths[0]), compressor)
    return {"version": 1, "refs": refs}


def level_references(
    readers: Sequence["Reader"],
    *,
    focal_plane: int = 0,
    optical_path: int = 0,
    url: Url = None,
    fill_value: Any = None,
    verify: bool = True,
    attributes: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One plane of a tiled image as kerchunk references (see `dicomframes.wsi.Level.to_kerchunk`).

    `readers` are the instances of one tiled image (one instance, or those of a
    concatenation), `focal_plane` and `optical_path` indices of theirs. One
    array ``image`` of shape (height, width[, samples]), one chunk (key
    ``"row.col[.0]"``) per tile; absent tiles read as `fill_value` (default:
    ``read_region``'s background).
    """
    if not readers:
        raise ValueError("level_references needs at least one reader")
    first = readers[0]
    for r in readers:
        r.check_open()
    geometries = [r.tile_geometry for r in readers]
    g0 = geometries[0]
    if len(readers) == 1:  # a level checks its own planes (they may span instances)
        g0.check_plane(focal_plane, optical_path)
    for r, g in zip(readers, geometries):
        if (g.width, g.height, g.tile_width, g.tile_height) != (g0.width, g0.height, g0.tile_width, g0.tile_height):
            raise RegionError("the instances are not tiles of one image", path=r.path)
    compressor = codec_config(first)
    for r in readers[1:]:
        if codec_config(r) != compressor or r.format.dtype != first.format.dtype:
            raise _refuse(r, f"its frames decode differently from those of {first.path}; one array has one codec")
    fmt = first.format
    tiles: dict[tuple[int, int], tuple[str, int, int]] = {}
    found = verified = False
    for r, g in zip(readers, geometries):
        target = _url_for(r, url)
        rows, cols, focal, optical = g.positions()
        frames = np.flatnonzero((focal == focal_plane) & (optical == optical_path))
        if not len(frames):
            continue
        found = True
        off_grid = frames[(rows[frames] % g.tile_height != 0) | (cols[frames] % g.tile_width != 0)
                          | (rows[frames] < 0) | (cols[frames] < 0)
                          | (rows[frames] >= g.height) | (cols[frames] >= g.width)]
        if len(off_grid):
            k = int(off_grid[0])
            raise _refuse(r, f"the tile at row {int(rows[k])}, column {int(cols[k])} lies off the tile grid; "
                          "a chunk is one cell of the grid", frame=k)
        r.locate_all()
        offsets, lengths = frame_ranges(r, frames.tolist())
        tr, tc = (rows[frames] // g.tile_height).tolist(), (cols[frames] // g.tile_width).tolist()
        for row, col, off, n in zip(tr, tc, offsets.tolist(), lengths.tolist()):
            tiles[(row, col)] = (target, off, n)  # as read_region pastes them: a later frame wins
        if verify and not verified:  # one tile, decoded both ways
            _verify(r, int(frames[0]), int(offsets[0]), int(lengths[0]), compressor)
            verified = True
    if not found:
        raise RegionError(f"no tile lies in focal plane {focal_plane} / optical path {optical_path}", path=first.path)
    if fill_value is None and len(tiles) < g0.tiles_across * g0.tiles_down:
        # Absent tiles read as the fill value: read_region's background. With every
        # tile present none is written (xarray would otherwise mask that value as missing).
        fill_value = default_background(first)
        if isinstance(fill_value, tuple):
            if len(set(fill_value)) > 1:
                raise _refuse(first, f"absent tiles read as one fill value, and the background is {fill_value}",
                              hint="pass fill_value= (one number)")
            fill_value = fill_value[0]
    extra = tuple(fmt.shape[2:])
    shape = (g0.height, g0.width) + extra
    chunks = (g0.tile_height, g0.tile_width) + extra
    zeros = ".0" * len(extra)
    attrs = {
        **_attributes(first, _output_photometric(first)), "focal_plane": focal_plane, "optical_path": optical_path,
        "pixel_spacing": list(g0.pixel_spacing) if g0.pixel_spacing else None,
        "tile_organization": g0.organization, "tiles": len(tiles), "url": sorted({t[0] for t in tiles.values()}),
        **(attributes or {}),
    }
    if isinstance(fill_value, (np.generic,)):
        fill_value = fill_value.item()
    refs: dict[str, Any] = {
        ".zgroup": _dump({"zarr_format": 2}),
        ".zattrs": _dump({"dicomframes": attrs}),
        "image/.zarray": _zarray(shape, chunks, _zarr_dtype(first, compressor), compressor, fill_value),
        "image/.zattrs": _dump({"_ARRAY_DIMENSIONS": ["y", "x", "sample"][: len(shape)]}),
    }
    for (row, col), ref in sorted(tiles.items()):
        refs[f"image/{row}.{col}{zeros}"] = list(ref)
    return {"version": 1, "refs": refs}


# -- the check -------------------------------------------------------------------------------------
def _verify(reader: "Reader", frame: int, offset: int, length: int, compressor: dict[str, Any] | None) -> None:
    """Decode `frame` from its reference as zarr would and compare with dicomframes' frame."""
    data = bytes(reader.data_source.read_exact(offset, length, frame=frame))
    if compressor is not None:
        try:
            import imagecodecs.numcodecs
            import numcodecs
        except ImportError as exc:
            raise MissingDependencyError(
                f"checking the references needs imagecodecs and numcodecs ({exc})", hint=KERCHUNK_HINT + ", or verify=False",
            ) from exc
        imagecodecs.numcodecs.register_codecs(codecs=[compressor["id"]], verbose=False)
        try:
            decoded = numcodecs.get_codec(dict(compressor)).decode(data)
        except Exception as exc:
            raise _refuse(reader, f"{compressor['id']} cannot decode the frame: {type(exc).__name__}: {exc}",
                          frame=frame) from exc
    else:
        decoded = data
    fmt = reader.format
    want = next(reader.iter_frames([frame], workers=1, decoder="imagecodecs" if fmt.ts.encapsulated else None))
    raw = np.frombuffer(memoryview(decoded).cast("B"), np.uint8) if not isinstance(decoded, np.ndarray) else decoded
    try:
        got = np.ascontiguousarray(raw).reshape(-1).view(_zarr_dtype(reader, compressor)).reshape(want.shape)
    except ValueError:
        raise _refuse(
            reader, f"{compressor['id'] if compressor else 'the chunk'} gives {raw.dtype} of {raw.shape}, "
            f"not the frame's {want.dtype} of {want.shape}", frame=frame,
        ) from None
    if not np.array_equal(got, want):
        bad = int(np.count_nonzero(got != want))
        raise _refuse(reader, f"the frame decodes differently through {compressor['id'] if compressor else 'zarr'} "
                      f"({bad} values differ)", frame=frame)

