"""Decompress a huge DICOM file as a stream: pydicom's ``decompress``, with flat memory.

`decompress` writes what ``pydicom.pixels.decompress(dcmread(src))`` followed by
``save_as`` writes (see docs/decompress.md for the few deliberate differences),
without ever holding the data set or the pixel data:

1. the file meta and every element before Pixel Data are copied as byte ranges
   (a 15 MB Per-Frame Functional Groups Sequence is copied, not parsed); only
   the few elements that change are encoded anew: Transfer Syntax UID, SOP
   Instance UID, Photometric Interpretation, Planar Configuration, Number of
   Frames (and the Extended Offset Table, dropped or rewritten);
2. frames come from `Reader.iter_frames` (planned range reads, parallel decode,
   bounded bytes in flight) and are written in order;
3. the elements after Pixel Data are copied.

Sources whose data set is not Explicit VR Little Endian (Implicit VR, Big
Endian, or encoded differently from what their transfer syntax says) have the
elements before Pixel Data re-encoded through pydicom (see
`dataset_writer.reencode`). Deflated sources are inflated as a stream.

The output is written under a temporary name beside the destination and
renamed when complete (on object stores, the object is committed only on
success), so an error or an interrupt never leaves a partial file behind.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, TextIO

import numpy as np

from dicomframes._dicom import encode
from dicomframes._dicom.elements import ElementWalker
from dicomframes._dicom.tags import (
    ENCAPSULATED_PIXEL_DATA_VALUE_TOTAL_LENGTH,
    EXTENDED_OFFSET_TABLE,
    EXTENDED_OFFSET_TABLE_LENGTHS,
    FILE_META_GROUP_LENGTH,
    FILE_META_INFORMATION_VERSION,
    IMPLEMENTATION_CLASS_UID,
    MAX_DEFINED_LENGTH,
    MEDIA_STORAGE_SOP_CLASS_UID,
    MEDIA_STORAGE_SOP_INSTANCE_UID,
    NUMBER_OF_FRAMES,
    PHOTOMETRIC_INTERPRETATION,
    PIXEL_KEYWORD_TAGS,
    PIXEL_TAGS,
    PLANAR_CONFIGURATION,
    SOP_INSTANCE_UID,
    TRANSFER_SYNTAX_UID,
    UNDEFINED,
)
from dicomframes.errors import (
    DecodeError,
    DestinationError,
    InvalidFileError,
    TranscodeError,
    TruncatedFileError,
)
from dicomframes.io.cursor import Cursor
from dicomframes.io.local import BytesSource
from dicomframes.io.source import Source
from dicomframes.progress import ProgressBar
from dicomframes.transcode import dataset_writer as dw
from dicomframes.transcode.destination import _destination, _is_remote

#: Explicit VR Little Endian and Encapsulated Uncompressed Explicit VR Little Endian
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
ENCAPSULATED_UNCOMPRESSED = "1.2.840.10008.1.2.1.98"

_COPY_CHUNK = 4 << 20

log = logging.getLogger("dicomframes")


# -- progress --------------------------------------------------------------------------------


@dataclass
class Progress:
    """How far a `decompress` has come; passed to a ``progress`` callable after each frame."""

    frames_done: int
    frames_total: int
    #: pixel data bytes written so far, and in all
    bytes_done: int
    bytes_total: int
    seconds: float

    @property
    def bytes_per_second(self) -> float:
        return self.bytes_done / self.seconds if self.seconds > 0 else 0.0

    @property
    def seconds_left(self) -> float | None:
        rate = self.bytes_per_second
        return (self.bytes_total - self.bytes_done) / rate if rate > 0 else None


class ProgressDisplay:
    """A progress display for `decompress`: frames done, MB/s, time left.

    Call it with a `Progress`; it draws a `dicomframes.progress.ProgressBar`
    (a tqdm bar on a terminal where tqdm is installed, else one line redrawn
    at most every `interval` seconds) and ends it when the last frame is done
    (or on `close`).
    """

    def __init__(self, stream: TextIO | None = None, interval: float = 0.25, label: str = "decompress") -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.label = label
        self._bar: ProgressBar | None = None

    def __call__(self, p: Progress) -> None:
        if self._bar is None:
            self._bar = ProgressBar(p.frames_total, label=self.label, unit="frame", stream=self.stream, interval=self.interval)
        self._bar.update(p.frames_done, p.frames_total, detail=f"{p.bytes_per_second / 1e6:.1f} MB/s")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


# -- the plan --------------------------------------------------------------------------------


@dataclass
class _Layout:
    """Everything written before the frames, and how the frames are written."""

    head: bytes  # preamble, DICM, file meta
    body_source: Source  # the source of the elements' copied ranges
    body: list[dw.Piece]  # the elements before Pixel Data
    pixel_tag: int
    pixel_vr: str
    encapsulated: bool
    frames: int
    frame_bytes: int  # bytes of one output frame (Bits Allocated 1: of its packed bits, rounded up)
    frame_bits: int  # bits of one output frame
    total: int  # pixel data bytes (native: before padding; encapsulated: the items' values)
    photometric_interpretation: str
    sop_instance_uid: str | None
    reencoded: bool  # the elements were re-encoded (not Explicit VR Little Endian in the source)
    little_endian: bool
    explicit_vr: bool
    dtype: np.dtype = field(default_factory=lambda: np.dtype("u1"))
    shape: tuple[int, ...] = ()
    bits_allocated: int = 8


def _new_uid() -> str:
    return "2.25." + str(uuid.uuid4().int)


def output_photometric(reader, as_rgb: bool) -> str:
    """The Photometric Interpretation of the decoded frames, as pydicom's decoders report it.

    pydicom reads the colour space of JPEG and JPEG-LS from the codestream
    (component IDs, a JFIF marker), reports JPEG 2000's YBR_ICT / YBR_RCT as
    RGB (the codec applies the inverse transform), and YBR_FULL / YBR_FULL_422
    as RGB once converted. YBR_FULL_422 that stays YCbCr is YBR_FULL once
    decoded (full resolution); pydicom keeps saying YBR_FULL_422 there for
    compressed sources, which misdescribes the output (docs/decompress.md).
    """
    fmt = reader.format
    # The rules are the codec family's, as for the frames themselves; only JPEG and
    # JPEG-LS colour images need a codestream (the first frame's) to apply them.
    params = fmt.codestream_parameters(reader.encoded_frame(0)) if fmt.colour_from_codestream else {}
    return fmt.output_photometric(params, as_rgb)


def _meta(reader, raw: bytes, meta_offset: int, dataset_offset: int, edits: dw.Edits, name: str) -> bytes:
    """Preamble, DICM and the file meta group with `edits` applied."""
    preamble = raw[:128] if meta_offset == 132 else bytes(128)
    if dataset_offset > meta_offset:
        src = BytesSource(raw, name=name)
        pieces, seen = dw.rewrite(dw.walk(src, meta_offset, dataset_offset, block=max(1, dataset_offset)), edits)
        parts = [p if isinstance(p, bytes) else raw[p[0] : p[1]] for p in pieces]
        has_length = FILE_META_GROUP_LENGTH in seen
    else:
        # No file meta in the source: write the mandatory elements (PS3.10 7.1).
        sop_class = reader.header.get("SOPClassUID") or ""
        parts = [encode.element(FILE_META_INFORMATION_VERSION, "OB", b"\x00\x01")]
        if sop_class:
            parts.append(encode.text(MEDIA_STORAGE_SOP_CLASS_UID, "UI", sop_class))
        instance = edits.replace.get(MEDIA_STORAGE_SOP_INSTANCE_UID)
        if instance is None and reader.header.get("SOPInstanceUID"):
            instance = encode.text(MEDIA_STORAGE_SOP_INSTANCE_UID, "UI", reader.header.get("SOPInstanceUID"))
        if instance is not None:
            parts.append(instance)
        parts.append(edits.replace[TRANSFER_SYNTAX_UID])
        parts.append(encode.text(IMPLEMENTATION_CLASS_UID, "UI", encode.IMPLEMENTATION_UID))
        has_length = True
    return encode.file_meta(parts, preamble=preamble, group_length=has_length)


def _without_moved_tiff(reader, head: bytes, moved: bool) -> bytes:
    """`head` (preamble, DICM, file meta) with the preamble left empty where the
    source's holds a TIFF header (a dual-personality file) and the copy `moved`
    the pixel bytes it points at: a TIFF reader would find other bytes there."""
    if not (reader.header.tiff_signature and moved):
        return head
    log.warning("%s: the TIFF header in the preamble is not copied (the pixel data it points at moves): "
                "the copy is a DICOM file only", reader.path)
    return bytes(128) + head[128:]


def _plan(reader, *, as_rgb: bool, generate_instance_uid: bool, encapsulated: bool) -> _Layout:
    header = reader.header
    name = reader.path
    fmt = reader.format
    ts = header.transfer_syntax
    n = len(reader)
    source: Source = reader.source
    data: Source = reader.data_source

    # -- sizes, checked before anything is written -------------------------------------
    pixels = fmt.rows * fmt.columns * fmt.samples_per_pixel
    if fmt.bits_allocated == 1:
        frame_bits = pixels
        frame_bytes = -(-pixels // 8)
        native_total = -(-(n * pixels) // 8)
    else:
        frame_bytes = pixels * fmt.dtype.itemsize
        frame_bits = 8 * frame_bytes
        native_total = n * frame_bytes
    if encapsulated:
        if header.pixel_keyword != "PixelData":
            raise TranscodeError(
                f"{header.pixel_keyword} cannot be encapsulated (only Pixel Data can)", path=name,
                hint="decompress without encapsulated=True / --encapsulated",
            )
        padded = frame_bytes + frame_bytes % 2
        if padded > MAX_DEFINED_LENGTH:
            raise TranscodeError(f"a frame of {frame_bytes:,} bytes does not fit in one fragment (4 GiB)", path=name)
        total = n * (8 + padded)
    else:
        total = native_total
        if total > MAX_DEFINED_LENGTH:
            raise TranscodeError(
                f"the native pixel data would hold {total:,} bytes ({n} frames of {frame_bytes:,} bytes), more "
                "than a defined length allows (4 GiB - 2, PS3.5 7.1.1)",
                path=name,
                hint="write Encapsulated Uncompressed Explicit VR Little Endian instead: encapsulated=True / --encapsulated",
            )

    pi = output_photometric(reader, as_rgb)
    uid = _new_uid() if generate_instance_uid else None

    # -- file meta ---------------------------------------------------------------------------
    raw = source.read(0, header.dataset_offset) if header.dataset_offset else source.read(0, 132)
    meta_offset = header.meta_offset
    out_ts = ENCAPSULATED_UNCOMPRESSED if encapsulated else EXPLICIT_VR_LITTLE_ENDIAN
    meta_replace = {TRANSFER_SYNTAX_UID: encode.text(TRANSFER_SYNTAX_UID, "UI", out_ts)}
    if uid is not None:
        meta_replace[MEDIA_STORAGE_SOP_INSTANCE_UID] = encode.text(MEDIA_STORAGE_SOP_INSTANCE_UID, "UI", uid)
    head = _meta(reader, raw, meta_offset, header.dataset_offset, dw.Edits(meta_replace, frozenset({FILE_META_GROUP_LENGTH})), name)

    # -- the elements before Pixel Data ------------------------------------------------------
    start = 0 if ts.deflated else header.dataset_offset
    little, explicit = ts.little_endian, header.explicit_vr
    reencoded = not (little and explicit)
    if not reencoded:
        elements = list(dw.walk(data, start, block=max(4096, min(data.walk_block, header.pixel_offset - start))))
        if not elements or elements[-1].tag not in PIXEL_TAGS or elements[-1].value_start != header.pixel_offset:
            raise InvalidFileError("the elements before Pixel Data do not walk to where the header found it", path=name)
        elements.pop()
        body_source = data
    else:
        pixel_start = header.pixel_offset - (12 if explicit else 8)
        if pixel_start - start > dw.MAX_REENCODE_BYTES:
            raise TranscodeError(
                f"{pixel_start - start:,} bytes of elements before Pixel Data need re-encoding; the limit is "
                f"{dw.MAX_REENCODE_BYTES >> 20} MiB", path=name,
            )
        encoded = dw.reencode(data.read_exact(start, pixel_start - start), explicit_vr=explicit, little_endian=little, name=name)
        body_source = BytesSource(encoded, name=name)
        elements = list(dw.walk(body_source, 0))
        if elements and elements[-1].tag in PIXEL_TAGS:  # pragma: no cover - the range ends before it
            elements.pop()

    replace: dict[int, bytes] = {
        PHOTOMETRIC_INTERPRETATION: encode.text(PHOTOMETRIC_INTERPRETATION, "CS", pi),
        NUMBER_OF_FRAMES: encode.text(NUMBER_OF_FRAMES, "IS", str(n)),
    }
    only_if_present = {NUMBER_OF_FRAMES} if n <= 1 else set()
    if uid is not None:
        replace[SOP_INSTANCE_UID] = encode.text(SOP_INSTANCE_UID, "UI", uid)
    if fmt.samples_per_pixel > 1:
        replace[PLANAR_CONFIGURATION] = encode.us(PLANAR_CONFIGURATION, 0)
    delete = {EXTENDED_OFFSET_TABLE, EXTENDED_OFFSET_TABLE_LENGTHS, ENCAPSULATED_PIXEL_DATA_VALUE_TOTAL_LENGTH}
    if encapsulated:
        padded = frame_bytes + frame_bytes % 2
        offsets = np.arange(n, dtype="<u8") * np.uint64(8 + padded)
        lengths = np.full(n, frame_bytes, dtype="<u8")
        replace[EXTENDED_OFFSET_TABLE] = encode.element(EXTENDED_OFFSET_TABLE, "OV", offsets.tobytes())
        replace[EXTENDED_OFFSET_TABLE_LENGTHS] = encode.element(EXTENDED_OFFSET_TABLE_LENGTHS, "OV", lengths.tobytes())
        delete -= {EXTENDED_OFFSET_TABLE, EXTENDED_OFFSET_TABLE_LENGTHS}
    body, _ = dw.rewrite(elements, dw.Edits(replace, frozenset(delete), frozenset(only_if_present), drop_group_lengths=True))

    # A native source copied as it is, its Pixel Data where it was, keeps the TIFF it may also be.
    value_at = len(head) + sum(len(p) if isinstance(p, bytes) else p[1] - p[0] for p in body) + 12
    same = not (ts.encapsulated or ts.deflated or reencoded or encapsulated) and value_at == header.pixel_offset
    same = same and fmt.planar_configuration == 0 and pi == fmt.photometric_interpretation
    head = _without_moved_tiff(reader, head, moved=not same)

    keyword = header.pixel_keyword
    if encapsulated:
        vr = "OB"
    elif keyword == "PixelData":
        vr = "OB" if fmt.bits_allocated <= 8 else "OW"
    else:
        vr = "OF" if keyword == "FloatPixelData" else "OD"
    return _Layout(
        head=head, body_source=body_source, body=body, pixel_tag=PIXEL_KEYWORD_TAGS[keyword], pixel_vr=vr,
        encapsulated=encapsulated, frames=n, frame_bytes=frame_bytes, frame_bits=frame_bits, total=total,
        photometric_interpretation=pi, sop_instance_uid=uid, reencoded=reencoded, little_endian=little,
        explicit_vr=explicit, dtype=fmt.dtype, shape=fmt.shape, bits_allocated=fmt.bits_allocated,
    )


# -- writing -----------------------------------------------------------------------------------


def _copy(source: Source, start: int, end: int | None, write: Callable[[bytes], Any]) -> int:
    """Copy ``[start, end)`` of `source` (to its end when `end` is None) in bounded chunks."""
    pos = start
    while end is None or pos < end:
        want = _COPY_CHUNK if end is None else min(_COPY_CHUNK, end - pos)
        chunk = source.read(pos, want) if end is None else source.read_exact(pos, want)
        if not chunk:
            break
        write(chunk)
        pos += len(chunk)
    return pos - start


def _write_pieces(source: Source, pieces: list[dw.Piece], write: Callable[[bytes], Any]) -> None:
    for piece in pieces:
        if isinstance(piece, bytes):
            write(piece)
        else:
            _copy(source, piece[0], piece[1], write)


def _pixel_end(reader) -> int | None:
    """Where the source's Pixel Data element ends (in the data set source); None: at the end of the file."""
    header = reader.header
    if header.pixel_length is not None:
        return header.pixel_offset + header.pixel_length
    # Encapsulated: from the last frame's first item, walk the item headers to the
    # delimiter, 8 bytes a read (the fragments' values are skipped, not read).
    span = reader.index.span(len(reader) - 1)
    data = reader.data_source
    cur = Cursor(data, span.offset, 8)
    walker = ElementWalker(cur, name=reader.path, size=data.size)
    try:
        for value_start, length in walker.items():
            if length == UNDEFINED:
                raise InvalidFileError("a fragment of undefined length after the last frame", path=reader.path, offset=value_start - 8)
    except TruncatedFileError:
        return None  # no sequence delimiter: the file ends inside the pixel data
    return cur.pos


