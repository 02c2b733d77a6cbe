"""Tile positions from functional group sequences, parsed lazily into arrays.

A sparse whole-slide level (Dimension Organization Type TILED_SPARSE) says
where each tile lies in the Per-Frame Functional Groups Sequence: one item per
frame, 150,000 and more of them, each holding a Plane Position (Slide)
Sequence among other things. Reading that with a general DICOM parser makes a
Python object per element; here we stream once through the sequence's bytes in
large blocks, read only the handful of values that place a tile, seek past the
values of every other element, and store the results in NumPy arrays.

What is read, per item of the sequence walked:

- Plane Position (Slide) Sequence (0048,021A) > Column Position In Total Image
  Pixel Matrix (0048,021E) SL, Row Position In Total Image Pixel Matrix
  (0048,021F) SL (both 1-based in the file, 0-based here) and Z Offset In
  Slide Coordinate System (0040,074A) DS;
- Optical Path Identification Sequence (0048,0207) > Optical Path Identifier
  (0048,0106) SH;
- Optical Path Identifier (0048,0106) directly in the item (as in the items of
  the top-level Optical Path Sequence, which the same walk reads);
- Pixel Measures Sequence (0028,9110) > Pixel Spacing (0028,0030) DS (as in
  the Shared Functional Groups Sequence).

Explicit and implicit VR, little and big endian, defined and undefined lengths
of items and nested sequences are all handled; an undefined-length UN element
is read as the implicit VR little endian sequence it is (PS3.5 6.2.2).

The tags, VRs and depth limit are the shared ones (`dicomframes._dicom.tags`),
but the reader is this module's own rather than the element walker
(`dicomframes._dicom.elements`): it works on large buffers in memory, where a
reader call per element would cost more than everything else done per element.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dicomframes._dicom.tags import (
    COLUMN_POSITION_IN_TOTAL_IMAGE_PIXEL_MATRIX,
    DELIMITER_GROUP,
    ITEM,
    ITEM_DELIMITER,
    LONG_VRS_BYTES,
    MAX_DEPTH,
    OPTICAL_PATH_IDENTIFICATION_SEQUENCE,
    OPTICAL_PATH_IDENTIFIER,
    PIXEL_MEASURES_SEQUENCE,
    PIXEL_SPACING,
    PLANE_POSITION_SLIDE_SEQUENCE,
    ROW_POSITION_IN_TOTAL_IMAGE_PIXEL_MATRIX,
    SEQUENCE_DELIMITER,
    UNDEFINED,
    Z_OFFSET_IN_SLIDE_COORDINATE_SYSTEM,
    tag_text,
)
from dicomframes.errors import InvalidFileError, TruncatedFileError
from dicomframes.frames.header import Header
from dicomframes.io.cursor import read_through
from dicomframes.io.source import Source

#: marks a frame whose item has no row/column position
MISSING = np.iinfo(np.int32).min

_COLUMN_POSITION = COLUMN_POSITION_IN_TOTAL_IMAGE_PIXEL_MATRIX
_ROW_POSITION = ROW_POSITION_IN_TOTAL_IMAGE_PIXEL_MATRIX
_Z_OFFSET = Z_OFFSET_IN_SLIDE_COORDINATE_SYSTEM

# The inline reader compares the (group, element) halves it unpacks, one
# comparison each in the common case, so the tags it looks for are split here.
_ITEM_E = ITEM & 0xFFFF
_ITEM_DELIMITER_E = ITEM_DELIMITER & 0xFFFF
_SEQUENCE_DELIMITER_E = SEQUENCE_DELIMITER & 0xFFFF
_SLIDE_G = PLANE_POSITION_SLIDE_SEQUENCE >> 16  # 0048: the group of every whole-slide tag read inline
_PLANE_E = PLANE_POSITION_SLIDE_SEQUENCE & 0xFFFF
_OPID_SEQUENCE_E = OPTICAL_PATH_IDENTIFICATION_SEQUENCE & 0xFFFF
_OPID_E = OPTICAL_PATH_IDENTIFIER & 0xFFFF
_COLUMN_E = _COLUMN_POSITION & 0xFFFF
_ROW_E = _ROW_POSITION & 0xFFFF
_Z_G, _Z_E = _Z_OFFSET >> 16, _Z_OFFSET & 0xFFFF
_MEASURES_G, _MEASURES_E = PIXEL_MEASURES_SEQUENCE >> 16, PIXEL_MEASURES_SEQUENCE & 0xFFFF

_MAX_VALUE = 1024  # the values we read are a few bytes; longer ones are skipped
_FAST_AHEAD = 64 << 10  # undefined-length items are read inline with this much buffered ahead

# Container roles: sequences are even, the items inside them the next odd number.
_TOP_SEQ, _TOP_ITEM = 0, 1
_PLANE_SEQ, _PLANE_ITEM = 2, 3
_OPID_SEQ, _OPID_ITEM = 4, 5
_MEASURES_SEQ, _MEASURES_ITEM = 6, 7
_SKIP_SEQ, _SKIP_ITEM = 8, 9
_NESTED = {PLANE_POSITION_SLIDE_SEQUENCE: _PLANE_SEQ, OPTICAL_PATH_IDENTIFICATION_SEQUENCE: _OPID_SEQ, PIXEL_MEASURES_SEQUENCE: _MEASURES_SEQ}


@dataclass
class ItemValues:
    """What the walk found, one entry per item of the walked sequence.

    Attributes
    ----------
    count : int
        Items in the sequence.
    columns, rows : numpy.ndarray of int32
        0-based pixel position of each item's tile in the total pixel matrix
        (`MISSING` where the item has no Plane Position (Slide)).
    z : numpy.ndarray of float64 or None
        Z Offset in Slide Coordinate System (NaN where absent); None if no item had one.
    optical_path : numpy.ndarray of int32 or None
        Index into `optical_path_ids` (-1 where absent); None if no item had one.
    optical_path_ids : list of str
        The distinct Optical Path Identifiers, in order of first appearance.
    pixel_spacing : tuple of float or None
        The first Pixel Spacing (row, column spacing in mm) found.
    """

    count: int
    columns: np.ndarray
    rows: np.ndarray
    z: np.ndarray | None = None
    optical_path: np.ndarray | None = None
    optical_path_ids: list[str] = field(default_factory=list)
    pixel_spacing: tuple[float, ...] | None = None

    @property
    def has_positions(self) -> bool:
        return bool(self.count) and bool((self.columns != MISSING).any())


def _number(raw: bytes) -> float:
    text = raw.decode("latin-1").strip("\x00 ")
    try:
        return float(text.split("\\")[0])
    except ValueError:
        return float("nan")


def _refill(source: Source, buf: bytes, base: int, pos: int, need: int, block: int, end: int) -> bytes:
    """A new buffer starting at `pos`: what `buf` (at `base`) still holds, plus one block more."""
    rel = pos - base
    keep = buf[rel:] if 0 <= rel < len(buf) else b""
    start = pos + len(keep)
    want = min(max(block, need) - len(keep), end - start)
    # Bytes the source already holds (e.g. those that came with the header's
    # first read of a remote file) are taken from its block cache.
    more = read_through(source, source.block_cache, [(start, want)])[0] if want > 0 else b""
    return keep + more if keep else more


_EXPL_LE = struct.Struct("<HH2sH").unpack_from
_IMPL_LE = struct.Struct("<HHI").unpack_from
_U32_LE = struct.Struct("<I").unpack_from
_I32_LE = struct.Struct("<i").unpack_from


# The two functions below are the inner loops of a 150,000-item walk: the
# unpackers and the split tags are bound as default arguments, because locals
# load faster than globals (with globals the walk measured a few per cent slower).


def _skip_sequence(buf: bytes, p: int, explicit: bool, depth: int,
                   _expl=_EXPL_LE, _impl=_IMPL_LE, _u32=_U32_LE, _long=LONG_VRS_BYTES, _undefined=UNDEFINED,
                   _delim_g=DELIMITER_GROUP, _item_e=_ITEM_E, _item_delimiter_e=_ITEM_DELIMITER_E,
                   _sequence_delimiter_e=_SEQUENCE_DELIMITER_E) -> int:
    """Past the delimiter of the undefined-length sequence whose first item is at
    `p`, or -1 where the general walk must take over (see `_fast_item`)."""
    if depth > MAX_DEPTH:
        return -1
    while True:
        g, e, ilen = _impl(buf, p)
        p += 8
        if g != _delim_g:
            return -1
        if e == _sequence_delimiter_e:
            return p
        if e != _item_e:
            return -1
        if ilen != _undefined:
            p += ilen
            continue
        while True:  # the elements of an undefined-length item, up to its delimiter
            if explicit:
                g, e, vr, vlen = _expl(buf, p)
                if g == _delim_g:
                    if e != _item_delimiter_e:
                        return -1
                    p += 8
                    break
                if vr in _long:
                    vlen = _u32(buf, p + 8)[0]
                    p += 12
                else:
                    p += 8
                if vlen == _undefined:
                    if vr == b"UN":
                        return -1
                    p = _skip_sequence(buf, p, explicit, depth + 1)
                    if p < 0:
                        return -1
                    continue
            else:
                g, e, vlen = _impl(buf, p)
                if g == _delim_g:
                    if e != _item_delimiter_e:
                        return -1
                    p += 8
                    break
                p += 8
                if vlen == _undefined:
                    p = _skip_sequence(buf, p, explicit, depth + 1)
                    if p < 0:
                        return -1
                    continue
            p += vlen


def _fast_item(buf: bytes, p: int, end: int, explicit: bool,
               _expl=_EXPL_LE, _impl=_IMPL_LE, _u32=_U32_LE, _i32=_I32_LE, _long=LONG_VRS_BYTES, _undefined=UNDEFINED,
               _delim_g=DELIMITER_GROUP, _item_e=_ITEM_E, _item_delimiter_e=_ITEM_DELIMITER_E,
               _sequence_delimiter_e=_SEQUENCE_DELIMITER_E, _slide_g=_SLIDE_G, _plane_e=_PLANE_E,
               _opid_sequence_e=_OPID_SEQUENCE_E, _opid_e=_OPID_E, _column_e=_COLUMN_E, _row_e=_ROW_E,
               _z_g=_Z_G, _z_e=_Z_E, _measures_g=_MEASURES_G, _measures_e=_MEASURES_E) -> tuple | None:
    """The values of one little endian item whose content starts at ``buf[p]``.

    `end` is where a defined-length item ends, or -1 for an undefined-length
    one (ended by its delimiter). Returns (column, row, z bytes, optical path
    identifier bytes, position after the item), with None for what the item
    lacks, or None when the item needs the general walk: the buffer ends inside
    it, Pixel Measures, a UN sequence, anything that does not add up. This is
    the common case made fast: nested sequences are walked inline, without the
    general walk's stack.
    """
    col = row = zraw = opid = None
    defined = end >= 0
    try:
        while True:
            if defined:
                if p >= end:
                    break
            if explicit:
                g, e, vr, vlen = _expl(buf, p)
                if g == _delim_g:
                    if e == _item_delimiter_e and not defined:
                        p += 8
                        break
                    return None
                if vr in _long:
                    vlen = _u32(buf, p + 8)[0]
                    p += 12
                else:
                    p += 8
            else:
                g, e, vlen = _impl(buf, p)
                if g == _delim_g:
                    if e == _item_delimiter_e and not defined:
                        p += 8
                        break
                    return None
                p += 8
                vr = None
            if g == _slide_g and (e == _plane_e or e == _opid_sequence_e):
                if vr == b"UN":
                    return None
                plane = e == _plane_e
                send = p + vlen if vlen != _undefined else -1
                while True:  # items of the nested sequence
                    if send >= 0:
                        if p >= send:
                            break
                    ig, ie, ilen = _impl(buf, p)
                    p += 8
                    if ig != _delim_g:
                        return None
                    if ie == _sequence_delimiter_e and send < 0:
                        break
                    if ie != _item_e:
                        return None
                    iend = p + ilen if ilen != _undefined else -1
                    while True:  # elements of a nested item
                        if iend >= 0:
                            if p >= iend:
                                break
                        if explicit:
                            g2, e2, vr2, vlen2 = _expl(buf, p)
                            if g2 == _delim_g:
                                if e2 == _item_delimiter_e and iend < 0:
                                    p += 8
                                    break
                                return None
                            if vr2 in _long:
                                vlen2 = _u32(buf, p + 8)[0]
                                p += 12
                            else:
                                p += 8
                        else:
                            g2, e2, vlen2 = _impl(buf, p)
                            if g2 == _delim_g:
                                if e2 == _item_delimiter_e and iend < 0:
                                    p += 8
                                    break
                                return None
                            p += 8
                            vr2 = None
                        if vlen2 == _undefined:
                            if vr2 == b"UN":
                                return None
                            p = _skip_sequence(buf, p, explicit, 1)
                            if p < 0:
                                return None
                            continue
                        if g2 == _slide_g:
                            if not plane:
                                if e2 == _opid_e:
                                    opid = buf[p : p + vlen2]
                            elif e2 == _column_e:
                                if vlen2 != 4:
                                    return None
                                col = _i32(buf, p)[0] - 1
                            elif e2 == _row_e:
                                if vlen2 != 4:
                                    return None
                                row = _i32(buf, p)[0] - 1
                        elif g2 == _z_g and e2 == _z_e and plane:
                            zraw = buf[p : p + vlen2]
                        p += vlen2
                    if iend >= 0 and p != iend:
                        return None
                if send >= 0 and p != send:
                    return None
                continue
            if vlen == _undefined:
                if vr == b"UN" or (g == _measures_g and e == _measures_e):  # Pixel Measures: see below
                    return None
                p = _skip_sequence(buf, p, explicit, 1)
                if p < 0:
                    return None
                continue
            if g == _slide_g and e == _opid_e:
                opid = buf[p : p + vlen]
            elif g == _measures_g and e == _measures_e:  # Pixel Measures: the general walk reads it
                return None
            p += vlen
    except struct.error:  # the buffer ends inside the item
        return None
    if defined and p != end:
        return None
    if p > len(buf):  # a value ran past the buffer (its bytes were cut): retry in the general walk
        return None
    return col, row, zraw, opid, p


# -- the vectorised path ------------------------------------------------------------------------
# The items of a big per-frame sequence almost always share one element layout;
# only the digits of their values (and so the lengths of DS text) differ. So the
# layout is learned from one item (`_learn`: a list of steps mirroring what the
# general walk below does with that item), and then checked and read in all the
# items of a buffer at once with NumPy (`_apply`): each step's header is
# gathered at its position in every item, compared with the template's, and
# the position advanced by each item's own value length. An item where any
# step differs (or anything would lie outside the item) ends the run; the
# per-item parsers take it from there. Only little endian, defined-length
# top-level items (their starts follow from their lengths).

_VECTOR_MIN_ITEMS = 64  # fewer items in a buffer: NumPy's per-call cost outweighs what it saves
_VECTOR_MAX_TEXT = 64  # longer Z offsets or identifiers go to the per-item parsers
_VECTOR_MAX_STEPS = 256
_VECTOR_MAX_DEPTH = 8  # well below MAX_DEPTH: deeper items go to the general walk, which reports it

# Step kinds. Element steps read a value length; the others do not.
(_S_VALUE, _S_COLUMN, _S_ROW, _S_Z, _S_OPID, _S_OPEN_DEFINED, _S_OPEN_UNDEFINED,
 _S_ITEM_DEFINED, _S_ITEM_UNDEFINED, _S_SKIP_ITEM, _S_DELIMITER, _S_CLOSE) = range(12)
_ELEMENT_STEPS = frozenset({_S_VALUE, _S_COLUMN, _S_ROW, _S_Z, _S_OPID, _S_OPEN_DEFINED, _S_OPEN_UNDEFINED})
_U16_LE = struct.Struct("<H").unpack_from
_INT32_MIN = int(np.iinfo(np.int32).min)


def _tag32(group: int, elem: int) -> int:
    """A tag as the little endian uint32 its four bytes read as."""
    return group | elem << 16


class _Refused(Exception):
    """The item's layout is not one the vectorised path takes."""


