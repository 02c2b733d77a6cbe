"""Which storage failures are worth retrying, and how to say what went wrong.

Transient: connections reset or dropped mid-body, timeouts, HTTP 5xx and
throttling (aiohttp, botocore, requests and fsspec name them differently; the
whole exception chain is read). Permanent: missing files, permissions, a host
that refuses the connection or whose name does not resolve.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from typing import Iterator

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
    errno.ECONNRESET, errno.ECONNABORTED, errno.ETIMEDOUT, errno.EPIPE,
    errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETRESET, errno.EAGAIN, errno.EBUSY,
    getattr(errno, "EREMOTEIO", 121),
}
_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
#: exception class names (anywhere in the MRO) that mean "no answer in time"
_TIMEOUT_NAMES = {
    "ServerTimeoutError", "ConnectionTimeoutError", "SocketTimeoutError", "ReadTimeoutError",
    "ConnectTimeoutError", "FSTimeoutError", "ReadTimeout", "ConnectTimeout",
}


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


def unreachable(exc: BaseException) -> tuple[str, str | None] | None:
    """``("refused" | "dns", "host:port" or None)`` where the host refused the
    connection or its name did not resolve (anywhere in the chain: aiohttp's
    ClientConnectorError and botocore's EndpointConnectionError wrap both, and
    resets too, which are told apart by the OSError underneath); else None."""
    where = None
    for e in _chain(exc, 10):
        host, port = getattr(e, "host", None), getattr(e, "port", None)
        if where is None and isinstance(host, str) and host and isinstance(port, int):
            where = f"{host}:{port}"  # aiohttp's ClientConnectorError knows where it went
        if isinstance(e, socket.gaierror) or type(e).__name__ == "ClientConnectorDNSError":
            return "dns", where
        if isinstance(e, ConnectionRefusedError) or (isinstance(e, OSError) and e.errno == errno.ECONNREFUSED):
            return "refused", where
    return None


def is_timeout(exc: BaseException) -> bool:
    """Whether a failure is a timeout: the server did not answer in time."""
    for e in _chain(exc):
        if isinstance(e, (TimeoutError, asyncio.TimeoutError, socket.timeout)):
            return True
        if {c.__name__ for c in type(e).__mro__} & _TIMEOUT_NAMES:
            return True
    return False


def is_transient(exc: BaseException) -> bool:
    """Whether a storage failure is worth retrying (network trouble, 5xx, throttling).

    A refused connection and a host name that does not resolve are not: no
    retry within one read would change them.
    """
    if unreachable(exc) is not None:
        return False
    for e in _chain(exc):
        if isinstance(e, _PERMANENT):
            return False
        if isinstance(e, (TimeoutError, asyncio.TimeoutError, ConnectionError)):
            return True
        if {c.__name__ for c in type(e).__mro__} & _TRANSIENT_NAMES:
            return True
        status = _status(e)
        if status is not None:
            return retry_status(status)
        if _error_code(e) in _TRANSIENT_CODES:
            return True
        if isinstance(e, OSError) and e.errno in _TRANSIENT_ERRNOS:
            return True
    return False


def retry_status(status: int) -> bool:
    """Whether an HTTP status is worth retrying: 5xx and throttling."""
    return status >= 500 or status in _RETRY_STATUSES


def out_of_range(exc: BaseException) -> bool:
    """Whether a failure says the range starts past the end of the file (HTTP 416)."""
    for e in _chain(exc):
        if _status(e) == 416 or _error_code(e) == "InvalidRange":
            return True
    return False


def describe(exc: BaseException | None) -> str:
    if exc is None:  # no attempt failed (a retry loop that never ran)
        return "no attempt was made"
    if isinstance(exc, _Short):
        return str(exc)
    text = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text


class _Short(Exception):
    """A range came back shorter than the file allows (retried like a dropped connection)."""
