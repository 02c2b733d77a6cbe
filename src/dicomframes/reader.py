"""The Reader: the public face over Source -> Header -> FrameIndex -> Fetcher -> Codec -> Pixels.

`open` and `iter_frames` make readers; whole-slide regions and Dask arrays of
one instance are thin methods over `dicomframes.views`, which sits below.
"""

from __future__ import annotations

import builtins
import logging
import multiprocessing
import os
from collections.abc import Collection
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Iterable, Iterator

import numpy as np

from dicomframes._dicom.sop_classes import sop_class_name
from dicomframes.errors import (
    ArrayTooLargeError,
    ClosedReaderError,
    DicomFramesError,
    FrameNumberError,
    IndexFileError,
    InvalidFileError,
    StorageError,
)
from dicomframes.frames import codecs, frame_cache, index_file, native_reads, shared_workers
from dicomframes.frames.decode import decode_chunk, decode_chunk_in_worker, decode_span
from dicomframes.frames.frame_cache import FrameCache
from dicomframes.frames.frame_source import FrameSource, IndexedFrames
from dicomframes.frames.header import Header, parse_header
from dicomframes.frames.index import FrameIndex, build_index
from dicomframes.frames.index_cache import IndexCache
from dicomframes.frames.pipeline import iterate
from dicomframes.frames.pixels import PixelFormat
from dicomframes.frames.span import FrameBytes, FrameSpan, unwrap
from dicomframes.frames.workers import ProcessPool, available_cores, decode_threads
from dicomframes.io.policy import FetchPolicy
from dicomframes.io.resolve import source_for
from dicomframes.io.source import Source
from dicomframes.views import dask_graph, display, regions
from dicomframes.views.geometry import TileGeometry

if TYPE_CHECKING:  # pragma: no cover
    from dicomframes.views.geometry import TilePosition

DEFAULT_MAX_INFLIGHT = 64 << 20
#: the largest index file read (150,000 tile positions take a few MB)
MAX_INDEX_FILE_BYTES = 512 << 20
log = logging.getLogger("dicomframes")
#: below this many frames a process pool costs more to start than it saves
PROCESS_POOL_MIN_FRAMES = 32


def _count(indices) -> int:
    try:
        return len(indices)
    except TypeError:
        return PROCESS_POOL_MIN_FRAMES  # an iterator of unknown length: assume long


