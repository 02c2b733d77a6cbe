"""Encapsulated multi-frame files written by pydicom (another writer than ours), from codestreams."""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, encapsulate_extended
from pydicom.uid import generate_uid


def write_encapsulated(path, frames: list[np.ndarray], codestreams: list[bytes], uid: str, *,
                       bits_stored: int, photometric: str, extended: bool = False, fragments: int = 1, bot: bool = True):
    """Write `codestreams` (one per frame of `frames`, which give the image description) as a
    Secondary Capture file in transfer syntax `uid`: a Basic Offset Table with one fragment per
    frame (an empty one with `bot` False), none with several, or an Extended Offset Table. Odd-length codestreams are padded."""
    rows, cols = frames[0].shape[:2]
    spp = 1 if frames[0].ndim == 2 else frames[0].shape[2]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7.2"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, cols, spp
    ds.PhotometricInterpretation = photometric
    if spp == 3:
        ds.PlanarConfiguration = 0
    ds.NumberOfFrames = len(frames)
    ds.BitsAllocated = frames[0].dtype.itemsize * 8
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    codestreams = [c + b"\x00" if len(c) % 2 else c for c in codestreams]
    if extended:
        ds.PixelData, ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = encapsulate_extended(codestreams)
    else:
        ds.PixelData = encapsulate(codestreams, fragments_per_frame=fragments, has_bot=fragments == 1 and bot)
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path
