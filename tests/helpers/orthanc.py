"""Orthanc (Debian's ``orthanc`` with ``orthanc-dicomweb``) on 127.0.0.1 for tests and benchmarks.

A generated configuration (no authentication, this machine only, storage in
a temporary folder); files are uploaded through its REST API. `requests`
counts the GETs its verbose log names, for tests that check batching.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from tests.helpers.servers import free_port

PLUGINS = Path("/usr/share/orthanc/plugins")
_GET = re.compile(r"\(http\) GET (\S+)")


def available() -> bool:
    return shutil.which("Orthanc") is not None and (PLUGINS / "libOrthancDicomWeb.so").exists()


class Orthanc:
    """An Orthanc process with its DICOMweb plugin at `dicomweb` (``http://127.0.0.1:PORT/dicom-web``)."""

    def __init__(self, *, threads: int = 16) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="orthanc-"))
        self.port = free_port()
        config = self.work / "orthanc.json"
        config.write_text(json.dumps({
            "Name": "tests", "StorageDirectory": str(self.work / "db"), "IndexDirectory": str(self.work / "db"),
            "HttpPort": self.port, "DicomPort": 0, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "Plugins": [str(PLUGINS / "libOrthancDicomWeb.so")], "HttpThreadsCount": threads,
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }))
        self.url = f"http://127.0.0.1:{self.port}"
        self.dicomweb = self.url + "/dicom-web"
        self.proc = subprocess.Popen(["Orthanc", "--verbose", str(config)], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self._lines: list[str] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(self.url + "/system", timeout=2):
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("Orthanc did not start:\n" + "".join(self._lines[-30:])) from None
                time.sleep(0.1)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self._lines.append(line)

    def upload(self, path: str | Path) -> None:
        request = urllib.request.Request(self.url + "/instances", data=Path(path).read_bytes(), method="POST")
        with urllib.request.urlopen(request, timeout=120) as answer:
            answer.read()

    def requests(self) -> list[str]:
        """The paths of the GETs it has logged so far."""
        with self._lock:
            return [m.group(1) for line in self._lines if (m := _GET.search(line))]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.work, ignore_errors=True)
