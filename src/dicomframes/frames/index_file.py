"""A persisted frame index: what a reader learnt about a file, kept for the next process.

One NumPy ``.npz`` archive (read with ``allow_pickle=False``: an index published
beside a slide is data, never code) holding

- ``meta``: JSON, as UTF-8 bytes: the format name and version, the object's
  identity (size, ETag, modification time: `Source.identity`), the parsed
  `Header` and the frame index's scalar state;
- ``index.<name>``: the frame index's arrays (offsets, lengths, walked fragments);
- ``extra.<name>``: arrays that layers above keep with it (whole-slide tile
  positions), opaque here.

Everything read back is checked before use: shapes, dtypes, every offset and
length within the object's size, so that a damaged or hostile index gives an
`IndexFileError`, never a read sized by a bad number.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import numpy as np

from dicomframes._dicom.syntaxes import lookup
from dicomframes.errors import IndexFileError
from dicomframes.frames.header import Header
from dicomframes.frames.index import (
    BasicOffsetTableIndex,
    ExtendedOffsetTableIndex,
    FrameIndex,
    NativeFrameIndex,
    TiffTileIndex,
    WalkedIndex,
    _Growing,
    cache_capacity,
)
from dicomframes.io.cursor import BlockCache
from dicomframes.io.source import Source

FORMAT = "dicomframes.frame-index"
VERSION = 1
#: the kinds of frame index that can be kept, by `FrameIndex.kind`
KINDS: dict[str, type[FrameIndex]] = {
    cls.kind: cls
    for cls in (NativeFrameIndex, ExtendedOffsetTableIndex, BasicOffsetTableIndex, TiffTileIndex, WalkedIndex)
}
# The state each kind keeps (FrameIndex.__getstate__ minus what is rebuilt).
_SCALARS = (int, float, bool, str, type(None))
_SKIP = {"source", "cache", "header", "_cursor", "_walk_error", "_lock"}


def _jsonable(value: Any, name: str) -> Any:
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, _SCALARS) for v in value):
        return list(value)
    raise TypeError(f"{name}: {type(value).__name__} cannot be kept in an index file")


def _header_state(header: Header) -> dict[str, Any]:
    values = {k: _jsonable(v, k) for k, v in header.values.items() if not isinstance(v, np.ndarray)}
    return {
        "name": header.name, "transfer_syntax": header.transfer_syntax.uid,
        "dataset_offset": header.dataset_offset, "meta_offset": header.meta_offset, "values": values,
        "pixel_keyword": header.pixel_keyword, "pixel_vr": header.pixel_vr, "pixel_offset": header.pixel_offset,
        "pixel_length": header.pixel_length, "sequences": {k: list(v) for k, v in header.sequences.items()},
        "explicit_vr": header.explicit_vr,
    }


def dumps(header: Header, index: FrameIndex, identity: dict[str, Any], extras: dict[str, np.ndarray] | None = None) -> bytes:
    """The index file's bytes for `header` and `index` of the object `identity` describes."""
    if header.extended_offsets is not None:  # only before an EOT index took the table over
        raise ValueError("the header still holds its Extended Offset Table: build the index first")
    index = index.kept()
    state: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    for key, value in index.__getstate__().items():
        if key in _SKIP:
            continue
        if isinstance(value, np.ndarray):
            arrays["index." + key] = value
        elif isinstance(value, _Growing):
            arrays["index." + key] = value.view()
            state[key] = {"growing": True}
        elif isinstance(value, tuple) and all(isinstance(v, bytes) for v in value):
            state[key] = {"bytes": [v.hex() for v in value]}
        else:
            state[key] = _jsonable(value, key)
    if getattr(index, "_walk_error", None) is not None:
        raise ValueError("the walk ended in an error: nothing worth keeping")
    for key, value in (extras or {}).items():
        arrays["extra." + key] = np.asarray(value)
    meta = {
        "format": FORMAT, "version": VERSION, "identity": identity, "kind": index.kind,
        "header": _header_state(header), "index": state, "extras": sorted(extras or {}),
    }
    out = io.BytesIO()
    members: dict[str, Any] = {**arrays, "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
    np.savez(out, **members)
    return out.getvalue()


def loads(data: bytes, name: str, identity: dict[str, Any] | None = None) -> tuple[Header, FrameIndex, dict[str, np.ndarray]]:
    """The header, frame index (not yet bound to a source) and extras kept in
    `data`; `identity`, when given, must be the one the index was made for."""
    try:
        archive = np.load(io.BytesIO(data), allow_pickle=False)
        files = {k: archive[k] for k in archive.files}
        meta = json.loads(bytes(files.pop("meta")).decode())
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, UnicodeDecodeError, EOFError) as exc:
        raise IndexFileError(f"not a dicomframes index file ({type(exc).__name__}: {exc})", path=name) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise IndexFileError("not a dicomframes index file", path=name)
    if meta.get("version") != VERSION:
        raise IndexFileError(f"index format version {meta.get('version')!r}; this dicomframes reads version {VERSION}",
                             path=name, hint="build it again: dicomframes index SRC")
    kept = meta.get("identity") or {}
    if identity is not None and not same_object(kept, identity):
        raise IndexFileError(f"made for another object ({_describe(kept)}; the object is {_describe(identity)})",
                             path=name, hint="the file changed since the index was made: build it again")
    try:
        header = _header_from(meta["header"], name)
        index = _index_from(meta["kind"], meta["index"], files, header)
        extras = {k[len("extra."):]: v for k, v in files.items() if k.startswith("extra.")}
    except IndexFileError as exc:
        if exc.path is None:
            raise IndexFileError(exc.message, path=name, hint=exc.hint) from None
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise IndexFileError(f"damaged index file ({type(exc).__name__}: {exc})", path=name) from None
    _check_bounds(index, kept.get("size"), name)
    return header, index, extras


