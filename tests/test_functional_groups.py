"""The functional-group walk on its own: the inline fast path and the general walk agree.

`views.functional_groups` reads tile positions out of a Per-Frame Functional
Groups Sequence with an inline reader for the common little endian item and a
general, stack-based walk for everything else. These tests build sequence
values by hand and check that items of defined and of undefined length, the
fast path and the general walk, explicit and implicit VR all give the same
values.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from dicomframes._dicom import encode
from dicomframes._dicom.tags import (
    COLUMN_POSITION_IN_TOTAL_IMAGE_PIXEL_MATRIX,
    OPTICAL_PATH_IDENTIFICATION_SEQUENCE,
    OPTICAL_PATH_IDENTIFIER,
    PIXEL_MEASURES_SEQUENCE,
    PIXEL_SPACING,
    PLANE_POSITION_SLIDE_SEQUENCE,
    ROW_POSITION_IN_TOTAL_IMAGE_PIXEL_MATRIX,
    UNDEFINED,
    Z_OFFSET_IN_SLIDE_COORDINATE_SYSTEM,
)
from dicomframes.errors import InvalidFileError, TruncatedFileError
from dicomframes.io.local import BytesSource
from dicomframes.views.functional_groups import MISSING, _fast_item, walk_items

COLUMN, ROW, Z = COLUMN_POSITION_IN_TOTAL_IMAGE_PIXEL_MATRIX, ROW_POSITION_IN_TOTAL_IMAGE_PIXEL_MATRIX, Z_OFFSET_IN_SLIDE_COORDINATE_SYSTEM


class Builder:
    """Elements, items and sequences in one encoding, with defined or undefined lengths."""

    def __init__(self, explicit: bool = True, little: bool = True, undefined: bool = False) -> None:
        self.explicit, self.little, self.undefined = explicit, little, undefined

    def element(self, tag: int, vr: str, value: bytes) -> bytes:
        return encode.element(tag, vr, value, explicit=self.explicit, little=self.little)

    def sl(self, tag: int, value: int) -> bytes:
        return self.element(tag, "SL", struct.pack("<i" if self.little else ">i", value))

    def item(self, content: bytes, undefined: bool | None = None) -> bytes:
        if self.undefined if undefined is None else undefined:
            return encode.item_header(UNDEFINED, little=self.little) + content + encode.item_delimiter(little=self.little)
        return encode.item_header(len(content), little=self.little) + content

    def sequence(self, tag: int, items: list[bytes], undefined: bool | None = None, vr: str = "SQ") -> bytes:
        body = b"".join(self.item(i, undefined) for i in items)
        if self.undefined if undefined is None else undefined:
            return (encode.element_header(tag, vr, UNDEFINED, explicit=self.explicit, little=self.little)
                    + body + encode.sequence_delimiter(little=self.little))
        return encode.element_header(tag, vr, len(body), explicit=self.explicit, little=self.little) + body

    def frame(self, column: int, row: int, z: str | None = None, opid: str | None = None, noise: bool = False) -> bytes:
        """The content of one per-frame item placing a tile at 0-based (column, row)."""
        parts = []
        if noise:
            parts.append(self.element(0x00091001, "OB", struct.pack("<HH2sHi", 0x0048, 0x021E, b"SL", 4, 99999)))
            deep = Builder(self.explicit, self.little, True)
            parts.append(deep.sequence(0x00091002, [deep.sequence(0x00091003, [deep.sl(COLUMN, -5)])]))
        if opid is not None:
            parts.append(self.sequence(OPTICAL_PATH_IDENTIFICATION_SEQUENCE, [self.element(OPTICAL_PATH_IDENTIFIER, "SH", opid.encode())]))
        plane = self.sl(COLUMN, column + 1) + self.sl(ROW, row + 1)
        if z is not None:
            plane = self.element(Z, "DS", z.encode()) + plane
        parts.append(self.sequence(PLANE_POSITION_SLIDE_SEQUENCE, [plane]))
        return b"".join(parts)

    def value(self, contents: list[bytes]) -> bytes:
        """A sequence's value: its items (and the delimiter when the length is undefined)."""
        body = b"".join(self.item(c) for c in contents)
        return body + (encode.sequence_delimiter(little=self.little) if self.undefined else b"")


def _walk(b: Builder, data: bytes, **options):
    return walk_items(BytesSource(data), 0, None if b.undefined else len(data),
                      explicit=b.explicit, little=b.little, **options)


