"""Dask arrays from paths and URLs: ``dicomframes.to_dask``.

This module opens the files; the graphs themselves (one reader per file in
the graph, one task per chunk of frames or of tiles) are built by
`dicomframes.views.dask_graph`, whose names are re-exported here.
"""

from __future__ import annotations

from typing import Any

from dicomframes.io.resolve import inputs
from dicomframes.reader import Reader, open_all
from dicomframes.reader import open as open_reader
from dicomframes.views.dask_graph import (
    check_chunk,
    detached,
    io_stats,
    reader_to_dask,
    readers_to_dask,
    require_dask,
    reset_io_stats,
    slide_to_dask,
)

__all__ = ["to_dask", "reader_to_dask", "slide_to_dask", "io_stats", "reset_io_stats"]


def to_dask(src: Any, frames_per_chunk: int = 64, **open_options: Any):
    """The frames of one file, or of many files joined, as a lazy dask array.

    Parameters
    ----------
    src : path, URL, (filesystem, path), bytes, binary file, Reader, or a list of them
        One file, or many whose frames share shape and dtype: their frames are
        joined along the first axis in the order given. What is one file and
        what is many is decided by `dicomframes.io.resolve.inputs`.
    frames_per_chunk : int
        Frames per chunk (and per task). A chunk never spans two files.
    **open_options
        Passed to `dicomframes.open` (``as_rgb``, ``decoder``, storage options
        such as ``anon=True``). Not allowed with readers.

    Returns
    -------
    dask.array.Array
        Shape (frames, rows, columns) or (frames, rows, columns, samples), the
        dtype of ``reader.info.dtype``.

    Raises
    ------
    MissingDependencyError
        Dask is not installed: ``pip install "dicomframes[dask]"``.
    FrameMismatchError
        A file's frames differ in shape or dtype from the first file's; the
        error names the first file that does not match.

    Notes
    -----
    Only headers are read here (and, for files without an offset table, the
    item headers, once, so that workers never walk them). Each chunk is one
    task reading its frames with planned, coalesced range reads.
    """
    frames_per_chunk = check_chunk(frames_per_chunk, "frames_per_chunk")
    require_dask()
    items = inputs(src)
    if not items:
        raise ValueError("to_dask needs at least one file")
    if open_options and any(isinstance(i, Reader) for i in items):
        raise TypeError(f"options {sorted(open_options)} apply to files to open, not to open readers")

    def one(item: Any) -> Reader:
        if isinstance(item, Reader):
            item.check_open()
            item.locate_all()
            return detached(item)
        reader = open_reader(item, **open_options)
        try:
            reader.locate_all()
        except BaseException:
            reader.close()
            raise
        return reader  # ours: the graph holds it, no copy needed

    readers = open_all(items, one)
    try:
        return readers_to_dask(readers, frames_per_chunk)
    except BaseException:
        for k, r in enumerate(readers):
            if not isinstance(items[k], Reader):
                r.close()
        raise