def same_object(kept: dict[str, Any], now: dict[str, Any]) -> bool:
    """Whether two identities (`Source.identity`) describe the same object: the
    same hash of the first bytes, and the same value of every other field both
    know (size, modification time)."""
    if not kept.get("head") or kept.get("head") != now.get("head"):
        return False
    return all(kept[k] == now[k] for k in kept.keys() & now.keys())


def strong(identity: dict[str, Any]) -> bool:
    """Whether an identity is enough to key a cached index."""
    return bool(identity.get("head"))


def _describe(identity: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(identity.items())) or "unknown"


def _header_from(state: dict[str, Any], name: str) -> Header:
    syntax = lookup(str(state["transfer_syntax"]))
    if syntax is None:
        raise IndexFileError(f"unknown transfer syntax {state['transfer_syntax']!r}", path=name)
    header = Header(
        name=name, transfer_syntax=syntax,
        dataset_offset=int(state["dataset_offset"]), meta_offset=int(state["meta_offset"]),
        values=dict(state["values"]), pixel_keyword=str(state["pixel_keyword"]), pixel_vr=str(state["pixel_vr"]),
        pixel_offset=int(state["pixel_offset"]),
        pixel_length=None if state["pixel_length"] is None else int(state["pixel_length"]),
        sequences={str(k): (int(v[0]), None if v[1] is None else int(v[1])) for k, v in state["sequences"].items()},
        explicit_vr=bool(state["explicit_vr"]),
    )
    if header.transfer_syntax.deflated:
        raise IndexFileError("Deflated files are not indexed", path=header.name)
    return header


def _index_from(kind: str, state: dict[str, Any], files: dict[str, np.ndarray], header: Header) -> FrameIndex:
    cls = KINDS.get(kind)
    if cls is None:
        raise IndexFileError(f"unknown frame index kind {kind!r}", path=header.name)
    restored: dict[str, Any] = {}
    for key, value in state.items():
        if isinstance(value, dict) and value.get("growing"):
            growing = _Growing()
            array = _int_array(files.pop("index." + key), key)
            growing.data, growing.n = array.copy(), len(array)
            if not len(growing.data):
                growing.data = np.empty(64, dtype=np.int64)
            restored[key] = growing
        elif isinstance(value, dict) and "bytes" in value:
            restored[key] = tuple(bytes.fromhex(v) for v in value["bytes"])
        else:
            restored[key] = value
    for key in [k for k in files if k.startswith("index.")]:
        restored[key[len("index."):]] = _int_array(files.pop(key), key)
    index = cls.__new__(cls)
    index.__setstate__({**restored, "header": header, "name": header.name, "source": None, "cache": BlockCache(0)})
    if cls is WalkedIndex:
        index._cursor = None  # type: ignore[attr-defined]
        index._walk_error = None  # type: ignore[attr-defined]
    if not isinstance(index.number_of_frames, int) or not isinstance(index.block, int) or index.block < 1:
        raise IndexFileError("damaged index file: bad frame count or block size", path=header.name)
    return index


def attach(index: FrameIndex, source: Source) -> FrameIndex:
    """Bind an index read back from a file to the data set's source, with the
    room in its block cache a freshly built index asks for."""
    index.bind(source)
    source.block_cache.reserve(cache_capacity(source, index.block))
    return index


def _int_array(value: np.ndarray, name: str) -> np.ndarray:
    if value.ndim != 1 or value.dtype.kind not in "iu":
        raise IndexFileError(f"index array {name} has shape {value.shape} and dtype {value.dtype}")
    return value.astype(np.int64)


def _check_bounds(index: FrameIndex, size: int | None, name: str) -> None:
    """Every offset and length of the index within the object: a bad number
    would size a read."""
    n = index.number_of_frames
    if not isinstance(n, int) or n < 1:
        raise IndexFileError(f"damaged index file: {n!r} frames", path=name)
    limit = size if isinstance(size, int) and size >= 0 else None
    for key, value in index.__dict__.items():
        array = value.view() if isinstance(value, _Growing) else value
        if isinstance(array, np.ndarray) and array.dtype.kind in "iu" and len(array):
            if array.min() < 0 or (limit is not None and array.max() > limit):
                raise IndexFileError(f"damaged index file: {key} holds values outside the object's {limit} bytes", path=name)
        elif isinstance(value, int) and not isinstance(value, bool) and key in ("first_item", "_walk_pos", "_last_end"):
            if value < 0 or (limit is not None and value > limit):
                raise IndexFileError(f"damaged index file: {key} {value} lies outside the object", path=name)
    if isinstance(index, WalkedIndex):
        starts, nfrag = index._frame_starts.view(), index._frag_offsets.n
        if index._frag_lengths.n != nfrag or (len(starts) and (starts.max() >= nfrag or (np.diff(starts) <= 0).any())):
            raise IndexFileError("damaged index file: the walked fragments do not add up", path=name)
    lengths = [getattr(index, k) for k in ("offsets", "lengths") if isinstance(getattr(index, k, None), np.ndarray)]
    if isinstance(index, (ExtendedOffsetTableIndex, BasicOffsetTableIndex, TiffTileIndex)) and any(len(a) != n for a in lengths):
        raise IndexFileError(f"damaged index file: tables of {[len(a) for a in lengths]} entries for {n} frames", path=name)