def _learn(buf: bytes, p: int, explicit: bool) -> list[tuple[int, int, int, int]] | None:
    """The steps (kind, tag as uint32, VR as uint16 or -1, header length) of the
    defined-length item whose header is at ``buf[p]``, or None."""
    steps: list[tuple[int, int, int, int]] = []
    try:
        g, e, ilen = _IMPL_LE(buf, p)
        if g != DELIMITER_GROUP or e != _ITEM_E or ilen == UNDEFINED:
            return None
        steps.append((_S_ITEM_DEFINED, _tag32(g, e), -1, 8))
        if _learn_elements(buf, p + 8, p + 8 + ilen, explicit, _TOP_ITEM, steps, 1) != p + 8 + ilen:
            return None
        steps.append((_S_CLOSE, 0, -1, 0))
    except (struct.error, _Refused):
        return None
    return steps


def _learn_elements(buf: bytes, p: int, end: int, explicit: bool, role: int, steps: list, depth: int) -> int:
    """Steps of the elements of an item (role odd) from `p` to `end` (-1: its delimiter)."""
    while True:
        if end >= 0 and p >= end:
            return p
        if len(steps) > _VECTOR_MAX_STEPS or depth > _VECTOR_MAX_DEPTH:
            raise _Refused
        if explicit:
            g, e, vr, vlen = _EXPL_LE(buf, p)
            vr16 = _U16_LE(buf, p + 4)[0]
        else:
            g, e, vlen = _IMPL_LE(buf, p)
            vr, vr16 = None, -1
        if g == DELIMITER_GROUP:
            if e == _ITEM_DELIMITER_E and end < 0:
                steps.append((_S_DELIMITER, _tag32(g, e), -1, 8))
                return p + 8
            raise _Refused
        hlen = 8
        if vr is not None and vr in LONG_VRS_BYTES:
            vlen, hlen = _U32_LE(buf, p + 8)[0], 12
        tag = g << 16 | e
        if vlen == UNDEFINED:
            if vr is not None and vr != b"SQ":
                raise _Refused  # UN sequences (implicit inside), encapsulated values, errors
            child = _NESTED.get(tag, _SKIP_SEQ) if role == _TOP_ITEM else _SKIP_SEQ
            if child == _MEASURES_SEQ:
                raise _Refused  # Pixel Measures: the general walk reads it
            steps.append((_S_OPEN_UNDEFINED, _tag32(g, e), vr16, hlen))
            p = _learn_items(buf, p + hlen, -1, explicit, child, steps, depth + 1)
            continue
        if role == _TOP_ITEM and tag in _NESTED:
            if vr == b"UN" or tag == PIXEL_MEASURES_SEQUENCE:
                raise _Refused
            steps.append((_S_OPEN_DEFINED, _tag32(g, e), vr16, hlen))
            q = p + hlen + vlen
            if _learn_items(buf, p + hlen, q, explicit, _NESTED[tag], steps, depth + 1) != q:
                raise _Refused
            steps.append((_S_CLOSE, 0, -1, 0))
            p = q
            continue
        # Which values the general walk reads where (and which it skips).
        kind = _S_VALUE
        if role == _TOP_ITEM or role == _OPID_ITEM:
            if tag == OPTICAL_PATH_IDENTIFIER:
                kind = _S_OPID
        elif role == _PLANE_ITEM and vlen <= _MAX_VALUE:
            if tag == _COLUMN_POSITION or tag == _ROW_POSITION:
                if vlen != 4:
                    raise _Refused
                kind = _S_COLUMN if tag == _COLUMN_POSITION else _S_ROW
            elif tag == _Z_OFFSET:
                kind = _S_Z
        if kind in (_S_Z, _S_OPID) and vlen > _VECTOR_MAX_TEXT:
            raise _Refused
        steps.append((kind, _tag32(g, e), vr16, hlen))
        p += hlen + vlen


