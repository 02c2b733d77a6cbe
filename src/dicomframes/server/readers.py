"""Open readers and slides, a bounded number of each: the least recently used is closed.

A reader holds a file handle or a connection pool and its frame index (a
slide, the readers of its series), so a server over many files keeps only
the `capacity` most recently used open. One in use by a request is never
closed under it: eviction passes over it, and one evicted while in use is
closed when its last user is done.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Callable, Generic, Iterator, Protocol, TypeVar

from dicomframes.reader import Reader
from dicomframes.reader import open as open_reader
from dicomframes.server.catalogue import Instance
from dicomframes.wsi.slide import Slide, open_slide


class _Closeable(Protocol):
    def close(self) -> None: ...


T = TypeVar("T", bound=_Closeable)


class OpenPool(Generic[T]):
    """At most `capacity` open things by key, opened on first use (`use`)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        self.capacity = capacity
        self._lock = threading.Lock()
        self._open: OrderedDict[str, T] = OrderedDict()
        self._users: dict[int, int] = {}  # id(thing) -> requests using it
        self._retired: set[int] = set()  # evicted while in use: closed by their last user
        self.opened = 0  # things opened so far (for stats and tests)

    @contextmanager
    def use(self, key: str, opener: Callable[[], T]) -> Iterator[T]:
        thing = self._acquire(key, opener)
        try:
            yield thing
        finally:
            self._release(thing)

    def _acquire(self, key: str, opener: Callable[[], T]) -> T:
        with self._lock:
            thing = self._open.get(key)
            if thing is not None:
                self._open.move_to_end(key)
                self._users[id(thing)] = self._users.get(id(thing), 0) + 1
                return thing
        # Opened outside the lock (it waits on storage); two requests may both open: one is kept.
        fresh = opener()
        with self._lock:
            kept = self._open.get(key)
            if kept is None:
                kept = self._open[key] = fresh
                self.opened += 1
            self._users[id(kept)] = self._users.get(id(kept), 0) + 1
            evicted = self._evict()
        if kept is not fresh:  # another request opened it meanwhile
            fresh.close()
        for old in evicted:
            old.close()
        return kept

    def _evict(self) -> list[T]:
        """What to close now (under the lock): the least recently used beyond capacity."""
        out = []
        for key in list(self._open):
            if len(self._open) <= self.capacity:
                break
            thing = self._open.pop(key)
            if self._users.get(id(thing)):
                self._retired.add(id(thing))
            else:
                out.append(thing)
        return out

    def _release(self, thing: T) -> None:
        with self._lock:
            left = self._users.get(id(thing), 1) - 1
            if left:
                self._users[id(thing)] = left
                return
            self._users.pop(id(thing), None)
            retired = id(thing) in self._retired
            self._retired.discard(id(thing))
        if retired:
            thing.close()

    def discard(self, keys: set[str]) -> None:
        """Forget the things of `keys` (their files changed): closed now, or by their last user."""
        with self._lock:
            out = []
            for key in keys & self._open.keys():
                thing = self._open.pop(key)
                if self._users.get(id(thing)):
                    self._retired.add(id(thing))
                else:
                    out.append(thing)
        for thing in out:
            thing.close()

    def __len__(self) -> int:
        with self._lock:
            return len(self._open)

    def close(self) -> None:
        with self._lock:
            things = list(self._open.values())
            self._open.clear()
        for thing in things:
            thing.close()


class ReaderPool(OpenPool[Reader]):
    """Readers of instances, one per SOP Instance UID (decoding on the request's thread)."""

    def __init__(self, capacity: int = 64, storage_options: dict[str, Any] | None = None) -> None:
        super().__init__(capacity)
        self.storage_options = dict(storage_options or {})

    def reader(self, instance: Instance):
        options = {} if isinstance(instance.location, tuple) else self.storage_options
        return self.use(instance.sop, lambda: open_reader(instance.location, workers=1, **options))


class SlidePool(OpenPool[Slide]):
    """Whole-slide series, one `Slide` per Series Instance UID."""

    def __init__(self, capacity: int = 8, storage_options: dict[str, Any] | None = None) -> None:
        super().__init__(capacity)
        self.storage_options = dict(storage_options or {})

    def slide(self, series: str, instances: list[Instance]):
        def opener() -> Slide:
            locations = [i.location for i in instances]
            tuples = any(isinstance(loc, tuple) for loc in locations)
            return open_slide(locations, workers=1, **({} if tuples else self.storage_options))

        return self.use(series, opener)
