"""`dicomframes serve` against Orthanc (with its DICOMweb and WSI plugins) on the same slides.

Writes `--slides` whole-slide pyramids (JPEG baseline tiles), then, for each
server, started fresh as its own process:

- start-up: dicomframes scans the folder's headers; Orthanc must first ingest
  every file (POST /instances, timed);
- frames: `--clients` concurrent clients on 127.0.0.1 ask for random frames by
  WADO-RS, as stored (``transfer-syntax=*``: passed through, not decoded);
- tiles: random tiles of the stored levels, from dicomframes' DeepZoom and
  from Orthanc's WSI plugin (``/wsi/tiles``), both sending stored tiles;
- made tiles (dicomframes only: Orthanc has no resampled levels): random
  DeepZoom tiles of the levels below the stored ones, decoded, resampled and
  encoded again;

each for `--seconds`, printing requests/s, p50 and p99 latency and the
server's peak RSS (its process and children, sampled every 20 ms), then the
ratios. ``--soak SECONDS`` then runs the made-tiles load on dicomframes that
long, printing its RSS each 30 s (it should not grow).

Needs Debian's ``orthanc``, ``orthanc-dicomweb`` and ``orthanc-wsi`` for the
Orthanc rows (skipped without), and the [server] and [test] extras::

    python benchmarks/server_bench.py --slides 5 --clients 16 --seconds 10
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the repository root: tests.helpers

from dicomframes.server.deepzoom import DeepZoom
from dicomframes.wsi.slide import open_slide
from measure import emit
from tests.helpers.wsigen import write_pyramid

WIDTH, HEIGHT, TILE = 4096, 3072, 256
PLUGINS = Path("/usr/share/orthanc/plugins")
STORED = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


class Process:
    """A server process and its peak RSS (with children), sampled until `stop`."""

    def __init__(self, args: list[str], **kw) -> None:
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
        self.ps = psutil.Process(self.proc.pid)
        self.peak = 0
        self._stop = threading.Event()
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def rss(self) -> int:
        try:
            return self.ps.memory_info().rss + sum(c.memory_info().rss for c in self.ps.children(recursive=True))
        except psutil.Error:
            return 0

    def sample(self) -> None:
        self.peak = self.rss()
        self._stop.clear()

        def loop() -> None:
            while not self._stop.is_set():
                self.peak = max(self.peak, self.rss())
                time.sleep(0.02)

        threading.Thread(target=loop, daemon=True).start()

    def pause(self) -> None:
        self._stop.set()

    def stop(self) -> None:
        self._stop.set()
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def wait_for(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer") from None
            time.sleep(0.1)


def load(port: int, paths, clients: int, seconds: float, headers: dict[str, str]) -> dict[str, float]:
    """`clients` threads, each on its own keep-alive connection, asking for `paths()` until time is up."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def client(k: int) -> None:
        rng = random.Random(k)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = []
        while time.monotonic() < end:
            t = time.perf_counter()
            conn.request("GET", paths(rng), headers=headers)
            answer = conn.getresponse()
            answer.read()
            if answer.status != 200:
                with lock:
                    errors[0] += 1
            mine.append(time.perf_counter() - t)
            if answer.getheader("connection", "").lower() == "close":
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - start
    latencies.sort()
    n = len(latencies)
    return {"rate": n / took, "p50": latencies[n // 2] * 1e3, "p99": latencies[min(n - 1, n * 99 // 100)] * 1e3,
            "errors": errors[0], "requests": n}


def make_slides(root: Path, count: int) -> list[dict]:
    slides = []
    for k in range(count):
        folder = root / f"slide{k}"
        write_pyramid(folder, width=WIDTH, height=HEIGHT, levels=3, codec="jpeg", tile_size=(TILE, TILE),
                      label=False, overview=False, seed=k)
        with open_slide(str(folder)) as slide:
            levels = []
            for level in slide.levels:
                header = level.readers[0].header
                levels.append({"sop": header.get("SOPInstanceUID"), "frames": len(level.readers[0]),
                               "tiles": (-(-level.width // TILE), -(-level.height // TILE))})
            slides.append({"study": header.get("StudyInstanceUID"), "series": header.get("SeriesInstanceUID"),
                           "levels": levels})
    return slides


def frame_paths(slides, prefix: str):
    def pick(rng: random.Random) -> str:
        s = rng.choice(slides)
        lv = rng.choice(s["levels"])
        return (f"{prefix}/studies/{s['study']}/series/{s['series']}/instances/{lv['sop']}"
                f"/frames/{rng.randint(1, lv['frames'])}")
    return pick


def dicomframes_rows(root: Path, slides, args) -> tuple[dict[str, dict], float]:
    out: dict[str, dict] = {}
    start = time.perf_counter()
    server = Process([sys.executable, "-m", "dicomframes", "serve", str(root), "--port", str(args.port)])
    try:
        wait_for(f"http://127.0.0.1:{args.port}/ready")
        ready = time.perf_counter() - start
        dz = DeepZoom(WIDTH, HEIGHT, TILE)
        stored_levels = [dz.max_level - k for k in range(3)]

        def tiles(levels):
            def pick(rng: random.Random) -> str:
                level = rng.choice(levels)
                cols, rows = dz.tiles(level)
                s = rng.choice(slides)
                return f"/deepzoom/{s['series']}_files/{level}/{rng.randrange(cols)}_{rng.randrange(rows)}.jpeg"
            return pick

        cases = [("frames", frame_paths(slides, "/dicomweb"), {"Accept": STORED}),
                 ("stored tiles", tiles(stored_levels), {}),
                 ("made tiles", tiles([dz.max_level - k for k in range(3, 6)]), {})]
        for name, paths, headers in cases:
            server.sample()
            out[name] = load(args.port, paths, args.clients, args.seconds, headers)
            server.pause()
            out[name]["peak"] = server.peak / 1e6
        if args.soak:
            server.sample()
            end = time.monotonic() + args.soak
            while time.monotonic() < end:
                r = load(args.port, tiles([dz.max_level - k for k in range(6)]), args.clients,
                         min(30, end - time.monotonic()), {})
                print(f"soak: {r['rate']:.0f} tiles/s, RSS {server.rss() / 1e6:.0f} MB, peak {server.peak / 1e6:.0f} MB",
                      flush=True)
            server.pause()
    finally:
        server.stop()
    return out, ready


def orthanc_rows(root: Path, slides, args) -> tuple[dict[str, dict], float] | None:
    if shutil.which("Orthanc") is None or not (PLUGINS / "libOrthancWSI.so").exists():
        print("Orthanc rows skipped: apt-get install orthanc orthanc-dicomweb orthanc-wsi", file=sys.stderr)
        return None
    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as work:
        config = Path(work) / "orthanc.json"
        config.write_text(json.dumps({
            "Name": "bench", "StorageDirectory": f"{work}/db", "IndexDirectory": f"{work}/db",
            "HttpPort": args.port + 1, "DicomPort": 0, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "Plugins": [str(PLUGINS / "libOrthancDicomWeb.so"), str(PLUGINS / "libOrthancWSI.so")],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}, "HttpThreadsCount": max(50, args.clients),
        }))
        start = time.perf_counter()
        server = Process(["Orthanc", str(config)])
        try:
            port = args.port + 1
            wait_for(f"http://127.0.0.1:{port}/system")
            for path in sorted(root.rglob("*.dcm")):
                request = urllib.request.Request(f"http://127.0.0.1:{port}/instances", data=path.read_bytes(),
                                                 method="POST")
                with urllib.request.urlopen(request, timeout=120) as answer:
                    answer.read()
            ready = time.perf_counter() - start
            ids = {}  # Series Instance UID -> Orthanc's series id
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/series?expand") as answer:
                for s in json.load(answer):
                    ids[s["MainDicomTags"]["SeriesInstanceUID"]] = s["ID"]

            def wsi(rng: random.Random) -> str:
                s = rng.choice(slides)
                level = rng.randrange(len(s["levels"]))
                cols, rows = s["levels"][level]["tiles"]
                return f"/wsi/tiles/{ids[s['series']]}/{level}/{rng.randrange(cols)}/{rng.randrange(rows)}"

            for name, paths, headers in [("frames", frame_paths(slides, "/dicom-web"), {"Accept": STORED}),
                                         ("stored tiles", wsi, {})]:
                server.sample()
                out[name] = load(port, paths, args.clients, args.seconds, headers)
                server.pause()
                out[name]["peak"] = server.peak / 1e6
        finally:
            server.stop()
    return out, ready


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slides", type=int, default=5)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--soak", type=float, default=0, help="then run dicomframes this long, printing its RSS")
    parser.add_argument("--port", type=int, default=18642)
    parser.add_argument("--markdown", help="also write the table to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        root = Path(work) / "slides"
        slides = make_slides(root, args.slides)
        size = sum(p.stat().st_size for p in root.rglob("*.dcm")) / 1e6
        ours, our_start = dicomframes_rows(root, slides, args)
        theirs = orthanc_rows(root, slides, args)
    lines = [f"{args.slides} slides ({WIDTH}x{HEIGHT}, {TILE}-pixel JPEG tiles, 3 levels, {size:.0f} MB), "
             f"{args.clients} clients, {args.seconds:.0f} s a case", "",
             "| server | work | requests/s | p50 ms | p99 ms | peak RSS MB | errors |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for who, rows in (("dicomframes", ours), ("Orthanc", theirs[0] if theirs else {})):
        for name, r in rows.items():
            lines.append(f"| {who} | {name} | {r['rate']:.0f} | {r['p50']:.1f} | {r['p99']:.1f} | {r['peak']:.0f} | "
                         f"{r['errors']} |")
    lines.append("")
    lines.append(f"start-up: dicomframes ready in {our_start:.1f} s (header scan)"
                 + (f", Orthanc in {theirs[1]:.1f} s (ingest)" if theirs else ""))
    if theirs:
        for name in theirs[0]:
            a, b = ours[name], theirs[0][name]
            lines.append(f"{name}: dicomframes/Orthanc requests/s {a['rate'] / b['rate']:.2f}x, "
                         f"p99 {a['p99'] / b['p99']:.2f}x, peak RSS {a['peak'] / b['peak']:.2f}x")
    emit(lines, args.markdown)


if __name__ == "__main__":
    main()