def _learn_items(buf: bytes, p: int, end: int, explicit: bool, role: int, steps: list, depth: int) -> int:
    """Steps of the items of a sequence (role even) from `p` to `end` (-1: its delimiter)."""
    while True:
        if end >= 0 and p >= end:
            return p
        if len(steps) > _VECTOR_MAX_STEPS:
            raise _Refused
        g, e, ilen = _IMPL_LE(buf, p)
        if g != DELIMITER_GROUP:
            raise _Refused
        if e == _SEQUENCE_DELIMITER_E and end < 0:
            steps.append((_S_DELIMITER, _tag32(g, e), -1, 8))
            return p + 8
        if e != _ITEM_E:
            raise _Refused
        if role == _SKIP_SEQ and ilen != UNDEFINED:
            steps.append((_S_SKIP_ITEM, _tag32(g, e), -1, 8))
            p += 8 + ilen
        elif ilen == UNDEFINED:
            steps.append((_S_ITEM_UNDEFINED, _tag32(g, e), -1, 8))
            p = _learn_elements(buf, p + 8, -1, explicit, role + 1, steps, depth + 1)
        else:
            steps.append((_S_ITEM_DEFINED, _tag32(g, e), -1, 8))
            q = p + 8 + ilen
            if _learn_elements(buf, p + 8, q, explicit, role + 1, steps, depth + 1) != q:
                raise _Refused
            steps.append((_S_CLOSE, 0, -1, 0))
            p = q


