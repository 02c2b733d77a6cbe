"""Write sample multi-frame DICOM files: for the quick start, examples, benchmarks and tests.

>>> from dicomframes.samples import write_sample
>>> write_sample("cine.dcm", frames=20, rows=128, columns=128, syntax="j2k")  # doctest: +SKIP
'cine.dcm'

or, from a shell::

    python -m dicomframes.samples cine.dcm --frames 20 --syntax j2k

The writer is deliberately small and byte-level (no pydicom): a Part 10 file
whose data set is Explicit VR Little Endian, holding a Multi-frame Secondary
Capture image. Frames are made, encoded and written one at a time, so memory
stays flat however many frames are asked for. Encapsulated frames are written
behind a zero-filled Basic (or Extended) Offset Table, which is patched in place
once every frame's offset is known.

HTJ2K is not offered: pylibjpeg-openjpeg (OpenJPEG) decodes HTJ2K but cannot
encode it.
"""

from __future__ import annotations

import argparse
import os
import uuid
from typing import BinaryIO, Callable

import numpy as np

from dicomframes._dicom.encode import (
    IMPLEMENTATION_UID,
    SEQUENCE_DELIMITER_BYTES,
    element,
    file_meta,
    item_header,
    pixel_header,
    text,
    us,
)
from dicomframes._dicom.tags import (
    BITS_ALLOCATED,
    BITS_STORED,
    COLUMNS,
    EXTENDED_OFFSET_TABLE,
    EXTENDED_OFFSET_TABLE_LENGTHS,
    FILE_META_INFORMATION_VERSION,
    HIGH_BIT,
    IMPLEMENTATION_CLASS_UID,
    MAX_DEFINED_LENGTH,
    MEDIA_STORAGE_SOP_CLASS_UID,
    MEDIA_STORAGE_SOP_INSTANCE_UID,
    MODALITY,
    NUMBER_OF_FRAMES,
    PHOTOMETRIC_INTERPRETATION,
    PIXEL_DATA,
    PIXEL_REPRESENTATION,
    PLANAR_CONFIGURATION,
    ROWS,
    SAMPLES_PER_PIXEL,
    SERIES_INSTANCE_UID,
    SOP_CLASS_UID,
    SOP_INSTANCE_UID,
    STUDY_INSTANCE_UID,
    TRANSFER_SYNTAX_UID,
)

#: syntax name -> Transfer Syntax UID
TRANSFER_SYNTAXES: dict[str, str] = {
    "native": "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "rle": "1.2.840.10008.1.2.5",  # RLE Lossless
    "jpegls": "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "j2k": "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless Only
}
OFFSET_TABLES = ("bot", "eot", "none")

_SC_GRAYSCALE_BYTE = "1.2.840.10008.5.1.4.1.1.7.2"  # Multi-frame Grayscale Byte SC
_SC_GRAYSCALE_WORD = "1.2.840.10008.5.1.4.1.1.7.3"  # Multi-frame Grayscale Word SC
_SC_TRUE_COLOR = "1.2.840.10008.5.1.4.1.1.7.4"  # Multi-frame True Color SC


def new_uid() -> str:
    """A new, globally unique UID in the '2.25' (UUID-derived) arc."""
    return "2.25." + str(uuid.uuid4().int)


# -- frames ------------------------------------------------------------------------------


def sample_frame(
    index: int,
    rows: int = 256,
    columns: int = 256,
    samples_per_pixel: int = 1,
    bits_allocated: int = 8,
    seed: int = 0,
) -> np.ndarray:
    """Frame `index` of a sample file, as `write_sample` writes it.

    Smooth gradients and waves (different for each frame and sample) with a
    few grey levels of noise, over a flat black background (about a third of
    the frame), so that lossless codecs compress it about as they would a real
    image (8-bit, 512x512: RLE ~1.3x, JPEG-LS ~4x, JPEG 2000 ~3.7x). The same
    arguments always give the same frame.

    Returns
    -------
    numpy.ndarray
        Shape (rows, columns) or (rows, columns, samples_per_pixel), dtype
        uint8 or uint16 (native byte order).
    """
    rng = np.random.default_rng([seed, index])
    top = (1 << bits_allocated) - 1
    dtype = np.uint8 if bits_allocated == 8 else np.uint16
    y = np.linspace(0.0, 1.0, rows, dtype=np.float32)
    x = np.linspace(0.0, 1.0, columns, dtype=np.float32)
    planes = []
    for _ in range(samples_per_pixel):
        fy, fx = rng.uniform(0.5, 3.0, 2)
        py, px = rng.uniform(0.0, 2 * np.pi, 2)
        # A separable smooth field in [0, 1], cheap to make even for large frames.
        along_y = 0.25 + 0.2 * np.sin(2 * np.pi * fy * y + py) + 0.05 * y
        along_x = 0.25 + 0.2 * np.cos(2 * np.pi * fx * x + px) + 0.05 * x
        field = along_y[:, None] + along_x[None, :]
        # Noise of a few grey levels over the "object"; the dark background stays flat.
        noise = rng.integers(0, 4, (rows, columns), dtype=dtype)
        plane = (field * (top - 3 * ((top + 1) >> 8))).astype(dtype)
        plane += noise * dtype((top + 1) >> 8)
        plane[field < 0.45] = 0
        planes.append(plane)
    if samples_per_pixel == 1:
        return planes[0]
    return np.stack(planes, axis=-1)


