"""Real servers on 127.0.0.1 for the remote tests and the remote benchmark.

- `NginxServer`: nginx (the Debian package) serving a directory, Range requests
  honoured, with an access log of ``$request $status $http_range
  $body_bytes_sent`` so tests count requests and bytes from the server's own log.
- `MotoS3Server`: moto's `ThreadedMotoServer`, an S3-compatible server.
- `Proxy`: a small threaded HTTP proxy we control, in front of either. It logs
  every request it answers (method, path, Range, status, body bytes sent) and
  can add latency to each request (benchmarks) or inject faults: connections
  dropped mid-body, connections reset before any response, 503 bursts, stalls,
  ranges answered short.
- `SilentServer`: a socket that accepts connections and never answers (a hung
  endpoint); `free_port` gives a port where nothing listens (refused).

No mocks: every byte the library reads crosses a real socket.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

__all__ = [
    "Request", "NginxServer", "MotoS3Server", "Proxy", "ProxyLog", "ServerProcess", "SilentServer",
    "find_nginx", "free_port",
]

#: GET this path on a proxy for its log as JSON (not itself logged)
LOG_PATH = "/__proxy__/log"


@dataclass(frozen=True)
class Request:
    """One request as a server logged it."""

    method: str
    path: str
    status: int
    range: str | None  # the Range header, or None
    bytes: int  # body bytes sent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port: int, timeout: float = 10.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class _RequestLog:
    """Records that arrive from a server; tests wait until they have settled."""

    def records(self) -> list[Request]:  # pragma: no cover - abstract
        raise NotImplementedError

    def mark(self) -> int:
        """The number of records so far: pass it to `since`."""
        return len(self.settled())

    def settled(self, at_least: int = 0, timeout: float = 10.0, quiet: float = 0.15) -> list[Request]:
        """All records, once at least `at_least` are there and none came for `quiet` s.

        A server may write its log line a moment after the client has the
        response, so counting waits for the log to settle (bounded).
        """
        deadline = time.monotonic() + timeout
        last = -1
        last_change = time.monotonic()
        while True:
            recs = self.records()
            now = time.monotonic()
            if len(recs) != last:
                last, last_change = len(recs), now
            if len(recs) >= at_least and now - last_change >= quiet:
                return recs
            if now > deadline:
                return recs
            time.sleep(0.01)

    def since(self, mark: int, at_least: int = 0) -> list[Request]:
        """The records after `mark` (waiting for at least `at_least` of them)."""
        return self.settled(mark + at_least)[mark:]


# -- nginx ---------------------------------------------------------------------------------

def find_nginx() -> str | None:
    """The nginx binary, or None."""
    found = shutil.which("nginx")
    if found:
        return found
    for candidate in ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


_NGINX_CONF = """\
{user}
worker_processes 2;
daemon off;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    log_format counts '$request $status $http_range $body_bytes_sent';
    access_log {work}/access.log counts;
    client_body_temp_path {work}/client_body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    types {{ application/dicom dcm; }}
    default_type application/octet-stream;
    sendfile on;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ }}
    }}
}}
"""


class NginxServer(_RequestLog):
    """nginx serving `root` on 127.0.0.1, logging each request."""

    def __init__(self, root: str | os.PathLike, work: str | os.PathLike, binary: str | None = None) -> None:
        self.root = Path(root).resolve()
        self.work = Path(work).resolve()
        self.binary = binary or find_nginx()
        if self.binary is None:
            raise RuntimeError("nginx is not installed (Debian: apt-get install nginx-light)")
        self.proc: subprocess.Popen | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def access_log(self) -> Path:
        return self.work / "access.log"

    def start(self) -> "NginxServer":
        self.work.mkdir(parents=True, exist_ok=True)
        user = "user root root;" if hasattr(os, "geteuid") and os.geteuid() == 0 else ""
        for attempt in range(5):
            self.port = free_port()
            conf = self.work / "nginx.conf"
            conf.write_text(_NGINX_CONF.format(user=user, work=self.work, port=self.port, root=self.root))
            self.access_log.write_bytes(b"")
            self.proc = subprocess.Popen(
                [self.binary, "-p", str(self.work), "-c", str(conf)],
                stdout=subprocess.DEVNULL, stderr=open(self.work / "stderr.log", "ab"),
            )
            try:
                _wait_listening(self.port, proc=self.proc)
                return self
            except RuntimeError:
                self.stop()
                if attempt == 4:
                    log = (self.work / "stderr.log").read_text(errors="replace")
                    raise RuntimeError(f"nginx did not start: {log[-2000:]}") from None
        return self  # pragma: no cover

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def records(self) -> list[Request]:
        out = []
        for line in self.access_log.read_text(errors="replace").splitlines():
            # "$request $status $http_range $body_bytes_sent"; $request is "GET /x HTTP/1.1".
            request, status, rng, nbytes = line.rsplit(" ", 3)
            parts = request.split(" ")
            out.append(Request(parts[0], parts[1] if len(parts) > 1 else "", int(status), None if rng == "-" else rng, int(nbytes)))
        return out

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# -- moto (S3) -----------------------------------------------------------------------------

class MotoS3Server:
    """moto's threaded S3-compatible server on 127.0.0.1 (a free port)."""

    key = "testing"
    secret = "testing"
    region = "us-east-1"

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "MotoS3Server":
        import logging

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request on stderr
        self._server.start()
        self.port = self._server.get_host_and_port()[1]
        _wait_listening(self.port)
        return self

    def stop(self) -> None:
        self._server.stop()

    def client(self):
        """A boto3 S3 client talking to the server directly (setup: buckets, uploads)."""
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.url, aws_access_key_id=self.key,
            aws_secret_access_key=self.secret, region_name=self.region,
        )

    def storage_options(self, endpoint: str | None = None) -> dict:
        """s3fs options for the server (or for a proxy in front of it at `endpoint`)."""
        return {
            "key": self.key, "secret": self.secret, "skip_instance_cache": True,
            "client_kwargs": {"endpoint_url": endpoint or self.url, "region_name": self.region},
        }

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# -- the proxy -----------------------------------------------------------------------------

_HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
    "trailers", "trailer", "transfer-encoding", "upgrade", "content-length",
}

#: fault kinds `Proxy.inject` understands:
#: "drop" (send the headers and half the body, then close the connection),
#: "reset" (close the connection before any response), "503" (a 503 response),
#: "stall" (answer nothing for `Proxy.stall_seconds`, then close),
#: "short" (a well-formed 206 response carrying only half the range: a lying server),
#: "norange" (forward without the Range header: a server that ignores Range),
#: "406-any-syntax" (406 for an Accept with transfer-syntax=*: a DICOMweb service that sends
#: frames only in a syntax named)
FAULTS = ("drop", "reset", "503", "stall", "short", "norange", "406-any-syntax")


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's
    # algorithm and delayed ACKs would add ~40 ms to every response.
    disable_nagle_algorithm = True
    server: "_ProxyHTTPServer"

    def log_message(self, format, *args):  # quiet
        pass

    def _upstream(self) -> http.client.HTTPConnection:
        conn = getattr(self, "_conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self.server.owner.upstream_host, self.server.owner.upstream_port, timeout=60)
            self._conn = conn
        return conn

    def _handle(self) -> None:
        owner = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path == LOG_PATH and self.command == "GET":  # the log, for other processes
            payload = json.dumps([dataclasses.astuple(r) for r in owner.records()]).encode()
            self.send_response_only(200, "OK")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            self.wfile.flush()
            return
        rng = self.headers.get("Range")
        fault = owner._next_fault()
        if owner.delay:
            time.sleep(owner.delay)
        if fault == "reset":
            owner._record(Request(self.command, self.path, 0, rng, 0))
            self._abort()
            return
        if fault == "stall":
            owner._record(Request(self.command, self.path, 0, rng, 0))
            owner._stop_event.wait(owner.stall_seconds)
            self._abort()
            return
        if fault == "406-any-syntax" and "transfer-syntax=*" in (self.headers.get("Accept") or ""):
            # a DICOMweb service that will not choose the syntax itself (PS3.18 lets it refuse "*")
            self._refuse(406, "Not Acceptable", "text/plain", b"transfer-syntax=* is not supported here", rng)
            return
        if fault == "503":
            self._refuse(503, "Service Unavailable", "application/xml",
                         b"<Error><Code>SlowDown</Code><Message>injected 503</Message></Error>", rng)
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        if fault == "norange":
            headers = {k: v for k, v in headers.items() if k.lower() != "range"}
        for attempt in range(2):
            conn = self._upstream()
            try:
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                break
            except (http.client.HTTPException, OSError):
                conn.close()
                self._conn = None
                if attempt:
                    raise
        send = data if self.command != "HEAD" else b""
        if fault == "drop":
            send = send[: len(send) // 2]
        elif fault == "short" and resp.status == 206:
            data = send = send[: len(send) // 2]
        owner._record(Request(self.command, self.path, resp.status, rng, len(send)))
        self.send_response_only(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in _HOP_BY_HOP:
                self.send_header(k, v)
        if self.command == "HEAD":
            self.send_header("Content-Length", resp.getheader("Content-Length") or "0")
        else:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(send)
        self.wfile.flush()
        if fault == "drop":
            self._abort()

    def _refuse(self, status: int, reason: str, kind: str, payload: bytes, rng: str | None) -> None:
        """Answer `status` with `payload` (no body for HEAD), logged, without asking upstream."""
        self.server.owner._record(Request(self.command, self.path, status, rng, len(payload)))
        self.send_response_only(status, reason)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
        self.wfile.flush()

    def _abort(self) -> None:
        """Close the client connection at once (mid-body, or before any response)."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        except OSError:
            pass
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _handle

    def finish(self):
        try:
            super().finish()
        finally:
            conn = getattr(self, "_conn", None)
            if conn is not None:
                conn.close()


class _ProxyHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    owner: "Proxy"


class Proxy(_RequestLog):
    """A threaded HTTP proxy on 127.0.0.1 in front of `upstream` (``http://host:port``).

    Parameters
    ----------
    upstream : str
        The server to forward to.
    delay : float
        Seconds to wait before answering each request (added latency).
    """

    def __init__(self, upstream: str, delay: float = 0.0) -> None:
        hostport = upstream.split("://", 1)[-1].rstrip("/")
        host, _, port = hostport.partition(":")
        self.upstream_host, self.upstream_port = host, int(port or 80)
        self.delay = delay
        #: seconds a stalled request waits before its connection is dropped
        self.stall_seconds = 30.0
        self._faults: collections.deque[str] = collections.deque()
        self._always: str | None = None
        self._lock = threading.Lock()
        self._log: list[Request] = []
        self._stop_event = threading.Event()
        self._server: _ProxyHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Proxy":
        self._server = _ProxyHTTPServer(("127.0.0.1", 0), _ProxyHandler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop_event.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(10)
            self._server = None

    # -- faults ------------------------------------------------------------------------
    def inject(self, *faults: str) -> None:
        """Sabotage the next requests, one fault each, in order (see `FAULTS`)."""
        for f in faults:
            if f not in FAULTS:
                raise ValueError(f"unknown fault {f!r}; one of {FAULTS}")
        with self._lock:
            self._faults.extend(faults)

    def fail_always(self, fault: str | None) -> None:
        """Sabotage every request with `fault` from now on (None: stop)."""
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; one of {FAULTS}")
        with self._lock:
            self._always = fault

    def pending_faults(self) -> int:
        with self._lock:
            return len(self._faults)

    def _next_fault(self) -> str | None:
        with self._lock:
            if self._faults:
                return self._faults.popleft()
            return self._always

    # -- log ---------------------------------------------------------------------------
    def _record(self, request: Request) -> None:
        with self._lock:
            self._log.append(request)

    def records(self) -> list[Request]:
        with self._lock:
            return list(self._log)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# -- a hung endpoint ------------------------------------------------------------------------

class SilentServer:
    """A socket on 127.0.0.1 that accepts connections, reads nothing, answers nothing.

    The connections stay open until `stop` (a server that hangs, not one that
    is down). ``accepted`` counts the connections it took.
    """

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.accepted = 0
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "SilentServer":
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, args=(self._sock,), daemon=True)
        self._thread.start()
        return self

    def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:  # closed by stop()
                return
            with self._lock:
                self._conns.append(conn)
                self.accepted += 1

    def stop(self) -> None:
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() call
            except OSError:
                pass
            self._sock.close()
            self._sock = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        with self._lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class ProxyLog(_RequestLog):
    """The log of a `Proxy` running in another process, read over HTTP."""

    def __init__(self, url: str) -> None:
        self.url = url

    def records(self) -> list[Request]:
        import urllib.request

        with urllib.request.urlopen(self.url + LOG_PATH, timeout=30) as r:
            return [Request(*row) for row in json.loads(r.read())]


class ServerProcess:
    """`python tests/servers.py ...` in a process of its own (benchmarks).

    Servers in the measuring process would compete with it for the GIL; here
    they do not. ``info`` is what the process printed: its URLs.
    """

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"server process {args} exited with status {self.proc.wait()}")
        self.info = json.loads(line)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:  # pragma: no cover
                self.proc.kill()
                self.proc.wait(15)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def main(argv: list[str] | None = None) -> None:
    """Run moto and/or proxies until stdin closes; print their URLs as one JSON line."""
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--moto", action="store_true", help="start moto's S3 server (the proxies' upstream)")
    ap.add_argument("--upstream", help="the proxies' upstream, http://host:port (without --moto)")
    ap.add_argument("--delays-ms", default="0", help="one proxy per added latency, comma-separated")
    args = ap.parse_args(argv)
    info: dict = {"proxies": {}}
    moto = None
    upstream = args.upstream
    if args.moto:
        moto = MotoS3Server().start()
        info["moto"] = upstream = moto.url
    proxies = []
    for ms in (int(x) for x in args.delays_ms.split(",") if x.strip()):
        proxy = Proxy(upstream, delay=ms / 1000).start()
        proxies.append(proxy)
        info["proxies"][str(ms)] = proxy.url
    print(json.dumps(info), flush=True)
    try:
        sys.stdin.read()  # until the parent closes it (or dies)
    finally:
        for proxy in proxies:
            proxy.stop()
        if moto is not None:
            moto.stop()


if __name__ == "__main__":
    main()
