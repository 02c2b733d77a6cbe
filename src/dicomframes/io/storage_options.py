"""URLs and storage options, checked before any I/O.

A mistyped option is refused naming the close matches among the parameters the
filesystem class takes (and the source's own); an object-store URL that names
no object is refused with one line instead of the store's own error.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from typing import Any, Iterable

from dicomframes.errors import StorageError

#: object stores whose URLs name ``BUCKET/KEY`` (a file needs both)
_OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss"}
#: options every fsspec filesystem takes (the instance cache's, the listings cache's)
_FSSPEC_OPTIONS = {
    "skip_instance_cache", "use_listings_cache", "listings_expiry_time", "max_paths",
    "add_docs", "add_aliases", "asynchronous", "loop", "batch_size",
}
#: fsspec's base classes: their ``**kwargs`` take the options above and nothing else
_FSSPEC_BASES = {"fsspec.spec.AbstractFileSystem", "fsspec.asyn.AsyncFileSystem"}


def _params(func: Any) -> set[str]:
    """The keyword parameters a callable takes (not ``self``, ``*args``, ``**kwargs``)."""
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):  # pragma: no cover - builtins
        return set()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name for p in sig.parameters.values() if p.kind in kinds and p.name != "self"}


def _s3fs_session_options() -> set[str]:
    # s3fs passes its other keyword arguments to aiobotocore's session
    from aiobotocore.session import AioSession

    return _params(AioSession.__init__)


def _http_request_options() -> set[str]:
    # HTTPFileSystem passes its other keyword arguments to every aiohttp request
    import aiohttp

    return _params(aiohttp.ClientSession._request) - {"method", "str_or_url"}


#: filesystems whose ``**kwargs`` we know the destination of: class -> the options it adds
_KWARGS_GO_TO = {
    "s3fs.core.S3FileSystem": _s3fs_session_options,
    "fsspec.implementations.http.HTTPFileSystem": _http_request_options,
}


@functools.lru_cache(maxsize=64)
def accepted_options(cls: type) -> frozenset[str] | None:
    """The storage options filesystem class `cls` accepts, or None where it takes
    ``**kwargs`` that go somewhere we cannot list (then anything is accepted)."""
    names = set(_FSSPEC_OPTIONS) | set(getattr(cls, "_strip_tokenize_options", ()) or ())
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        qualname = f"{klass.__module__}.{klass.__qualname__}"
        names |= _params(init)
        try:
            open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(init).parameters.values())
        except (TypeError, ValueError):  # pragma: no cover
            return None
        if open_ended and qualname not in _FSSPEC_BASES:
            extra = _KWARGS_GO_TO.get(qualname)
            if extra is None:
                return None
            try:
                names |= extra()
            except Exception:  # the library it hands them to is missing: cannot tell
                return None
    return frozenset(names)


def check_url(url: str) -> None:
    """Refuse, in one line, an object-store URL that names no bucket or no object."""
    protocol, sep, rest = url.partition("://")
    if not sep or "::" in url or protocol.lower() not in _OBJECT_STORES:
        return
    bucket, _, key = rest.partition("/")
    bucket = bucket.split("?", 1)[0]
    if not bucket:
        raise StorageError(f"no bucket in the URL: give {protocol}://BUCKET/KEY", path=url)
    if not key.split("?", 1)[0].strip("/"):
        raise StorageError(
            f"no object key in the URL, only a bucket: give {protocol}://{bucket}/KEY", path=url,
            hint="to open every file of a folder, use dicomframes.open_slide or list them",
        )


def check_storage_options(url: str, options: dict[str, Any], own: Iterable[str] = ()) -> None:
    """Refuse storage options that the filesystem for `url` does not take, naming
    the close matches among them and among `own` (the source's own options).

    Filesystems that pass unknown options on to something we cannot list accept
    anything, so a valid option is never refused.
    """
    if not options or "::" in url:
        return
    protocol = url.partition("://")[0] if "://" in url else "file"
    try:
        from fsspec import get_filesystem_class

        cls = get_filesystem_class(protocol)
    except (ImportError, ValueError):  # no backend, or unknown protocol: url_to_fs says so
        return
    accepted = accepted_options(cls)
    if accepted is None:
        return
    unknown = sorted(k for k in options if k not in accepted)
    if not unknown:
        return
    candidates = sorted(accepted | set(own))
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
        parts.append(f"{name!r}" + (f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""))
    plural = "s" if len(unknown) > 1 else ""
    raise StorageError(
        f"unknown storage option{plural} for {protocol}:// ({cls.__name__}): {', '.join(parts)}",
        path=url, hint=f"the options are the parameters of {cls.__module__}.{cls.__name__}",
    )
