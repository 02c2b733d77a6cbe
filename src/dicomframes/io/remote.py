"""Remote files through fsspec: S3, GCS, HTTP(S), Azure and anything else fsspec reads.

`FsspecSource` reads planned byte ranges with ``cat_file``-style range requests,
several at once on async filesystems (HTTP, s3fs, gcsfs), and never through an
fsspec file object (whose read-ahead cache multiplies the bytes moved when
reads jump around).

Opening costs as few requests as possible: the file's size is not asked for
up front (no HEAD request); it is learnt only when a read comes back short,
to tell the end of the file from a transfer cut short.

Transient failures (connections reset or dropped mid-body, timeouts, HTTP 5xx,
throttling) are retried with exponential backoff and jitter, a bounded number
of times; then a `StorageError` names the URL and the byte range (and, raised
through the frame index or the fetcher, the frame). A range that comes back
short before the end of the file is retried, then an error: never a partial
frame.
"""

from __future__ import annotations

import asyncio
import errno
import os
import random
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

from dicomframes.errors import StorageError
from dicomframes.io.policy import FetchPolicy
from dicomframes.io.source import Range, Source

if TYPE_CHECKING:  # pragma: no cover
    from fsspec.spec import AbstractFileSystem

KiB, MiB = 1 << 10, 1 << 20

#: HTTP statuses worth retrying (besides every 5xx)
_RETRY_STATUSES = {408, 425, 429}
#: exception class names (anywhere in the MRO) that mean "try again"
_TRANSIENT_NAMES = {
    # aiohttp
    "ClientConnectionError", "ClientPayloadError", "ServerDisconnectedError", "ClientOSError",
    "ServerTimeoutError", "ClientConnectorError", "ContentLengthError", "TransferEncodingError",
    "ConnectionTimeoutError", "SocketTimeoutError",
    # botocore / aiobotocore
    "EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError", "ConnectTimeoutError",
    "IncompleteReadError", "ResponseStreamingError", "HTTPClientError", "ProxyConnectionError",
    # http.client / urllib3 / requests
    "IncompleteRead", "RemoteDisconnected", "ChunkedEncodingError", "ProtocolError",
    # fsspec
    "FSTimeoutError",
}
#: S3 / GCS error codes worth retrying
_TRANSIENT_CODES = {
    "SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "RequestTimeoutException",
    "Throttling", "ThrottlingException", "RequestThrottled", "TooManyRequestsException",
    "500", "502", "503", "504",
}
_TRANSIENT_ERRNOS = {
    errno.ECONNRESET, errno.ECONNABORTED, errno.ECONNREFUSED, errno.ETIMEDOUT, errno.EPIPE,
    errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETRESET, errno.EAGAIN, errno.EBUSY,
    getattr(errno, "EREMOTEIO", 121),
}
_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def _chain(exc: BaseException, depth: int = 6) -> Iterator[BaseException]:
    """`exc` and the exceptions it was raised from."""
    seen = set()
    e: BaseException | None = exc
    while e is not None and depth and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__
        depth -= 1


def _status(exc: BaseException) -> int | None:
    """The HTTP status an exception carries, if any."""
    for attr in ("status", "status_code", "code"):
        value = getattr(exc, attr, None)
        if isinstance(value, int) and 100 <= value < 600:
            return value
    response = getattr(exc, "response", None)
    if isinstance(response, dict):  # botocore ClientError
        value = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(value, int):
            return value
    elif response is not None:  # requests HTTPError
        value = getattr(response, "status_code", None)
        if isinstance(value, int):
            return value
    return None


def _error_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return response.get("Error", {}).get("Code")
    return None


def is_transient(exc: BaseException) -> bool:
    """Whether a storage failure is worth retrying (network trouble, 5xx, throttling)."""
    for e in _chain(exc):
        if isinstance(e, _PERMANENT):
            return False
        if isinstance(e, (TimeoutError, asyncio.TimeoutError, ConnectionError)):
            return True
        if {c.__name__ for c in type(e).__mro__} & _TRANSIENT_NAMES:
            return True
        status = _status(e)
        if status is not None:
            return status >= 500 or status in _RETRY_STATUSES
        if _error_code(e) in _TRANSIENT_CODES:
            return True
        if isinstance(e, OSError) and e.errno in _TRANSIENT_ERRNOS:
            return True
    return False