def _item_starts(buf: bytes, p: int, stop: int) -> tuple[np.ndarray, int]:
    """Starts of the consecutive defined-length items from `p` that end by `stop`, and where the last ends."""
    starts: list[int] = []
    add, impl, undefined, delim_g, item_e = starts.append, _IMPL_LE, UNDEFINED, DELIMITER_GROUP, _ITEM_E
    while p + 8 <= stop:
        g, e, ilen = impl(buf, p)
        if g != delim_g or e != item_e or ilen == undefined or p + 8 + ilen > stop:
            break
        add(p)
        p += 8 + ilen
    return np.array(starts, dtype=np.int64), p


def _text_rows(a8: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, width: int) -> np.ndarray:
    """Each value's bytes as one void scalar, zero-padded to `width` (at most `_VECTOR_MAX_TEXT`)."""
    cols = np.arange(width)
    rows = np.where(cols < lengths[:, None], a8[np.minimum(offsets[:, None] + cols, len(a8) - 1)], 0).astype(np.uint8)
    return np.ascontiguousarray(rows).view(np.dtype((np.void, width))).ravel()


def _apply(steps: list, buf: bytes, starts: np.ndarray, ends: np.ndarray) -> tuple[int, dict]:
    """How many of the items at `starts` (ending at `ends`) follow `steps`, and their values.

    Every read is at a position checked to lie inside its item, itself inside
    `buf`; positions that failed a check are replaced by 0 before gathering.
    """
    n = len(buf)
    a8 = np.frombuffer(buf, np.uint8)
    # Unaligned views: a uint32 (uint16, int32) starting at every byte.
    u32 = np.ndarray((n - 3,), "<u4", buf, 0, (1,))
    u16 = np.ndarray((n - 1,), "<u2", buf, 0, (1,))
    i32 = np.ndarray((n - 3,), "<i4", buf, 0, (1,))
    pos = starts.copy()
    ok = np.ones(len(starts), dtype=bool)
    closing: list[np.ndarray] = []
    found: dict[str, Any] = {"z": None, "opid": []}
    for kind, tag32, vr16, hlen in steps:
        if kind == _S_CLOSE:
            ok &= pos == closing.pop()
            continue
        ok &= pos + hlen <= ends
        at = np.where(ok, pos, 0)
        ok &= u32[at] == tag32
        if vr16 >= 0:
            ok &= u16[at + 4] == vr16
        if kind in _ELEMENT_STEPS:
            vlen = (u16[at + 6] if hlen == 8 and vr16 >= 0 else u32[at + hlen - 4]).astype(np.int64)
            pos = pos + hlen
            if kind == _S_OPEN_UNDEFINED:
                ok &= vlen == UNDEFINED
                continue
            ok &= vlen != UNDEFINED
            if kind == _S_OPEN_DEFINED:
                closing.append(pos + vlen)
                continue
            if kind == _S_COLUMN or kind == _S_ROW:
                ok &= (vlen == 4) & (pos + 4 <= ends)
                value = i32[np.where(ok, pos, 0)]
                ok &= value != _INT32_MIN  # minus one would wrap: the general walk decides
                found["columns" if kind == _S_COLUMN else "rows"] = value - 1
            elif kind == _S_Z or kind == _S_OPID:
                ok &= (vlen <= _VECTOR_MAX_TEXT) & (pos + vlen <= ends)
                where = (np.where(ok, pos, 0), np.where(ok, vlen, 0))
                if kind == _S_Z:
                    found["z"] = where  # the last one in the item wins, as in the general walk
                else:
                    found["opid"].append(where)
            pos = pos + vlen
            continue
        ilen = u32[at + 4].astype(np.int64)
        pos = pos + 8
        if kind == _S_ITEM_DEFINED:
            ok &= ilen != UNDEFINED
            closing.append(pos + ilen)
        elif kind == _S_ITEM_UNDEFINED:
            ok &= ilen == UNDEFINED
        elif kind == _S_SKIP_ITEM:
            ok &= ilen != UNDEFINED
            pos = pos + ilen
    m = int(np.argmin(ok)) if not ok.all() else len(ok)
    if m:
        if found["z"] is not None:
            lengths = found["z"][1][:m]
            found["z"] = _text_rows(a8, found["z"][0][:m], lengths, max(1, int(lengths.max())))
        if found["opid"]:
            width = max(1, max(int(lens[:m].max()) for _, lens in found["opid"]))
            found["opid"] = [_text_rows(a8, off[:m], lens[:m], width) for off, lens in found["opid"]]
    return m, found


