"""Add an Extended Offset Table to an encapsulated DICOM file, as a stream.

`add_offset_table` writes a copy of a compressed file whose fragments are
byte-identical to the source's and whose frames every reader finds without
walking the fragments:

1. the file meta and the elements before Pixel Data are copied as byte ranges
   (`dataset_writer`), with Extended Offset Table (7FE0,0001) and Extended
   Offset Table Lengths (7FE0,0002) encoded anew (OV, before Pixel Data, in
   tag order) and Encapsulated Pixel Data Value Total Length (7FE0,0003) and
   the Group Lengths dropped;
2. Pixel Data starts with an empty Basic Offset Table item, then each frame's
   items, copied in bounded chunks; their item headers are checked as they
   pass, so the tables written are the ones the bytes agree with;
3. the elements after Pixel Data are copied as `decompress` copies them.

What the standard allows (PS3.3 C.7.6.3.1, PS3.5 A.4; docs/offset-tables.md):
an Extended Offset Table only when every frame is entirely contained in one
fragment, with an empty Basic Offset Table; offsets point at each frame's item
tag, relative to the first byte of the first item after the Basic Offset Table
item; lengths are each frame's item value length (the 8-byte item header not
counted). A file with a frame of several fragments gets a filled Basic Offset
Table instead (32-bit offsets: refused when a frame starts 4 GiB or more past
the first fragment).

Written under a temporary name beside the destination and renamed on success
(`destination`), like `decompress`.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from dicomframes._dicom import encode
from dicomframes._dicom.tags import (
    ENCAPSULATED_PIXEL_DATA_VALUE_TOTAL_LENGTH,
    EXTENDED_OFFSET_TABLE,
    EXTENDED_OFFSET_TABLE_LENGTHS,
    FILE_META_GROUP_LENGTH,
    ITEM,
    PIXEL_KEYWORD_TAGS,
    PIXEL_TAGS,
    TRANSFER_SYNTAX_UID,
    UNDEFINED,
)
from dicomframes.errors import (
    DestinationError,
    FrameIndexError,
    InvalidFileError,
    StorageError,
    TranscodeError,
    TruncatedFileError,
)
from dicomframes.frames.span import ITEM_HEADER
from dicomframes.io.local import BytesSource
from dicomframes.io.source import Source
from dicomframes.transcode import dataset_writer as dw
from dicomframes.transcode.decompress import (
    _COPY_CHUNK,
    Progress,
    ProgressDisplay,
    _meta,
    _without_moved_tiff,
    _write_pieces,
    _write_trailing,
)
from dicomframes.transcode.destination import _destination, _is_remote

log = logging.getLogger("dicomframes")

#: chunks read at once while copying fragments: concurrent requests on object
#: stores, and the most bytes held (4 x 4 MiB)
_CHUNKS_AT_ONCE = 4
#: the largest offset a Basic Offset Table holds (32-bit, PS3.5 A.4)
_MAX_BOT_OFFSET = 0xFFFFFFFF

EOT = "EOT"
BOT = "BOT"


@dataclass
class _Plan:
    """What is written, and which source bytes the frames are."""

    head: bytes  # preamble, DICM, file meta
    body_source: Source  # the source of the copied element ranges
    elements: list[dw.ElementRange]  # the elements before Pixel Data
    pixel_tag: int
    #: each frame's first item header and the end of its last item, in the data set source
    starts: np.ndarray
    ends: np.ndarray
    #: where each frame's first item lands, relative to the first item after the table item
    out_offsets: np.ndarray
    eot_source: bool  # the frames come from an Extended Offset Table
    # for `decompress._write_trailing`
    reencoded: bool
    explicit_vr: bool
    little_endian: bool

    @property
    def total(self) -> int:
        return int((self.ends - self.starts).sum())


def _refuse_unindexable(reader) -> None:
    header = reader.header
    ts = header.transfer_syntax
    if not ts.encapsulated:
        raise TranscodeError(
            f"the pixel data is native ({ts.name}): its frames lie at fixed offsets, so there is nothing to index",
            path=reader.path, offset=header.pixel_offset,
        )
    if ts.deflated:  # pragma: no cover - no deflated syntax is encapsulated today
        raise TranscodeError(f"{ts.name}: a deflated data set cannot be copied by byte range", path=reader.path)


def _elements_before_pixels(reader) -> tuple[Source, list[dw.ElementRange], bool]:
    """The elements before Pixel Data as byte ranges (re-encoded as Explicit VR
    Little Endian first where the source's data set is not), as `decompress` takes them."""
    header = reader.header
    name = reader.path
    data: Source = reader.data_source
    start = header.dataset_offset
    explicit = header.explicit_vr
    if header.transfer_syntax.little_endian and explicit:
        block = max(4096, min(data.walk_block, header.pixel_offset - start))
        elements = list(dw.walk(data, start, block=block))
        if not elements or elements[-1].tag not in PIXEL_TAGS or elements[-1].value_start != header.pixel_offset:
            raise InvalidFileError("the elements before Pixel Data do not walk to where the header found it", path=name)
        elements.pop()
        return data, elements, False
    pixel_start = header.pixel_offset - (12 if explicit else 8)
    if pixel_start - start > dw.MAX_REENCODE_BYTES:
        raise TranscodeError(
            f"{pixel_start - start:,} bytes of elements before Pixel Data need re-encoding; the limit is "
            f"{dw.MAX_REENCODE_BYTES >> 20} MiB", path=name,
        )
    raw = data.read_exact(start, pixel_start - start)
    encoded = dw.reencode(raw, explicit_vr=explicit, little_endian=header.transfer_syntax.little_endian, name=name)
    body = BytesSource(encoded, name=name)
    elements = [el for el in dw.walk(body, 0) if el.tag not in PIXEL_TAGS]
    return body, elements, True


def _frame_spans(reader) -> tuple[np.ndarray, np.ndarray]:
    """Each frame's first item header and the end of its items (the walk runs to the end here)."""
    index = reader.index
    n = len(index)
    index.locate_all()  # one walk over the item headers where there is no table; errors name the frame
    starts = np.empty(n, dtype=np.int64)
    ends = np.empty(n, dtype=np.int64)
    for i in range(n):
        span = index.span(i)
        starts[i] = span.offset
        # From an Extended Offset Table: the item holds the frame's bytes, made even by
        # a padding byte where the table gives an odd length (item values are even).
        ends[i] = span.offset + (span.length if span.payload is None else 8 + span.payload + span.payload % 2)
    last = index.span(n - 1) if n else None
    if last is not None and last.payload is not None and last.payload_slack:
        # A table whose lengths count item headers (as wsidicom writes them) leaves the
        # last frame's length in doubt by 8 bytes: its item header settles it.
        length = _item_header(reader, n - 1, int(starts[-1]))[1]
        if length == last.payload - last.payload_slack:
            ends[-1] = starts[-1] + 8 + length
    return starts, ends


def _item_header(reader, frame: int, offset: int) -> tuple[int, int]:
    """(tag, value length) of the item header at `offset` (from the index's cache where it holds it)."""
    group, elem, length = ITEM_HEADER.unpack(reader.index.read(offset, 8, frame))
    return group << 16 | elem, length


def _plan(reader) -> _Plan:
    header = reader.header
    name = reader.path
    source: Source = reader.source
    raw = source.read(0, header.dataset_offset) if header.dataset_offset else source.read(0, 132)
    # The transfer syntax stays; the file meta is rewritten only for its group length.
    ts = encode.text(TRANSFER_SYNTAX_UID, "UI", header.transfer_syntax.uid)
    head = _meta(reader, raw, header.meta_offset, header.dataset_offset, dw.Edits({TRANSFER_SYNTAX_UID: ts},
                 frozenset({FILE_META_GROUP_LENGTH})), name)
    head = _without_moved_tiff(reader, head, moved=True)  # a table goes before the fragments
    body_source, elements, reencoded = _elements_before_pixels(reader)
    starts, ends = _frame_spans(reader)
    lengths = ends - starts
    # Frames in frame order, one after another: offsets are the running sum of their items.
    out_offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if len(lengths) else lengths
    return _Plan(
        head=head, body_source=body_source, elements=elements, pixel_tag=PIXEL_KEYWORD_TAGS[header.pixel_keyword],
        starts=starts, ends=ends, out_offsets=out_offsets, eot_source=reader.index.kind == "EOT",
        reencoded=reencoded, explicit_vr=header.explicit_vr, little_endian=header.transfer_syntax.little_endian,
    )


def _table_elements(plan: _Plan, kind: str) -> tuple[dw.Edits, bytes]:
    """The edits to the elements before Pixel Data, and the Basic Offset Table item."""
    # (7FE0,0003) gives the length of one bit stream split over fragments, trailing
    # padding excluded: optional, unchecked here, dropped as decompress drops it.
    delete = {ENCAPSULATED_PIXEL_DATA_VALUE_TOTAL_LENGTH}
    replace: dict[int, bytes] = {}
    if kind == EOT:
        lengths = plan.ends - plan.starts - 8  # the item value lengths: headers not counted (PS3.3 C.7.6.3.1)
        replace[EXTENDED_OFFSET_TABLE] = encode.element(EXTENDED_OFFSET_TABLE, "OV", plan.out_offsets.astype("<u8").tobytes())
        replace[EXTENDED_OFFSET_TABLE_LENGTHS] = encode.element(
            EXTENDED_OFFSET_TABLE_LENGTHS, "OV", lengths.astype("<u8").tobytes()
        )
        table = encode.item_header(0)  # empty, as the standard requires beside an Extended Offset Table
    else:
        delete |= {EXTENDED_OFFSET_TABLE, EXTENDED_OFFSET_TABLE_LENGTHS}
        values = plan.out_offsets.astype("<u4").tobytes()
        table = encode.item_header(len(values)) + values
    return dw.Edits(replace, frozenset(delete), drop_group_lengths=True), table


def _check_bot_fits(plan: _Plan, name: str) -> None:
    too_far = np.nonzero(plan.out_offsets > _MAX_BOT_OFFSET)[0]
    if too_far.size:
        i = int(too_far[0])
        raise TranscodeError(
            f"frames span several fragments, so the standard allows no Extended Offset Table, and frame {i} "
            f"starts {int(plan.out_offsets[i]):,} bytes into the pixel data, past what a Basic Offset Table "
            "holds (32-bit offsets, 4 GiB)",
            path=name, frame=i, offset=int(plan.starts[i]),
        )


class _FrameCheck:
    """Follows the item headers of the frames as their bytes stream past.

    Each frame must be whole items ending exactly where its span ends; with
    `one_item`, a single item. A frame of several items found then is recorded
    in `several` and raised as a `TranscodeError` (the caller writes a Basic
    Offset Table instead); from an Extended Offset Table source it is a wrong
    table, a `FrameIndexError`.
    """

    def __init__(self, plan: _Plan, name: str, *, one_item: bool, on_frame: Callable[[int], Any]) -> None:
        self.starts, self.ends = plan.starts, plan.ends
        self.name = name
        self.one_item = one_item
        self.eot_source = plan.eot_source
        self.on_frame = on_frame
        self.n = len(self.starts)
        self.frame = 0
        self.at = int(self.starts[0]) if self.n else 0  # where the next item header is
        self.head = b""  # the first bytes of a header split between chunks
        self.several: int | None = None

    def feed(self, pos: int, chunk: bytes) -> None:
        """Check the item headers in `chunk`, the source's bytes at `pos`."""
        end = pos + len(chunk)
        while self.frame < self.n and self.at < end:
            if self.at + 8 > self.ends[self.frame]:
                raise FrameIndexError(
                    f"an item header crosses the frame's end at offset {int(self.ends[self.frame])}",
                    path=self.name, frame=self.frame, offset=self.at,
                )
            if self.head:
                self.head += chunk[: 8 - len(self.head)]
            else:
                rel = self.at - pos
                self.head = chunk[rel : rel + 8]
            if len(self.head) < 8:
                return  # the rest of the header is in the next chunk
            head, self.head = self.head, b""
            self._item(head)

    def _item(self, head: bytes) -> None:
        i, at, end = self.frame, self.at, int(self.ends[self.frame])
        group, elem, length = ITEM_HEADER.unpack(head)
        if (group << 16 | elem) != ITEM:
            raise FrameIndexError(
                f"expected a fragment item, found ({group:04X},{elem:04X}); the offset table may be wrong",
                path=self.name, frame=i, offset=at,
            )
        after = at + 8 + length
        if length == UNDEFINED or after > end:
            raise FrameIndexError(
                f"a fragment of {length} bytes runs past the frame's end at offset {end}",
                path=self.name, frame=i, offset=at,
            )
        if self.one_item and after != end:
            if self.eot_source:
                raise FrameIndexError(
                    f"the Extended Offset Table gives the frame {end - at - 8} bytes, its item holds {length}",
                    path=self.name, frame=i, offset=at,
                )
            self.several = i
            raise TranscodeError("the frame spans several fragments", path=self.name, frame=i, offset=at)
        self.at = after
        if after == end:
            self.frame += 1
            if self.frame < self.n:
                self.at = int(self.starts[self.frame])
            self.on_frame(self.frame)

    def frame_at(self, offset: int) -> int:
        """The frame whose bytes include `offset`."""
        return max(0, min(self.n - 1, int(np.searchsorted(self.starts, offset, side="right")) - 1))


def _runs(plan: _Plan) -> list[tuple[int, int]]:
    """The frames' byte ranges in frame order, neighbours merged."""
    runs: list[list[int]] = []
    for start, end in zip(plan.starts.tolist(), plan.ends.tolist()):
        if runs and runs[-1][1] == start:
            runs[-1][1] = end
        else:
            runs.append([start, end])
    return [(a, b) for a, b in runs]


def _copy_frames(data: Source, plan: _Plan, check: _FrameCheck, write: Callable[[bytes], Any]) -> None:
    """Copy the frames' items in chunks, a few read at once, each checked before it is written."""
    for start, end in _runs(plan):
        pos = start
        while pos < end:
            ranges = []
            while pos < end and len(ranges) < _CHUNKS_AT_ONCE:
                size = min(_COPY_CHUNK, end - pos)
                ranges.append((pos, size))
                pos += size
            try:
                chunks = data.read_ranges(ranges)
            except StorageError as exc:
                raise exc.with_frame(check.frame_at(ranges[0][0])) from None
            for (offset, size), chunk in zip(ranges, chunks):
                if len(chunk) != size:
                    stop = offset + len(chunk)
                    raise TruncatedFileError(
                        f"the file ends at {stop:,}, inside the pixel data (the frame ends at "
                        f"{int(plan.ends[check.frame_at(stop)]):,})",
                        path=data.name, frame=check.frame_at(stop), offset=stop,
                    )
                check.feed(offset, chunk)
                write(chunk)
            del chunks


def _write(reader, plan: _Plan, destination, kind: str, overwrite: bool, report) -> int | None:
    """Write the output with a table of `kind`. None when done; with an EOT, the
    first frame found to span several fragments, when one is (nothing is left then)."""
    edits, table = _table_elements(plan, kind)
    pieces, _ = dw.rewrite(plan.elements, edits)
    n = len(plan.starts)
    done_bytes = plan.out_offsets + (plan.ends - plan.starts)  # pixel bytes copied once frame i is done
    total = plan.total
    start = time.perf_counter()

    def on_frame(frames_done: int) -> None:
        if report is not None:
            report(Progress(frames_done, n, int(done_bytes[frames_done - 1]), total, time.perf_counter() - start))

    check = _FrameCheck(plan, reader.path, one_item=kind == EOT, on_frame=on_frame)
    try:
        with destination.open(overwrite) as out:
            write = out.write
            write(plan.head)
            _write_pieces(plan.body_source, pieces, write)
            write(encode.pixel_header(plan.pixel_tag, "OB", None))
            write(table)
            _copy_frames(reader.data_source, plan, check, write)
            if check.frame != n:  # pragma: no cover - every span ends a frame
                raise FrameIndexError(f"copied {check.frame} frames of {n}", path=reader.path, frame=check.frame)
            write(encode.SEQUENCE_DELIMITER_BYTES)
            _write_trailing(reader, plan, write)
    except TranscodeError:
        if check.several is None:
            raise
        return check.several  # the destination discarded what was written
    return None


def add_offset_table(
    src: Any,
    dst: str | os.PathLike | tuple,
    *,
    overwrite: bool = False,
    progress: bool | Callable[[Progress], Any] | None = None,
    **storage_options: Any,
) -> str:
    """Write a copy of the encapsulated file `src` to `dst` with an Extended Offset Table.

    The fragments are copied byte for byte; the output carries Extended
    Offset Table (7FE0,0001) and Extended Offset Table Lengths (7FE0,0002)
    and an empty Basic Offset Table item, so pydicom, highdicom, wsidicom and
    dicomframes find every frame without walking the fragments. Sources with
    an empty Basic Offset Table (walked once here), a filled one, or an
    Extended Offset Table already (rewritten, with standard lengths) are
    accepted. Memory stays flat: fragments are copied in 4 MiB chunks; the
    tables take 16 bytes per frame.

    The standard allows an Extended Offset Table only when every frame is one
    fragment. When a frame spans several, the output gets a filled Basic
    Offset Table instead (logged as a warning), if every frame starts within
    4 GiB of the first fragment; otherwise `TranscodeError`.

    Parameters
    ----------
    src : str, os.PathLike, binary file object, or (fsspec filesystem, path)
        Anything `dicomframes.open` accepts: a local path, an fsspec URL
        (``s3://``, ``gs://``, ``https://`` ...), an open file, bytes.
    dst : str, os.PathLike, or (fsspec filesystem, path)
        A local path or an fsspec URL. Written under a temporary name beside it
        and renamed when complete (object stores: committed only on success).
    overwrite : bool
        Replace an existing `dst` (otherwise `DestinationExistsError`).
    progress : bool or callable, optional
        True: a progress line on stderr. A callable is called with a
        `dicomframes.transcode.decompress.Progress` after every frame (bytes
        count the frames' items; raising from it aborts the write cleanly).
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
        The pixel data is native or the data set deflated (nothing to
        index), or frames span several fragments and lie past 4 GiB.
    DicomFramesError
        Any other subclass: the source cannot be read, or its fragments do not
        agree with its offset table; nothing is left at `dst`.
    """
    from dicomframes.reader import open as open_reader

    src_options = storage_options if _is_remote(src) else {}
    dst_options = storage_options if _is_remote(dst) else {}
    if storage_options and not src_options and not dst_options:
        raise TypeError(f"unexpected options for local files: {', '.join(sorted(storage_options))}")
    destination = _destination(dst, dst_options)
    destination.check(overwrite)

    display = ProgressDisplay(label="add-offset-table") if progress is True else None
    report = display if display is not None else (progress if callable(progress) else None)

    reader = open_reader(src, **src_options)
    try:
        if destination.same_as(reader.source):
            raise DestinationError("the destination is the source; write elsewhere", path=destination.name)
        _refuse_unindexable(reader)
        plan = _plan(reader)
        several: int | None = None
        if not plan.eot_source and len(plan.starts):  # (from an EOT, one item per frame: the copy checks it)
            # The first frame alone tells most files: several fragments there, a BOT at once.
            tag, length = _item_header(reader, 0, int(plan.starts[0]))
            if tag == ITEM and 8 + length < plan.ends[0] - plan.starts[0]:
                several = 0  # (anything else wrong with the item: the copy says what)
        if several is None:
            several = _write(reader, plan, destination, EOT, overwrite, report)
        if several is not None:
            log.warning(
                "%s: frame %d spans several fragments, and the standard allows an Extended Offset Table only with "
                "one fragment per frame: writing a Basic Offset Table instead", reader.path, several,
            )
            _check_bot_fits(plan, reader.path)
            _write(reader, plan, destination, BOT, overwrite, report)
    finally:
        reader.close()
        if display is not None:
            display.close()
    return destination.name