def _out_of_range(exc: BaseException) -> bool:
    """Whether a failure says the range starts past the end of the file (HTTP 416)."""
    for e in _chain(exc):
        if _status(e) == 416 or _error_code(e) == "InvalidRange":
            return True
    return False


def _describe(exc: BaseException | None) -> str:
    if exc is None:  # no attempt failed (a retry loop that never ran)
        return "no attempt was made"
    text = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text


#: fsspec filesystems this process inherited through a fork: kept alive, never closed here
_INHERITED: list[Any] = []


def _disarm(filesystems: Iterable[Any]) -> None:
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
        _disarm(found)
    except Exception:  # pragma: no cover - never fail a fork over this
        pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _Short(Exception):
    """A range came back shorter than the file allows (retried like a dropped connection)."""


class FsspecSource(Source):
    """A file on any fsspec filesystem, read by planned byte ranges.

    Parameters
    ----------
    url_or_path : str
        A URL (``s3://bucket/key``, ``gs://...``, ``https://...``), or a path
        on `fs`.
    fs : fsspec.AbstractFileSystem, optional
        The filesystem `url_or_path` lives on; by default it is worked out from
        the URL with ``fsspec.core.url_to_fs`` and `storage_options`.
    header_block : int
        Bytes of the speculative first read (256 KiB): enough for the header,
        the offset tables and often the first frames, in one request.
    walk_block : int
        Bytes read at once by the walk over item headers (4 MiB).
    merge_gap, request_size, batch_bytes : int
        The `FetchPolicy`: merge neighbouring frames into one request when at
        most `merge_gap` unwanted bytes lie between them (8 KiB), into requests
        of at most `request_size` (4 MiB), in batches of `batch_bytes` (8 MiB).
    concurrency : int
        Requests in flight at once (16).
    tries : int
        Attempts per range before giving up (5; 2 on filesystems that retry
        by themselves, such as s3fs and gcsfs).
    backoff : float
        Seconds before the first retry; doubled each time, with jitter.
    request_timeout : float, optional
        Seconds one request may take before it is abandoned and retried
        (async filesystems only). Default: 30 s plus 1 s per MiB asked for.
    **storage_options
        Passed to fsspec (e.g. ``anon=True``, ``key=``, ``client_kwargs=``).

    The source pickles as its URL, options and settings, and reconnects lazily
    where it is unpickled (e.g. on a Dask worker) or after a fork.
    """

    header_block = 256 * KiB
    walk_block = 4 * MiB

    def __init__(
        self,
        url_or_path: str,
        fs: AbstractFileSystem | None = None,
        *,
        header_block: int | None = None,
        walk_block: int | None = None,
        merge_gap: int = 8 * KiB,
        request_size: int = 4 * MiB,
        batch_bytes: int = 8 * MiB,
        concurrency: int = 16,
        tries: int | None = None,
        backoff: float = 0.2,
        request_timeout: float | None = None,
        **storage_options: Any,
    ) -> None:
        super().__init__()
        if fs is not None and storage_options:
            raise TypeError(
                f"storage options {sorted(storage_options)} apply to URLs; "
                "a filesystem given with the path already carries its own"
            )
        self.url = os.fspath(url_or_path)
        self.storage_options = dict(storage_options)
        self.header_block = int(header_block or type(self).header_block)
        self.walk_block = int(walk_block or type(self).walk_block)
        self.merge_gap = int(merge_gap)
        self.request_size = int(request_size)
        self.batch_bytes = int(batch_bytes)
        self.concurrency = max(1, int(concurrency))
        self._tries = tries
        self.backoff = float(backoff)
        self.request_timeout = request_timeout
        self._given_fs = fs
        self._fs = None
        self._path: str | None = None
        self._pid = -1
        self._lock = threading.Lock()
        self._closed = False
        self.size = None
        #: the first bytes of the file, once read (reads inside them cost nothing)
        self._head = b""
        # Room for the file's first bytes, which read_ranges keeps in the block cache.
        self.block_cache.reserve(self.header_block)
        #: retries made so far (attempts beyond the first of each range)
        self.retries = 0
        self.name = self.url
        if fs is not None:
            try:
                self.name = fs.unstrip_protocol(self.url)
            except Exception:  # pragma: no cover - unusual filesystems
                self.name = self.url
        self._connect()

    # -- the filesystem, (re)connected lazily ---------------------------------------------
    def _connect(self) -> None:
        if self._pid not in (-1, os.getpid()):
            _disarm([self._fs, self._given_fs])  # the parent's: never close them here
        if self._given_fs is not None:
            fs = self._given_fs
            if self._pid not in (-1, os.getpid()):
                # After a fork an async filesystem's event loop belongs to the
                # parent: make a new instance from the same arguments.
                fs = type(fs)(*getattr(fs, "storage_args", ()), **getattr(fs, "storage_options", {}))
                self._given_fs = fs
            self._fs, self._path = fs, self.url
        else:
            from fsspec.core import url_to_fs

            try:
                self._fs, self._path = url_to_fs(self.url, **self.storage_options)
            except ImportError as exc:
                raise StorageError(
                    f"no filesystem for this URL: {exc}", path=self.url,
                    hint="install the fsspec backend it needs: s3fs, gcsfs, adlfs, or aiohttp for HTTP",
                ) from exc
            except (ValueError, TypeError) as exc:
                raise StorageError(f"cannot open: {exc}", path=self.url) from exc
        self._pid = os.getpid()

    @property
    def fs(self):
        """The fsspec filesystem (made anew after unpickling or a fork)."""
        if self._fs is None or self._pid != os.getpid():
            with self._lock:
                if self._fs is None or self._pid != os.getpid():
                    self._connect()
        return self._fs

    @property
    def path(self) -> str:
        self.fs  # noqa: B018 - connects
        return self._path  # type: ignore[return-value]

    @property
    def tries(self) -> int:
        if self._tries is not None:
            return max(1, int(self._tries))
        # s3fs and gcsfs retry by themselves: do not multiply their attempts.
        own = getattr(self.fs, "retries", None)
        return 2 if isinstance(own, int) and own > 1 else 5

    def fetch_policy(self) -> FetchPolicy:
        return FetchPolicy(
            max_gap=self.merge_gap, max_request=self.request_size,
            batch_bytes=self.batch_bytes, max_frames=4096, first_batch_bytes=None,
        )

    # -- reads -----------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> bytes:
        """Up to `size` bytes at `offset`; fewer only at the end of the file."""
        return self.read_ranges([(offset, size)])[0]

    def read_ranges(self, ranges: Sequence[Range]) -> list[bytes]:
        """The bytes of several ranges, requested concurrently (each short only at the end)."""
        if not ranges:
            return []
        if self._closed:
            raise StorageError("read from a closed source", path=self.name)
        size = self.size
        ranges = [(o, max(0, min(n, size - o)) if size is not None else max(0, n)) for o, n in ranges]
        out = [b""] * len(ranges)
        head = self._head
        todo = []
        for k, (o, n) in enumerate(ranges):
            if n <= 0:
                continue
            if o + n <= len(head):  # inside the first read: no request
                out[k] = head[o : o + n]
            else:
                todo.append(k)
        if not todo:
            return out
        start = time.perf_counter()
        try:
            got = self._run([ranges[k] for k in todo])
        finally:
            self.stats.add(0, 0, time.perf_counter() - start)
        for k, data in zip(todo, got):
            out[k] = data
            if ranges[k][0] == 0 and len(data) > len(self._head):
                # Keep the start of the file: header parsing (and layers above
                # it, e.g. reading functional groups) re-read pieces of it.
                self._head = data[: self.header_block]
                self.block_cache.add(0, self._head)
        return out

    def read_exact(self, offset: int, size: int, *, frame: int | None = None) -> bytes:
        try:
            return super().read_exact(offset, size, frame=frame)
        except StorageError as exc:
            if frame is None or exc.frame is not None:
                raise
            raise exc.with_frame(frame) from exc

    def _read(self, offset: int, size: int) -> bytes:
        return self._run([(offset, size)])[0]

    def _read_many(self, ranges: Sequence[Range]) -> list[bytes]:
        return self._run(ranges)

    def _run(self, ranges: Sequence[Range]) -> list[bytes]:
        fs = self.fs
        if getattr(fs, "async_impl", False) and not getattr(fs, "asynchronous", False):
            from fsspec.asyn import sync

            return sync(fs.loop, self._gather, fs, list(ranges))
        if len(ranges) == 1 or self.concurrency == 1:
            return [self._fetch_sync(fs, o, n) for o, n in ranges]
        with ThreadPoolExecutor(min(self.concurrency, len(ranges)), thread_name_prefix="dicomframes-io") as pool:
            return list(pool.map(lambda r: self._fetch_sync(fs, *r), ranges))

    # -- one range, with retries ------------------------------------------------------------
    def _timeout(self, n: int) -> float:
        if self.request_timeout is not None:
            return float(self.request_timeout)
        return 30.0 + n / MiB

    def _delay(self, attempt: int) -> float:
        """Seconds to wait before retry `attempt` (1, 2, ...): exponential, jittered."""
        return min(10.0, self.backoff * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)

    def _fail(self, offset: int, n: int, message: str, cause: BaseException | None, hint: str | None = None) -> StorageError:
        err = StorageError(
            f"bytes {offset}..{offset + n - 1} ({n} bytes): {message}",
            path=self.name, offset=offset, hint=hint, byte_range=(offset, n),
        )
        err.__cause__ = cause
        return err

    def _permanent(self, offset: int, n: int, exc: BaseException) -> StorageError:
        if isinstance(exc, FileNotFoundError):
            return self._fail(offset, n, f"no such file ({_describe(exc)})", exc)
        if isinstance(exc, PermissionError):
            return self._fail(offset, n, f"access denied ({_describe(exc)})", exc,
                              hint="check the credentials, or pass anon=True for a public bucket")
        return self._fail(offset, n, _describe(exc), exc)

    def _judge(self, offset: int, n: int, data: bytes, size: int | None) -> bytes:
        """`data` if it is the whole range (or all the file holds of it); else raise `_Short`."""
        expected = n if size is None else max(0, min(n, size - offset))
        if len(data) == expected:
            return data
        if len(data) > expected:
            raise self._fail(
                offset, n, f"the server sent {len(data)} bytes for a {n}-byte range", None,
                hint="the server ignores HTTP Range requests; serve the file from one that honours them",
            )
        raise _Short(f"got {len(data)} of {expected} bytes")

    async def _size_async(self, fs) -> int | None:
        if self.size is None:
            self.stats.add(1, 0, 0)
            info = await fs._info(self._path)
            self.size = info.get("size")
        return self.size

    def _size_sync(self, fs) -> int | None:
        if self.size is None:
            self.stats.add(1, 0, 0)
            self.size = fs.info(self._path).get("size")
        return self.size

    async def _gather(self, fs, ranges: list[Range]) -> list[bytes]:
        limit = asyncio.Semaphore(self.concurrency)

        async def one(o: int, n: int) -> bytes:
            async with limit:
                return await self._fetch_async(fs, o, n)

        tasks = [asyncio.ensure_future(one(o, n)) for o, n in ranges]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    # One retry policy, two drivers: `_retrying` decides, as a generator that
    # asks for an action (sleep, one range read, the file size) and is sent its
    # outcome as (True, value) or (False, exception); the drivers below do the
    # I/O synchronously or on the event loop.
    def _retrying(self, offset: int, n: int):
        last: BaseException | None = None
        for attempt in range(self.tries):
            if attempt:
                self.retries += 1
                yield "sleep", self._delay(attempt)
            ok, data = yield "read", None
            if not ok:
                exc = data
                self.stats.add(1, 0, 0)
                if _out_of_range(exc):
                    ok, size = yield "size", None
                    if not ok:
                        last = size
                        continue
                    if size is not None and offset >= size:
                        return b""
                if not is_transient(exc):
                    raise self._permanent(offset, n, exc) from exc
                last = exc
                continue
            self.stats.add(1, len(data), 0)
            size = self.size
            if len(data) < n and size is None:
                ok, size = yield "size", None
                if not ok:  # the size lookup failed
                    if not is_transient(size):
                        raise self._permanent(offset, n, size) from size
                    last = size
                    continue
                if size is None:  # the server will not say: take it as the end
                    return data
            try:
                return self._judge(offset, n, data, size)
            except _Short as exc:
                last = exc
        raise self._fail(offset, n, f"failed after {self.tries} tries: {_describe(last)}", last)

    async def _fetch_async(self, fs, offset: int, n: int) -> bytes:
        policy = self._retrying(offset, n)
        reply = None
        while True:
            try:
                action, arg = policy.send(reply)
            except StopIteration as done:
                return done.value
            reply = None
            try:
                if action == "sleep":
                    await asyncio.sleep(arg)
                elif action == "read":
                    read = fs._cat_file(self._path, start=offset, end=offset + n)
                    reply = (True, await asyncio.wait_for(read, self._timeout(n)))
                else:
                    reply = (True, await self._size_async(fs))
            except Exception as exc:  # CancelledError is not an Exception: it propagates
                reply = (False, exc)

    def _fetch_sync(self, fs, offset: int, n: int) -> bytes:
        policy = self._retrying(offset, n)
        reply = None
        while True:
            try:
                action, arg = policy.send(reply)
            except StopIteration as done:
                return done.value
            reply = None
            try:
                if action == "sleep":
                    time.sleep(arg)
                elif action == "read":
                    reply = (True, fs.cat_file(self._path, start=offset, end=offset + n))
                else:
                    reply = (True, self._size_sync(fs))
            except Exception as exc:
                reply = (False, exc)

    # -- lifetime --------------------------------------------------------------------------
    def close(self) -> None:
        # The filesystem instance (and its connection pool) is fsspec's, shared.
        self._closed = True

    def _settings(self) -> dict[str, Any]:
        return {
            "header_block": self.header_block, "walk_block": self.walk_block,
            "merge_gap": self.merge_gap, "request_size": self.request_size,
            "batch_bytes": self.batch_bytes, "concurrency": self.concurrency,
            "tries": self._tries, "backoff": self.backoff, "request_timeout": self.request_timeout,
        }

    def reopen(self) -> "FsspecSource":
        fs = self._given_fs
        new = FsspecSource(self.url, fs, **self._settings(), **({} if fs is not None else self.storage_options))
        new.size = self.size
        return new

    def __getstate__(self):
        return {
            "url": self.url, "fs": self._given_fs, "storage_options": self.storage_options,
            "settings": self._settings(), "size": self.size,
        }

    def __setstate__(self, state):
        Source.__init__(self)
        self.url = state["url"]
        self.storage_options = state["storage_options"]
        settings = state["settings"]
        for key in ("header_block", "walk_block", "merge_gap", "request_size", "batch_bytes",
                    "concurrency", "backoff", "request_timeout"):
            setattr(self, key, settings[key])
        self._tries = settings["tries"]
        self._given_fs = state["fs"]
        self._fs = None  # connect lazily, where we land
        self._path = None
        self._pid = -1
        self._lock = threading.Lock()
        self._closed = False
        self.size = state["size"]
        self._head = b""
        self.block_cache.reserve(self.header_block)  # Source.__init__ made it, empty
        self.retries = 0
        self.name = self.url
        if self._given_fs is not None:
            try:
                self.name = self._given_fs.unstrip_protocol(self.url)
            except Exception:  # pragma: no cover
                pass

    def __repr__(self) -> str:
        return f"<FsspecSource {self.name!r}>"
