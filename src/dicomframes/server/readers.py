"""Open readers, a bounded number of them: the least recently used is closed.

A reader holds a file handle or a connection pool and its frame index, so a
server over many slides keeps only the `capacity` most recently used open.
A reader in use by a request is never closed under it: eviction passes over
it, and one evicted while in use is closed when its last user is done.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Iterator

from dicomframes.reader import Reader
from dicomframes.reader import open as open_reader
from dicomframes.server.catalogue import Instance


class ReaderPool:
    def __init__(self, capacity: int = 64, storage_options: dict[str, Any] | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        self.capacity = capacity
        self.storage_options = dict(storage_options or {})
        self._lock = threading.Lock()
        self._open: OrderedDict[str, Reader] = OrderedDict()
        self._users: dict[int, int] = {}  # id(reader) -> requests using it
        self._retired: set[int] = set()  # evicted while in use: closed by their last user
        self.opened = 0  # readers opened so far (for stats and tests)

    @contextmanager
    def use(self, instance: Instance) -> Iterator[Reader]:
        reader = self._acquire(instance)
        try:
            yield reader
        finally:
            self._release(reader)

    def _acquire(self, instance: Instance) -> Reader:
        with self._lock:
            reader = self._open.get(instance.sop)
            if reader is not None:
                self._open.move_to_end(instance.sop)
                self._users[id(reader)] = self._users.get(id(reader), 0) + 1
                return reader
        # Opened outside the lock (it waits on storage); two requests may both open: one is kept.
        options = {} if isinstance(instance.location, tuple) else self.storage_options
        fresh = open_reader(instance.location, workers=1, **options)
        with self._lock:
            kept = self._open.get(instance.sop)
            if kept is None:
                kept = self._open[instance.sop] = fresh
                self.opened += 1
            self._users[id(kept)] = self._users.get(id(kept), 0) + 1
            evicted = self._evict()
        if kept is not fresh:  # another request opened it meanwhile
            fresh.close()
        for old in evicted:
            old.close()
        return kept

    def _evict(self) -> list[Reader]:
        """Readers to close now (under the lock): the least recently used beyond capacity."""
        out = []
        for sop in list(self._open):
            if len(self._open) <= self.capacity:
                break
            reader = self._open.pop(sop)
            if self._users.get(id(reader)):
                self._retired.add(id(reader))
            else:
                out.append(reader)
        return out

    def _release(self, reader: Reader) -> None:
        with self._lock:
            left = self._users.get(id(reader), 1) - 1
            if left:
                self._users[id(reader)] = left
                return
            self._users.pop(id(reader), None)
            retired = id(reader) in self._retired
            self._retired.discard(id(reader))
        if retired:
            reader.close()

    def __len__(self) -> int:
        with self._lock:
            return len(self._open)

    def close(self) -> None:
        with self._lock:
            readers = list(self._open.values())
            self._open.clear()
        for reader in readers:
            reader.close()
