"""Dask arrays of frames and of whole-slide levels.

``to_dask`` turns the frames of one or many files into one ``dask.array`` of
shape (frames, rows, columns[, samples]); ``slide_to_dask`` turns one level of
a whole-slide image into a (height, width[, samples]) image with one chunk per
tile (or per block of tiles).

How the graph looks, and why:

- **The reader is in the graph once.** It is one key whose value is the
  reader (a detached copy that pickles small: the URL and storage options, the
  parsed header and the compact frame index, never pixel data). Every chunk
  task refers to that key, so a graph of 10,000 chunks carries one reader.
- **Unpickling reads nothing.** A worker that receives the reader opens its
  own file handle or connection lazily and does not read the header again.
- **Each chunk is one planned read.** A chunk task calls
  ``reader.read_into(range(a, b), chunk, workers=1)``: the frames' byte ranges
  are coalesced into few requests, fetched ahead on one thread and decoded on
  the task's thread straight into the chunk, so a task holds its chunk plus
  the bytes in flight.
- **The index is complete before the graph is made.** For files without an
  offset table the client walks the item headers once (``to_dask`` does it),
  so workers never walk them again.

Dask is an optional dependency (``pip install "dicomframes[dask]"``), imported
only when a function here is called; importing `dicomframes` never imports it.
"""

from __future__ import annotations

import pickle
import threading
import weakref
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from dicomframes.errors import FrameMismatchError, MissingDependencyError, RegionError

if TYPE_CHECKING:  # pragma: no cover
    from dicomframes.reader import Reader

__all__ = ["reader_to_dask", "readers_to_dask", "slide_to_dask", "io_stats", "reset_io_stats"]

DASK_HINT = 'pip install "dicomframes[dask]"'


def require_dask():
    """``dask.array`` and ``HighLevelGraph``, or an error naming the extra to install."""
    try:
        import dask.array as da
        from dask.base import tokenize
        from dask.highlevelgraph import HighLevelGraph
    except ImportError as exc:
        raise MissingDependencyError(
            f"Dask arrays need dask[array], which is not installed ({exc})", hint=DASK_HINT,
        ) from exc
    return da, HighLevelGraph, tokenize


# -- what a worker did: requests and bytes of the readers its tasks used ------------------
_io_lock = threading.Lock()
#: id(reader) -> [its stats at the last reset (or when first seen), its latest stats]
_io_live: dict[int, list[dict[str, float]]] = {}
#: what readers that have since been freed had read
_io_retired = {"requests": 0, "bytes": 0}
_ZERO = {"requests": 0, "bytes": 0}


def _retire(key: int) -> None:
    with _io_lock:
        entry = _io_live.pop(key, None)
        if entry is not None:
            base, last = entry
            for k in _io_retired:
                _io_retired[k] += int(last[k] - base[k])


def _note_io(reader: Any) -> None:
    """Remember how much `reader` has read (no reference kept: readers are freed as usual)."""
    key = id(reader)
    stats = reader.stats
    with _io_lock:
        entry = _io_live.get(key)
        if entry is None:
            _io_live[key] = [dict(_ZERO), stats]
            weakref.finalize(reader, _retire, key)
        else:
            entry[1] = stats


def io_stats() -> dict[str, int]:
    """Requests and bytes read, in this process, by the readers of chunk tasks.

    Counts every reader copy that computed a chunk here, since the last
    `reset_io_stats`. On a cluster, ask every worker:
    ``client.run(dicomframes.integrations.dask.io_stats)``.
    """
    with _io_lock:
        out = dict(_io_retired)
        for base, last in _io_live.values():
            for k in out:
                out[k] += int(last[k] - base[k])
    return out


def reset_io_stats() -> None:
    """Start counting `io_stats` from zero."""
    with _io_lock:
        for entry in _io_live.values():
            entry[0] = entry[1]
        for k in _io_retired:
            _io_retired[k] = 0


# -- the tasks -----------------------------------------------------------------------------
def read_frames(reader: "Reader", start: int, stop: int) -> np.ndarray:
    """Frames ``start..stop-1`` of `reader` stacked into one array (one chunk task)."""
    fmt = reader.format
    # Decoded straight into the chunk where the decoder can: no array per frame to
    # allocate, copy and free (under Dask's MALLOC_TRIM_THRESHOLD_ each is an mmap).
    out = reader.read_into(range(start, stop), np.empty((stop - start, *fmt.shape), dtype=fmt.dtype), workers=1)
    _note_io(reader)
    return out