def _write_trailing(reader, layout: _Layout, write: Callable[[bytes], Any]) -> None:
    """The elements after Pixel Data (Data Set Trailing Padding, signatures...)."""
    end = _pixel_end(reader)
    if end is None:
        return
    data = reader.data_source
    if not layout.reencoded:
        _copy(data, end, None, write)
        return
    parts = []
    size = 0
    pos = end
    while True:
        chunk = data.read(pos, _COPY_CHUNK)
        if not chunk:
            break
        parts.append(chunk)
        pos += len(chunk)
        size += len(chunk)
        if size > dw.MAX_REENCODE_BYTES:
            break
    raw = b"".join(parts)
    if raw:
        write(dw.reencode(raw, explicit_vr=layout.explicit_vr, little_endian=layout.little_endian, name=reader.path,
                          what="the elements after Pixel Data"))


class _FrameWriter:
    """Writes decoded frames as native (or encapsulated native) pixel data."""

    def __init__(self, layout: _Layout, write: Callable[[Any], Any], name: str) -> None:
        self.layout = layout
        self.write = write
        self.name = name
        self.frame = 0
        self.written = 0
        self._carry = np.empty(0, dtype=np.uint8)  # Bits Allocated 1: bits not yet a whole byte
        le = layout.dtype.newbyteorder("<") if layout.dtype.itemsize > 1 else layout.dtype
        self._le_dtype = le

    def _check(self, arr: np.ndarray) -> None:
        lay = self.layout
        if arr.shape != lay.shape or arr.dtype.newbyteorder("=") != lay.dtype.newbyteorder("="):
            raise DecodeError(
                f"decoded frame has shape {arr.shape} and dtype {arr.dtype}, expected {lay.shape} {lay.dtype}",
                path=self.name, frame=self.frame,
            )

    def _bytes(self, arr: np.ndarray) -> memoryview | bytes:
        if self.layout.bits_allocated == 1:
            bits = arr.reshape(-1)
            if self.layout.encapsulated:  # each frame starts on a byte boundary
                return np.packbits(bits, bitorder="little").tobytes()
            if self._carry.size:
                bits = np.concatenate([self._carry, bits])
            whole = bits.size // 8 * 8
            self._carry = bits[whole:].copy()
            return np.packbits(bits[:whole], bitorder="little").tobytes()
        arr = np.ascontiguousarray(arr, dtype=self._le_dtype)
        return memoryview(arr).cast("B")

    def add(self, arr: np.ndarray) -> None:
        self._check(arr)
        data = self._bytes(arr)
        if self.layout.encapsulated:
            n = len(data)
            pad = n % 2
            self.write(encode.item_header(n + pad))
            self.write(data)
            if pad:
                self.write(b"\x00")
            self.written += 8 + n + pad
        else:
            self.write(data)
            self.written += len(data)
        self.frame += 1

    def finish(self) -> None:
        if self.layout.encapsulated:
            self.write(encode.SEQUENCE_DELIMITER_BYTES)
            return
        if self._carry.size:
            tail = np.packbits(self._carry, bitorder="little").tobytes()
            self.write(tail)
            self.written += len(tail)
        if self.written != self.layout.total:  # pragma: no cover - guarded by _check
            raise DecodeError(f"wrote {self.written} bytes of pixel data, expected {self.layout.total}", path=self.name)
        if self.written % 2:
            self.write(b"\x00")


