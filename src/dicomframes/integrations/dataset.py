"""A map-style dataset over the frames of many files, for data loaders.

`FrameDataset` has ``__len__`` and ``__getitem__`` (and ``__getitems__``, which
PyTorch's DataLoader uses to fetch a whole batch at once), and imports no
machine-learning framework. It is safe in the worker processes of a data
loader, started by fork or by spawn:

- headers are read once, in the process that makes the dataset;
- pickling the dataset (spawn) pickles its readers small (URL or path,
  storage options, parsed header, compact frame index), and unpickling reads
  nothing;
- every process opens its own file handles and connections, lazily, on first
  use (after a fork too: a reader notices it is in another process).

    >>> ds = FrameDataset(["s3://bucket/a.dcm", "s3://bucket/b.dcm"], anon=True)  # doctest: +SKIP
    >>> len(ds), ds[0].shape                                                      # doctest: +SKIP
    >>> loader = torch.utils.data.DataLoader(ds, batch_size=32, num_workers=4)     # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from dicomframes.io.resolve import inputs
from dicomframes.reader import Reader, open_all
from dicomframes.reader import open as open_reader

__all__ = ["FrameDataset"]


class FrameDataset:
    """Frames of one or many DICOM files as one map-style dataset.

    Item ``k`` is frame ``i`` of file ``f``, counting the frames of each file
    in turn (file 0's frames first).

    Parameters
    ----------
    sources : path, URL, (filesystem, path), bytes, binary file, Reader, or a sequence of them
        The files, in order; one of them alone is one file (bytes are never
        iterated: `dicomframes.io.resolve.inputs` decides). Readers given are
        used (not closed by `close`); everything else is opened with
        ``dicomframes.open(src, **open_options)``.
    return_index : bool
        Items are ``(frame, (file_index, frame_index))`` instead of the frame.
    transform : callable, optional
        Applied to each frame (must pickle, for spawned workers).
    build_index : bool
        Locate every frame now, in this process (files without an offset
        table: one walk over their item headers), so that worker processes
        never search for frames themselves. Default True.
    **open_options
        Passed to `dicomframes.open` (``as_rgb``, ``decoder``, storage options
        such as ``anon=True``).
    """

    def __init__(
        self,
        sources: Any,
        *,
        return_index: bool = False,
        transform: Callable[[np.ndarray], Any] | None = None,
        build_index: bool = True,
        **open_options: Any,
    ) -> None:
        items = inputs(sources)
        self.return_index = return_index
        self.transform = transform
        self._owned = [not isinstance(item, Reader) for item in items]
        if open_options and not all(self._owned):
            raise TypeError(f"options {sorted(open_options)} apply to files to open, not to open readers")

        def one(item: Any):
            reader = item if isinstance(item, Reader) else open_reader(item, **open_options)
            if build_index:
                try:
                    reader.locate_all()
                except BaseException:
                    if reader is not item:
                        reader.close()
                    raise
            return reader

        self.readers: list[Reader] = open_all(items, one)
        self._ends = np.cumsum([len(r) for r in self.readers], dtype=np.int64)

    # -- the map ---------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def locate(self, k: int) -> tuple[int, int]:
        """(file index, frame index) of item `k` (negative counts from the end)."""
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool):
            raise TypeError(f"dataset indices must be integers, not {type(k).__name__}")
        n = len(self)
        k = int(k)
        if k < 0:
            k += n
        if not 0 <= k < n:
            raise IndexError(f"item {k} out of range for a dataset of {n} frames")
        f = int(np.searchsorted(self._ends, k, side="right"))
        return f, k - (int(self._ends[f - 1]) if f else 0)

    def _item(self, frame: np.ndarray, where: tuple[int, int]) -> Any:
        if self.transform is not None:
            frame = self.transform(frame)
        return (frame, where) if self.return_index else frame

    def __getitem__(self, k: int) -> Any:
        f, i = self.locate(k)
        return self._item(self.readers[f].frame(i), (f, i))

    def __getitems__(self, keys: Sequence[int]) -> list[Any]:
        """Several items at once: each file's frames fetched together with planned,
        coalesced range reads (PyTorch's DataLoader calls this for a batch)."""
        where = [self.locate(k) for k in keys]
        by_file: dict[int, list[int]] = {}
        for f, i in where:
            by_file.setdefault(f, []).append(i)
        frames: dict[tuple[int, int], np.ndarray] = {}
        for f, indices in by_file.items():
            wanted = sorted(set(indices))
            for i, frame in zip(wanted, self.readers[f].iter_frames(wanted, workers=1)):
                frames[(f, i)] = frame
        out, given = [], set()
        for w in where:  # a key asked for twice gets its own copy
            out.append(self._item(frames[w].copy() if w in given else frames[w], w))
            given.add(w)
        return out

    def __iter__(self):
        for f, reader in enumerate(self.readers):
            for i, frame in enumerate(reader.iter_frames(workers=1)):
                yield self._item(frame, (f, i))

    # -- description -------------------------------------------------------------
    @property
    def paths(self) -> list[str]:
        return [r.path for r in self.readers]

    @property
    def frame_counts(self) -> list[int]:
        return [len(r) for r in self.readers]

    def __repr__(self) -> str:
        return f"<dicomframes.FrameDataset {len(self)} frames of {len(self.readers)} file(s)>"

    # -- lifetime ------------------------------------------------------------------
    def close(self) -> None:
        """Close the readers the dataset opened (not those it was given)."""
        for owned, reader in zip(self._owned, self.readers):
            if owned:
                reader.close()

    def __enter__(self) -> "FrameDataset":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self):
        # The readers pickle small and reopen lazily where they land.
        return self.__dict__.copy()

    def __setstate__(self, state) -> None:
        self.__dict__.update(state)
