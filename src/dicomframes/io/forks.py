"""fsspec filesystems inherited through a fork: kept alive in the child, never closed there.

An async fsspec filesystem closes its connection pool when it is garbage
collected (a ``weakref.finalize`` that fsspec, s3fs, gcsfs register; aiohttp's
connector does the same in ``__del__``). In a forked child those connections
are the parent's, registered in the event loop's epoll instance that parent
and child share: closing them in the child issues ``EPOLL_CTL_DEL`` on that
shared instance, which unregisters the parent's sockets, and the parent's next
request on a pooled connection hangs (the server answers; nobody is told).

fsspec itself makes that happen: its own ``after_in_child`` fork handler
(``fsspec.spec._reset_instances_lock``) empties every filesystem class's
instance cache in the child, so an instance only the cache held becomes
garbage there, and the child's next garbage collection closes the parent's
connections. So the instances must be found *before* the fork, in the parent,
where nothing has dropped them yet: fork handlers run in the order they were
registered, and fsspec's may run before ours (it does whenever something,
zarr for one, imports fsspec before this module is imported).
"""

from __future__ import annotations

import os
import sys
import weakref
from typing import Any, Iterable

#: fsspec filesystems this process inherited through a fork: kept alive, never closed here
_INHERITED: list[Any] = []

#: the live filesystems, gathered in the parent just before a fork (strong references,
#: so that in the child they outlive every other fork handler); emptied after the fork
_AT_FORK: list[Any] = []


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


def _live_filesystems() -> list[Any]:
    """Every fsspec filesystem instance alive here that we can find: those in the
    classes' instance caches, and those with a finalizer (cached or not, e.g.
    made with ``skip_instance_cache=True`` and held by a reader)."""
    spec = sys.modules.get("fsspec.spec")
    if spec is None:  # fsspec never imported: no filesystem, no connection
        return []
    base = spec.AbstractFileSystem
    found: dict[int, Any] = {}
    stack: list[type] = [base]
    seen: set[type] = set()
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.add(cls)
        stack.extend(cls.__subclasses__())
        # fsspec has no public list of its cached instances (only clear_instance_cache):
        # each filesystem class keeps them in its own `_cache` dict.
        cache = cls.__dict__.get("_cache")
        if isinstance(cache, (dict, weakref.WeakValueDictionary)):
            for fs in list(cache.values()):
                found.setdefault(id(fs), fs)
    registry = getattr(weakref.finalize, "_registry", None)
    if isinstance(registry, dict):
        for info in list(registry.values()):
            target = getattr(info, "weakref", None)
            obj = target() if target is not None else None
            if isinstance(obj, base):
                found.setdefault(id(obj), obj)
    return list(found.values())


def _before_fork() -> None:
    """In the parent, just before a fork: hold every live filesystem."""
    try:
        _AT_FORK[:] = _live_filesystems()
    except Exception:  # pragma: no cover - never fail a fork over this
        _AT_FORK.clear()


def _after_fork_in_parent() -> None:
    _AT_FORK.clear()


def _after_fork_in_child() -> None:
    """Disarm every fsspec filesystem instance the child inherited: those the
    parent held just before the fork (fsspec empties its instance caches in
    the child, which would garbage-collect them), and any still found here."""
    try:
        inherited = list(_AT_FORK)
        _AT_FORK.clear()
        known = {id(fs) for fs in _INHERITED}
        found = [fs for fs in inherited + _live_filesystems() if id(fs) not in known]
        disarm({id(fs): fs for fs in found}.values())
    except Exception:  # pragma: no cover - never fail a fork over this
        pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child,
    )