class _Vector:
    """The vectorised path's state over one walk: the layout learned, and when to try again."""

    def __init__(self, explicit: bool) -> None:
        self.explicit = explicit
        self.steps: list | None = None
        self.next_try = 0  # item count at which to try again
        self._skip = 1

    def run(self, out: "_Collected", buf: bytes, p: int, stop: int, count: int) -> tuple[int, int]:
        """Items read from `buf` at `p` (none past `stop`) into `out` from item `count`,
        and the position after them."""
        starts, last = _item_starts(buf, p, stop)
        m, found = 0, None
        ends = np.append(starts[1:], last)
        if len(starts) >= _VECTOR_MIN_ITEMS:
            if self.steps is not None:
                m, found = _apply(self.steps, buf, starts, ends)
            if not m:  # a new layout (or the first): learn it from this item
                self.steps = _learn(buf, p, self.explicit)
                if self.steps is not None:
                    m, found = _apply(self.steps, buf, starts, ends)
        if m < _VECTOR_MIN_ITEMS:
            self._skip = min(self._skip * 2, 1 << 16)  # items the per-item parsers read before the next try
        else:
            self._skip = 1
        self.next_try = count + m + self._skip - 1
        if m and found is not None:
            out.store(count, m, found)
            p = int(ends[m - 1])
        return m, p


