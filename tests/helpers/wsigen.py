"""Build whole-slide image pyramids for tests (VL Whole Slide Microscopy Image Storage).

The attributes of each instance are written with pydicom; the Per-Frame
Functional Groups Sequence and the Pixel Data are appended as bytes by the small
encoder here (on dicomframes' own, `dicomframes._dicom.encode`), so that a level of 20,000 sparse tiles is written in a fraction of
a second and the encoding of that sequence (explicit or implicit VR, defined or
undefined lengths, unrelated elements to skip) is under the test's control.

    pyr = write_pyramid(tmp_path, width=1000, height=700, levels=3, codec="j2k")
    pyr.image                 # the full (level 0) image, (700, 1000, 3) uint8
    pyr.levels[1].image       # the level's image (2x downsampled)
    pyr.levels[1].paths       # its instances
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import generate_uid

from dicomframes._dicom import encode as dcm
from dicomframes._dicom.tags import (
    COLUMN_POSITION_IN_TOTAL_IMAGE_PIXEL_MATRIX,
    OPTICAL_PATH_IDENTIFICATION_SEQUENCE,
    OPTICAL_PATH_IDENTIFIER,
    PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
    PIXEL_DATA,
    PLANE_POSITION_SLIDE_SEQUENCE,
    ROW_POSITION_IN_TOTAL_IMAGE_PIXEL_MATRIX,
    UNDEFINED,
    Z_OFFSET_IN_SLIDE_COORDINATE_SYSTEM,
)

WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
CODECS = {"jpeg": JPEG_BASELINE, "j2k": J2K_LOSSLESS, "native": EXPLICIT_LE}


# -- images ----------------------------------------------------------------------
def smooth_image(width: int, height: int, seed: int = 0, cell: int = 24) -> np.ndarray:
    """A smooth random RGB image: random colours on a coarse grid, interpolated bilinearly."""
    rng = np.random.default_rng(seed)
    gh, gw = height // cell + 2, width // cell + 2
    grid = rng.integers(0, 256, (gh, gw, 3)).astype(np.float64)
    ys = np.arange(height) / cell
    xs = np.arange(width) / cell
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    image = top * (1 - fy) + bottom * fy
    image += rng.normal(0, 3, image.shape)  # a little texture, so that every pixel matters
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def large_image(width: int, height: int, seed: int = 0, cell: int = 64) -> np.ndarray:
    """A big RGB image made cheaply (for benchmarks): a coarse random grid blown up
    with a little noise, built in uint8 without large temporaries."""
    rng = np.random.default_rng(seed)
    grid = rng.integers(40, 216, (height // cell + 1, width // cell + 1, 3), dtype=np.uint8)
    image = np.repeat(np.repeat(grid, cell, axis=0)[:height], cell, axis=1)[:, :width]
    noise = rng.integers(0, 16, (256, 256, 3), dtype=np.uint8)
    for y in range(0, height, 256):
        for x in range(0, width, 256):
            block = image[y : y + 256, x : x + 256]
            block += noise[: block.shape[0], : block.shape[1]]
    return image


def downsample2(image: np.ndarray) -> np.ndarray:
    """Half the size (rounding up), each pixel the mean of its 2x2 block (edges repeated)."""
    h, w = image.shape[:2]
    padded = np.pad(image, ((0, h % 2), (0, w % 2)) + ((0, 0),) * (image.ndim - 2), mode="edge")
    blocks = padded.reshape(padded.shape[0] // 2, 2, padded.shape[1] // 2, 2, *image.shape[2:]).astype(np.uint16)
    return ((blocks.sum(axis=(1, 3)) + 2) // 4).astype(np.uint8)


def plane_image(image: np.ndarray, focal_plane: int, optical_path: int) -> np.ndarray:
    """A distinct image for each focal plane and optical path."""
    if focal_plane == 0 and optical_path == 0:
        return image
    shifted = image.astype(np.int32) + 37 * focal_plane + 101 * optical_path
    return np.roll(shifted % 256, focal_plane, axis=1).astype(np.uint8)


def tile_of(image: np.ndarray, row: int, column: int, tile_h: int, tile_w: int, pad: int = 0) -> np.ndarray:
    """The tile at pixel (row, column), padded past the image edge with `pad`."""
    out = np.full((tile_h, tile_w) + image.shape[2:], pad, dtype=image.dtype)
    part = image[row : row + tile_h, column : column + tile_w]
    out[: part.shape[0], : part.shape[1]] = part
    return out


def encode(tile: np.ndarray, codec: str) -> bytes:
    """A tile's bytes: JPEG baseline (imagecodecs, else Pillow), lossless JPEG 2000
    without colour transform (imagecodecs, else pylibjpeg-openjpeg), or native."""
    try:
        import imagecodecs
    except ImportError:
        imagecodecs = None
    if codec == "jpeg":
        if imagecodecs is not None:
            return bytes(imagecodecs.jpeg8_encode(tile, level=92))
        try:
            from PIL import Image
        except ImportError:
            import pytest

            pytest.skip("writing JPEG test tiles needs imagecodecs or Pillow (pip install imagecodecs)")
        out = io.BytesIO()
        Image.fromarray(tile).save(out, format="JPEG", quality=92)
        return out.getvalue()
    if codec == "j2k":
        if imagecodecs is not None:
            return bytes(imagecodecs.jpeg2k_encode(tile, level=0, codecformat="J2K", reversible=True, mct=False))
        from openjpeg.utils import encode_array  # pylibjpeg-openjpeg, a dependency of dicomframes

        return encode_array(tile, photometric_interpretation=1, use_mct=False, codec_format=0)
    return tile.tobytes()


# -- bytes -----------------------------------------------------------------------
class Encoder:
    """Data elements, items and sequences as bytes (little endian)."""

    def __init__(self, explicit: bool = True, undefined: bool = False) -> None:
        self.explicit = explicit
        self.undefined = undefined

    def element(self, tag: int, vr: str, value: bytes) -> bytes:
        return dcm.element(tag, vr, value, explicit=self.explicit)

    def header(self, tag: int, vr: str, length: int) -> bytes:
        return dcm.element_header(tag, vr, length, explicit=self.explicit)

    def item(self, content: bytes, undefined: bool | None = None) -> bytes:
        if self.undefined if undefined is None else undefined:
            return dcm.item_header(UNDEFINED) + content + dcm.ITEM_DELIMITER_BYTES
        return dcm.item_header(len(content)) + content

    def sequence(self, tag: int, items: Sequence[bytes], undefined: bool | None = None, vr: str = "SQ") -> bytes:
        body = b"".join(self.item(i) for i in items)
        if self.undefined if undefined is None else undefined:
            return self.header(tag, vr, UNDEFINED) + body + dcm.SEQUENCE_DELIMITER_BYTES
        return self.header(tag, vr, len(body)) + body

    @staticmethod
    def ds(value: float) -> bytes:
        return f"{value:.6g}".encode()


def pffg_bytes(
    frames: Sequence["Tile"],
    *,
    explicit: bool = True,
    undefined: bool = False,
    noise: bool = False,
    optical_path_ids: Sequence[str] | None = None,
    pixel_spacing: float = 0.0005,
    z_spacing: float = 1.5,
    seed: int = 0,
) -> bytes:
    """The Per-Frame Functional Groups Sequence (tag, length and value) for `frames`.

    `noise` adds elements a position parser must skip: a private block with an
    OB value of random length and a nested undefined-length sequence whose item
    holds another undefined-length sequence (in every item), and a Frame
    Content Sequence with Dimension Index Values.
    """
    enc = Encoder(explicit, undefined)
    rng = np.random.default_rng(seed)
    items = []
    for f in frames:
        parts = []
        if noise:
            blob = rng.integers(0, 256, int(rng.integers(0, 40))).astype(np.uint8).tobytes()
            # Bytes that look like the tags we want, inside a value: must be skipped.
            blob += dcm.element(COLUMN_POSITION_IN_TOTAL_IMAGE_PIXEL_MATRIX, "SL", struct.pack("<i", 99999))
            inner = Encoder(explicit, True)
            nested = inner.sequence(0x00091003, [inner.element(OPTICAL_PATH_IDENTIFIER, "SH", b"NOT-ME")
                                                 + inner.element(COLUMN_POSITION_IN_TOTAL_IMAGE_PIXEL_MATRIX, "SL", struct.pack("<i", -5))])
            parts.append(enc.element(0x00090010, "LO", b"NOISE"))
            parts.append(enc.element(0x00091001, "OB", blob))
            parts.append(inner.sequence(0x00091002, [nested], undefined=True))
            parts.append(enc.sequence(0x00209111, [enc.element(0x00209157, "UL", struct.pack("<2I", f.column + 1, f.row + 1))]))
        if optical_path_ids is not None:
            parts.append(enc.sequence(OPTICAL_PATH_IDENTIFICATION_SEQUENCE,
                                      [enc.element(OPTICAL_PATH_IDENTIFIER, "SH", optical_path_ids[f.optical_path].encode())]))
        plane = b"".join([
            enc.element(0x0040072A, "DS", enc.ds(f.column * pixel_spacing)),  # X Offset in Slide Coordinate System
            enc.element(0x0040073A, "DS", enc.ds(f.row * pixel_spacing)),  # Y Offset in Slide Coordinate System
            enc.element(Z_OFFSET_IN_SLIDE_COORDINATE_SYSTEM, "DS", enc.ds(f.focal_plane * z_spacing)),
            enc.element(COLUMN_POSITION_IN_TOTAL_IMAGE_PIXEL_MATRIX, "SL", struct.pack("<i", f.column + 1)),
            enc.element(ROW_POSITION_IN_TOTAL_IMAGE_PIXEL_MATRIX, "SL", struct.pack("<i", f.row + 1)),
        ])
        parts.append(enc.sequence(PLANE_POSITION_SLIDE_SEQUENCE, [plane]))
        items.append(b"".join(parts))
    return enc.sequence(PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, items)


def pixel_data_bytes(frames: Sequence[bytes], encapsulated: bool, explicit: bool = True, bot: bool = True) -> bytes:
    enc = Encoder(explicit)
    if not encapsulated:
        return enc.element(PIXEL_DATA, "OB" if explicit else "OW", b"".join(frames))
    table = b""
    if bot:
        offsets, pos = [], 0
        for f in frames:
            offsets.append(pos)
            pos += 8 + len(f) + len(f) % 2
        table = struct.pack(f"<{len(offsets)}I", *offsets)
    body = dcm.item(table) + b"".join(dcm.item(f) for f in frames)  # fragments NUL padded to even length
    return dcm.pixel_header(PIXEL_DATA, "OB", None) + body + dcm.SEQUENCE_DELIMITER_BYTES


# -- instances -------------------------------------------------------------------
@dataclass(frozen=True)
class Tile:
    """One frame written: which instance, its frame index there, where it lies."""

    instance: int
    frame: int
    row: int
    column: int
    focal_plane: int = 0
    optical_path: int = 0


@dataclass
class SeriesUIDs:
    study: str = field(default_factory=generate_uid)
    series: str = field(default_factory=generate_uid)
    frame_of_reference: str = field(default_factory=generate_uid)


@dataclass
class WrittenLevel:
    paths: list[Path]
    image: np.ndarray  # focal plane 0, optical path 0
    width: int
    height: int
    tile_width: int
    tile_height: int
    codec: str
    organization: str
    tiles: list[Tile]
    focal_planes: int = 1
    optical_paths: int = 1
    absent: list[tuple[int, int, int, int]] = field(default_factory=list)  # (row, column, fp, op) not written

    def plane(self, focal_plane: int = 0, optical_path: int = 0) -> np.ndarray:
        return plane_image(self.image, focal_plane, optical_path)


def _base_dataset(uids: SeriesUIDs, image_type: str, width: int, height: int, tile_w: int, tile_h: int,
                  pixel_spacing: float, photometric: str, lossy: bool, instance_number: int) -> Dataset:
    ds = Dataset()
    ds.ImageType = ["ORIGINAL", "PRIMARY", image_type, "NONE"]
    ds.SOPClassUID = WSI_SOP_CLASS
    ds.SOPInstanceUID = generate_uid()
    ds.StudyDate = "20240101"
    ds.ContentDate = "20240101"
    ds.StudyTime = "120000"
    ds.ContentTime = "120000"
    ds.AcquisitionDateTime = "20240101120000"
    ds.AccessionNumber = "A1"
    ds.Modality = "SM"
    ds.Manufacturer = "dicomframes tests"
    ds.ReferringPhysicianName = ""
    ds.ManufacturerModelName = "wsigen"
    ds.DeviceSerialNumber = "1"
    ds.SoftwareVersions = "1"
    ds.PatientName = "Test^Slide"
    ds.PatientID = "P1"
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyInstanceUID = uids.study
    ds.SeriesInstanceUID = uids.series
    ds.StudyID = "S1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = instance_number
    ds.FrameOfReferenceUID = uids.frame_of_reference
    ds.PositionReferenceIndicator = "SLIDE_CORNER"
    ds.DimensionOrganizationUID = uids.frame_of_reference
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = photometric
    ds.PlanarConfiguration = 0
    ds.Rows = tile_h
    ds.Columns = tile_w
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.BurnedInAnnotation = "YES" if image_type == "LABEL" else "NO"
    ds.LossyImageCompression = "01" if lossy else "00"
    if lossy:
        ds.LossyImageCompressionMethod = "ISO_10918_1"
        ds.LossyImageCompressionRatio = 10
    ds.ContainerIdentifier = "C1"
    ds.IssuerOfTheContainerIdentifierSequence = []
    ds.ContainerTypeCodeSequence = [_code("433466003", "SCT", "Microscope slide")]
    specimen = Dataset()
    specimen.SpecimenIdentifier = "SP1"
    specimen.SpecimenUID = generate_uid()
    specimen.IssuerOfTheSpecimenIdentifierSequence = []
    specimen.SpecimenPreparationSequence = []
    ds.SpecimenDescriptionSequence = [specimen]
    ds.ImagedVolumeWidth = width * pixel_spacing
    ds.ImagedVolumeHeight = height * pixel_spacing
    ds.ImagedVolumeDepth = 0.001
    ds.TotalPixelMatrixColumns = width
    ds.TotalPixelMatrixRows = height
    origin = Dataset()
    origin.XOffsetInSlideCoordinateSystem = 0
    origin.YOffsetInSlideCoordinateSystem = 0
    ds.TotalPixelMatrixOriginSequence = [origin]
    ds.ImageOrientationSlide = [0, -1, 0, -1, 0, 0]
    ds.SpecimenLabelInImage = "YES" if image_type in ("LABEL", "OVERVIEW") else "NO"
    ds.FocusMethod = "AUTO"
    ds.ExtendedDepthOfField = "NO"
    ds.AcquisitionContextSequence = []
    ds.VolumetricProperties = "VOLUME"
    return ds


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    c = Dataset()
    c.CodeValue = value
    c.CodingSchemeDesignator = scheme
    c.CodeMeaning = meaning
    return c


def _optical_path_item(identifier: str) -> Dataset:
    op = Dataset()
    op.OpticalPathIdentifier = identifier
    op.OpticalPathDescription = f"path {identifier}"
    op.IlluminationTypeCodeSequence = [_code("111744", "DCM", "Brightfield illumination")]
    op.IlluminationColorCodeSequence = [_code("414298005", "SCT", "Full Spectrum")]
    return op


def write_level(
    folder: Path,
    name: str,
    image: np.ndarray,
    *,
    uids: SeriesUIDs | None = None,
    tile_size: tuple[int, int] = (128, 96),
    codec: str = "j2k",
    organization: str = "TILED_FULL",
    focal_planes: int = 1,
    optical_paths: int = 1,
    absent_fraction: float = 0.0,
    shuffle: bool = False,
    implicit: bool = False,
    undefined_lengths: bool = False,
    noise: bool = False,
    concatenation_parts: int = 1,
    image_type: str = "VOLUME",
    instance_number: int = 1,
    pixel_spacing: float = 0.0005,
    write_dimension_organization: bool = True,
    optical_path_ids: Sequence[str] | None = None,
    basic_offset_table: bool = True,
    pad: int = 0,
    tile_positions: Sequence[tuple[int, int]] | None = None,
    declared_organization: str | None = None,
    seed: int = 0,
) -> WrittenLevel:
    """Write one pyramid level (one instance, or several for a concatenation).

    Parameters
    ----------
    image : ndarray (H, W, 3) uint8
        The level's image (focal plane 0, optical path 0; the others are
        derived from it with `plane_image`).
    tile_size : (width, height)
    codec : "jpeg", "j2k" (lossless JPEG 2000) or "native"
    organization : "TILED_FULL" or "TILED_SPARSE"
    absent_fraction, shuffle : sparse levels only: leave out that share of
        tiles, and store the others in random order.
    implicit : write the data set as implicit VR little endian (native only).
    undefined_lengths : write the Per-Frame Functional Groups Sequence and
        its items with undefined lengths.
    noise : add elements to skip in each per-frame item.
    concatenation_parts : split the frames over this many instances of one
        concatenation.
    write_dimension_organization : False leaves Dimension Organization Type out.
    declared_organization : write this Dimension Organization Type instead of `organization`.
    tile_positions : sparse only: (row, column) pixel positions of the tiles to
        write (focal plane and optical path 0), instead of the tile grid.
    optical_path_ids : identifiers of the optical paths (default "0", "1", ...).
    pad : the value of pixels of edge tiles that lie past the image.
    """
    if implicit and codec != "native":
        raise ValueError("encapsulated pixel data needs explicit VR")
    folder = Path(folder)
    uids = uids or SeriesUIDs()
    rng = np.random.default_rng(seed)
    tile_w, tile_h = tile_size
    height, width = image.shape[:2]
    across, down = -(-width // tile_w), -(-height // tile_h)
    ids = list(optical_path_ids or [str(k) for k in range(optical_paths)])

    # Frames in the standard's TILED_FULL order: columns, rows, focal planes, optical paths.
    positions = [
        (r * tile_h, c * tile_w, fp, op)
        for op in range(optical_paths) for fp in range(focal_planes)
        for r in range(down) for c in range(across)
    ]
    absent: list[tuple[int, int, int, int]] = []
    if tile_positions is not None:
        positions = [(r, c, 0, 0) for r, c in tile_positions]
    elif organization == "TILED_SPARSE":
        if absent_fraction:
            drop = set(rng.choice(len(positions), int(len(positions) * absent_fraction), replace=False).tolist())
            absent = [p for k, p in enumerate(positions) if k in drop]
            positions = [p for k, p in enumerate(positions) if k not in drop]
        if shuffle:
            positions = [positions[k] for k in rng.permutation(len(positions))]
    planes = {(fp, op): plane_image(image, fp, op) for fp in range(focal_planes) for op in range(optical_paths)}

    parts = np.array_split(np.arange(len(positions)), concatenation_parts)
    concatenation_uid = generate_uid() if concatenation_parts > 1 else None
    concatenation_source = generate_uid()
    photometric = {"jpeg": "YBR_FULL_422", "j2k": "RGB", "native": "RGB"}[codec]
    syntax = IMPLICIT_LE if implicit else CODECS[codec]
    tiles: list[Tile] = []
    paths: list[Path] = []
    for part_no, part in enumerate(parts):
        ds = _base_dataset(uids, image_type, width, height, tile_w, tile_h, pixel_spacing, photometric,
                           codec == "jpeg", instance_number)
        ds.NumberOfFrames = len(part)
        ds.TotalPixelMatrixFocalPlanes = focal_planes
        ds.NumberOfOpticalPaths = optical_paths
        ds.NumberOfFocalPlanes = 1
        if write_dimension_organization:
            ds.DimensionOrganizationType = declared_organization or organization
        if concatenation_uid:
            ds.ConcatenationUID = concatenation_uid
            ds.SOPInstanceUIDOfConcatenationSource = concatenation_source
            ds.InConcatenationNumber = part_no + 1
            ds.InConcatenationTotalNumber = concatenation_parts
            ds.ConcatenationFrameOffsetNumber = int(part[0]) if len(part) else 0
        shared = Dataset()
        measures = Dataset()
        measures.PixelSpacing = [pixel_spacing, pixel_spacing]
        measures.SliceThickness = 0.001
        shared.PixelMeasuresSequence = [measures]
        frame_type = Dataset()
        frame_type.FrameType = ["ORIGINAL", "PRIMARY", image_type, "NONE"]
        shared.WholeSlideMicroscopyImageFrameTypeSequence = [frame_type]
        if optical_paths == 1:
            opid = Dataset()
            opid.OpticalPathIdentifier = ids[0]
            shared.OpticalPathIdentificationSequence = [opid]
        ds.SharedFunctionalGroupsSequence = [shared]
        ds.OpticalPathSequence = [_optical_path_item(i) for i in ids]

        frames = []
        part_tiles = []
        for k, idx in enumerate(part):
            r, c, fp, op = positions[idx]
            tile = tile_of(planes[(fp, op)], r, c, tile_h, tile_w, pad)
            frames.append(encode(tile, codec))
            part_tiles.append(Tile(part_no, k, r, c, fp, op))
        tiles += part_tiles

        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = WSI_SOP_CLASS
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = syntax
        head = io.BytesIO()
        pydicom.dcmwrite(head, ds, enforce_file_format=True)
        tail = b""
        if organization == "TILED_SPARSE":
            tail += pffg_bytes(
                part_tiles, explicit=not implicit, undefined=undefined_lengths, noise=noise,
                optical_path_ids=ids if optical_paths > 1 else None, pixel_spacing=pixel_spacing, seed=seed,
            )
        tail += pixel_data_bytes(frames, codec != "native", explicit=not implicit, bot=basic_offset_table)
        suffix = f"-{part_no}" if concatenation_parts > 1 else ""
        path = folder / f"{name}{suffix}.dcm"
        path.write_bytes(head.getvalue() + tail)
        paths.append(path)
    return WrittenLevel(
        paths=paths, image=image, width=width, height=height, tile_width=tile_w, tile_height=tile_h,
        codec=codec, organization=organization, tiles=tiles, focal_planes=focal_planes,
        optical_paths=optical_paths, absent=absent,
    )


@dataclass
class Pyramid:
    image: np.ndarray
    levels: list[WrittenLevel]
    uids: SeriesUIDs
    label: Path | None = None
    overview: Path | None = None
    thumbnail: Path | None = None

    @property
    def paths(self) -> list[Path]:
        out = [p for level in self.levels for p in level.paths]
        return out + [p for p in (self.label, self.overview, self.thumbnail) if p is not None]


def write_associated(folder: Path, name: str, image: np.ndarray, image_type: str, uids: SeriesUIDs, instance_number: int) -> Path:
    """A label, overview or thumbnail image: one tile holding the whole image, native RGB."""
    h, w = image.shape[:2]
    level = write_level(folder, name, image, uids=uids, tile_size=(w, h), codec="native",
                        image_type=image_type, instance_number=instance_number)
    return level.paths[0]


def write_pyramid(
    folder: Path,
    *,
    width: int = 1000,
    height: int = 700,
    levels: int = 3,
    seed: int = 0,
    label: bool = True,
    overview: bool = True,
    thumbnail: bool = False,
    organizations: Sequence[str] | str = "TILED_FULL",
    **level_options,
) -> Pyramid:
    """A whole pyramid: `levels` levels by 2x downsampling, plus associated images."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    uids = SeriesUIDs()
    image = smooth_image(width, height, seed)
    if isinstance(organizations, str):
        organizations = [organizations] * levels
    written = []
    current = image
    for k in range(levels):
        spacing = 0.0005 * width / current.shape[1]
        written.append(write_level(folder, f"level{k}", current, uids=uids, organization=organizations[k],
                                   instance_number=k + 1, seed=seed + k, pixel_spacing=spacing, **level_options))
        current = downsample2(current)
    pyr = Pyramid(image=image, levels=written, uids=uids)
    rng = np.random.default_rng(seed + 100)
    if label:
        pyr.label = write_associated(folder, "label", rng.integers(0, 256, (60, 90, 3), dtype=np.uint8), "LABEL", uids, 90)
    if overview:
        pyr.overview = write_associated(folder, "overview", smooth_image(200, 80, seed + 1), "OVERVIEW", uids, 91)
    if thumbnail:
        pyr.thumbnail = write_associated(folder, "thumbnail", downsample2(downsample2(image)), "THUMBNAIL", uids, 92)
    return pyr