def _encoder(syntax: str, rows: int, columns: int, samples_per_pixel: int, bits_allocated: int) -> Callable[[np.ndarray], bytes]:
    """A function from a frame array to its codestream."""
    if syntax == "rle":
        from rle.utils import encode_array

        def encode(arr: np.ndarray) -> bytes:
            return next(encode_array(
                arr.astype(arr.dtype.newbyteorder("<")), rows=rows, columns=columns,
                samples_per_pixel=samples_per_pixel, bits_allocated=bits_allocated, number_of_frames=1,
            ))
    elif syntax == "jpegls":
        import jpeg_ls

        def encode(arr: np.ndarray) -> bytes:
            return bytes(jpeg_ls.encode_array(arr, interleave_mode=2 if samples_per_pixel > 1 else None))
    elif syntax == "j2k":
        from openjpeg.utils import encode_array

        def encode(arr: np.ndarray) -> bytes:
            # No colour transform, so the Photometric Interpretation stays RGB.
            return bytes(encode_array(arr, bits_stored=bits_allocated, use_mct=False))
    else:  # pragma: no cover - checked by write_sample
        raise ValueError(syntax)
    return encode


# -- data elements (Explicit VR Little Endian, by dicomframes._dicom.encode) ----------------


def _file_meta(sop_class: str, sop_instance: str, transfer_syntax: str) -> bytes:
    return file_meta([
        element(FILE_META_INFORMATION_VERSION, "OB", b"\x00\x01"),
        text(MEDIA_STORAGE_SOP_CLASS_UID, "UI", sop_class),
        text(MEDIA_STORAGE_SOP_INSTANCE_UID, "UI", sop_instance),
        text(TRANSFER_SYNTAX_UID, "UI", transfer_syntax),
        text(IMPLEMENTATION_CLASS_UID, "UI", IMPLEMENTATION_UID),
    ])


def _image_attributes(sop_class: str, sop_instance: str, frames: int, rows: int, columns: int,
                      samples_per_pixel: int, bits_allocated: int) -> bytes:
    parts = [
        text(SOP_CLASS_UID, "UI", sop_class),
        text(SOP_INSTANCE_UID, "UI", sop_instance),
        text(MODALITY, "CS", "OT"),
        text(STUDY_INSTANCE_UID, "UI", new_uid()),
        text(SERIES_INSTANCE_UID, "UI", new_uid()),
        us(SAMPLES_PER_PIXEL, samples_per_pixel),
        text(PHOTOMETRIC_INTERPRETATION, "CS", "MONOCHROME2" if samples_per_pixel == 1 else "RGB"),
    ]
    if samples_per_pixel > 1:
        parts.append(us(PLANAR_CONFIGURATION, 0))  # colour-by-pixel
    parts += [
        text(NUMBER_OF_FRAMES, "IS", str(frames)),
        us(ROWS, rows),
        us(COLUMNS, columns),
        us(BITS_ALLOCATED, bits_allocated),
        us(BITS_STORED, bits_allocated),
        us(HIGH_BIT, bits_allocated - 1),
        us(PIXEL_REPRESENTATION, 0),  # unsigned
    ]
    return b"".join(parts)


def _fragments(codestream: bytes, count: int) -> list[bytes]:
    """Split a codestream into `count` non-empty fragments of even length (zero padded)."""
    if len(codestream) % 2:
        codestream += b"\x00"
    pairs = len(codestream) // 2
    if count > pairs:
        raise ValueError(f"a {len(codestream)}-byte codestream cannot fill {count} even-length fragments")
    base, extra = divmod(pairs, count)
    out, pos = [], 0
    for k in range(count):
        size = 2 * (base + (k < extra))
        out.append(codestream[pos : pos + size])
        pos += size
    return out


