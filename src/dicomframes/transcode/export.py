"""Frames, regions and thumbnails as image files: PNG, TIFF or NumPy ``.npy``.

PNG is written with Pillow and TIFF with tifffile (the ``[export]`` extra:
``pip install "dicomframes[export]"``); ``.npy`` needs nothing beyond NumPy.
Pixels are written as the reader gives them (pydicom's arrays), so a file read
back equals ``reader.frame(i)`` (or ``Slide.read_region``) pixel for pixel.

- PNG holds unsigned 8-bit grey and RGB and unsigned 16-bit grey; other arrays
  (signed, 32-bit, float, 16-bit RGB) are refused with a `TranscodeError` that
  points to TIFF or ``.npy``.
- TIFF and ``.npy`` hold any dtype.

Every output is written to a temporary file beside it and renamed when
complete; existing outputs are refused, before any pixel is read, unless
``overwrite=True``.

Frame lists (`parse_frame_list`) are comma-separated indices and Python-style
``start:stop[:step]`` ranges: ``0:10,42``, ``::2``, ``-1``. Negative numbers count
from the end; a range is clipped to the frames there are, as a slice is; a single
index must exist.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np

from dicomframes.errors import (
    DestinationError,
    DestinationExistsError,
    MissingDependencyError,
    TranscodeError,
)
from dicomframes.reader import Reader
from dicomframes.reader import open as open_reader

if TYPE_CHECKING:
    from dicomframes.wsi.slide import Slide

#: the formats, and the file name suffixes that select them
FORMATS = ("png", "tiff", "npy")
SUFFIXES = {".png": "png", ".tif": "tiff", ".tiff": "tiff", ".npy": "npy"}
#: the suffix each format's files get where a name is made (a folder as destination)
EXTENSIONS = {"png": ".png", "tiff": ".tiff", "npy": ".npy"}
#: the names of files written into a folder
FRAME_NAME = "frame{frame:05d}"
REGION_NAME = "region"
THUMBNAIL_NAME = "thumbnail"

_INSTALL = 'pip install "dicomframes[export]"'


# -- frame lists ---------------------------------------------------------------------------------------


def parse_frame_list(spec: str) -> list[int | slice]:
    """The items of a frame list (``"0:10,42"``): ints and slices, in order.

    Raises `ValueError` listing every item that is not an index or a
    ``start:stop[:step]`` range.
    """
    items: list[int | slice] = []
    problems: list[str] = []
    parts = str(spec).split(",")
    for raw in parts:
        part = raw.strip()
        if not part:
            problems.append("an empty item" if len(parts) > 1 else "an empty list")
            continue
        if ":" not in part:
            try:
                items.append(int(part))
            except ValueError:
                problems.append(f"{part!r} is not a frame index or a start:stop[:step] range")
            continue
        fields = part.split(":")
        if len(fields) > 3:
            problems.append(f"{part!r} has more than start:stop:step")
            continue
        numbers: list[int | None] = []
        for field in fields:
            field = field.strip()
            if not field:
                numbers.append(None)
                continue
            try:
                numbers.append(int(field))
            except ValueError:
                numbers.append(None)
                problems.append(f"{part!r}: {field!r} is not an integer")
                break
        else:
            step = numbers[2] if len(numbers) == 3 else None
            if step == 0:
                problems.append(f"{part!r}: the step cannot be 0")
                continue
            items.append(slice(numbers[0], numbers[1], step))
    if problems:
        raise ValueError(f"bad frame list {spec!r}: " + "; ".join(problems))
    return items


def select_frames(frames: str | Iterable[int | slice] | None, count: int) -> list[int]:
    """The frame indices (0 <= i < count, each once, in the order given) that `frames` selects.

    `frames`: a frame list (see `parse_frame_list`), an iterable of ints and
    slices, or None for all. Raises `ValueError` listing the indices out of range,
    or when nothing is selected.
    """
    if frames is None:
        return list(range(count))
    items = parse_frame_list(frames) if isinstance(frames, str) else list(frames)
    chosen: list[int] = []
    seen: set[int] = set()
    out_of_range: list[str] = []
    for item in items:
        if isinstance(item, slice):
            indices: Iterable[int] = range(count)[item]
        else:
            i = int(item)
            if not -count <= i < count:
                out_of_range.append(str(i))
                continue
            indices = (i % count,)
        for i in indices:
            if i not in seen:
                seen.add(i)
                chosen.append(i)
    if out_of_range:
        raise ValueError(
            f"frame{'s' if len(out_of_range) > 1 else ''} {', '.join(out_of_range)} out of range: the file has {count:,} frame{'s' if count != 1 else ''} "
            f"(0 to {count - 1})" if count else "the file has no frames"
        )
    if not chosen:
        raise ValueError(f"the frame list selects no frames (the file has {count:,})")
    return chosen


# -- formats -------------------------------------------------------------------------------------------


def format_of(path: str, format: str | None = None) -> str:
    """The format `format` names, else the one `path`'s suffix names; `ValueError` when neither does."""
    if format is not None:
        if format not in FORMATS:
            raise ValueError(f"unknown format {format!r}: choose from {', '.join(FORMATS)}")
        return format
    suffix = os.path.splitext(str(path))[1].lower()
    if suffix not in SUFFIXES:
        raise ValueError(
            f"cannot tell the format from {os.path.basename(str(path))!r}: name it .png, .tif(f) or .npy, "
            f"or give the format ({', '.join(FORMATS)})"
        )
    return SUFFIXES[suffix]


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise MissingDependencyError("writing PNG needs Pillow", hint=_INSTALL) from None
    return Image


