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
of times and within a time budget per read (`timeout`, 30 s); each retry is
logged at INFO on the ``dicomframes`` logger. Then a `StorageError` names the
URL and the byte range (and, raised through the frame index or the fetcher, the
frame) and says what was tried ("no answer from host:port in 30 s after 5
tries"). A host that refuses the connection or whose name does not resolve is
not retried: that fails at once. A range that comes back short before the end
of the file is retried, then an error: never a partial frame.

Storage options are checked before any I/O against the parameters the
filesystem class takes (a typo gets the close matches), and an object-store URL
without a bucket or key is refused with one line.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Sequence
from urllib.parse import urlsplit

from dicomframes.errors import StorageError
from dicomframes.io.failures import _Short, describe, is_timeout, is_transient, out_of_range, unreachable
from dicomframes.io.forks import disarm
from dicomframes.io.policy import FetchPolicy
from dicomframes.io.source import Range, Source
from dicomframes.io.storage_options import check_storage_options, check_url

if TYPE_CHECKING:  # pragma: no cover
    from fsspec.spec import AbstractFileSystem

KiB, MiB = 1 << 10, 1 << 20

#: retries are logged here at INFO (a child of the ``dicomframes`` logger)
log = logging.getLogger(__name__)

#: seconds one read may take in all, its retries included (`FsspecSource` ``timeout=``)
DEFAULT_TIMEOUT = 30.0

#: FsspecSource's own keyword options (offered as close matches of a mistyped storage option)
_OWN_OPTIONS = (
    "fs", "header_block", "walk_block", "merge_gap", "request_size", "batch_bytes", "concurrency",
    "tries", "backoff", "timeout", "request_timeout",
)




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
        by themselves, such as s3fs and gcsfs). A refused connection or a host
        name that does not resolve is not retried.
    backoff : float
        Seconds before the first retry; doubled each time, with jitter.
    timeout : float
        Seconds one read may take in all, its retries and their waits
        included (30): a server that accepts the connection and never answers
        fails after this long, with a `StorageError` that says how many tries
        were made. Raise it on slow links: it bounds the transfer too.
    request_timeout : float, optional
        Seconds one attempt may take before it is abandoned and retried
        (async filesystems, such as HTTP and S3, only; never more than what is
        left of `timeout`). Default: `timeout` divided by `tries`, plus 1 s per
        MiB asked for.
    **storage_options
        Passed to fsspec (e.g. ``anon=True``, ``key=``, ``client_kwargs=``),
        and checked first: an option the filesystem does not take is refused
        with a `StorageError` naming the close matches. On S3 (s3fs), unless
        given in ``config_kwargs``, botocore's own retries are turned off (this
        source retries) and its ``connect_timeout`` and ``read_timeout`` are
        those of one attempt.

    The source pickles as its URL, options and settings, and reconnects lazily
    where it is unpickled (e.g. on a Dask worker) or after a fork.
    """

    header_block = 256 * KiB
    walk_block = 4 * MiB
    remote = True

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
        timeout: float | None = None,
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
        self.timeout = DEFAULT_TIMEOUT if timeout is None else float(timeout)
        if not self.timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        if request_timeout is not None and not float(request_timeout) > 0:
            raise ValueError(f"request_timeout must be a positive number of seconds, not {request_timeout!r}")
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
            disarm([self._fs, self._given_fs])  # the parent's: never close them here
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

            check_url(self.url)
            check_storage_options(self.url, self.storage_options, own=_OWN_OPTIONS)
            try:
                self._fs, self._path = url_to_fs(self.url, **self._fs_options())
            except ImportError as exc:
                raise StorageError(
                    f"no filesystem for this URL: {exc}", path=self.url,
                    hint="install the fsspec backend it needs: s3fs, gcsfs, adlfs, or aiohttp for HTTP",
                ) from exc
            except (ValueError, TypeError) as exc:
                raise StorageError(f"cannot open: {exc}", path=self.url) from exc
        self._pid = os.getpid()

    def _fs_options(self) -> dict[str, Any]:
        """The storage options given, with this source's defaults for S3 (s3fs):
        botocore's retries off and its timeouts those of one attempt, so that
        a refused endpoint fails at once and a stalled one within `timeout`."""
        options = dict(self.storage_options)
        protocol = self.url.partition("://")[0].lower() if "://" in self.url and "::" not in self.url else ""
        if protocol not in ("s3", "s3a"):
            return options
        given = options.get("config_kwargs")
        config = dict(given) if isinstance(given, dict) else {}
        if given is not None and not isinstance(given, dict):
            return options  # not ours to judge: s3fs will say
        attempt = float(self.request_timeout) if self.request_timeout is not None else self.timeout / self._tries_for(None)
        config.setdefault("retries", {"total_max_attempts": 1})
        config.setdefault("connect_timeout", attempt)
        config.setdefault("read_timeout", attempt)
        options["config_kwargs"] = config
        return options

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
        return self._tries_for(self.fs)

    def _tries_for(self, fs: Any) -> int:
        """Attempts per range on `fs` (or, for None, on the class the URL names)."""
        if self._tries is not None:
            return max(1, int(self._tries))
        if fs is None:
            try:
                from fsspec import get_filesystem_class

                fs = get_filesystem_class(self.url.partition("://")[0] if "://" in self.url else "file")
            except (ImportError, ValueError):
                return 5
        # s3fs and gcsfs retry by themselves: do not multiply their attempts.
        own = getattr(fs, "retries", None)
        return 2 if isinstance(own, int) and own > 1 else 5

    def fetch_policy(self) -> FetchPolicy:
        return FetchPolicy(
            max_gap=self.merge_gap, max_request=self.request_size,
            batch_bytes=self.batch_bytes, max_frames=4096, first_batch_bytes=None,
            concurrency=self.concurrency,
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
        """Seconds one attempt at `n` bytes may take (before the deadline caps it)."""
        if self.request_timeout is not None:
            return float(self.request_timeout)
        return self.timeout / self.tries + n / MiB

    def _endpoint(self) -> str:
        """Where the requests go, as ``host:port`` where the URL or options say."""
        fs = self._fs if self._fs is not None else self._given_fs
        target = None
        for options in (
            self.storage_options, self.storage_options.get("client_kwargs"),
            {"endpoint_url": getattr(fs, "endpoint_url", None)}, getattr(fs, "client_kwargs", None),
        ):
            if isinstance(options, dict) and isinstance(options.get("endpoint_url"), str):
                target = options["endpoint_url"]
                break
        parts = urlsplit(target or self.name)
        if parts.scheme in ("http", "https") and parts.hostname:
            try:
                port = parts.port
            except ValueError:
                port = None
            return f"{parts.hostname}:{port or (443 if parts.scheme == 'https' else 80)}"
        return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else self.name

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
        why = unreachable(exc)
        if why is not None:
            kind, where = why
            where = where or self._endpoint()
            s3 = self.url.startswith(("s3://", "s3a://"))
            check = "the endpoint_url" if s3 else "the host and port in the URL"
            if kind == "refused":
                return self._fail(offset, n, f"connection refused by {where} (not retried)", exc,
                                  hint=f"nothing listens there: check {check}, and that the server runs")
            host = where.rsplit(":", 1)[0] if ":" in where and not where.endswith("]") else where
            return self._fail(offset, n, f"cannot resolve the host name {host!r} (not retried)", exc,
                              hint=f"check {check}, and the network's name service")
        if isinstance(exc, FileNotFoundError):
            return self._fail(offset, n, f"no such file ({describe(exc)})", exc)
        if isinstance(exc, PermissionError):
            return self._fail(offset, n, f"access denied ({describe(exc)})", exc,
                              hint="check the credentials, or pass anon=True for a public bucket")
        return self._fail(offset, n, describe(exc), exc)

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
        raise _Short(f"short read: got {len(data)} of {expected} bytes")

    def find_size(self) -> int | None:
        if self.size is None:
            fs = self.fs
            try:
                if getattr(fs, "async_impl", False) and not getattr(fs, "asynchronous", False):
                    from fsspec.asyn import sync

                    sync(fs.loop, asyncio.wait_for, self._size_async(fs), self._timeout(0))
                else:
                    self._size_sync(fs)
            except Exception as exc:  # the reads that need the size will say what is wrong
                log.debug("%s: size unknown: %s", self.name, describe(exc))
        return self.size

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
    #
    # Each action comes with the seconds it may take (what is left of the
    # read's `timeout`, and for a range read at most one attempt's time).
    def _retrying(self, offset: int, n: int):
        tries = self.tries
        start = time.monotonic()
        deadline = start + self.timeout
        last: BaseException | None = None
        tried = 0
        for attempt in range(tries):
            if attempt:
                delay = self._delay(attempt)
                if time.monotonic() + delay >= deadline:
                    break  # no time left for another try
                self.retries += 1
                log.info(
                    "retrying %s bytes %d..%d (attempt %d of %d) in %.2f s: %s",
                    self.name, offset, offset + n - 1, attempt + 1, tries, delay, describe(last),
                )
                yield "sleep", delay
            left = deadline - time.monotonic()
            if left <= 0:
                break
            tried += 1
            ok, data = yield "read", min(self._timeout(n), left)
            if not ok:
                exc = data
                self.stats.add(1, 0, 0)
                if out_of_range(exc):
                    ok, size = yield "size", max(0.001, deadline - time.monotonic())
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
                ok, size = yield "size", max(0.001, deadline - time.monotonic())
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
        raise self._exhausted(offset, n, tried, time.monotonic() - start, last)

    def _exhausted(self, offset: int, n: int, tried: int, elapsed: float, last: BaseException | None) -> StorageError:
        """The error once the tries or the time are spent: what was tried, for how long."""
        tries = f"{tried} {'try' if tried == 1 else 'tries'}"
        seconds = f"{elapsed:.0f}" if elapsed >= 10 else f"{elapsed:.1f}"
        if last is not None and is_timeout(last):
            return self._fail(
                offset, n, f"no answer from {self._endpoint()} in {seconds} s after {tries} (timeout={self.timeout:g} s)",
                last, hint="the server accepts connections but does not answer; on a slow link, raise timeout=",
            )
        return self._fail(offset, n, f"failed after {tries} in {seconds} s: {describe(last)}", last)

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
                    reply = (True, await asyncio.wait_for(read, arg))
                else:
                    reply = (True, await asyncio.wait_for(self._size_async(fs), arg))
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
            "tries": self._tries, "backoff": self.backoff, "timeout": self.timeout,
            "request_timeout": self.request_timeout,
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
        self.timeout = settings.get("timeout", DEFAULT_TIMEOUT)
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
