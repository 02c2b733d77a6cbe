"""ASGI middleware around the app: the bearer token (and a browser's sign-in), access logs as JSON lines."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import sys
import time
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from starlette.responses import Response


class Token:
    """ASGI middleware: requests must carry ``Authorization: Bearer <token>``
    (the health and readiness endpoints excepted, for load balancers).

    A browser cannot add that header to a page or its images, so a link with
    ``?token=<token>`` (as ``serve`` prints) signs it in: the answer is a redirect
    to the same URL without it, setting an HttpOnly, SameSite=Strict cookie that
    stands for the token in GET and HEAD requests from then on. Other methods
    (the admin endpoint) need the header: a cookie a browser sends by itself
    must not be able to change anything.
    """

    COOKIE = "dicomframes_token"

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.token = token.encode()
        self.expected = b"Bearer " + self.token
        # the cookie holds a digest of the token, not the token: a cookie jar leaks less
        self.cookie = hmac.new(self.token, b"dicomframes browser sign-in", hashlib.sha256).hexdigest().encode()

    async def __call__(self, scope, receive, send):
        # A CORS preflight carries no credentials by the standard: the CORS middleware answers it.
        if scope["type"] != "http" or scope.get("path") in ("/health", "/ready") or scope.get("method") == "OPTIONS":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if hmac.compare_digest(headers.get(b"authorization", b""), self.expected):
            await self.app(scope, receive, send)
            return
        reading = scope.get("method") in ("GET", "HEAD")
        if reading and hmac.compare_digest(_cookie(headers.get(b"cookie", b""), self.COOKIE), self.cookie):
            await self.app(scope, receive, send)
            return
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        given = [v for k, v in query if k == "token"]
        if reading and given and hmac.compare_digest(given[0].encode(), self.token):
            rest = urlencode([(k, v) for k, v in query if k != "token"])
            location = quote(scope.get("root_path", "") + scope["path"]) + (f"?{rest}" if rest else "")
            response = Response(status_code=303, headers={
                "Location": location, "Cache-Control": "no-store",
                "Set-Cookie": f"{self.COOKIE}={self.cookie.decode()}; Path=/; HttpOnly; SameSite=Strict",
            })
        else:
            response = Response("a bearer token is needed (or, in a browser, the link with ?token= that serve "
                                "printed)\n", status_code=401, media_type="text/plain",
                                headers={"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)


class _HideToken(logging.Filter):
    """Keeps the sign-in link's token out of uvicorn's access log lines."""

    _TOKEN = re.compile(r"((?:^|[?&])token=)[^&\s]*")

    @classmethod
    def mask(cls, text: str) -> str:
        return cls._TOKEN.sub(r"\1***", text)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self.mask(a) if isinstance(a, str) else a for a in record.args)
        return True


def _cookie(header: bytes, name: str) -> bytes:
    """The value of cookie `name` in a Cookie header, or b""."""
    for part in header.split(b";"):
        key, _, value = part.strip().partition(b"=")
        if key == name.encode():
            return value
    return b""


def hide_token(logger: logging.Logger) -> None:
    """Mask ``token=`` in the lines `logger` writes (uvicorn's access log)."""
    if not any(isinstance(f, _HideToken) for f in logger.filters):
        logger.addFilter(_HideToken())


ACCESS = logging.getLogger("dicomframes.access")


class AccessLog:
    """ASGI middleware: one JSON object per request on the ``dicomframes.access``
    logger: time (UTC), client, method, path, query (a token masked), status,
    bytes of body sent and milliseconds until the last of them."""

    def __init__(self, app: Any) -> None:
        self.app = app
        if ACCESS.level == logging.NOTSET:  # asked for: not dropped by the root logger's WARNING
            ACCESS.setLevel(logging.INFO)
        if not ACCESS.handlers:  # a program that configured it keeps its own
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(message)s"))
            ACCESS.addHandler(handler)
            ACCESS.propagate = False

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        seen = {"status": 500, "bytes": 0}

        async def counting(message):
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
            elif message["type"] == "http.response.body":
                seen["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, counting)
        finally:
            client = scope.get("client")
            ACCESS.info(json.dumps({
                "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                "client": client[0] if client else None, "method": scope.get("method"), "path": scope.get("path"),
                "query": _HideToken.mask(scope.get("query_string", b"").decode("latin-1")),
                "status": seen["status"], "bytes": seen["bytes"],
                "ms": round((time.perf_counter() - started) * 1000, 2),
            }, ensure_ascii=False))