def _tifffile():
    try:
        import tifffile
    except ImportError:
        raise MissingDependencyError("writing TIFF needs tifffile", hint=_INSTALL) from None
    return tifffile


def check_writable(dtype: Any, shape: Sequence[int], format: str, path: str | None = None) -> None:
    """Raise `TranscodeError` where `format` cannot hold images of `dtype` and `shape` exactly (PNG's limits)."""
    if format != "png":
        return
    dtype = np.dtype(dtype)
    grey = len(shape) == 2 or (len(shape) == 3 and shape[2] == 1)
    rgb = len(shape) == 3 and shape[2] == 3
    if (dtype == np.uint8 and (grey or rgb)) or (dtype == np.uint16 and grey):
        return
    text = "x".join(map(str, shape))
    raise TranscodeError(
        f"PNG holds unsigned 8-bit grey or RGB and unsigned 16-bit grey images, not {dtype} of shape {text}",
        path=path, hint="write TIFF or NumPy files instead: --format tiff or --format npy (format='tiff' or 'npy')",
    )


def write_image(image: np.ndarray, path: str, format: str) -> None:
    """Write `image` to the local file `path` in `format` (no checks of the destination)."""
    image = np.ascontiguousarray(image)
    check_writable(image.dtype, image.shape, format, path)
    if format == "png":
        Image = _pillow()
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        with open(path, "wb") as f:
            Image.fromarray(image).save(f, format="PNG")
    elif format == "tiff":
        tifffile = _tifffile()
        rgb = image.ndim == 3 and image.shape[2] == 3
        with open(path, "wb") as f:
            tifffile.imwrite(f, image, photometric="rgb" if rgb else "minisblack")
    elif format == "npy":
        with open(path, "wb") as f:
            np.save(f, image, allow_pickle=False)
    else:
        raise ValueError(f"unknown format {format!r}: choose from {', '.join(FORMATS)}")


def _commit(image: np.ndarray, path: str, format: str) -> None:
    """`write_image` to a temporary file beside `path`, renamed to `path` when complete."""
    directory, base = os.path.split(os.path.abspath(path))
    tmp = os.path.join(directory, f".{base}.{uuid.uuid4().hex[:12]}.part")
    try:
        write_image(image, tmp, format)
        os.replace(tmp, path)
    except OSError as exc:
        raise DestinationError(f"cannot write: {exc.strerror or exc}", path=path) from exc
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def _check_destinations(paths: Sequence[str], overwrite: bool) -> None:
    """Every destination writable: its folder exists, it is not a directory, and it is new (or `overwrite`)."""
    existing = []
    for path in paths:
        if os.path.isdir(path):
            raise DestinationError("is a directory", path=path, hint="give a file name")
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise DestinationError(f"the folder {folder} does not exist", path=path, hint="create it first")
        if os.path.lexists(path):
            existing.append(path)
    if existing and not overwrite:
        more = f" and {len(existing) - 1:,} more of the outputs" if len(existing) > 1 else ""
        raise DestinationExistsError(
            f"the destination exists{more}", path=existing[0], hint="pass --force (overwrite=True) to replace it",
        )


def _single_destination(out: str | os.PathLike, format: str | None, name: str) -> tuple[str, str]:
    """The file and format for one image: `out` itself, or `name` + the format's suffix in the folder `out`."""
    out = os.fspath(out)
    if os.path.isdir(out):
        fmt = format_of("", format or "png")
        return os.path.join(out, name + EXTENSIONS[fmt]), fmt
    return out, format_of(out, format)