def read_window(image: Any, x: int, y: int, width: int, height: int,
                focal_plane: int, optical_path: int, background: Any) -> np.ndarray:
    """The (width, height) window at (x, y) of a level or tiled reader (one chunk task)."""
    readers = getattr(image, "readers", None)
    if readers is not None:  # a Level: bind each geometry to its reader's source (after unpickling)
        for reader in readers:
            reader.tile_geometry  # noqa: B018 - binds
    out = image.read_region((x, y), (width, height), focal_plane=focal_plane,
                            optical_path=optical_path, background=background)
    for reader in readers if readers is not None else [image]:
        _note_io(reader)
    return out


# -- helpers ---------------------------------------------------------------------------------
def detached(obj: Any) -> Any:
    """A copy of a reader (or level) that pickles small and shares nothing with `obj`.

    The array keeps working after the caller closes its reader. Readers over an
    open file object cannot be pickled: those are used as they are (fine for
    Dask's threaded scheduler; a distributed cluster cannot ship them).
    """
    try:
        return pickle.loads(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
    except TypeError:
        return obj


def _identity(reader: "Reader") -> tuple:
    """What makes two readers give the same frames (for Dask's names)."""
    header = reader.header
    return (
        reader.path, reader.source.size, header.get("SOPInstanceUID"), len(reader),
        tuple(reader.format.shape),
        str(reader.format.dtype), header.transfer_syntax.uid, reader.as_rgb, reader.decoder,
    )


def check_chunk(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{what} must be a positive integer, not {value!r}")
    return int(value)


# -- frames ----------------------------------------------------------------------------------
def _frames_array(readers: Sequence["Reader"], frames_per_chunk: int):
    """The dask array of the frames of `readers` (already detached and checked)."""
    da, HighLevelGraph, tokenize = require_dask()
    first = readers[0]
    shape = tuple(first.format.shape)
    dtype = first.format.dtype
    token = tokenize("dicomframes-frames", frames_per_chunk, [_identity(r) for r in readers])
    name = f"dicomframes-frames-{token}"
    zeros = (0,) * len(shape)
    dsk: dict[Any, Any] = {}
    sizes: list[int] = []
    for j, reader in enumerate(readers):
        reader_key = f"dicomframes-reader-{token}-{j}"
        dsk[reader_key] = reader  # once: every chunk task refers to this key
        n = len(reader)
        for start in range(0, n, frames_per_chunk):
            stop = min(start + frames_per_chunk, n)
            dsk[(name, len(sizes)) + zeros] = (read_frames, reader_key, start, stop)
            sizes.append(stop - start)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=())
    chunks = (tuple(sizes),) + tuple((s,) for s in shape)
    return da.Array(graph, name, chunks, dtype=dtype)


def readers_to_dask(readers: Sequence["Reader"], frames_per_chunk: int):
    """The frames of `readers` (detached or owned by the array, index complete)
    joined into one dask array; their frames must share shape and dtype."""
    _check_same_frames(readers)
    return _frames_array(readers, frames_per_chunk)


def _check_same_frames(readers: Sequence["Reader"]) -> None:
    first = readers[0]
    want = (tuple(first.format.shape), first.format.dtype)
    for reader in readers[1:]:
        got = (tuple(reader.format.shape), reader.format.dtype)
        if got != want:
            raise FrameMismatchError(
                f"its frames are {got[0]} {got[1]}, but those of {first.path} (the first file) are "
                f"{want[0]} {want[1]}; to_dask joins only files whose frames share shape and dtype",
                path=reader.path, hint="make one array per kind of frame and join them yourself",
            )


def reader_to_dask(reader: "Reader", frames_per_chunk: int = 64):
    """The frames of an open reader as a dask array (see `to_dask`).

    The array holds a detached copy of the reader: closing `reader` later does
    not affect it.
    """
    frames_per_chunk = check_chunk(frames_per_chunk, "frames_per_chunk")
    require_dask()
    reader.check_open()
    reader.locate_all()  # workers never walk item headers themselves
    return _frames_array([detached(reader)], frames_per_chunk)


# -- whole slides ------------------------------------------------------------------------------
def _tile_counts(tiles_per_chunk: Any) -> tuple[int, int]:
    """(tile rows, tile columns) per chunk from an int or a (rows, columns) pair."""
    if isinstance(tiles_per_chunk, (tuple, list)):
        if len(tiles_per_chunk) != 2:
            raise ValueError(f"tiles_per_chunk must be an int or (rows, columns), not {tiles_per_chunk!r}")
        return (check_chunk(tiles_per_chunk[0], "tiles_per_chunk"), check_chunk(tiles_per_chunk[1], "tiles_per_chunk"))
    n = check_chunk(tiles_per_chunk, "tiles_per_chunk")
    return n, n


def _edges(total: int, step: int) -> list[tuple[int, int]]:
    return [(a, min(a + step, total)) for a in range(0, total, step)]


def slide_to_dask(
    slide: Any,
    level: int = 0,
    tiles_per_chunk: int | tuple[int, int] = 1,
    *,
    focal_plane: int = 0,
    optical_path: int = 0,
    background: Any = None,
):
    """One level of a whole-slide image as a lazy dask array.

    Parameters
    ----------
    slide : Slide, Level or Reader
        A slide from `dicomframes.open_slide` (then `level` picks the level),
        one of its levels, or a reader of one tiled instance.
    level : int
        The level of a slide (0: the largest).
    tiles_per_chunk : int or (rows, columns)
        Tiles per chunk along each axis (default 1: a chunk per tile).
    focal_plane, optical_path : int
        The plane to read.
    background : optional
        The value of absent tiles of sparse images (default: the one
        ``read_region`` uses: white for 8-bit brightfield images).

    Returns
    -------
    dask.array.Array
        Shape (height, width, samples) (or (height, width) for one sample per
        pixel), the level's dtype; chunks of whole tiles, those of the last row
        and column clipped at the image edge. ``image[y0:y1, x0:x1]`` equals
        ``read_region((x0, y0), (x1 - x0, y1 - y0))`` at that level, and
        computing it fetches only the tiles it touches.
    """
    da, HighLevelGraph, tokenize = require_dask()
    ty, tx = _tile_counts(tiles_per_chunk)
    if not hasattr(slide, "readers"):  # a reader of one tiled instance
        image, readers = slide, [slide]
        slide.check_open()
        geometry = slide.tile_geometry
        width, height = geometry.width, geometry.height
        tile_w, tile_h = geometry.tile_width, geometry.tile_height
        geometry.positions()  # sparse positions parsed here, once, not on every worker
        geometry.check_plane(focal_plane, optical_path)
    else:
        image = slide.levels[level] if hasattr(slide, "levels") else slide
        readers = list(image.readers)
        for r in readers:
            r.check_open()
            r.tile_geometry.positions()  # sparse positions parsed here, once
        width, height = image.width, image.height
        tile_w, tile_h = image.tile_width, image.tile_height
        if not (0 <= focal_plane < image.focal_planes and 0 <= optical_path < image.optical_paths):
            raise RegionError(
                f"focal plane {focal_plane} / optical path {optical_path} out of range: the level has "
                f"{image.focal_planes} focal plane(s) and {image.optical_paths} optical path(s)",
                path=readers[0].path,
            )
    fmt = readers[0].format
    extra = tuple(fmt.shape[2:])
    token = tokenize(
        "dicomframes-slide", [_identity(r) for r in readers], (ty, tx), focal_plane, optical_path,
        None if background is None else np.asarray(background).tolist(),
    )
    name = f"dicomframes-slide-{token}"
    image_key = f"dicomframes-level-{token}"
    copy = detached(image)
    for r in getattr(copy, "readers", None) or [copy]:
        r.workers = 1  # a chunk is one task: decode on its thread, no pools inside
    dsk: dict[Any, Any] = {image_key: copy}
    rows, columns = _edges(height, tile_h * ty), _edges(width, tile_w * tx)
    zeros = (0,) * len(extra)
    for i, (y0, y1) in enumerate(rows):
        for j, (x0, x1) in enumerate(columns):
            dsk[(name, i, j) + zeros] = (
                read_window, image_key, x0, y0, x1 - x0, y1 - y0, focal_plane, optical_path, background,
            )
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=())
    chunks = (tuple(b - a for a, b in rows), tuple(b - a for a, b in columns)) + tuple((s,) for s in extra)
    return da.Array(graph, name, chunks, dtype=fmt.dtype)
