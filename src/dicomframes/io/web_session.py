"""GET requests to one DICOMweb service, as a storage: kept-alive connections,
headers that may refresh, retries, and errors that say what was tried.

The standard library's ``http.client`` is enough (DICOMweb is plain GETs) and
needs no extra: one connection per thread and host, reused across requests.
Headers are a dict or a callable returning one, called for each request, so
an expiring token refreshes. Connection failures, timeouts, 5xx and
throttling (429, with its ``Retry-After``) are retried with backoff and
jitter within a deadline per request, as byte-range reads of buckets are;
other answers fail at once, quoting the status line and the start of what
the server said. A session pickles as its URL and settings (the headers
too: a callable must pickle) and reconnects where it is unpickled.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlencode, urljoin, urlsplit

from dicomframes.errors import StorageError
from dicomframes.io import failures
from dicomframes.io.multipart import boundary_of, parts
from dicomframes.io.source import SourceStats

Headers = dict[str, str] | Callable[[], dict[str, str]] | None

DEFAULT_TIMEOUT = 30.0
_QUOTED = 300  # characters of a failed answer's body put in the error
_REDIRECTS = 5


class WebSession:
    """GETs under `url` (the service root, such as ``https://host/dicom-web``).

    Parameters: `headers` (a dict, or a callable returning one per request);
    `timeout`, the seconds one request may take in all, retries and waits
    included; `tries`, attempts per request; `backoff`, seconds before the
    first retry (doubled each time, with jitter).
    """

    def __init__(self, url: str, headers: Headers = None, *, timeout: float = DEFAULT_TIMEOUT, tries: int = 4,
                 backoff: float = 0.2) -> None:
        parsed = urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise StorageError("a DICOMweb service is an http:// or https:// URL", path=url)
        self.url = url.rstrip("/")
        self.headers = headers
        self.timeout = float(timeout)
        self.tries = max(1, int(tries))
        self.backoff = float(backoff)
        #: every request this session made (retries included), the bytes of their answers, the seconds
        self.stats = Traffic()
        self._local = threading.local()

    @property
    def requests(self) -> int:
        """Requests sent so far, retries included."""
        return self.stats.requests

    # -- what callers use ------------------------------------------------------------------------
    def get_json(self, path: str, query: dict[str, Any] | list[tuple[str, Any]] | None = None, *,
                 traffic: Traffic | None = None) -> Any:
        """The DICOM JSON at `path` (204 No Content: an empty list); the requests
        are also counted in `traffic` where given (a reader's own count)."""
        status, _, body = self._get(path, "application/dicom+json, application/json", query, self._whole, None,
                                    traffic)
        if status == 204 or not body.strip():
            return []
        try:
            return json.loads(body)
        except ValueError as exc:
            raise StorageError(f"the answer is not JSON: {exc}", path=self.url_of(path, query)) from None

    def get_parts(self, path: str, accept: str, max_part: int = 1 << 31, tries: int | None = None, *,
                  traffic: Traffic | None = None) -> list[tuple[dict[str, str], bytes]]:
        """The parts of the multipart/related answer at `path`, read as a stream (a
        part at a time, each at most `max_part` bytes); a failed or cut answer is
        asked for again, whole, within the deadline (at most `tries` times, if given)."""
        url = self.url_of(path)

        def read_parts(response: _Counted) -> list[tuple[dict[str, str], bytes]]:
            kind = response.getheader("Content-Type") or ""
            if not kind.lower().startswith("multipart/"):
                raise StorageError(f"the answer is {kind or 'of no type'}, not multipart/related", path=url)
            try:
                boundary = boundary_of(kind)
            except ValueError as exc:
                raise StorageError(str(exc), path=url) from None
            return list(parts(response.read, boundary, url, max_part))

        return self._get(path, accept, None, read_parts, tries, traffic)[2]

    # -- the requests ----------------------------------------------------------------------------
    def url_of(self, path: str, query: Any = None) -> str:
        """The URL of `path` under the service root (an absolute URL as it is), with `query`."""
        url = path if path.startswith(("http://", "https://")) else f"{self.url}/{path.lstrip('/')}"
        return f"{url}?{urlencode(query, doseq=True)}" if query else url

    @staticmethod
    def _whole(response: _Counted) -> bytes:
        return response.read()

    def _get(self, path: str, accept: str, query: Any, read: Callable[[_Counted], Any],
             tries: int | None = None, traffic: Traffic | None = None):
        """(status, headers, what `read` made of the answer) of a GET, retried where worth it."""
        url = self.url_of(path, query)
        deadline = time.monotonic() + self.timeout
        last: BaseException | None = None
        said = ""  # what the last failed attempt came to
        tries = self.tries if tries is None else max(1, tries)
        counts = (self.stats,) if traffic is None else (self.stats, traffic)
        for attempt in range(1, tries + 1):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if attempt > 1:
                for count in counts:
                    count.retried()
            try:
                return self._once(url, accept, left, read, counts)
            except _Retry as retry:
                last, said = retry.cause, retry.cause.message
                wait = retry.after if retry.after is not None else self._delay(attempt)
            except (OSError, http.client.HTTPException) as exc:
                self._drop(url)
                if not failures.is_transient(exc) and not isinstance(exc, http.client.HTTPException):
                    raise StorageError(f"GET failed: {failures.describe(exc)}", path=url) from exc
                last, said, wait = exc, failures.describe(exc), self._delay(attempt)
            if attempt == tries or time.monotonic() + wait >= deadline:
                break
            time.sleep(wait)
        if tries == 1 and isinstance(last, StorageError):
            raise last
        raise StorageError(f"GET failed after {attempt} tries in {self.timeout:g} s: {said or 'no time left'}",
                           path=url, hint="raise timeout= or tries= on a slow or busy service") from last

    def _once(self, url: str, accept: str, left: float, read: Callable[[_Counted], Any],
              counts: tuple[Traffic, ...]):
        headers = {"Accept": accept, "User-Agent": "dicomframes", **self._headers()}
        for _ in range(_REDIRECTS + 1):
            connection = self._connection(url, left)
            parsed = urlsplit(url)
            target = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")
            with _Counted(counts) as response:
                connection.request("GET", target, headers=headers)
                response.answer = connection.getresponse()
                answered = self._answer(url, response, read)
            if isinstance(answered, str):  # redirected
                moved = answered
                if urlsplit(moved).netloc != parsed.netloc:  # credentials stay with the host they are for
                    headers = {k: v for k, v in headers.items() if k.lower() not in ("authorization", "cookie")}
                url = moved
                continue
            return answered
        raise StorageError(f"more than {_REDIRECTS} redirects", path=url)

    def _answer(self, url: str, response: _Counted, read: Callable[[_Counted], Any]):
        """(status, headers, what `read` made of it) of an answer; the URL a redirect names."""
        status = response.status
        if status in (301, 302, 303, 307, 308) and response.getheader("Location"):
            response.read()
            return urljoin(url, response.getheader("Location") or "")
        if status in (200, 204, 206):
            try:
                return status, response.headers, read(response)
            except StorageError as exc:  # cut short, or garbled: asked for again
                self._drop(url)
                raise _Retry(exc, None) from None
        body = " ".join(response.read(64 * 1024).decode("utf-8", "replace").split())  # one line
        self._drop(url)
        message = f"HTTP {status} {response.reason}" + (f": {body[:_QUOTED]}" if body else "")
        error = StorageError(message, path=url)
        error.status = status
        if failures.retry_status(status):
            raise _Retry(error, _retry_after(response.getheader("Retry-After")))
        raise error

    def _headers(self) -> dict[str, str]:
        given = self.headers() if callable(self.headers) else self.headers
        return dict(given or {})

    def _delay(self, attempt: int) -> float:
        return min(10.0, self.backoff * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)

    # -- connections: one per thread and host ----------------------------------------------------
    def _connection(self, url: str, timeout: float) -> http.client.HTTPConnection:
        parsed = urlsplit(url)
        pool = getattr(self._local, "pool", None)
        if pool is None or self._local.pid != os.getpid():
            # A forked child inherits the parent's thread-locals: its sockets are the parent's too.
            pool = self._local.pool = {}
            self._local.pid = os.getpid()
        key = (parsed.scheme, parsed.netloc)
        connection = pool.get(key)
        if connection is None:
            if parsed.scheme == "https":
                connection = http.client.HTTPSConnection(parsed.netloc, timeout=timeout,
                                                         context=ssl.create_default_context())
            else:
                connection = http.client.HTTPConnection(parsed.netloc, timeout=timeout)
            pool[key] = connection
        connection.timeout = timeout
        if connection.sock is not None:
            connection.sock.settimeout(timeout)
        return connection

    def _drop(self, url: str) -> None:
        parsed = urlsplit(url)
        pool = getattr(self._local, "pool", None) if getattr(self._local, "pid", None) == os.getpid() else None
        connection = (pool or {}).pop((parsed.scheme, parsed.netloc), None)
        if connection is not None:
            connection.close()

    def close(self) -> None:
        """Close this thread's connections (other threads' close when they end)."""
        if getattr(self._local, "pid", None) == os.getpid():
            for connection in (getattr(self._local, "pool", None) or {}).values():
                connection.close()
        self._local.pool = {}
        self._local.pid = os.getpid()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_local"]
        state["stats"] = Traffic()  # a copy counts its own requests
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"<WebSession {self.url}>"


@dataclass
class Traffic(SourceStats):
    """Requests, bytes of answers and seconds, and the attempts beyond the first (`retries`)."""

    retries: int = 0

    def retried(self) -> None:
        with self._lock:
            self.retries += 1


class _Counted:
    """An answer being read, its bytes and seconds counted in `counts` when it is done with."""

    def __init__(self, counts: tuple[Traffic, ...]) -> None:
        self.counts = counts
        self.answer: http.client.HTTPResponse | None = None
        self.nbytes = 0

    def __enter__(self) -> _Counted:
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        seconds = time.perf_counter() - self.started
        for count in self.counts:
            count.add(1, self.nbytes, seconds)

    @property
    def status(self) -> int:
        assert self.answer is not None
        return self.answer.status

    @property
    def reason(self) -> str:
        assert self.answer is not None
        return self.answer.reason

    @property
    def headers(self) -> Any:
        assert self.answer is not None
        return self.answer.headers

    def getheader(self, name: str) -> str | None:
        assert self.answer is not None
        return self.answer.getheader(name)

    def read(self, n: int | None = None) -> bytes:
        assert self.answer is not None
        data = self.answer.read() if n is None else self.answer.read(n)
        self.nbytes += len(data)
        return data


class _Retry(Exception):  # a signal inside the retry loop, never raised out of it
    def __init__(self, cause: StorageError, after: float | None) -> None:
        self.cause = cause
        self.after = after


def _retry_after(value: str | None) -> float | None:
    try:
        return min(30.0, max(0.0, float(value))) if value else None
    except ValueError:
        return None  # an HTTP date: back off as usual