def frame_destinations(out: str | os.PathLike, indices: Sequence[int], format: str | None = None) -> tuple[list[str], str]:
    """The file of each frame in `indices`, and the format.

    `out` is a folder (existing, or a name without a suffix; files
    ``frame00042.png``...), a pattern with ``{frame}`` (``out/f{frame:05d}.png``), or,
    for a single frame, a file name. Raises `ValueError` on a pattern that does not
    format or names two frames alike, and on one file name for several frames.
    """
    out = os.fspath(out)
    if "{" in out:
        try:
            paths = [out.format(frame=i) for i in indices]
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"bad file name pattern {out!r}: use {{frame}} or {{frame:05d}} ({exc})") from None
        fmt = format_of(out.format(frame=0), format)
        if len(set(paths)) != len(paths):
            raise ValueError(f"the file name pattern {out!r} gives several frames the same name")
        return paths, fmt
    suffix = os.path.splitext(out)[1].lower()
    if os.path.isdir(out) or not suffix or out.endswith(os.sep) or out.endswith("/"):
        fmt = format_of("", format or "png")
        return [os.path.join(out, FRAME_NAME.format(frame=i) + EXTENSIONS[fmt]) for i in indices], fmt
    if len(indices) != 1:
        raise ValueError(
            f"{out!r} names one file but {len(indices):,} frames are selected: give a folder or a pattern "
            "with {frame} (e.g. out/f{frame:05d}.png)"
        )
    return [out], format_of(out, format)


# -- exporting -----------------------------------------------------------------------------------------


def export_frames(
    src: Any,
    out: str | os.PathLike,
    *,
    frames: str | Iterable[int | slice] | None = None,
    format: str | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    **open_options: Any,
) -> list[str]:
    """Write frames of `src` as image files, one per frame; return their paths.

    Parameters
    ----------
    src : anything `dicomframes.open` takes, or a `Reader` (left open)
    out : str
        A local folder (created if missing and its parent exists), a pattern with
        ``{frame}`` (``out/f{frame:05d}.png``), or a file name for a single frame.
    frames : str, iterable or None
        A frame list (``"0:10,42"``; see `parse_frame_list`), ints and slices, or
        None for every frame.
    format : {"png", "tiff", "npy"} or None
        Default: from the suffix of `out`; PNG for a folder.
    overwrite : bool
        Replace existing files (else `DestinationExistsError` before any is written).
    progress : callable or None
        Called as ``progress(done, total)`` after each file.
    **open_options
        For `dicomframes.open` (``decoder``, ``workers``, storage options).

    Frame lists that select nothing or indices out of range raise `ValueError`.
    """
    reader = src if isinstance(src, Reader) else open_reader(src, **open_options)
    with reader if reader is not src else contextlib.nullcontext(reader):  # a reader given stays open
        indices = select_frames(frames, len(reader))
        paths, fmt = frame_destinations(out, indices, format)
        check_writable(reader.info.dtype, reader.info.shape, fmt, reader.path)
        if fmt == "png":
            _pillow()
        elif fmt == "tiff":
            _tifffile()
        folder = os.path.dirname(os.path.abspath(paths[0]))
        if "{" not in os.fspath(out) and not os.path.isdir(folder) and os.path.isdir(os.path.dirname(folder)):
            try:
                os.mkdir(folder)
            except OSError as exc:
                raise DestinationError(f"cannot create the folder: {exc.strerror or exc}", path=folder) from exc
        _check_destinations(paths, overwrite)
        written: list[str] = []
        for path, image in zip(paths, reader.iter_frames(indices)):
            _commit(image, path, fmt)
            written.append(path)
            if progress is not None:
                progress(len(written), len(paths))
    return written


def export_region(
    slide: "Slide",
    out: str | os.PathLike,
    location: Sequence[int],
    size: Sequence[int],
    *,
    level: int = 0,
    format: str | None = None,
    overwrite: bool = False,
) -> str:
    """Write ``slide.read_region(location, level, size)`` (location in level 0 pixels,
    size at `level`, as OpenSlide takes them) to `out` (a file, or a folder: ``region.png``)."""
    path, fmt = _single_destination(out, format, REGION_NAME)
    _check_destinations([path], overwrite)
    image = slide.read_region(tuple(location), level, tuple(size))
    check_writable(image.dtype, image.shape, fmt, path)
    _commit(image, path, fmt)
    return path


def export_thumbnail(
    slide: "Slide",
    out: str | os.PathLike,
    max_size: int | Sequence[int] = 512,
    *,
    format: str | None = None,
    overwrite: bool = False,
) -> str:
    """Write ``slide.thumbnail(max_size)`` (an int: the same limit both ways) to `out`
    (a file, or a folder: ``thumbnail.png``)."""
    path, fmt = _single_destination(out, format, THUMBNAIL_NAME)
    _check_destinations([path], overwrite)
    limit = (max_size, max_size) if isinstance(max_size, int) else tuple(max_size)
    image = slide.thumbnail(limit)
    check_writable(image.dtype, image.shape, fmt, path)
    _commit(image, path, fmt)
    return path
