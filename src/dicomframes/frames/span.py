"""FrameSpan: where the bytes of one frame lie, and `unwrap`, its codestream from those bytes.

The frame index makes spans, the fetcher reads them, decoding unwraps them: a
module of its own so that none of those needs another's.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from dicomframes._dicom.tags import ITEM
from dicomframes.errors import FrameIndexError

#: the bytes of a frame as read: a request's own bytes, or a view into them
FrameBytes = bytes | memoryview

#: an item header: group, element, 32-bit length (always little endian, PS3.5 A.4)
ITEM_HEADER = struct.Struct("<HHI")


@dataclass(frozen=True, slots=True)  # slots: made for every frame read, at half the cost
class FrameSpan:
    """The bytes of one frame: a range of the (data set) source.

    For encapsulated data the range covers whole items, headers included, and
    `unwrap` turns it into the frame's codestream.
    """

    frame: int
    offset: int
    length: int
    #: the range holds item-wrapped fragments
    items: bool = False
    #: EOT frames: take only `payload` bytes of the single item
    payload: int | None = None
    #: EOT frames: the item may also be this much shorter than `payload` (then
    #: it is taken whole): the last frame of a table whose lengths count item headers
    payload_slack: int = 0
    #: native Bits Allocated 1: the frame starts this many bits into the first byte
    bit_offset: int = 0
    #: native 8-bit big endian OW: bytes to drop at the start after swapping pairs
    skip: int = 0


def unwrap(span: FrameSpan, data: FrameBytes, name: str) -> FrameBytes:
    """The codestream of an encapsulated frame from the bytes of its span."""
    if not span.items:  # a source of frames by number handed out the codestream itself
        return data
    if span.payload is not None:
        group, elem, length = ITEM_HEADER.unpack_from(data, 0)
        if (group << 16 | elem) != ITEM or (length < span.payload and length != span.payload - span.payload_slack):
            raise FrameIndexError(
                "the Extended Offset Table does not point at an item of the frame's length",
                path=name, frame=span.frame, offset=span.offset,
            )
        return data[8 : 8 + min(length, span.payload)]
    parts = []
    pos, end = 0, len(data)
    while pos < end:
        if pos + 8 > end:
            raise FrameIndexError("a fragment header crosses the end of the frame", path=name, frame=span.frame, offset=span.offset + pos)
        group, elem, length = ITEM_HEADER.unpack_from(data, pos)
        if (group << 16 | elem) != ITEM:
            raise FrameIndexError(
                f"expected a fragment item, found ({group:04X},{elem:04X}); the offset table may be wrong",
                path=name, frame=span.frame, offset=span.offset + pos,
            )
        if pos + 8 + length > end:
            raise FrameIndexError(
                f"fragment of {length} bytes overruns the frame's end at offset {span.offset + end}",
                path=name, frame=span.frame, offset=span.offset + pos,
            )
        parts.append(data[pos + 8 : pos + 8 + length])
        pos += 8 + length
    return parts[0] if len(parts) == 1 else b"".join(parts)