class _Collected:
    """Growing arrays of the values found, one slot per top-level item."""

    def __init__(self, capacity: int) -> None:
        self.cap = max(capacity, 16)
        self.columns = np.full(self.cap, MISSING, dtype=np.int32)
        self.rows = np.full(self.cap, MISSING, dtype=np.int32)
        self.z: np.ndarray | None = None
        self.opath: np.ndarray | None = None
        self.ids: dict[str, int] = {}
        self.z_cache: dict[bytes, float] = {}
        self._id_cache: dict[bytes, int] = {}
        self.spacing: tuple[float, ...] | None = None
        self._views()

    def _views(self) -> None:
        # memoryviews take Python ints faster than NumPy item assignment. Typed
        # Any: typeshed's memoryview holds ints only, and z's holds floats.
        self.columns_view: Any = self.columns.data
        self.rows_view: Any = self.rows.data
        self.z_view: Any = self.z.data if self.z is not None else None

    def grow(self) -> None:
        old, self.cap = self.cap, self.cap * 2

        def more(a, fill):
            return None if a is None else np.concatenate([a, np.full(self.cap - old, fill, a.dtype)])

        self.columns = more(self.columns, MISSING)
        self.rows = more(self.rows, MISSING)
        self.z = more(self.z, np.nan)
        self.opath = more(self.opath, -1)
        self._views()

    def set_z(self, item: int, raw: bytes) -> None:
        value = self.z_cache.get(raw)
        if value is None:
            value = self.z_cache[raw] = _number(raw)
        if self.z is None:
            self.z = np.full(self.cap, np.nan)
            self._views()
        self.z[item] = value

    def set_optical_path(self, item: int, raw: bytes) -> None:
        k = self._id_cache.get(raw)
        if k is None:
            key = raw.decode("latin-1").strip("\x00 ")
            k = self.ids.get(key)
            if k is None:
                k = self.ids[key] = len(self.ids)
            self._id_cache[raw] = k
        if self.opath is None:
            self.opath = np.full(self.cap, -1, dtype=np.int32)
        self.opath[item] = k

    def store(self, first: int, m: int, found: dict) -> None:
        """The values `_apply` found for items `first` to `first + m`."""
        while self.cap < first + m:
            self.grow()
        if "columns" in found:
            self.columns[first : first + m] = found["columns"][:m]
        if "rows" in found:
            self.rows[first : first + m] = found["rows"][:m]
        if found["z"] is not None:
            unique, inverse = np.unique(found["z"], return_inverse=True)
            if self.z is None:
                self.z = np.full(self.cap, np.nan)
                self._views()
            # Zero padding changes no value: _number strips it, as it strips the file's own.
            self.z[first : first + m] = np.array([_number(bytes(u)) for u in unique])[inverse.ravel()]
        if found["opid"]:
            # Identifiers are numbered in order of first appearance, item by item, as the walk meets them.
            everything = np.stack(found["opid"], axis=1).ravel() if len(found["opid"]) > 1 else found["opid"][0]
            unique, first_seen, inverse = np.unique(everything, return_index=True, return_inverse=True)
            number = np.empty(len(unique), dtype=np.int32)
            for u in np.argsort(first_seen, kind="stable"):
                key = bytes(unique[u]).decode("latin-1").strip("\x00 ")
                k = self.ids.get(key)
                if k is None:
                    k = self.ids[key] = len(self.ids)
                number[u] = k
            if self.opath is None:
                self.opath = np.full(self.cap, -1, dtype=np.int32)
            self.opath[first : first + m] = number[inverse.ravel()].reshape(m, -1)[:, -1]

    def result(self, count: int) -> ItemValues:
        for view in (self.columns_view, self.rows_view, self.z_view):
            if view is not None:
                view.release()
        def trim(a):
            return a[:count].copy() if a is not None and len(a) != count else a

        return ItemValues(
            count=count, columns=trim(self.columns), rows=trim(self.rows), z=trim(self.z),
            optical_path=trim(self.opath), optical_path_ids=list(self.ids), pixel_spacing=self.spacing,
        )