def _pixel_element_header(layout: _Layout) -> bytes:
    if layout.encapsulated:
        return encode.pixel_header(layout.pixel_tag, "OB", None) + encode.item_header(0)  # empty Basic Offset Table
    return encode.pixel_header(layout.pixel_tag, layout.pixel_vr, layout.total + layout.total % 2)


# -- the function ---------------------------------------------------------------------------------


def decompress(
    src: Any,
    dst: str | os.PathLike | tuple,
    *,
    as_rgb: bool = True,
    generate_instance_uid: bool = True,
    workers: int | None = None,
    overwrite: bool = False,
    encapsulated: bool = False,
    decoder: str | None = None,
    progress: bool | Callable[[Progress], Any] | None = None,
    max_inflight: int | None = None,
    **storage_options: Any,
) -> str:
    """Write a decompressed copy of `src` to `dst`, one frame at a time.

    The result equals ``pydicom.pixels.decompress(pydicom.dcmread(src))``
    saved with ``save_as`` (element for element; the pixel data byte for byte
    where the same decoders are used), except for the deliberate differences
    listed in docs/decompress.md. Memory stays bounded by the bytes in flight,
    however large the file.

    Parameters
    ----------
    src : str, os.PathLike, binary file object, or (fsspec filesystem, path)
        Anything `dicomframes.open` accepts: a local path, an fsspec URL
        (``s3://``, ``gs://``, ``https://`` ...), an open file, bytes.
    dst : str, os.PathLike, or (fsspec filesystem, path)
        A local path or an fsspec URL. Written under a temporary name beside it
        and renamed when complete (object stores: committed only on success).
    as_rgb : bool
        Convert YCbCr (YBR_FULL, YBR_FULL_422) frames to RGB, as pydicom does.
    generate_instance_uid : bool
        Give the output a new SOP Instance UID (in the data set and the file
        meta), as pydicom does; False keeps the source's.
    workers : int, optional
        Frames decoded in parallel (default: the available cores).
    overwrite : bool
        Replace an existing `dst` (otherwise `DestinationExistsError`).
    encapsulated : bool
        Write Encapsulated Uncompressed Explicit VR Little Endian
        (1.2.840.10008.1.2.1.98): one fragment per frame, an empty Basic Offset
        Table and an Extended Offset Table, so the pixel data may pass 4 GiB.
        By default the output is Explicit VR Little Endian, and native pixel
        data over 4 GiB - 2 bytes is refused before anything is written.
    decoder : str, optional
        The decoder backend (``"pylibjpeg"`` decodes as pydicom does;
        ``"imagecodecs"``, the default where installed, is faster and may differ
        by a grey level on lossy JPEG).
    progress : bool or callable, optional
        True: a progress line on stderr (frames, MB/s, time left). A callable
        is called with a `Progress` after every frame (raising from it aborts
        the write cleanly).
    max_inflight : int, optional
        Bytes of fetched, not yet written frames held at once (default 64 MiB).
    **storage_options
        fsspec options for remote `src` and `dst` (e.g. ``anon=True``).

    Returns
    -------
    str
        The destination's path or URL.

    Raises
    ------
    DestinationExistsError
        `dst` exists and `overwrite` is False (nothing is read or written).
    DestinationError
        `dst` is a directory, or the source itself.
    TranscodeError
        The pixel data is too large for a defined length, cannot be
        encapsulated, or needs more re-encoding than the limit allows.
    DicomFramesError
        Any other subclass: the source cannot be read or decoded; nothing is
        left at `dst`.
    """
    from dicomframes.reader import open as open_reader

    src_options = storage_options if _is_remote(src) else {}
    dst_options = storage_options if _is_remote(dst) else {}
    if storage_options and not src_options and not dst_options:
        raise TypeError(f"unexpected options for local files: {', '.join(sorted(storage_options))}")
    destination = _destination(dst, dst_options)
    destination.check(overwrite)

    display = ProgressDisplay() if progress is True else None
    report = display if display is not None else (progress if callable(progress) else None)

    reader = open_reader(src, as_rgb=as_rgb, decoder=decoder, workers=workers, max_inflight=max_inflight, **src_options)
    frames = None
    try:
        if destination.same_as(reader.source):
            raise DestinationError("the destination is the source; write elsewhere", path=destination.name)
        layout = _plan(reader, as_rgb=as_rgb, generate_instance_uid=generate_instance_uid, encapsulated=encapsulated)
        frames = reader.iter_frames()
        # The first frame before the output exists: decoder errors come first, and
        # worker processes (if any) start before the output file is opened.
        first = next(frames, None)
        start = time.perf_counter()
        with destination.open(overwrite) as out:
            write = out.write
            write(layout.head)
            _write_pieces(layout.body_source, layout.body, write)
            write(_pixel_element_header(layout))
            writer = _FrameWriter(layout, write, reader.path)
            pending = [] if first is None else [first]
            del first
            for arr in _chain_first(pending, frames):
                writer.add(arr)
                del arr
                if report is not None:
                    report(Progress(writer.frame, layout.frames, writer.written, layout.total, time.perf_counter() - start))
            if writer.frame != layout.frames:  # pragma: no cover - the reader yields every frame
                raise DecodeError(f"got {writer.frame} frames, expected {layout.frames}", path=reader.path)
            writer.finish()
            _write_trailing(reader, layout, write)
    finally:
        if frames is not None:
            frames.close()
        reader.close()
        if display is not None:
            display.close()
    return destination.name


def _chain_first(pending: list, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    while pending:
        yield pending.pop()
    yield from rest
