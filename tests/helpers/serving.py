"""Servers for the server's tests: the app in a uvicorn thread, or `dicomframes serve` as a process."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import uvicorn


class Running:
    """A uvicorn server for `app` on a free port, in a thread."""

    def __init__(self, app) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the server did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
        state = getattr(self.server.config.app, "state", None)
        if state is not None and hasattr(state, "server"):
            state.server.close()  # lifespan is off here: what the app's shutdown would do


class Serving:
    """`dicomframes serve ARGS --port 0` as a process, until `stop` (SIGINT, as Ctrl-C)."""

    def __init__(self, *args: str, timeout: float = 60) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "dicomframes", "serve", *args, "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.url: str | None = None
        self.lines: list[str] = []
        deadline = time.monotonic() + timeout
        while self.url is None and time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            found = re.search(r"(http://127\.0\.0\.1:\d+)", line)
            if found and "Uvicorn running" in line:
                self.url = found.group(1)
        if self.url is None:
            self.stop()
            raise AssertionError("the server did not start:\n" + "".join(self.lines))
        # uvicorn's access log would fill the pipe: read it away
        threading.Thread(target=self._drain, daemon=True).start()
        # with --workers the parent listens before its processes serve: wait for one to answer
        while True:
            try:
                with urllib.request.urlopen(self.url + "/ready", timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError("the server did not get ready:\n" + "".join(self.lines)) from None
                time.sleep(0.1)

    def _drain(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