def walk_items(
    source: Source,
    offset: int,
    length: int | None,
    *,
    explicit: bool,
    little: bool,
    limit: int | None = None,
    capacity: int = 0,
    block: int = 1 << 20,
) -> ItemValues:
    """Walk the sequence whose value starts at `offset` and collect tile positions.

    Parameters
    ----------
    source : Source
        The source holding the data set (``reader.data_source``).
    offset : int
        Where the sequence's value (its first item) starts.
    length : int or None
        The sequence's value length, or None for undefined length.
    explicit, little : bool
        The data set's encoding.
    limit : int, optional
        Never read past this offset (e.g. the Pixel Data value offset) when the
        length is undefined.
    capacity : int
        Expected number of items (Number of Frames); the arrays grow if there are more.
    block : int
        Bytes per read.

    Returns
    -------
    ItemValues
    """
    name = source.name
    end_all = offset + length if length is not None else (limit if limit is not None else source.size)
    if end_all is None:
        end_all = 1 << 62
    out = _Collected(capacity)
    u32_le, u32_be = struct.Struct("<I").unpack_from, struct.Struct(">I").unpack_from
    i32_le, i32_be = struct.Struct("<i").unpack_from, struct.Struct(">i").unpack_from
    expl_le, expl_be = struct.Struct("<HH2sH").unpack_from, struct.Struct(">HH2sH").unpack_from
    impl_le, impl_be = struct.Struct("<HHI").unpack_from, struct.Struct(">HHI").unpack_from
    fast = _fast_item
    undefined, delim_g, item_e = UNDEFINED, DELIMITER_GROUP, _ITEM_E  # locals for the inline loop below
    vector = _Vector(explicit) if little else None
    vector_next = 0 if vector is not None else 1 << 62

    buf = b""
    base = offset  # absolute offset of buf[0]
    p = 0  # position relative to base
    n = 0

    # Current container: role, absolute end (-1: undefined), explicit, little.
    role, end, expl, le = _TOP_SEQ, (offset + length if length is not None else -1), explicit, little
    stack: list[tuple[int, int, bool, bool, int]] = []
    item = -1  # index of the current top-level item
    count = 0
    try:
        while True:
            pos = base + p
            if end >= 0 and pos >= end:
                if pos > end:
                    raise InvalidFileError(
                        f"an element runs {pos - end} bytes past the end of its item or sequence",
                        path=name, offset=end,
                    )
                if not stack:
                    break
                role, end, expl, le, item = stack.pop()
                continue
            if p + 12 > n:
                buf = _refill(source, buf, base, pos, 12, block, end_all)
                base, p, n = pos, 0, len(buf)
                if n < 8:
                    raise TruncatedFileError("the file ends inside a functional group sequence", path=name, offset=pos)

            if role & 1 == 0:  # a sequence: items or its delimiter
                group, elem, ilen = (impl_le if le else impl_be)(buf, p)
                if role == _TOP_SEQ and le and group == delim_g and elem == item_e and vector is not None:
                    if ilen != undefined and count >= vector_next:
                        if n - p < block // 2 and base + n < end_all:
                            buf = _refill(source, buf, base, base + p, block, block, end_all)
                            base, p, n = base + p, 0, len(buf)
                        done, p = vector.run(out, buf, p, n if end < 0 else min(n, end - base), count)
                        count += done
                        vector_next = vector.next_try
                        if done:
                            continue  # the end of the sequence, a refill, or the next item inline
                if role == _TOP_SEQ and le and group == delim_g and elem == item_e:
                    # The common case: items read inline while they last.
                    # Locals, refreshed when the arrays change: no attribute lookups per item.
                    columns, rows, z_view, cap = out.columns_view, out.rows_view, out.z_view, out.cap
                    z_cache = out.z_cache
                    retry = False
                    while True:
                        if ilen != undefined:
                            q = p + 8 + ilen
                            if q > n and ilen <= block:
                                buf = _refill(source, buf, base, base + p, 8 + ilen, block, end_all)
                                base, p, n = base + p, 0, len(buf)
                                q = 8 + ilen
                            found = fast(buf, p + 8, q, expl) if q <= n else None
                        else:
                            if n - p < _FAST_AHEAD and base + n < end_all:
                                buf = _refill(source, buf, base, base + p, block, block, end_all)
                                base, p, n = base + p, 0, len(buf)
                            found = fast(buf, p + 8, -1, expl)
                        if found is None:
                            break
                        if count == cap:
                            out.grow()
                            columns, rows, z_view, cap = out.columns_view, out.rows_view, out.z_view, out.cap
                        col, row, zraw, opid, q = found
                        if col is not None:
                            columns[count] = col
                        if row is not None:
                            rows[count] = row
                        if zraw is not None:
                            zvalue = z_cache.get(zraw)
                            if zvalue is None or z_view is None:
                                out.set_z(count, zraw)
                                z_view = out.z_view
                            else:
                                z_view[count] = zvalue
                        if opid is not None:
                            out.set_optical_path(count, opid)
                        count += 1
                        p = q
                        if (end >= 0 and base + p >= end) or p + 8 > n:
                            break
                        group, elem, ilen = impl_le(buf, p)
                        if group != delim_g or elem != item_e:
                            break
                        if count >= vector_next and ilen != undefined:
                            retry = True  # the vectorised path tries again from this item
                            break
                    if p + 8 > n or (end >= 0 and base + p >= end) or retry:
                        continue  # refill, the end of the sequence, or the vectorised path again
                    pos = base + p
                    group, elem, ilen = impl_le(buf, p)
                if group == DELIMITER_GROUP and elem == _ITEM_E:
                    if role == _TOP_SEQ:
                        item = count
                        count += 1
                        if count > out.cap:
                            out.grow()
                    elif role == _SKIP_SEQ and ilen != UNDEFINED:
                        p += 8 + ilen  # an item of a sequence we do not read: skip it whole
                        continue
                    if len(stack) > MAX_DEPTH:
                        raise InvalidFileError(f"sequences nested deeper than {MAX_DEPTH} levels", path=name, offset=pos)
                    p += 8
                    stack.append((role, end, expl, le, item))
                    role, end = role + 1, (-1 if ilen == UNDEFINED else base + p + ilen)
                elif group == DELIMITER_GROUP and elem == _SEQUENCE_DELIMITER_E:
                    p += 8
                    if not stack:
                        break
                    role, end, expl, le, item = stack.pop()
                else:
                    raise InvalidFileError(
                        f"expected an item in a sequence, found {tag_text(group << 16 | elem)}", path=name, offset=pos,
                    )
                continue

            # An item: data elements up to its end or delimiter.
            if expl:
                group, elem, vr, vlen = (expl_le if le else expl_be)(buf, p)
                if group == DELIMITER_GROUP:
                    vr = None
                    vlen = (u32_le if le else u32_be)(buf, p + 4)[0]
                    hlen = 8
                elif vr in LONG_VRS_BYTES:
                    vlen = (u32_le if le else u32_be)(buf, p + 8)[0]
                    hlen = 12
                else:
                    hlen = 8
            else:
                group, elem, vlen = (impl_le if le else impl_be)(buf, p)
                vr = None
                hlen = 8
            tag = group << 16 | elem
            if tag == ITEM_DELIMITER:
                p += 8
                role, end, expl, le, item = stack.pop()
                continue
            if group == DELIMITER_GROUP:
                raise InvalidFileError(f"unexpected {tag_text(tag)} inside an item", path=name, offset=pos)

            if vlen == UNDEFINED:
                p += hlen
                child = _NESTED.get(tag, _SKIP_SEQ) if role == _TOP_ITEM else _SKIP_SEQ
                if vr is not None and vr not in (b"SQ", b"UN", b"OB", b"OW"):
                    raise InvalidFileError(
                        f"element {tag_text(tag)} with VR {vr.decode('latin-1')} has undefined length",
                        path=name, offset=pos,
                    )
                stack.append((role, end, expl, le, item))
                if vr == b"UN":
                    role, end, expl, le = child, -1, False, True
                else:
                    role, end = child, -1
                continue

            if role == _TOP_ITEM:
                nested = _NESTED.get(tag)
                if nested is not None:
                    p += hlen
                    stack.append((role, end, expl, le, item))
                    if vr == b"UN":
                        expl, le = False, True
                    role, end = nested, base + p + vlen
                    continue
                if tag != OPTICAL_PATH_IDENTIFIER:
                    p += hlen + vlen
                    continue
            elif role == _SKIP_ITEM or vlen > _MAX_VALUE:
                p += hlen + vlen
                continue

            # Possibly a value we read: make sure it is in the buffer.
            if p + hlen + vlen > n:
                buf = _refill(source, buf, base, pos, hlen + vlen, block, end_all)
                base, p, n = pos, 0, len(buf)
                if hlen + vlen > n:
                    raise TruncatedFileError("the file ends inside a functional group sequence", path=name, offset=pos)
            v0 = p + hlen
            p = v0 + vlen
            if role == _PLANE_ITEM:
                if tag == _COLUMN_POSITION or tag == _ROW_POSITION:
                    if vlen != 4:
                        raise InvalidFileError(
                            f"{tag_text(tag)} should be one SL value (4 bytes), not {vlen} bytes",
                            path=name, offset=pos,
                        )
                    value = (i32_le if le else i32_be)(buf, v0)[0] - 1
                    if tag == _COLUMN_POSITION:
                        out.columns[item] = value
                    else:
                        out.rows[item] = value
                elif tag == _Z_OFFSET:
                    out.set_z(item, buf[v0:p])
            elif tag == OPTICAL_PATH_IDENTIFIER and role in (_OPID_ITEM, _TOP_ITEM):
                out.set_optical_path(item, buf[v0:p])
            elif role == _MEASURES_ITEM and tag == PIXEL_SPACING and out.spacing is None:
                text = buf[v0:p].decode("latin-1").strip("\x00 ")
                try:
                    out.spacing = tuple(float(t) for t in text.split("\\"))
                except ValueError:
                    pass
    except struct.error:
        # Only a buffer cut short by the end of the data makes an unpack fail.
        raise TruncatedFileError(
            "the file ends inside a functional group sequence", path=name, offset=base + p,
        ) from None
    return out.result(count)


def walk_header_sequence(
    header: Header, source: Source, keyword: str, *, capacity: int = 0, block: int = 1 << 20
) -> ItemValues | None:
    """`walk_items` over the top-level sequence `keyword` of `header`, or None if it is absent."""
    where = header.sequences.get(keyword)
    if where is None:
        return None
    offset, length = where
    return walk_items(
        source, offset, length,
        explicit=header.explicit_vr, little=header.transfer_syntax.little_endian,
        limit=header.pixel_offset, capacity=capacity, block=block,
    )
