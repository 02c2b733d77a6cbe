"""fsspec filesystems inherited through a fork: kept alive in the child, never closed there."""

from __future__ import annotations

import os
import weakref
from typing import Any, Iterable

#: fsspec filesystems this process inherited through a fork: kept alive, never closed here
_INHERITED: list[Any] = []


def disarm(filesystems: Iterable[Any]) -> None:
    """Keep `filesystems` (a forked parent's) alive here, and never close them.

    An async fsspec filesystem closes its connection pool when it is garbage
    collected (or at exit). In a forked child those connections are the
    parent's, registered in the event loop's epoll instance that parent and
    child share: closing them in the child unregisters the parent's sockets,
    and the parent's next request on them hangs. So a child keeps the
    instances it inherited and disarms their finalizers.
    """
    filesystems = [fs for fs in filesystems if fs is not None]
    if not filesystems:
        return
    _INHERITED.extend(filesystems)
    ids = {id(fs) for fs in filesystems}
    # weakref.finalize offers no public way to find the finalizers of an object
    # it did not register for us (fsspec registers them): read CPython's
    # registry; where it is absent, keeping the instances alive suffices.
    registry = getattr(weakref.finalize, "_registry", None)
    if isinstance(registry, dict):
        for fin, info in list(registry.items()):
            target = getattr(info, "weakref", None)
            if target is not None and id(target()) in ids:
                fin.detach()


def _after_fork_in_child() -> None:
    """Disarm every fsspec filesystem instance the child inherited (fsspec drops
    its instance cache in a child, which would garbage-collect them)."""
    try:
        from fsspec.spec import AbstractFileSystem
    except ImportError:  # pragma: no cover - fsspec is a dependency
        return
    found: list[AbstractFileSystem] = []
    stack: list[type[AbstractFileSystem]] = [AbstractFileSystem]
    seen: set[type[AbstractFileSystem]] = set()
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.add(cls)
        stack.extend(cls.__subclasses__())
        # fsspec has no public list of its cached instances (only clear_instance_cache):
        # each filesystem class keeps them in its own `_cache` dict.
        cache = cls.__dict__.get("_cache")
        if isinstance(cache, dict):
            found.extend(cache.values())
    try:
        disarm(found)
    except Exception:  # pragma: no cover - never fail a fork over this
        pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