def _write_encapsulated(f: BinaryIO, frames: int, make: Callable[[int], np.ndarray],
                        encode: Callable[[np.ndarray], bytes], offset_table: str, fragments_per_frame: int) -> None:
    offsets = np.zeros(frames, dtype=np.uint64)  # of each frame's first item, from the first item after the BOT
    lengths = np.zeros(frames, dtype=np.uint64)  # codestream bytes (before padding)
    eot_at = None
    if offset_table == "eot":
        eot_at = f.tell()
        f.write(element(EXTENDED_OFFSET_TABLE, "OV", bytes(8 * frames)))
        f.write(element(EXTENDED_OFFSET_TABLE_LENGTHS, "OV", bytes(8 * frames)))
    f.write(pixel_header(PIXEL_DATA, "OB", None))
    bot_length = 4 * frames if offset_table == "bot" else 0
    f.write(item_header(bot_length))
    bot_at = f.tell()
    f.write(bytes(bot_length))
    first_item = f.tell()
    for i in range(frames):
        try:
            codestream = encode(make(i))
        except RuntimeError as exc:  # the encoders' way to refuse, e.g. very small frames
            raise ValueError(f"the encoder could not encode frame {i}: {exc}") from exc
        offsets[i] = f.tell() - first_item
        lengths[i] = len(codestream)
        for fragment in _fragments(codestream, fragments_per_frame):
            f.write(item_header(len(fragment)))
            f.write(fragment)
    f.write(SEQUENCE_DELIMITER_BYTES)
    end = f.tell()
    if offset_table == "bot":
        # 32-bit offsets: past 4 GiB they wrap around, as in many real files
        # (dicomframes unwraps them; other readers may not).
        f.seek(bot_at)
        f.write((offsets % (1 << 32)).astype("<u4").tobytes())
    elif eot_at is not None:
        f.seek(eot_at + 12)
        f.write(offsets.astype("<u8").tobytes())
        f.seek(eot_at + 12 + 8 * frames + 12)
        f.write(lengths.astype("<u8").tobytes())
    f.seek(end)


def _write_native(f: BinaryIO, frames: int, make: Callable[[int], np.ndarray], frame_bytes: int, bits_allocated: int) -> None:
    total = frames * frame_bytes
    padded = total + total % 2  # the length is known up front: frames are written as they are made
    f.write(pixel_header(PIXEL_DATA, "OB" if bits_allocated == 8 else "OW", padded))
    dtype = np.dtype("u1") if bits_allocated == 8 else np.dtype("<u2")
    for i in range(frames):
        f.write(np.ascontiguousarray(make(i), dtype=dtype).data)
    if padded != total:
        f.write(b"\x00")


