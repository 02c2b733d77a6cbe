"""Explicit VR Little Endian data elements at the byte level: what `decompress` copies and encodes.

`decompress` copies a file's elements as byte ranges (a 15 MB Per-Frame
Functional Groups Sequence is copied, not parsed) and encodes anew only the few
it changes (with `dicomframes._dicom.encode`). This module holds the pieces:

- `walk`: the top-level elements of an Explicit VR Little Endian data set as
  byte ranges, reading only element and item headers (with the shared
  `dicomframes._dicom.elements.ElementWalker`: values are skipped,
  undefined-length sequences are walked item header by item header);
- `rewrite`: a walk plus a few edits (replace, insert, delete) -> the list of
  byte ranges to copy and encoded elements to write, in tag order;
- `reencode`: a data set in another encoding (Implicit VR, Big Endian, or one
  encoded differently from its transfer syntax) -> Explicit VR Little Endian
  bytes, through pydicom (an optional dependency: only such files need it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

from dicomframes._dicom.elements import ElementWalker
from dicomframes._dicom.tags import PIXEL_TAGS, UNDEFINED
from dicomframes.errors import (
    DicomFramesError,
    InvalidFileError,
    MissingDependencyError,
    TranscodeError,
)
from dicomframes.io.cursor import Cursor
from dicomframes.io.local import BytesSource
from dicomframes.io.source import Source

#: the most bytes of elements `reencode` accepts (they are held in memory)
MAX_REENCODE_BYTES = 256 << 20


# -- walking -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ElementRange:
    """Where one top-level element lies in its source."""

    tag: int
    vr: str
    #: offset of the element's first byte (its tag)
    start: int
    #: offset of its value
    value_start: int
    #: offset just past it; for Pixel Data of undefined length, None
    end: int | None
    #: the value length as stored (0xFFFFFFFF: undefined)
    length: int


def walk(source: Source, start: int, end: int | None = None, *, block: int = 1 << 20) -> Iterator[ElementRange]:
    """The top-level elements of the Explicit VR Little Endian data set at `start`.

    Stops at `end`, at the end of the source, or after yielding a Pixel Data
    element (whose value is not walked: its `end` is None when its length is
    undefined). Only element and item headers are read.
    """
    cur = Cursor(source, start, block)
    # Stray top-level items (read as pydicom reads them, see ElementWalker) are left out of the copy.
    walker = ElementWalker(cur, name=source.name, size=source.size, explicit=True, little=True, stray_items=True)
    for tag, vr, length, element_start, value_start in walker.elements(end):
        if tag in PIXEL_TAGS:
            value_end = None if length == UNDEFINED else value_start + length
            yield ElementRange(tag, vr or "OB", element_start, value_start, value_end, length)
            return
        walker.skip(tag, vr, length)
        yield ElementRange(tag, vr or "UN", element_start, value_start, cur.pos, length)


# -- rewriting -------------------------------------------------------------------------------

#: a piece of output: a (start, end) range of the source to copy, or bytes to write
Piece = tuple[int, int] | bytes


@dataclass
class Edits:
    """Changes to a run of elements, by tag.

    `replace`: tag -> the new encoded element, written where the old one was, or
    in tag order if there was none (unless the tag is in `only_if_present`);
    `delete`: tags dropped (and Group Lengths, with `drop_group_lengths`).
    """

    replace: dict[int, bytes]
    delete: frozenset[int] = frozenset()
    only_if_present: frozenset[int] = frozenset()
    #: drop the retired Group Length elements (gggg,0000) of groups above 6, as
    #: pydicom's writer does (PS3.5 7.2): a changed element would falsify them
    drop_group_lengths: bool = False

    def deletes(self, tag: int) -> bool:
        return tag in self.delete or (self.drop_group_lengths and tag & 0xFFFF == 0 and tag >> 16 > 6)


def rewrite(elements: Iterable[ElementRange], edits: Edits) -> tuple[list[Piece], set[int]]:
    """Pieces of output for `elements` with `edits` applied, in tag order.

    Neighbouring copied elements merge into one range. Returns the pieces and
    the tags seen.
    """
    pieces: list[Piece] = []
    run: list[int] | None = None
    seen: set[int] = set()
    to_insert = sorted(t for t in edits.replace if t not in edits.only_if_present)

    def flush() -> None:
        nonlocal run
        if run is not None:
            pieces.append((run[0], run[1]))
            run = None

    def emit(data: bytes) -> None:
        flush()
        pieces.append(data)

    for el in elements:
        assert el.end is not None
        while to_insert and to_insert[0] < el.tag:
            emit(edits.replace[to_insert.pop(0)])
        seen.add(el.tag)
        if el.tag in edits.replace:
            if el.tag in to_insert:
                to_insert.remove(el.tag)
            emit(edits.replace[el.tag])
            continue
        if edits.deletes(el.tag):
            flush()
            continue
        if run is not None and run[1] == el.start:
            run[1] = el.end
        else:
            flush()
            run = [el.start, el.end]
    for tag in to_insert:
        emit(edits.replace[tag])
    flush()
    return pieces, seen


def pieces_size(pieces: Iterable[Piece]) -> int:
    return sum(len(p) if isinstance(p, bytes) else p[1] - p[0] for p in pieces)


# -- re-encoding through pydicom ----------------------------------------------------------------


def _swap_words(ds) -> None:
    """Big endian OW/OL/OF/OD/OV values, kept as raw bytes by pydicom: to little endian."""
    import numpy as np

    sizes = {"OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                _swap_words(item)
        elif elem.VR in sizes and isinstance(elem.value, (bytes, bytearray)) and elem.value:
            n = sizes[elem.VR]
            value = bytes(elem.value)
            whole = len(value) // n * n
            swapped = np.frombuffer(value[:whole], dtype=f">u{n}").astype(f"<u{n}").tobytes()
            elem.value = swapped + value[whole:]


def _without_strays(raw: bytes, *, explicit_vr: bool, little_endian: bool, name: str) -> bytes:
    """`raw` (top-level elements) without stray items and delimiters, which
    pydicom reads but cannot write."""
    cur = Cursor(BytesSource(raw, name=name), 0, max(1, len(raw)))
    walker = ElementWalker(cur, name=name, size=len(raw), explicit=explicit_vr, little=little_endian, stray_items=True)
    kept = []
    for tag, vr, length, start, _ in walker.elements():
        walker.skip(tag, vr, length)
        kept.append((start, cur.pos))
    return b"".join(raw[a:b] for a, b in kept) if walker.strays else raw


def reencode(raw: bytes, *, explicit_vr: bool, little_endian: bool, name: str, what: str = "the data set") -> bytes:
    """The elements in `raw` (a data set fragment) as Explicit VR Little Endian bytes.

    Implicit VR needs a data dictionary to know each element's VR: this uses
    pydicom's. pydicom's writer keeps big endian OW/OL/OF/OD/OV values as
    they are; here they are byte-swapped, as little endian requires.
    """
    encoding = ("Explicit" if explicit_vr else "Implicit") + " VR " + ("Little" if little_endian else "Big") + " Endian"
    if len(raw) > MAX_REENCODE_BYTES:
        raise TranscodeError(
            f"{what} is encoded as {encoding} and holds {len(raw):,} bytes before the pixel data; "
            f"re-encoding it as Explicit VR Little Endian is limited to {MAX_REENCODE_BYTES >> 20} MiB",
            path=name,
        )
    try:
        import pydicom  # noqa: F401
        from pydicom.filebase import DicomBytesIO
        from pydicom.filereader import read_dataset
        from pydicom.filewriter import write_dataset
    except ImportError:
        raise MissingDependencyError(
            f"{what} is encoded as {encoding}; re-encoding it as Explicit VR Little Endian needs "
            "a data dictionary, which dicomframes takes from pydicom",
            path=name, hint="pip install pydicom",
        ) from None
    import logging
    import warnings

    raw = _without_strays(raw, explicit_vr=explicit_vr, little_endian=little_endian, name=name)
    level = logging.getLogger("pydicom").level
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = read_dataset(DicomBytesIO(raw), is_implicit_VR=not explicit_vr, is_little_endian=little_endian)
            if not little_endian:
                _swap_words(ds)
            out = DicomBytesIO()
            out.is_implicit_VR, out.is_little_endian = False, True
            write_dataset(out, ds)
    except DicomFramesError:
        raise
    except Exception as exc:
        raise InvalidFileError(
            f"pydicom could not re-encode {what} ({encoding} -> Explicit VR Little Endian): {type(exc).__name__}: {exc}",
            path=name,
        ) from exc
    finally:
        logging.getLogger("pydicom").setLevel(level)
    return out.getvalue()
