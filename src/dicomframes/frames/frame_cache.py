"""A byte-bounded LRU of decoded frames, shared by readers.

Viewers and tile servers read overlapping regions: the tiles at a region's
edges are decoded again for the next one. Readers keep the frames that
`Reader.read_frames` decodes (regions go through it) in a `FrameCache`, by
default one per process (`shared_cache`, 64 MiB), so that however many
readers a slide or a server opens, decoded frames never hold more than its
bound. A reader's entries go when it closes.

A frame is kept the second time it is decoded, not the first (a "doorkeeper"
of recently seen keys): regions that share no tile (a scan of a level,
DeepZoom tiles) then hold no memory and evict nothing, and memory that is
held was asked for twice. Touching fresh memory costs: a cold process reading
disjoint regions ran 26% slower when every tile was kept.

Readers of remote files also keep each frame's encoded bytes (`put_encoded`,
admitted at once: about a tenth of the decoded size), so the second decode of a
tile, the one that keeps it, costs no request.

Cached arrays are read-only: they are handed out again, to anyone.
"""

from __future__ import annotations

import itertools
import os
import threading
import weakref
from collections import OrderedDict
from typing import Any, Hashable

import numpy as np

#: the default bound of the process-wide cache
DEFAULT_BYTES = 64 << 20

#: a number for each reader, the first part of its keys (ids can be reused)
tokens = itertools.count(1)


#: keys the doorkeeper remembers (about 100 bytes each)
SEEN_KEYS = 16384


class FrameCache:
    """Decoded frames by key, least recently used dropped beyond `max_bytes`
    (0 keeps nothing); safe to share between threads. With `second_chance`
    (the default) a frame is kept only when put a second time."""

    def __init__(self, max_bytes: int = DEFAULT_BYTES, *, second_chance: bool = True) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be 0 or more, not {max_bytes}")
        self.max_bytes = int(max_bytes)
        self.second_chance = second_chance
        self._seen: OrderedDict[Hashable, None] = OrderedDict()
        self._items: OrderedDict[Hashable, np.ndarray | bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = self.evictions = 0
        _instances.add(self)

    def get(self, key: Hashable, *, count: bool = True) -> Any:
        """The value kept under `key` (now the most recently used), or None;
        `count`: in `hits` and `misses`."""
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += count
                return None
            self._items.move_to_end(key)
            self.hits += count
            return value

    def put(self, key: Hashable, array: np.ndarray) -> np.ndarray:
        """Keep `array` (made read-only; copied first when it is a view into a
        larger buffer, which it would keep alive); returns it, read-only, kept
        or not (not: larger than the bound, or put for the first time)."""
        array.flags.writeable = False
        if array.nbytes > self.max_bytes:
            return array
        if self.second_chance:
            with self._lock:
                if self._seen.pop(key, False) is False:
                    self._seen[key] = None
                    if len(self._seen) > SEEN_KEYS:
                        self._seen.popitem(last=False)
                    return array
        if not array.flags.owndata and (array.base is None or getattr(array.base, "nbytes", 0) != array.nbytes):
            array = array.copy()
            array.flags.writeable = False
        self._keep(key, array)
        return array

    def put_encoded(self, key: Hashable, data: bytes | memoryview) -> None:
        """Keep a frame's encoded bytes (a copy of them: `data` may be a view
        into a larger read), admitted at once."""
        if len(data) <= self.max_bytes:
            self._keep(key, bytes(data))

    def _keep(self, key: Hashable, value: np.ndarray | bytes) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= _size(old)
            self._items[key] = value
            self._bytes += _size(value)
            while self._bytes > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= _size(dropped)
                self.evictions += 1

    def drop(self, owner: int) -> None:
        """Forget every entry whose key starts with `owner` (a closed reader's)."""
        with self._lock:
            for key in [k for k in self._items if isinstance(k, tuple) and k and k[0] == owner]:
                self._bytes -= _size(self._items.pop(key))

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._seen.clear()
            self._bytes = 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"hits": self.hits, "misses": self.misses, "evictions": self.evictions,
                    "entries": len(self._items), "bytes": self._bytes, "max_bytes": self.max_bytes}

    def __repr__(self) -> str:
        return f"<FrameCache {self._bytes / 2**20:.1f} of {self.max_bytes / 2**20:.0f} MiB, {len(self._items)} frames>"

    def __reduce__(self):  # a cache never travels: the other process gets its own, empty
        return (_new_cache, (self.max_bytes, self.second_chance))


def _size(value: np.ndarray | bytes) -> int:
    return value.nbytes if isinstance(value, np.ndarray) else len(value)


def _new_cache(max_bytes: int, second_chance: bool) -> FrameCache:
    return FrameCache(max_bytes, second_chance=second_chance)


_instances: weakref.WeakSet[FrameCache] = weakref.WeakSet()
_shared: FrameCache | None = None
_shared_lock = threading.Lock()


def shared_cache() -> FrameCache:
    """The process's default cache (64 MiB), made on first use."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = FrameCache(DEFAULT_BYTES)
        return _shared


def _after_fork() -> None:
    # A lock another thread held at fork stays held in the child: give every cache a new one.
    global _shared_lock
    _shared_lock = threading.Lock()
    for cache in list(_instances):
        cache._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
