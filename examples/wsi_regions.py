"""Whole-slide images: tiles, regions and a pyramid.

    python examples/wsi_regions.py [FOLDER_OR_URL_PREFIX]

Without an argument, writes a small pyramid (3 levels of 256x256 JPEG tiles,
one of them TILED_SPARSE with tiles missing, plus a label image) into
examples/output/slide/ with a minimal generator (pydicom and imagecodecs:
``pip install ".[fast]" pydicom``), then
reads it: the levels, tile positions, regions at several levels (OpenSlide's
convention: locations in level 0 pixels), a thumbnail, and what was read.
"""

from __future__ import annotations

import io
import os
import struct
import sys

import numpy as np

import dicomframes

WSI = "1.2.840.10008.5.1.4.1.1.77.1.6"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


# -- a minimal pyramid writer ---------------------------------------------------------------
def _item(content: bytes) -> bytes:
    return struct.pack("<HHI", 0xFFFE, 0xE000, len(content)) + content


def _sequence(tag: int, items: list[bytes]) -> bytes:
    body = b"".join(_item(i) for i in items)
    return struct.pack("<HH2s2xI", tag >> 16, tag & 0xFFFF, b"SQ", len(body)) + body


def _sl(tag: int, value: int) -> bytes:
    return struct.pack("<HH2sHi", tag >> 16, tag & 0xFFFF, b"SL", 4, value)


def write_level(path: str, image: np.ndarray, tile: int, series: str, study: str, number: int,
                sparse: bool = False, image_type: str = "VOLUME") -> None:
    """One level as one instance: JPEG tiles; sparse levels skip every 7th tile."""
    require_writer()
    import imagecodecs
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import generate_uid

    h, w = image.shape[:2]
    frames, positions = [], []
    for r in range(0, h, tile):
        for c in range(0, w, tile):
            if sparse and len(positions) % 7 == 3 and (r, c) != (0, 0):
                positions.append(None)  # this tile is absent
                continue
            block = np.zeros((tile, tile, 3), np.uint8)
            part = image[r : r + tile, c : c + tile]
            block[: part.shape[0], : part.shape[1]] = part
            frames.append(bytes(imagecodecs.jpeg8_encode(block, level=90)))
            positions.append((r, c))
    positions = [p for p in positions if p is not None]

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = JPEG_BASELINE
    ds.file_meta.MediaStorageSOPClassUID = WSI
    ds.SOPClassUID = WSI
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.Modality, ds.InstanceNumber = "SM", number
    ds.ImageType = ["DERIVED", "PRIMARY", image_type, "NONE"]
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_FULL_422", 0
    ds.Rows = ds.Columns = tile
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.NumberOfFrames = len(frames)
    ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows = w, h
    ds.DimensionOrganizationType = "TILED_SPARSE" if sparse else "TILED_FULL"
    head = io.BytesIO()
    pydicom.dcmwrite(head, ds, enforce_file_format=True)
    pffg = b""
    if sparse:  # Plane Position (Slide): 1-based column and row of each tile
        pffg = _sequence(0x52009230, [
            _sequence(0x0048021A, [_sl(0x0048021E, c + 1) + _sl(0x0048021F, r + 1)]) for r, c in positions
        ])
    pixels = struct.pack("<HH2s2xI", 0x7FE0, 0x0010, b"OB", 0xFFFFFFFF) + _item(b"")
    pixels += b"".join(_item(f + b"\0" * (len(f) % 2)) for f in frames) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    with open(path, "wb") as f:
        f.write(head.getvalue() + pffg + pixels)


def require_writer() -> None:
    """Exit with the install command when the pyramid writer's packages are missing."""
    try:
        import imagecodecs  # noqa: F401
        import pydicom  # noqa: F401
    except ImportError as exc:
        sys.exit(f"Writing the example slide needs pydicom and imagecodecs ({exc.name} is missing): "
                 'pip install ".[fast]" pydicom (from the repository root), or give a slide folder or URL')


def write_example_slide(folder: str) -> str:
    require_writer()
    from pydicom.uid import generate_uid

    os.makedirs(folder, exist_ok=True)
    y, x = np.mgrid[0:1900, 0:2500]
    image = np.stack([(x // 7) % 256, (y // 5) % 256, ((x + y) // 11) % 256], axis=-1).astype(np.uint8)
    series, study = generate_uid(), generate_uid()
    for k in range(3):
        write_level(os.path.join(folder, f"level{k}.dcm"), image, 256, series, study, k + 1, sparse=(k == 1))
        image = image[::2, ::2]
    label = np.full((200, 400, 3), 230, np.uint8)
    label[80:120, 40:360] = 20
    write_level(os.path.join(folder, "label.dcm"), label, 400, series, study, 10, image_type="LABEL")
    return folder


# -- reading ---------------------------------------------------------------------------------
def main() -> None:
    source = sys.argv[1] if len(sys.argv) > 1 else write_example_slide("examples/output/slide")
    with dicomframes.open_slide(source) as slide:
        print(slide)
        for level in slide.levels:
            print(f"  {level}  {level.organization}")
        if slide.label is not None:
            print("  label:", slide.label.size)

        # Tiles with their positions, from one level.
        reader = slide.levels[-1].readers[0]
        for position, tile in reader.iter_tiles():
            print(f"  tile at row {position.row}, column {position.column}: {tile.shape}")
            break
        print(" ", reader.tile_geometry)

        # Regions: x, y in level 0 pixels; the size in the level's pixels.
        for k in range(len(slide.levels)):
            region = slide.read_region((1000, 700), k, (512, 384))
            print(f"  level {k} region at level-0 (1000, 700): {region.shape} {region.dtype}, mean {region.mean():.1f}")
        # Past the image edge (and where sparse tiles are absent): background, white by default.
        corner = slide.levels[0].read_region((slide.dimensions[0] - 100, 0), (300, 50))
        print("  past the right edge:", corner[0, -1], "(background)")

        thumb = slide.thumbnail((256, 256))
        print("  thumbnail:", thumb.shape)
        reads = sum(r.stats["requests"] for r in slide.readers)
        nbytes = sum(r.stats["bytes"] for r in slide.readers)
        print(f"  read so far: {reads} requests, {nbytes:,} bytes")


if __name__ == "__main__":
    main()
