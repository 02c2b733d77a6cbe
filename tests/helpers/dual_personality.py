"""Dual-personality DICOM-TIFF files, made from a DICOM file another writer wrote.

The TIFF structure is tifffile's: it writes the header, IFD and tags of a tiled
image into a Data Set Trailing Padding element appended after Pixel Data (where
Clunie's dual-personality files keep it), then its `TiffTag.overwrite` points
the tile offsets at the Pixel Data fragments. Only the 8 or 16 bytes of the TIFF
header are copied by hand, into the preamble, and the copies of the tiles that
tifffile wrote after its IFD are cut off again.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

#: (FFFC,FFFC) Data Set Trailing Padding, OB, 4-byte length to follow
_PADDING_HEADER = struct.pack("<HH2sH", 0xFFFC, 0xFFFC, b"OB", 0)


def fragments(path: Path) -> list[tuple[int, int]]:
    """(value offset, length) of each Pixel Data fragment, Pixel Data found by pydicom."""
    import pydicom

    ds = pydicom.dcmread(path, defer_size=256)
    pos = ds.get_item(0x7FE00010).file_tell  # the value's first byte
    data = Path(path).read_bytes()
    out = []
    first = True
    while True:
        group, elem, length = struct.unpack_from("<HHI", data, pos)
        if (group, elem) != (0xFFFE, 0xE000):
            return out
        if not (first and (length == 0 or data[pos + 8 : pos + 12] == b"\0\0\0\0")):
            out.append((pos + 8, length))  # not the Basic Offset Table
        first = False
        pos += 8 + length


def add_tiff(
    src: Path, dst: Path, *, bigtiff: bool = False, byteorder: str = "<", exact_counts: bool = True,
) -> Path:
    """`src` with a TIFF personality, written to `dst`: one tiled IFD listing the
    fragments. `exact_counts`: a tile's byte count leaves out the item's padding
    byte after a JPEG end-of-image marker (odd counts), else it is the item length."""
    import pydicom
    import tifffile

    ds = pydicom.dcmread(src, stop_before_pixels=True)
    rows, columns, spp = int(ds.Rows), int(ds.Columns), int(ds.get("SamplesPerPixel", 1))
    found = fragments(src)
    if len(found) != int(ds.get("NumberOfFrames", 1)):
        raise ValueError(f"{src}: {len(found)} fragments for {ds.get('NumberOfFrames', 1)} frames")
    if "TotalPixelMatrixRows" in ds:  # a whole-slide level: the tiles' grid
        height, width = int(ds.TotalPixelMatrixRows), int(ds.TotalPixelMatrixColumns)
    else:  # a multi-frame image: its frames side by side
        height, width = rows, columns * len(found)
    data = Path(src).read_bytes()
    tiles = []
    for offset, length in found:
        tile = data[offset : offset + length]
        if exact_counts and tile.endswith(b"\xff\xd9\x00"):
            tile = tile[:-1]
        tiles.append(tile)
    start = len(data) + len(_PADDING_HEADER) + 4  # the padding's value: the TIFF
    with open(dst, "wb") as f:
        f.write(data + _PADDING_HEADER + b"\0\0\0\0")
    shape = (height, width, spp) if spp > 1 else (height, width)
    with open(dst, "r+b") as f:
        f.seek(start)
        # offset=0: tifffile's offsets count from the start of the file, not of its header
        with tifffile.TiffWriter(tifffile.FileHandle(f, offset=0), bigtiff=bigtiff, byteorder=byteorder) as tif:
            tif.write(iter(tiles), shape=shape, dtype=np.uint8, tile=(rows, columns), compression="jpeg",
                      photometric="rgb" if spp == 3 else "minisblack")
        f.seek(start)
        head = f.read(16 if bigtiff else 8)
        f.seek(0)
        f.write(head)  # the preamble is the TIFF's header now
    with tifffile.TiffFile(dst, mode="r+b") as tif:
        page = tif.pages[0]
        copies = int(min(page.dataoffsets))
        assert copies > start  # the IFD came first: everything from here on is tile copies
        page.tags["TileOffsets"].overwrite([offset for offset, _ in found])
    with open(dst, "r+b") as f:
        end = copies + (copies - start) % 2  # a value of even length
        f.truncate(end)
        f.seek(start - 4)
        f.write(struct.pack("<I", end - start))
    return dst


def overwrite_tiles(path: Path, offsets=None, counts=None) -> None:
    """Change the TIFF's tile table with tifffile (a damaged or lying table)."""
    import tifffile

    with tifffile.TiffFile(path, mode="r+b") as tif:
        page = tif.pages[0]
        if offsets is not None:
            page.tags["TileOffsets"].overwrite(list(offsets))
        if counts is not None:
            page.tags["TileByteCounts"].overwrite(list(counts))


def tile_table(path: Path) -> tuple[list[int], list[int]]:
    """(offsets, byte counts) as tifffile reads them."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        return list(page.dataoffsets), list(page.databytecounts)