def write_sample(
    path: str | os.PathLike,
    *,
    frames: int = 100,
    rows: int = 256,
    columns: int = 256,
    samples_per_pixel: int = 1,
    bits_allocated: int = 8,
    syntax: str = "rle",
    offset_table: str = "bot",
    fragments_per_frame: int = 1,
    seed: int = 0,
) -> str:
    """Write a multi-frame Secondary Capture DICOM file of synthetic frames.

    Parameters
    ----------
    path : str or os.PathLike
        Where to write (overwritten if it exists).
    frames, rows, columns : int
        Number of Frames and the size of each.
    samples_per_pixel : {1, 3}
        1 writes MONOCHROME2 (Multi-frame Grayscale Byte or Word SC), 3 writes
        RGB with Planar Configuration 0 (Multi-frame True Color SC, which
        strictly allows 8 bits only; 16-bit RGB is for testing readers).
    bits_allocated : {8, 16}
        Bits Allocated; Bits Stored equals it, pixels are unsigned.
    syntax : {"rle", "native", "jpegls", "j2k"}
        RLE Lossless, Explicit VR Little Endian, JPEG-LS Lossless or JPEG 2000
        Lossless (no colour transform; frames of at least 32x32). HTJ2K is not
        available: no installed encoder writes it.
    offset_table : {"bot", "eot", "none"}
        For encapsulated syntaxes: a filled Basic Offset Table, an empty BOT
        plus the Extended Offset Table (7FE0,0001) and its lengths (7FE0,0002),
        or an empty BOT alone (readers must walk the fragments). Ignored for
        ``"native"``. BOT offsets past 4 GiB wrap around in 32 bits.
    fragments_per_frame : int
        Split each frame's codestream into this many items (even lengths, zero
        padded). Must be 1 for RLE and for the Extended Offset Table, which
        DICOM allows only with one fragment per frame.
    seed : int
        Seeds the frames' texture; frame ``i`` equals
        ``sample_frame(i, rows, columns, samples_per_pixel, bits_allocated, seed)``.

    Returns
    -------
    str
        `path`, as a string.

    Raises
    ------
    ValueError
        For an unknown syntax or offset table, a combination DICOM forbids,
        native pixel data too large for a defined length (4 GiB), or frames an
        encoder refuses (JPEG 2000 needs 32x32, JPEG-LS more than 4x4). No
        partial file is left behind.
    """
    path = os.fspath(path)
    if syntax not in TRANSFER_SYNTAXES:
        raise ValueError(f"syntax must be one of {sorted(TRANSFER_SYNTAXES)}, not {syntax!r} (HTJ2K has no installed encoder)")
    if offset_table not in OFFSET_TABLES:
        raise ValueError(f"offset_table must be one of {OFFSET_TABLES}, not {offset_table!r}")
    if samples_per_pixel not in (1, 3) or bits_allocated not in (8, 16):
        raise ValueError("samples_per_pixel must be 1 or 3 and bits_allocated 8 or 16")
    if frames < 1 or not 0 < rows < 65536 or not 0 < columns < 65536:
        raise ValueError(f"need at least one frame of at least 1x1 pixels, not {frames} of {rows}x{columns}")
    if syntax == "j2k" and min(rows, columns) < 32:
        raise ValueError(f"the JPEG 2000 encoder (6 resolution levels) needs frames of at least 32x32, not {rows}x{columns}")
    if fragments_per_frame < 1:
        raise ValueError("fragments_per_frame must be at least 1")
    if fragments_per_frame > 1 and syntax in ("rle", "native"):
        raise ValueError(f"{syntax} frames cannot be split into fragments")
    if fragments_per_frame > 1 and offset_table == "eot":
        raise ValueError("the Extended Offset Table requires exactly one fragment per frame")
    frame_bytes = rows * columns * samples_per_pixel * bits_allocated // 8
    if syntax == "native" and frames * frame_bytes > MAX_DEFINED_LENGTH:
        raise ValueError(f"{frames * frame_bytes} bytes of native Pixel Data exceed the 4 GiB limit of a defined length")
    if syntax != "native" and 8 * frames > MAX_DEFINED_LENGTH:
        raise ValueError(f"{frames} frames are too many for an offset table")

    if samples_per_pixel == 3:
        sop_class = _SC_TRUE_COLOR
    else:
        sop_class = _SC_GRAYSCALE_BYTE if bits_allocated == 8 else _SC_GRAYSCALE_WORD
    sop_instance = new_uid()
    uid = TRANSFER_SYNTAXES[syntax]

    def make(i: int) -> np.ndarray:
        return sample_frame(i, rows, columns, samples_per_pixel, bits_allocated, seed)

    encode = None if syntax == "native" else _encoder(syntax, rows, columns, samples_per_pixel, bits_allocated)
    try:
        with open(path, "wb") as f:
            f.write(_file_meta(sop_class, sop_instance, uid))
            f.write(_image_attributes(sop_class, sop_instance, frames, rows, columns, samples_per_pixel, bits_allocated))
            if encode is None:
                _write_native(f, frames, make, frame_bytes, bits_allocated)
            else:
                _write_encapsulated(f, frames, make, encode, offset_table, fragments_per_frame)
    except BaseException:
        # Never leave a partial file that looks like a sample.
        if os.path.exists(path):
            os.unlink(path)
        raise
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dicomframes.samples", description="Write a sample multi-frame DICOM file.")
    parser.add_argument("out", help="the file to write")
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--columns", type=int, default=256)
    parser.add_argument("--samples", type=int, default=1, choices=(1, 3), help="samples per pixel")
    parser.add_argument("--bits", type=int, default=8, choices=(8, 16), help="bits allocated")
    parser.add_argument("--syntax", default="rle", choices=sorted(TRANSFER_SYNTAXES))
    parser.add_argument("--offset-table", default="bot", choices=OFFSET_TABLES)
    parser.add_argument("--fragments", type=int, default=1, help="fragments per frame")
    parser.add_argument("--seed", type=int, default=0)
    a = parser.parse_args(argv)
    out = write_sample(
        a.out, frames=a.frames, rows=a.rows, columns=a.columns, samples_per_pixel=a.samples,
        bits_allocated=a.bits, syntax=a.syntax, offset_table=a.offset_table,
        fragments_per_frame=a.fragments, seed=a.seed,
    )
    print(out)


if __name__ == "__main__":
    main()
