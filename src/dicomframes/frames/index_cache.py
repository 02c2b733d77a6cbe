"""Where persisted frame indexes are kept between processes: a folder, keyed by URL and identity.

The folder is, in order: the one given (a path or an fsspec URL), the
``DICOMFRAMES_CACHE`` environment variable, or ``dicomframes/indexes`` under
the user's cache folder (``$XDG_CACHE_HOME``, else ``~/.cache``). An entry's
name is a hash of the object's URL and identity (size, ETag, modification
time), so a replaced object never finds the old entry; the entry repeats the
identity, and `index_file.loads` checks it again.

Writes are atomic (a temporary name, then a rename; on object stores one PUT),
so two processes writing the same entry leave one whole entry. The folder is
bounded: after each write, the oldest entries beyond `max_bytes` are dropped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from typing import Any

log = logging.getLogger("dicomframes")

#: cache folders that could not be written, warned about once
_WARNED: set[str] = set()
#: the most bytes of entries a cache folder keeps by default
DEFAULT_MAX_BYTES = 1 << 30
SUFFIX = ".dfindex"


def default_folder() -> str:
    """The cache folder used when none is given."""
    env = os.environ.get("DICOMFRAMES_CACHE")
    if env:
        return env
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "dicomframes", "indexes")


def entry_name(url: str, identity: dict[str, Any]) -> str:
    key = json.dumps([url, sorted(identity.items())], default=str)
    return hashlib.sha256(key.encode()).hexdigest()[:40] + SUFFIX


class IndexCache:
    """A folder of index files (local, or any fsspec URL with `storage_options`)."""

    def __init__(self, location: str | os.PathLike | None = None, *, max_bytes: int = DEFAULT_MAX_BYTES,
                 **storage_options: Any) -> None:
        self.location = os.fspath(location) if location is not None else default_folder()
        self.max_bytes = int(max_bytes)
        if "://" in self.location:
            import fsspec

            self._fs, self._root = fsspec.core.url_to_fs(self.location, **storage_options)
        else:
            self._fs, self._root = None, os.path.abspath(os.path.expanduser(self.location))

    def __repr__(self) -> str:
        return f"IndexCache({self.location!r})"

    def _path(self, name: str) -> str:
        return f"{self._root.rstrip('/')}/{name}" if self._fs is not None else os.path.join(self._root, name)

    def load(self, url: str, identity: dict[str, Any]) -> bytes | None:
        """The entry's bytes, or None when there is none (or it cannot be read)."""
        path = self._path(entry_name(url, identity))
        try:
            if self._fs is not None:
                return self._fs.cat_file(path)
            with open(path, "rb") as f:
                data = f.read()
            os.utime(path)  # recently used: evicted last
            return data
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.info("index cache %s: cannot read %s: %s", self.location, path, exc)
            return None

    def store(self, url: str, identity: dict[str, Any], data: bytes) -> str | None:
        """Write the entry (atomically); the path written, or None where it failed
        (a cache that cannot be written never fails a read)."""
        name = entry_name(url, identity)
        path = self._path(name)
        try:
            if self._fs is not None:
                self._fs.pipe_file(path, data)
            else:
                os.makedirs(self._root, exist_ok=True)
                tmp = self._path(f".{name}.{uuid.uuid4().hex}.tmp")
                try:
                    with open(tmp, "wb") as f:
                        f.write(data)
                    os.replace(tmp, path)
                finally:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
                self._evict(keep=path)
        except OSError as exc:
            # Once per folder as a warning (a read-only home would say it at every close).
            level = logging.INFO if self.location in _WARNED else logging.WARNING
            _WARNED.add(self.location)
            log.log(level, "index cache %s: cannot write %s: %s (open with index_cache=False to stop trying)",
                    self.location, path, exc)
            return None
        return path

    def discard(self, url: str, identity: dict[str, Any]) -> None:
        path = self._path(entry_name(url, identity))
        try:
            if self._fs is not None:
                self._fs.rm_file(path)
            else:
                os.unlink(path)
        except OSError:
            pass

    def _evict(self, keep: str) -> None:
        """Drop the least recently used entries beyond `max_bytes` (local folders)."""
        entries = []
        with os.scandir(self._root) as it:
            for e in it:
                if e.name.endswith(SUFFIX) and e.is_file():
                    st = e.stat()
                    entries.append((st.st_mtime_ns, st.st_size, e.path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            if path == keep:
                continue
            try:
                os.unlink(path)
                total -= size
            except OSError:
                pass  # another process dropped it first