def _values(found) -> tuple:
    return (
        found.count, found.columns.tolist(), found.rows.tolist(),
        None if found.z is None else found.z.tolist(),
        None if found.optical_path is None else found.optical_path.tolist(),
        found.optical_path_ids, found.pixel_spacing,
    )


TILES = [(16 * (k % 7), 32 * (k // 7), f"{k % 3 * 1.5:g}", "ab"[k % 2]) for k in range(40)]


# -- the fast path itself --------------------------------------------------------------------------

@pytest.mark.parametrize("explicit", [True, False])
@pytest.mark.parametrize("nested_undefined", [False, True])
def test_fast_item_defined_and_undefined_lengths_agree(explicit, nested_undefined):
    b = Builder(explicit, undefined=nested_undefined)
    content = b.frame(48, 96, z="2.5", opid="p1", noise=True)
    defined = encode.item_header(len(content)) + content
    undefined = encode.item_header(UNDEFINED) + content + encode.item_delimiter()
    tail = b"\xee" * 16  # what follows the item is not read
    got_defined = _fast_item(defined + tail, 8, len(defined), explicit)
    got_undefined = _fast_item(undefined + tail, 8, -1, explicit)
    assert got_defined == (48, 96, b"2.5 ", b"p1", len(defined))
    assert got_undefined == (48, 96, b"2.5 ", b"p1", len(undefined))


def test_fast_item_reports_what_is_absent_as_none():
    b = Builder()
    content = b.element(0x00200100, "IS", b"1")  # nothing a tile position needs
    data = encode.item_header(len(content)) + content
    assert _fast_item(data, 8, len(data), True) == (None, None, None, None, len(data))


@pytest.mark.parametrize("case", ["pixel-measures", "un-sequence", "cut", "overrun", "stray-delimiter"])
def test_fast_item_hands_over_to_the_general_walk(case):
    b = Builder()
    content = b.frame(1, 2)
    if case == "pixel-measures":
        content = b.sequence(PIXEL_MEASURES_SEQUENCE, [b.element(PIXEL_SPACING, "DS", b"0.5\\0.5")]) + content
    elif case == "un-sequence":
        inner = Builder(False, undefined=True)
        un = inner.sequence(PLANE_POSITION_SLIDE_SEQUENCE, [inner.sl(COLUMN, 2)])[8:]
        content = encode.element_header(PLANE_POSITION_SLIDE_SEQUENCE, "UN", UNDEFINED) + un
    elif case == "stray-delimiter":
        content = content + encode.sequence_delimiter()
    data = encode.item_header(len(content)) + content
    end = len(data)
    if case == "cut":
        data = data[:-3]
    elif case == "overrun":
        end -= 4  # the item claims fewer bytes than its elements take
    assert _fast_item(data, 8, end, True) is None


# -- the walk over a sequence -------------------------------------------------------------------

def _sequence(explicit: bool, items_undefined: bool, nested_undefined: bool, noise: bool = False) -> tuple[Builder, bytes]:
    inner = Builder(explicit, undefined=nested_undefined)
    outer = Builder(explicit, undefined=items_undefined)
    contents = [inner.frame(c, r, z=z, opid=o, noise=noise) for c, r, z, o in TILES]
    return outer, outer.value(contents)


@pytest.mark.parametrize("explicit", [True, False])
@pytest.mark.parametrize("noise", [False, True])
def test_items_of_defined_and_undefined_length_agree(explicit, noise):
    results = []
    for items_undefined in (False, True):
        for nested_undefined in (False, True):
            b, data = _sequence(explicit, items_undefined, nested_undefined, noise)
            for block in (1 << 20, 256, 40):  # small blocks: the fast path stops at every buffer end
                results.append(_values(_walk(b, data, block=block)))
    assert all(r == results[0] for r in results)
    count, columns, rows, z, opath, ids, _ = results[0]
    assert count == len(TILES)
    assert columns == [c for c, _, _, _ in TILES] and rows == [r for _, r, _, _ in TILES]
    assert z == [float(t[2]) for t in TILES]
    assert [ids[k] for k in opath] == [t[3] for t in TILES]


def test_fast_path_and_general_walk_agree():
    """Big endian has no fast path: the same sequence in both byte orders gives the same values."""
    for undefined in (False, True):
        values = []
        for little in (True, False):
            inner = Builder(True, little, undefined)
            outer = Builder(True, little, undefined)
            data = outer.value([inner.frame(c, r, z=z, opid=o) for c, r, z, o in TILES])
            values.append(_values(_walk(outer, data)))
        assert values[0] == values[1]


def test_items_the_fast_path_refuses_are_read_by_the_general_walk():
    b = Builder()
    measures = b.sequence(PIXEL_MEASURES_SEQUENCE, [b.element(PIXEL_SPACING, "DS", b"0.25\\0.5")])
    implicit = Builder(False, undefined=True)
    un = encode.element_header(PLANE_POSITION_SLIDE_SEQUENCE, "UN", UNDEFINED) + implicit.sequence(
        PLANE_POSITION_SLIDE_SEQUENCE, [implicit.sl(COLUMN, 31) + implicit.sl(ROW, 41)])[8:]
    contents = [b.frame(0, 0), measures + b.frame(10, 20), un, b.frame(50, 60)]
    found = _walk(b, b.value(contents))
    assert found.columns.tolist() == [0, 10, 30, 50]
    assert found.rows.tolist() == [0, 20, 40, 60]
    assert found.pixel_spacing == (0.25, 0.5)


def test_an_item_without_a_position_is_missing():
    b = Builder(undefined=True)
    found = _walk(b, b.value([b.frame(5, 6), b.element(0x00200100, "IS", b"1"), b.frame(7, 8)]))
    assert found.columns.tolist() == [5, MISSING, 7] and found.rows.tolist() == [6, MISSING, 8]
    assert found.z is None and found.optical_path is None
    assert found.has_positions


def test_empty_sequence():
    for undefined in (False, True):
        b = Builder(undefined=undefined)
        found = _walk(b, b.value([]))
        assert found.count == 0 and not found.has_positions
        assert found.columns.dtype == np.int32


def test_nesting_past_the_depth_limit_is_refused():
    b = Builder(undefined=True)
    inner = b.sl(COLUMN, 1)
    for k in range(80):
        inner = b.sequence(0x00091000 + k, [inner])
    with pytest.raises(InvalidFileError, match="nested"):
        _walk(b, b.value([inner + b.frame(1, 1)]))


@pytest.mark.parametrize("undefined", [False, True])
def test_a_cut_sequence_is_truncated_not_garbage(undefined):
    b, data = _sequence(True, undefined, undefined)
    for cut in (3, 17, len(data) // 2):
        with pytest.raises(TruncatedFileError):
            walk_items(BytesSource(data[:-cut]), 0, None, explicit=True, little=True)


def test_the_comparisons_cover_both_paths(monkeypatch):
    """Large blocks read every item inline; blocks smaller than an item send them all to the general walk."""
    import dicomframes.views.functional_groups as fg

    inline = []

    def counting(*args, **kwargs):
        found = _fast_item(*args, **kwargs)
        inline.append(found is not None)
        return found

    monkeypatch.setattr(fg, "_fast_item", counting)
    b, data = _sequence(True, False, True)
    _walk(b, data)
    assert inline.count(True) == len(TILES)
    inline.clear()
    _walk(b, data, block=40)
    assert not any(inline)


# -- the vectorised path: the same values as the per-item parsers ----------------------------------

def _comparable(values: tuple) -> tuple:
    """`_values` with NaN Z offsets as None: NaN equals nothing, not even itself."""
    z = values[3]
    return values[:3] + (None if z is None else [None if v != v else v for v in z],) + values[4:]


def _general(b: Builder, data: bytes, monkeypatch, **options):
    """The walk with the vectorised path off (what it falls back to)."""
    import dicomframes.views.functional_groups as fg

    with monkeypatch.context() as m:
        m.setattr(fg, "_VECTOR_MIN_ITEMS", 1 << 62)
        return _walk(b, data, **options)


def _count_vectorised(monkeypatch) -> list[int]:
    """Items each vectorised run read, recorded as the walk goes."""
    import dicomframes.views.functional_groups as fg

    runs: list[int] = []
    real = fg._Vector.run

    def counting(self, *args):
        done, p = real(self, *args)
        runs.append(done)
        return done, p

    monkeypatch.setattr(fg._Vector, "run", counting)
    return runs


def _many(b: Builder, count: int, seed: int, *, z: bool = True, opid: bool = True, odd: bool = False) -> list[bytes]:
    rng = np.random.default_rng(seed)
    contents = []
    for k in rng.permutation(count):
        zs = f"{(k % 5) * 1.25:g}" if z else None
        if odd and k % 3 == 0:
            zs = zs + "0" * int(k % 4) if zs else zs  # text of every length, odd ones too
        contents.append(b.frame(int(k % 50) * 16, int(k // 50) * 16, z=zs, opid=f"path{k % 3}" if opid else None))
    return contents


@pytest.mark.parametrize("explicit", [True, False])
@pytest.mark.parametrize("nested_undefined", [False, True])
@pytest.mark.parametrize("block", [1 << 20, 32768, 16384])
def test_vectorised_path_agrees_with_the_per_item_parsers(explicit, nested_undefined, block, monkeypatch):
    inner = Builder(explicit, undefined=nested_undefined)
    outer = Builder(explicit)
    data = outer.value(_many(inner, 700, seed=block, odd=True))
    expected = _comparable(_values(_general(outer, data, monkeypatch, block=block)))
    runs = _count_vectorised(monkeypatch)
    got = _comparable(_values(_walk(outer, data, block=block)))
    assert got == expected
    assert sum(runs) > 350  # most items went the vectorised way (buffers cut the runs)
    assert expected[0] == 700 and MISSING not in expected[1]


@pytest.mark.parametrize("explicit", [True, False])
def test_items_that_depart_from_the_layout_fall_back(explicit, monkeypatch):
    b = Builder(explicit, undefined=True)
    contents = _many(b, 400, seed=3)
    measures = b.sequence(PIXEL_MEASURES_SEQUENCE, [b.element(PIXEL_SPACING, "DS", b"0.25\\0.5")])
    contents[10] = b.frame(1, 2, noise=True)  # extra elements
    contents[150] = measures + contents[150]  # Pixel Measures: the general walk
    contents[200] = b.element(0x00200100, "IS", b"1")  # no position at all
    contents[250] = b.frame(3, 4, z="x" * 100, opid="p")  # a text too long for the vectorised path
    contents[300] = b.frame(5, 6, opid="q" * 2000)  # longer than any value the walk reads
    contents[301] = b.sl(COLUMN, -(2 ** 31)) + b.frame(9, 9)  # a value the general walk reads last
    for k in range(320, 400, 2):  # alternating layouts
        contents[k] = b.frame(k, k)
    outer = Builder(explicit)
    data = outer.value(contents)
    expected = _comparable(_values(_general(outer, data, monkeypatch)))
    runs = _count_vectorised(monkeypatch)
    assert _comparable(_values(_walk(outer, data))) == expected
    assert sum(runs) > 200
    assert expected[-1] == (0.25, 0.5) and expected[1][200] == MISSING


def test_several_focal_planes_and_optical_paths_in_shuffled_tiles(tmp_path, monkeypatch):
    import dicomframes
    from tests.helpers import wsigen

    image = wsigen.large_image(320, 320, cell=16)
    level = wsigen.write_level(tmp_path, "sparse", image, tile_size=(16, 16), codec="native",
                               organization="TILED_SPARSE", shuffle=True, focal_planes=2, optical_paths=3,
                               absent_fraction=0.2, noise=True)
    runs = _count_vectorised(monkeypatch)
    with dicomframes.open(level.paths[0]) as reader:
        got = reader.tile_geometry.positions()
    assert sum(runs) > 0
    want = {(t.row, t.column, t.focal_plane, t.optical_path) for t in level.tiles}
    assert set(zip(*(a.tolist() for a in got))) == want


@pytest.mark.parametrize("seed", range(40))
def test_hostile_bytes_never_disagree_or_crash(seed, monkeypatch):
    """Corrupted copies of a sequence: the vectorised walk gives what the general walk gives, or the same error."""
    b = Builder(seed % 2 == 0, undefined=seed % 4 >= 2)
    outer = Builder(seed % 2 == 0)
    data = bytearray(outer.value(_many(b, 120, seed=seed)))
    rng = np.random.default_rng(seed)
    for at in rng.integers(0, len(data), 1 + seed % 5):
        data[int(at)] = int(rng.integers(0, 256))
    if seed % 3 == 0:  # a huge length where a small one was
        at = int(rng.integers(0, len(data) - 4))
        data[at : at + 4] = struct.pack("<I", 0xFFFFFFF0)
    data = bytes(data)

    def outcome(fn):
        try:
            return _comparable(_values(fn()))
        except (InvalidFileError, TruncatedFileError) as error:
            return type(error)

    expected = outcome(lambda: _general(outer, data, monkeypatch))
    assert outcome(lambda: _walk(outer, data)) == expected