def _size_text(nbytes: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if nbytes >= 1 << shift:
            return f"{nbytes / (1 << shift):.1f} {unit}"
    return f"{nbytes} bytes"


def open_all(items: list, open_one, max_workers: int = 8) -> list:
    """``open_one(item)`` for every item, concurrently (opening is waiting on
    storage), results in order. If any fails, what was opened is closed (results
    that are not the items themselves) and the first error is raised."""
    if len(items) <= 1:
        return [open_one(item) for item in items]
    results: list = [None] * len(items)
    errors: list[BaseException] = []
    with ThreadPoolExecutor(min(max_workers, len(items)), thread_name_prefix="dicomframes-open") as pool:
        futures = [pool.submit(open_one, item) for item in items]
        for k, future in enumerate(futures):
            try:
                results[k] = future.result()
            except BaseException as exc:
                errors.append(exc)
    if errors:
        for item, result in zip(items, results):
            if result is not None and result is not item:
                result.close()
        raise errors[0]
    return results


@dataclass(frozen=True)
class ImageInfo:
    """What a file holds, as `reader.info` reports it."""

    path: str
    number_of_frames: int
    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric_interpretation: str
    planar_configuration: int
    dtype: str
    shape: tuple[int, ...]
    transfer_syntax_uid: str
    transfer_syntax: str
    sop_class_uid: str | None
    #: the SOP class's name, for image storage classes (None for others)
    sop_class: str | None
    index_kind: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Reader:
    """Frames of one multi-frame DICOM file, read lazily.

    Use `dicomframes.open` to make one (or `dicomframes.dicomweb(url).open`, whose
    readers are made with ``frames=``: a callable given the header and its
    source that returns the frame index and the `FrameSource` frames come
    from, where they do not come from byte ranges of `source`). Frames come back as NumPy arrays equal
    to ``pydicom.pixels.pixel_array(path, index=i)``: one with ``reader[i]``,
    several stacked with ``reader[10:20]`` or ``reader[[1, 5, 9]]``, all stacked
    with ``np.asarray(reader)``.
    """

    #: the most bytes one stacked array (``reader[a:b]``, ``reader[[...]]``,
    #: ``np.asarray(reader)``) may take; raise it on the class or on one reader
    max_array_bytes: int = 4 << 30

    def __init__(
        self,
        source: Source,
        *,
        as_rgb: bool = True,
        decoder: str | None = None,
        workers: int | None = None,
        max_inflight: int | None = None,
        policy: FetchPolicy | None = None,
        index_cache: IndexCache | None = None,
        index: bytes | str | os.PathLike | None = None,
        tile_cache: FrameCache | None = None,
        frames: Callable[[Header, Source], tuple[FrameIndex, FrameSource]] | None = None,
    ) -> None:
        self._source = source
        #: decoded frames that `read_frames` (and so regions) keeps and reuses; None: none kept
        self.tile_cache = tile_cache
        self._token = next(frame_cache.tokens)  # this reader's part of the cache's keys
        self._cache_counts = (0, 0)  # (hits, misses) of read_frames in tile_cache
        self.as_rgb = as_rgb
        self.decoder = decoder
        self.workers = workers
        self.max_inflight = max_inflight
        self.policy = policy or source.fetch_policy()
        self._closed = False
        self._processes: ProcessPool | None = None
        self._shared: shared_workers.SharedDecoder | None = None
        #: decoders that hold the GIL run in processes that read their frames and decode into shared memory
        self.shared_workers = True
        self._tile_geometry: TileGeometry | None = None
        self._index_cache = index_cache
        #: where the frame index came from: "built" (read from the file), "cache" or "file" (``index=``)
        self.index_origin = "built"
        self._kept_positions: dict[str, np.ndarray] | None = None
        self._identity: dict[str, Any] | None = None
        try:
            kept = self._kept_index(source, index)
            if kept is not None:
                self.header, self.index, extras = kept
                self._data_source = source
                index_file.attach(self.index, source)
                self._kept_positions = extras or None
            else:
                self.header, self._data_source = parse_header(source, source.header_block)
            self.format = PixelFormat.from_header(self.header)
            self._frames: FrameSource
            if frames is not None:  # a source of frames by number (DICOMweb): `source` holds the header only
                self.index, self._frames = frames(self.header, self._data_source)
            else:
                if kept is None:
                    self.index = self._build_index(self.header, source.walk_block)
                self._frames = IndexedFrames(self.index, self._data_source)
            self._walked_at_open = self.index.walked_to
        except (DicomFramesError, MemoryError, KeyboardInterrupt):
            source.close()
            raise
        except OSError as exc:  # the storage failed, not the file's structure
            source.close()
            raise StorageError(f"cannot read the header: {exc.strerror or exc}", path=source.name) from exc
        except Exception as exc:  # hostile bytes: never let another type escape
            source.close()
            raise InvalidFileError(f"cannot parse the header: {type(exc).__name__}: {exc}", path=source.name) from exc
        self._backend: codecs.Backend | None = None

    def _kept_index(self, source: Source, given: bytes | str | os.PathLike | None):
        """(header, index, extras) from the index file given or the cache, or None.

        A given file must fit the object (else `IndexFileError`); a cached entry
        that does not is dropped with a warning and the header read instead.
        """
        cache = self._index_cache
        if given is None and cache is None:
            return None
        identity = self._identity = source.identity()
        if given is not None:
            data = given if isinstance(given, bytes) else _read_index_file(given)
            self.index_origin = "file"
            # A published index travels: a copy's modification time is its own.
            portable = {k: v for k, v in identity.items() if k != "modified"}
            return index_file.loads(data, source.name, portable)
        if cache is None or not index_file.strong(identity):
            log.debug("%s: no identity to key the index cache with: not used", source.name)
            return None
        entry = cache.load(source.name, identity)
        if entry is None:
            return None
        try:
            kept = index_file.loads(entry, source.name, identity)
        except IndexFileError as exc:
            log.warning("%s: ignoring the cached frame index (%s); reading the header", source.name, exc.message)
            cache.discard(source.name, identity)
            return None
        self.index_origin = "cache"
        return kept

    def keep_index(self) -> bytes:
        """The frame index as an index file's bytes (`dicomframes index` writes
        them; ``open(src, index=...)`` reads them): the header, where every frame
        located so far lies, and the whole-slide tile positions if parsed."""
        self.check_open()
        extras: dict[str, np.ndarray] = {}
        geometry = self._tile_geometry
        if geometry is not None:
            extras = geometry.kept_positions() or {}
        elif self._kept_positions:
            extras = self._kept_positions
        return index_file.dumps(self.header, self.index, self.identity, extras)

    @property
    def identity(self) -> dict[str, Any]:
        """What tells this file from another at the same place (`Source.identity`):
        what index files and the index cache are keyed and checked by."""
        if self._identity is None:
            self._identity = self._source.identity()
        return self._identity

    def _worth_keeping(self) -> bool:
        """Whether the cache should keep what this reader learnt: a walk beyond
        the first read (further than the index it opened with), whole-slide
        positions parsed (that it did not open with), or an index that took
        more reads to build than an index file takes (a header longer than one
        read, as a large Extended Offset Table makes it; a TIFF tile table)."""
        walk = self.index.walked_to
        walked = walk - self.header.pixel_offset > self._source.header_block and walk > self._walked_at_open
        positions = self._tile_geometry is not None and bool(self._tile_geometry.kept_positions())
        built = self.index_origin == "built" and (
            self.index.costly or self.header.pixel_offset > self._source.header_block
        )
        # An entry read from the cache is written again only when this reader learnt more.
        return walked or built or (positions and not self._kept_positions)

    def _build_index(self, header: Header, block: int) -> FrameIndex:
        return build_index(
            header, self._data_source, frame_bits=self.format.native_frame_bits,
            be_swap=self.format.be_swap_ow, block=block,
        )

    # -- description ---------------------------------------------------------------
    @property
    def path(self) -> str:
        return self.header.name

    def __len__(self) -> int:
        return len(self.index)

    @property
    def info(self) -> ImageInfo:
        f = self.format
        ts = self.header.transfer_syntax
        return ImageInfo(
            path=self.path, number_of_frames=len(self), rows=f.rows, columns=f.columns,
            samples_per_pixel=f.samples_per_pixel, bits_allocated=f.bits_allocated,
            bits_stored=f.bits_stored, pixel_representation=f.pixel_representation,
            photometric_interpretation=f.photometric_interpretation,
            planar_configuration=f.planar_configuration, dtype=str(f.dtype), shape=f.shape,
            transfer_syntax_uid=ts.uid, transfer_syntax=ts.name,
            sop_class_uid=self.header.get("SOPClassUID"), sop_class=sop_class_name(self.header.get("SOPClassUID")),
            index_kind=self.index.kind,
        )

    @property
    def stats(self) -> dict[str, float]:
        """Requests, bytes and seconds spent waiting on storage, so far (and
        ``retries``: attempts beyond the first, where the source retries), and
        the frames `read_frames` (regions) found in the tile cache and did not."""
        traffic = self._frames.traffic()  # a DICOMweb instance's requests are its frame source's
        out = (traffic or self._source.stats).as_dict()
        out["retries"] = traffic.retries if traffic is not None else self._source.retries
        out["tile_cache_hits"], out["tile_cache_misses"] = self._cache_counts
        return out

    @property
    def source(self) -> Source:
        """The source of the file's bytes, as opened."""
        return self._source

    @property
    def data_source(self) -> Source:
        """The source of the data set: `source`, or its inflated stream for a
        Deflated file. Offsets in `header` and `index` are offsets here."""
        return self._data_source

    @property
    def closed(self) -> bool:
        return self._closed

    def check_open(self) -> None:
        """Raise `ClosedReaderError` (a ``ValueError``) if the reader is closed."""
        if self._closed:
            raise ClosedReaderError("I/O operation on a closed reader", path=self.path)

    def locate_all(self) -> None:
        """Locate every frame now, so that copies of this reader never search.

        Files without an offset table: walk the item headers to the end. Files
        with a Basic Offset Table: find where the last frame ends (and,
        remotely, the file's size). Copies pickled afterwards (to Dask workers,
        data loader processes) carry the complete index. A file whose last
        frame cannot be located is left as it is: reading that frame raises
        the error.
        """
        try:
            self.index.locate_all()
        except DicomFramesError:
            pass

    def _out_of_range(self, i: int) -> FrameNumberError:
        return FrameNumberError(f"frame index {i} out of range for {len(self)} frames", path=self.path)

    def _normalise(self, i: int) -> int:
        n = len(self)
        if not isinstance(i, (int, np.integer)):
            raise TypeError(f"frame indices must be integers, not {type(i).__name__}")
        k = int(i)
        if k < 0:
            k += n
        if not 0 <= k < n:
            raise self._out_of_range(int(i))
        return k

    def _check_all(self, indices: Collection[Any]) -> None:
        """Check every index of a collection before anything is read: integers,
        within range. The error names the first bad index in their order."""
        n = len(self)
        if isinstance(indices, range):
            if indices and not (-n <= min(indices[0], indices[-1]) and max(indices[0], indices[-1]) < n):
                # the first bad one is among the first 2n + 1 (a range is monotonic)
                raise self._out_of_range(next(i for i in indices if not -n <= i < n))
            return
        if isinstance(indices, np.ndarray):
            if indices.ndim != 1:
                raise TypeError(f"frame indices must be one-dimensional, not an array of shape {indices.shape}")
            if not indices.size:
                return
            if indices.dtype.kind not in "iu":
                raise TypeError(f"frame indices must be integers, not an array of {indices.dtype}")
            bad = indices >= n if indices.dtype.kind == "u" else (indices < -n) | (indices >= n)
            if bad.any():
                raise self._out_of_range(int(indices[int(np.argmax(bad))]))
            return
        for i in indices:
            self._normalise(i)

    def _stack(self, indices: Collection[Any]) -> np.ndarray:
        """The frames of `indices` in one array (frames, rows, columns[, samples]),
        read as one iteration; refused above `max_array_bytes`."""
        self.check_open()
        self._check_all(indices)
        count = len(indices)
        f = self.format
        nbytes = count * f.pixels_per_frame * f.dtype.itemsize
        if nbytes > self.max_array_bytes:
            raise ArrayTooLargeError(
                f"{count} frames of {f.shape} {f.dtype} take {_size_text(nbytes)}, above the limit of "
                f"{_size_text(self.max_array_bytes)} for one array",
                path=self.path,
                hint="read fewer frames at a time (reader[a:b], reader.iter_frames(...)), or raise the limit: "
                f"dicomframes.Reader.max_array_bytes = {nbytes} (or on this reader only)",
            )
        return self.read_into(indices, np.empty((count, *f.shape), dtype=f.dtype))

    def read_into(
        self,
        indices: Iterable[int],
        out: np.ndarray,
        *,
        workers: int | None = None,
        decoder: str | None = None,
        max_inflight: int | None = None,
    ) -> np.ndarray:
        """Frames of `indices` written into `out` (``out[k]`` the k-th), which is returned.

        `out` is an array of shape ``(len(indices), *reader.format.shape)`` and
        dtype ``reader.format.dtype`` that the caller owns and may reuse: a
        batch buffer of a training loop, pinned memory, a Dask chunk. Frames are
        read as by `iter_frames` (same arguments), and where the decoder can
        (imagecodecs' JPEG, JPEG-LS, JPEG 2000 and HTJ2K on unsigned data)
        decoded straight into their place in `out`, with no array per frame.
        """
        self.check_open()
        wanted = indices if isinstance(indices, Collection) and not isinstance(indices, Iterator) else list(indices)
        f = self.format
        want = (len(wanted), *f.shape)
        if not isinstance(out, np.ndarray) or out.shape != want or out.dtype != f.dtype or not out.flags.writeable:
            got = f"{out.shape} {out.dtype}" if isinstance(out, np.ndarray) else type(out).__name__
            raise ValueError(f"out must be a writeable array of shape {want} and dtype {f.dtype}, not {got}")
        for _ in self._iterate(wanted, workers, decoder, max_inflight, out):
            pass
        return out

    def _span(self, i: int) -> FrameSpan:
        return self.index.span(self._normalise(i))

    def _encoded(self, span: FrameSpan, data: FrameBytes) -> FrameBytes:
        if self.header.transfer_syntax.encapsulated:
            return unwrap(span, data, self.path)
        return data

    def encoded_frame(self, i: int) -> bytes:
        """The frame's bytes as stored: its codestream (fragments joined), or native bytes."""
        self.check_open()
        span = self._span(i)
        return bytes(self._encoded(span, self._frames.read(span)))

    def encoded_frames(self, indices: Iterable[int]) -> list[bytes]:
        """The bytes as stored of the frames of `indices` (a few: a WADO-RS
        request's), fetched together in planned reads: frames near each other
        in the file take one request between them, as `read_frames` fetches."""
        self.check_open()
        spans = [self._span(i) for i in indices]
        blobs = self._frames.read_many(list(dict.fromkeys(spans)), self.policy)
        return [bytes(self._encoded(span, blobs[span])) for span in spans]

    def frame(self, i: int) -> np.ndarray:
        """Frame `i` (0-based; negative counts from the end) as a NumPy array."""
        self.check_open()
        span = self._span(i)
        return self._decode(span, self._frames.read(span))  # reuses bytes already read

    def read_frames(self, indices: Iterable[int]) -> list[np.ndarray]:
        """The frames of `indices` (a few: a region's tiles) at once, as
        read-only arrays kept in `tile_cache`: frames already there are not
        read again; the others are fetched together in planned reads and
        decoded on the process's decode threads, with no pipeline to start
        (iterate with `iter_frames` for many frames)."""
        self.check_open()
        wanted = [self._normalise(i) for i in indices]
        cache, token = self.tile_cache, self._token
        found: dict[int, np.ndarray] = {}
        missing = []
        for k in dict.fromkeys(wanted):
            hit = cache.get((token, k)) if cache is not None else None
            if hit is None:
                missing.append(k)
            else:
                found[k] = hit
        if cache is not None:
            hits, misses = self._cache_counts
            self._cache_counts = (hits + len(found), misses + len(missing))
        if missing:
            spans = [self._span(k) for k in missing]
            # A remote file's encoded frames are kept too: the second decode (the one
            # that keeps the frame) then costs no request.
            kept = cache if cache is not None and self._source.remote else None
            blobs: dict[FrameSpan, FrameBytes] = {}
            if kept is not None:
                for span in spans:
                    held = kept.get((token, span.frame, "encoded"), count=False)
                    if held is not None:
                        blobs[span] = held
            fetched = [s for s in spans if s not in blobs]
            if fetched:
                got = self._frames.read_many(fetched, self.policy)
                blobs.update(got)
                if kept is not None:
                    for span, data in got.items():
                        kept.put_encoded((token, span.frame, "encoded"), data)
            backend = self.backend
            if len(spans) > 1 and backend is not None and backend.releases_gil and (self.workers or 2) > 1:
                arrays = list(decode_threads().map(lambda s: self._decode(s, blobs[s]), spans))
            else:
                arrays = [self._decode(s, blobs[s]) for s in spans]
            for k, array in zip(missing, arrays):
                found[k] = cache.put((token, k), array) if cache is not None else array
        return [found[k] for k in wanted]

    def __getitem__(self, key: Any) -> np.ndarray:
        """``reader[i]``: frame `i`. ``reader[a:b:step]``, ``reader[[1, 5, 9]]`` or
        an integer array: those frames stacked (frames, rows, columns[, samples]),
        read as one planned iteration; negative indices count from the end."""
        if isinstance(key, (int, np.integer)):
            return self.frame(int(key))
        if isinstance(key, slice):
            return self._stack(range(len(self))[key])
        if isinstance(key, (list, range, np.ndarray)):
            if isinstance(key, list):
                if any(isinstance(i, (bool, np.bool_)) for i in key):
                    raise TypeError("boolean masks are not frame indices: use reader[np.flatnonzero(mask)]")
            elif isinstance(key, np.ndarray) and key.dtype == bool:
                raise TypeError("boolean masks are not frame indices: use reader[np.flatnonzero(mask)]")
            return self._stack(key)
        raise TypeError(
            f"frames are indexed by an integer, a slice, a list or a 1-D integer array, not {type(key).__name__}"
            + (" (index the frames first, then the array: reader[a:b][..., y, x])" if isinstance(key, tuple) else "")
        )

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        """All frames stacked (``np.asarray(reader)``), refused above `max_array_bytes`.

        Always a new array (the reader holds no array to share)."""
        out = self._stack(range(len(self)))
        return out if dtype is None else out.astype(dtype, copy=False)

    @property
    def backend(self) -> codecs.Backend | None:
        """The decoder backend (None for native data); chosen on first use."""
        if self._backend is None and self.format.ts.encapsulated:
            self._backend = codecs.select(self.format.ts, self.decoder, self.path)
        return self._backend

    def _decode(self, span: FrameSpan, data: FrameBytes) -> np.ndarray:
        # A decoder the user named is used alone; the default one falls back to the others.
        return decode_span(self.format, self.backend, span, data, self.as_rgb, fallback=self.decoder is None)

    def iter_frames(
        self,
        indices: Iterable[int] | None = None,
        *,
        workers: int | None = None,
        decoder: str | None = None,
        max_inflight: int | None = None,
    ) -> Iterator[np.ndarray]:
        """Frames in order, or those of `indices` (any order, repeats allowed).

        Frames are fetched ahead with planned range reads and decoded on
        `workers` workers (default: the reader's, else the available cores);
        at most `max_inflight` bytes (default 64 MiB) are held in flight.
        `decoder` overrides the reader's decoder backend for this iteration.
        """
        yield from self._iterate(indices, workers, decoder, max_inflight, None)

    def _iterate(self, indices: Iterable[int] | None, workers: int | None, decoder: str | None,
                 max_inflight: int | None, out: np.ndarray | None) -> Iterator[np.ndarray]:
        """`iter_frames`; with `out`, the k-th frame is decoded into ``out[k]`` (and yielded)."""
        self.check_open()
        wanted = range(len(self)) if indices is None else indices
        if isinstance(wanted, Collection) and not isinstance(wanted, Iterator):
            self._check_all(wanted)  # before anything is read; one-shot iterators are checked lazily
        workers = workers or self.workers or available_cores()
        # The budget, in fifths: 2 batches fetched ahead + the one in use, frames
        # being decoded, and a fifth to spare for decoders' working memory.
        budget = max_inflight or self.max_inflight or DEFAULT_MAX_INFLIGHT
        policy = replace(self.policy, batch_bytes=max(1, min(self.policy.batch_bytes, budget // 5)))
        decoded_bytes = self.format.pixels_per_frame * self.format.dtype.itemsize
        depth = max(1, min(2 * workers, budget // 5 // max(1, decoded_bytes)))
        backend = self.backend if decoder is None else codecs.select(self.format.ts, decoder, self.path)
        chosen = decoder if decoder is not None else self.decoder
        fmt, as_rgb = self.format, self.as_rgb

        # Inline: decode(span, data). A pool gets `chunk` frames per task, about
        # 1 MiB of decoded pixels: fewer hand-offs per frame (threads) and
        # fewer, larger messages (processes).
        decode: Callable[..., Any] = partial(decode_span, fmt, backend, as_rgb=as_rgb, fallback=chosen is None)
        chunk = max(1, min(16, (1 << 20) // max(1, decoded_bytes)))
        bad: list[BaseException] = []

        def located() -> Iterator[int]:
            if isinstance(wanted, range) and (not wanted or min(wanted[0], wanted[-1]) >= 0):
                yield from wanted  # checked above, none negative: frame numbers already
                return
            # A bad index ends the indices; its error comes once the frames before it are yielded.
            for i in wanted:
                try:
                    k = self._normalise(i)
                except (FrameNumberError, TypeError) as exc:
                    bad.append(exc)
                    return
                yield k

        local = native_reads.local_source(self._frames, fmt)
        if local is not None:  # native frames of a local file: read here, one at a time
            yield from native_reads.iterate(located(), self.index, local, fmt, as_rgb, policy, out)
            if bad:
                raise bad[0]
            return

        pool: Executor | None = None
        own_pool: ThreadPoolExecutor | None = None
        pickled = False
        # Processes for decoders that hold the GIL, unless this process may have none
        # (a data loader's workers are daemons).
        processes = (backend is not None and not backend.releases_gil
                     and _count(wanted) >= PROCESS_POOL_MIN_FRAMES and not multiprocessing.current_process().daemon)
        if workers > 1 and processes and self._shares():
            # Processes that read and decode their frames themselves, into shared memory:
            # nothing pickled, so even cheap decoders (RLE) gain from them. None: they
            # serve another thread's iteration of this reader, and this one goes on below.
            shared = self._claim_shared(workers, chosen, budget, decoded_bytes, chunk)
            if shared is not None:
                yield from shared.iterate((self.index.span(k) for k in located()), chunk, self.path, out)
                if bad:
                    raise bad[0]
                return
        if workers > 1 and backend is not None:  # native frames: nothing to decode, a pool measured slower
            if backend.releases_gil:
                pool = own_pool = ThreadPoolExecutor(workers, thread_name_prefix="dicomframes-decode")
                decode = partial(decode_chunk, decode)
            elif processes and not backend.cheap:
                # Elsewhere (no fork): an executor's processes, started lazily.
                if self._processes is None:
                    self._processes = ProcessPool(workers)
                pool = self._processes.executor(workers)
                pickled = True
                decode = partial(decode_chunk_in_worker, fmt, chosen, as_rgb=as_rgb)
            if pool is not None:
                depth = max(depth, min(2 * workers * chunk, budget // 5 // max(1, decoded_bytes)))
                # Every worker busy, one task queued; a short iteration (a batch) is
                # still shared out among all of them.
                chunk = max(1, min(chunk, depth // (2 * workers), -(-_count(wanted) // workers)))

        try:
            yield from iterate(
                located(), self._frames, policy, decode, pool, depth=depth, pickled=pickled, chunk=chunk, out=out,
            )
            if bad:  # the pipeline's fetch thread has been joined: `bad` is final
                raise bad[0]
        finally:
            if own_pool is not None:
                own_pool.shutdown(wait=True, cancel_futures=True)

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.iter_frames()

    def _shares(self) -> bool:
        """Whether worker processes may read and decode frames themselves into shared memory:
        local files (a remote file is fetched here in few large requests, which workers reading
        a few frames each would multiply), and not where the index rechecks what is read."""
        return (self.shared_workers and shared_workers.available() and not self._data_source.remote
                and not self.index.rechecks and isinstance(self._frames, IndexedFrames))

    def _claim_shared(self, workers: int, decoder: str | None, budget: int, decoded_bytes: int,
                      chunk: int) -> shared_workers.SharedDecoder | None:
        """This reader's shared-memory workers, claimed for one iteration of `chunk`
        frames per task (started, or restarted for other settings, where needed);
        None while another iteration has them."""
        slots = max(workers, min(budget // 5 // max(1, decoded_bytes), 2 * workers * chunk + chunk))
        with shared_workers.pools_lock:
            pool = self._shared
            if pool is not None and not pool.claim():
                return None
            if pool is not None and (pool.broken or len(pool.procs) != workers or pool.slots != slots
                                     or pool.job.decoder != decoder):
                pool.close()
                pool = self._shared = None
            if pool is None:
                job = shared_workers.Job(self._data_source, self.format, decoder, self.as_rgb, self.policy)
                pool = shared_workers.SharedDecoder(job, workers, decoded_bytes, slots)
                pool.claim()
                self._shared = pool
            return pool

    # -- lifetime ------------------------------------------------------------------
    def close(self) -> None:
        if not self._closed:
            cache = self._index_cache
            if cache is not None and self.index_origin != "file" and self._identity is not None:
                self._store_in(cache)
            self._closed = True
            if self.tile_cache is not None:
                self.tile_cache.drop(self._token)
            if self._processes is not None:
                self._processes.shutdown()
            if self._shared is not None:
                self._shared.close()
                self._shared = None
            self._frames.close()
            self._data_source.close()
            self._source.close()

    def _store_in(self, cache: IndexCache) -> None:
        """Keep what this reader learnt in `cache`, if worth it (at close)."""
        try:
            if not self._worth_keeping() or not index_file.strong(self.identity):
                return
            data = self.keep_index()
        except (DicomFramesError, ValueError) as exc:  # a damaged file: nothing worth keeping
            log.debug("%s: frame index not kept: %s", self.path, exc)
            return
        cache.store(self._source.name, self.identity, data)

    def __getstate__(self):
        """Small: the source's location and options, the parsed header and the index.

        Unpickling (in a Dask worker, a data loader's process) opens its own
        file handle or connection and does not read the header again.
        """
        if self._closed:
            raise ClosedReaderError("cannot pickle a closed reader", path=self.path)
        state = self.__dict__.copy()
        state["_backend"] = None
        state["_processes"] = None
        state["_shared"] = None
        if isinstance(self._frames, IndexedFrames):
            del state["_frames"]  # made anew from the index and the source; others pickle themselves
        # Decoded frames stay here; the other process caches in its own shared cache.
        state["tile_cache"] = self.tile_cache is not None
        return state

    def __setstate__(self, state) -> None:
        self.__dict__.update(state)
        self.tile_cache = frame_cache.shared_cache() if state["tile_cache"] else None
        self._token = next(frame_cache.tokens)
        self._cache_counts = (0, 0)
        self.index.bind(self._data_source)
        if "_frames" not in state:
            self._frames = IndexedFrames(self.index, self._data_source)
        if self._tile_geometry is not None:  # whole-slide positions, if parsed
            self._tile_geometry.bind(self._data_source)

    def __del__(self) -> None:
        # A reader dropped without close() must not leave worker processes behind.
        processes = getattr(self, "_processes", None)
        if processes is not None:
            try:
                processes.shutdown(wait=False)
            except Exception:
                pass
        shared = getattr(self, "_shared", None)
        if shared is not None:
            try:
                shared.close()
            except Exception:
                pass

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        f = self.format
        return (
            f"<dicomframes.Reader {self.path!r}: {len(self)} frames of {f.shape} {f.dtype}, "
            f"{self.header.transfer_syntax.name}, index {self.index.kind}>"
        )

    # -- whole-slide images (dicomframes.views) -------------------------------------------
    @property
    def tile_geometry(self) -> TileGeometry:
        """Where each frame lies in the total pixel matrix (made once, on first use): a
        `TiledFullGeometry` or `TiledSparseGeometry`, as the header's organisation says."""
        if self._tile_geometry is None:
            self._tile_geometry = TileGeometry.from_header(
                self.header, len(self), self._data_source, kept_positions=self._kept_positions,
            )
        return self._tile_geometry

    def iter_tiles(
        self, focal_plane: int | None = None, optical_path: int | None = None
    ) -> Iterator[tuple[TilePosition, np.ndarray]]:
        """Yield ``(TilePosition, tile)`` for every tile (of one focal plane / optical path)."""
        self.check_open()
        return regions.iter_tiles(self, focal_plane, optical_path)

    def read_region(self, location, size, *, focal_plane: int = 0, optical_path: int = 0, background=None) -> np.ndarray:
        """The (width, height) `size` region at `location` (x, y) of the total pixel matrix."""
        self.check_open()
        return regions.read_region(self, location, size, focal_plane=focal_plane, optical_path=optical_path, background=background)

    # -- Dask (dicomframes.views.dask_graph) ---------------------------------------------------
    def to_dask(self, frames_per_chunk: int = 64, **kw):
        """The frames as a lazy dask array (frames, rows, columns[, samples]); see `dicomframes.to_dask`.

        The array holds a small, detached copy of this reader (closing it later
        does no harm). Needs the ``[dask]`` extra.
        """
        return dask_graph.reader_to_dask(self, frames_per_chunk, **kw)

    # -- kerchunk references (dicomframes.views.kerchunk) ------------------------------------
    def to_kerchunk(self, *, url: Any = None, verify: bool = True) -> dict[str, Any]:
        """The frames as kerchunk references: fsspec reference-filesystem JSON
        (``{"version": 1, "refs": {...}}``, zarr format 2) of one array ``frames``,
        (frames, rows, columns[, samples]), one chunk per frame, pointing at each
        frame's codestream in the file, decoded by ``imagecodecs.numcodecs``.
        zarr and xarray then read the frames with no dicomframes; see docs/kerchunk.md.

        `url`: where the references say the file is (default: `path`; a local
        path becomes absolute), e.g. the ``s3://`` URL it will be read from.
        `verify`: decode the first frame through the chunk's codec and compare
        it with this reader's (needs imagecodecs).

        Every frame is located first: for files without an offset table that
        walks all item headers (`locate_all`); Basic Offset Table files read each
        frame's 8-byte item header. Raises `TranscodeError` for frames of several
        fragments and where the numcodec would not return what this reader
        returns (e.g. YBR_FULL JPEG 2000 converted to RGB, bits above Bits Stored).
        """
        from dicomframes.views.kerchunk import reader_references

        return reader_references(self, url=url, verify=verify)

    # -- metadata and display transforms (dicomframes.views.display) -----------------------
    def dataset(self) -> Any:
        """Everything but Pixel Data as a pydicom ``Dataset`` (a ``FileDataset``),
        parsed from the header bytes: those before the Pixel Data element, read
        again (at most one request, two for a Deflated file; none where the
        source still holds them).

        Equal, element for element, to ``pydicom.dcmread(path,
        stop_before_pixels=True)``. Made anew on every call (nothing is kept).
        Needs pydicom (``pip install pydicom``, or the ``[metadata]`` extra):
        without it, `MissingDependencyError`.
        """
        self.check_open()
        return display.header_dataset(self)

    def modality_lut(self, frame: Any, **kw: Any) -> np.ndarray:
        """pydicom's ``apply_modality_lut`` on `frame` (an array, or a frame number
        to read), with the frame's Pixel Value Transformation where the file has
        functional groups; see `dicomframes.views.display.modality_lut`."""
        return display.modality_lut(frame, self, **kw)

    def voi_lut(self, frame: Any, index: int = 0, **kw: Any) -> np.ndarray:
        """pydicom's ``apply_voi_lut`` on `frame` (an array, or a frame number to
        read), with the frame's Frame VOI LUT where the file has functional
        groups; see `dicomframes.views.display.voi_lut`."""
        return display.voi_lut(frame, self, index, **kw)

    def palette(self, frame: Any, **kw: Any) -> np.ndarray:
        """pydicom's ``apply_color_lut`` on `frame` (an array, or a frame number to
        read) with the file's Palette Color LUT; see `dicomframes.views.display.palette`."""
        return display.palette(frame, self, **kw)


def open(
    src: str | os.PathLike | BinaryIO | Any,
    *,
    as_rgb: bool = True,
    decoder: str | None = None,
    workers: int | None = None,
    max_inflight: int | None = None,
    index_cache: bool | str | os.PathLike | IndexCache | None = None,
    index: bytes | str | os.PathLike | None = None,
    tile_cache: bool | int | FrameCache | None = None,
    **storage_options: Any,
) -> Reader:
    """Open a DICOM file for frame-by-frame reading.

    Parameters
    ----------
    src : str, os.PathLike, binary file object, or (fsspec filesystem, path)
        A local path, any fsspec URL (``s3://``, ``gs://``, ``https://`` ...), an
        open binary file, or a ``(filesystem, path)`` pair.
    as_rgb : bool
        Convert YCbCr frames to RGB, as pydicom does by default.
    decoder : str, optional
        The decoder backend: ``"pylibjpeg"`` (the required packages) or
        ``"imagecodecs"`` (the ``[fast]`` extra); default: the fastest installed.
    workers : int, optional
        Frames decoded in parallel while iterating; default: the available cores.
        Decoders that hold the GIL (the pylibjpeg plugins, pyjpegls) run in
        worker processes, the others on threads.
    max_inflight : int, optional
        Bytes of fetched, not yet yielded frames held while iterating (default 64 MiB).
    index_cache : bool, str, os.PathLike or IndexCache, optional
        Keep what the reader learns (a walk over a file without offset table,
        whole-slide tile positions) for the next process, and use what an
        earlier one kept: True for the per-user cache folder (or
        ``$DICOMFRAMES_CACHE``), a folder path or fsspec URL, or False. Default:
        on for URLs, off for local files. Entries are used only for the same
        object (size plus ETag or modification time); opening with an entry
        costs one request for the object's identity.
    index : bytes, str or os.PathLike, optional
        An index file made by ``dicomframes index`` (or `Reader.keep_index`),
        as bytes, a path or a URL: the header and frame positions are taken from
        it instead of the file. `IndexFileError` if it was made for another object.
    tile_cache : bool, int or FrameCache, optional
        Where regions (`read_region`, `read_frames`) keep the tiles they decoded,
        for the next region that overlaps them: default (None or True) the
        process's cache, shared by every reader, bounded at 64 MiB
        (``dicomframes.frames.frame_cache.shared_cache()``); an int for a cache of
        this reader's own of that many bytes; a `FrameCache` to share one; False
        or 0 for none. A reader's entries go when it closes.
    **storage_options
        Passed to fsspec for URLs (e.g. ``anon=True``).

    Returns
    -------
    Reader
    """
    tiles = tile_cache_for(tile_cache)
    source = source_for(src, storage_options)
    try:
        cache = _cache_for(index_cache, source)
    except Exception:
        source.close()
        raise
    return Reader(
        source, as_rgb=as_rgb, decoder=decoder, workers=workers, max_inflight=max_inflight,
        index_cache=cache, index=index, tile_cache=tiles,
    )


def tile_cache_for(setting: Any) -> FrameCache | None:
    """The cache that ``open(..., tile_cache=setting)`` means: None or True the
    process-wide one, False none, a number of bytes a cache of its own, or the one given."""
    if setting is None or setting is True:
        return frame_cache.shared_cache()
    if setting is False:
        return None
    if isinstance(setting, FrameCache):
        return setting
    if isinstance(setting, int):
        return FrameCache(setting) if setting > 0 else None
    raise TypeError(f"tile_cache must be True, False, a number of bytes or a FrameCache, not {type(setting).__name__}")


def _cache_for(setting: Any, source: Source) -> IndexCache | None:
    if setting is None:
        setting = source.remote
    if setting is False:
        return None
    if setting is True:
        return IndexCache()
    if isinstance(setting, IndexCache):
        return setting
    if isinstance(setting, (str, os.PathLike)):
        return IndexCache(setting)
    raise TypeError(f"index_cache must be True, False, a folder or an IndexCache, not {type(setting).__name__}")


def _read_index_file(location: str | os.PathLike) -> bytes:
    path = os.fspath(location)
    try:
        if "://" in path:
            import fsspec

            with fsspec.open(path, "rb") as f:
                return f.read(MAX_INDEX_FILE_BYTES + 1)[: MAX_INDEX_FILE_BYTES + 1]
        with builtins.open(path, "rb") as f:
            data = f.read(MAX_INDEX_FILE_BYTES + 1)
    except OSError as exc:
        raise IndexFileError(f"cannot read the index file: {exc.strerror or exc}", path=path) from exc
    if len(data) > MAX_INDEX_FILE_BYTES:
        raise IndexFileError(f"larger than {MAX_INDEX_FILE_BYTES >> 20} MiB: not an index file", path=path)
    return data


def iter_frames(
    src: str | os.PathLike | BinaryIO | Any,
    indices: Iterable[int] | None = None,
    **options: Any,
) -> Iterator[np.ndarray]:
    """Yield frames of `src` (all, or those in `indices`), closing the file at the end."""
    with open(src, **options) as reader:
        yield from reader.iter_frames(indices)
