"""Whole-slide regions: dicomframes vs wsidicom, locally and over HTTP.

Writes a generated pyramid (JPEG tiles of 256x256; level 0 of ``--size`` pixels
square, TILED_FULL) and a sparse copy of its level 0 (TILED_SPARSE, 10% of the
tiles absent, the rest stored in random order), then reads the same random
1024x1024 regions of level 0 with each library and reports:

- open: seconds to open the slide (headers; for a sparse level, dicomframes
  parses the tile positions on the first region and counts it there);
- regions/s: random 1024x1024 regions per second (decoded to a NumPy array);
- MB/region and requests/region: what was read to get them — locally the bytes
  the process read from files (``/proc/self/io`` rchar), over HTTP the bytes and
  requests nginx (or the latency proxy) served;
- needed: the encoded bytes of the tiles the regions touch.

Then the tile positions of a TILED_SPARSE level of ``--positions`` tiles (150,000
by default): seconds and peak memory (growth of the process's peak RSS) for
dicomframes (open + positions as arrays), pydicom (``dcmread`` + positions from
the items) and wsidicom (open + one 512x512 region), each in a fresh process.

Over HTTP, files are served by nginx on 127.0.0.1 (Range honoured), directly and
through a proxy that adds ``--latency-ms`` to each request (a distant bucket).
Without nginx the remote rows are skipped with a message. Then a table of ratios
(dicomframes / wsidicom: regions per second, bytes per region) is printed.

    python benchmarks/wsi_bench.py              # ~1-2 minutes
    python benchmarks/wsi_bench.py --quick      # ~20 s
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the repository root: tests.helpers

import dicomframes
from tests.helpers import wsigen


def rchar() -> int:
    """Bytes this process has read through read syscalls so far (Linux)."""
    try:
        with open("/proc/self/io") as f:
            for line in f:
                if line.startswith("rchar:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class Row:
    target: str
    library: str
    open_s: float
    regions: int
    seconds: float
    mb: float
    requests: int | None
    needed_mb: float
    note: str = ""

    @property
    def per_second(self) -> float:
        return self.regions / self.seconds if self.seconds else float("nan")


def build(folder: Path, size: int, quick: bool) -> dict[str, list[Path]]:
    print(f"writing a {size}x{size} pyramid of 256x256 JPEG tiles in {folder} ...", flush=True)
    image = wsigen.large_image(size, size, seed=1)
    uids = wsigen.SeriesUIDs()
    full = folder / "full"
    full.mkdir()
    paths = []
    current = image
    for k in range(3 if not quick else 2):
        level = wsigen.write_level(full, f"level{k}", current, uids=uids, tile_size=(256, 256), codec="jpeg",
                                   instance_number=k + 1, pixel_spacing=0.00025 * 2 ** k, seed=k)
        paths += level.paths
        if k < 2:
            current = wsigen.downsample2(current)
    sparse = folder / "sparse"
    sparse.mkdir()
    level = wsigen.write_level(sparse, "level0", image, tile_size=(256, 256), codec="jpeg",
                               organization="TILED_SPARSE", absent_fraction=0.1, shuffle=True, pixel_spacing=0.00025)
    return {"full": paths, "sparse": level.paths}


def regions(size: int, count: int, seed: int = 7) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    return [(int(rng.integers(0, size - 1024)), int(rng.integers(0, size - 1024))) for _ in range(count)]


def needed_bytes(path: Path, locations) -> int:
    with dicomframes.open(path) as reader:
        g = reader.tile_geometry
        return sum(
            reader.index.span(int(f)).length
            for x, y in locations for f in g.tiles_in(x, y, 1024, 1024)[0]
        )


def run_dicomframes(target: str, urls: list[str], locations, log=None) -> tuple[Row, list[np.ndarray]]:
    start_io, mark = rchar(), (log.mark() if log else 0)
    t0 = time.perf_counter()
    slide = dicomframes.open_slide(urls)
    open_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = [slide.read_region(loc, 0, (1024, 1024)) for loc in locations]
    seconds = time.perf_counter() - t0
    if log:
        records = log.since(mark)
        mb, requests = sum(r.bytes for r in records) / 1e6, len(records)
    else:
        mb, requests = (rchar() - start_io) / 1e6, sum(r.stats["requests"] for r in slide.readers)
    slide.close()
    return Row(target, "dicomframes", open_s, len(locations), seconds, mb, requests, 0.0), out


def run_wsidicom(target: str, urls: list[str], locations, log=None) -> tuple[Row | None, list[np.ndarray]]:
    try:
        from wsidicom import WsiDicom
    except ImportError:
        return None, []
    start_io, mark = rchar(), (log.mark() if log else 0)
    t0 = time.perf_counter()
    if log:
        from upath import UPath

        slide = WsiDicom.open([UPath(u) for u in urls])
    else:
        slide = WsiDicom.open([Path(u) for u in urls])
    open_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = [np.asarray(slide.read_region(loc, 0, (1024, 1024)))[..., :3] for loc in locations]
    seconds = time.perf_counter() - t0
    if log:
        records = log.since(mark)
        mb, requests = sum(r.bytes for r in records) / 1e6, len(records)
    else:
        mb, requests = (rchar() - start_io) / 1e6, None
    slide.close()
    return Row(target, "wsidicom", open_s, len(locations), seconds, mb, requests, 0.0), out


# -- tile positions of a big sparse level ------------------------------------------------------
_POSITION_SNIPPETS = {  # library -> (imports, work)
    "dicomframes": ("import dicomframes", """
r = dicomframes.open(PATH)
rows, cols, _, _ = r.tile_geometry.positions()
n = len(rows)
"""),
    "pydicom": ("import pydicom", """
ds = pydicom.dcmread(PATH)
items = ds.PerFrameFunctionalGroupsSequence
cols = numpy.array([int(i.PlanePositionSlideSequence[0].ColumnPositionInTotalImagePixelMatrix) for i in items])
rows = numpy.array([int(i.PlanePositionSlideSequence[0].RowPositionInTotalImagePixelMatrix) for i in items])
n = len(rows)
"""),
    "wsidicom": ("from wsidicom import WsiDicom", """
s = WsiDicom.open([PATH])
region = numpy.asarray(s.read_region((0, 0), 0, (512, 512)))
n = -1
"""),
}


def measure_positions(path: Path, library: str) -> dict | None:
    """Seconds and peak memory (growth of the peak RSS, VmHWM) of getting the tile
    positions, in a fresh process, after the library's imports."""
    import json
    import subprocess

    imports, work = _POSITION_SNIPPETS[library]
    code = (
        "import time, json, numpy\n"
        f"{imports}\n"
        f"PATH = {str(path)!r}\n"
        "def hwm():\n"
        "    with open('/proc/self/status') as f:\n"
        "        return next(int(l.split()[1]) for l in f if l.startswith('VmHWM:')) / 1024\n"
        "base = hwm()\n"
        "t0 = time.perf_counter()\n"
        + work
        + "\nprint(json.dumps({'s': time.perf_counter() - t0, 'mb': hwm() - base, 'n': n}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def positions_section(root: Path, count: int) -> None:
    across = 400
    down = -(-count // across)
    print(f"\nwriting a TILED_SPARSE level of {across * down:,} 16x16 tiles (stored shuffled) ...", flush=True)
    image = wsigen.large_image(across * 16, down * 16, cell=16)
    level = wsigen.write_level(root, "positions", image, tile_size=(16, 16), codec="native",
                               organization="TILED_SPARSE", shuffle=True)
    del image
    size = level.paths[0].stat().st_size / 1e6
    with dicomframes.open(level.paths[0]) as reader:
        offset, length = reader.header.sequences["PerFrameFunctionalGroupsSequence"]
    print(f"file {size:.1f} MB, Per-Frame Functional Groups Sequence {length / 1e6:.1f} MB\n")
    print(f"{'library':<12} {'what':<40} {'seconds':>8} {'peak MB':>8}")
    what = {
        "dicomframes": "open + positions as arrays",
        "pydicom": "dcmread + positions from the items",
        "wsidicom": "open + one 512x512 region",
    }
    for library in what:
        found = measure_positions(level.paths[0], library)
        if found is None or "error" in found:
            print(f"{library:<12} {what[library]:<40} {'failed: ' + str(found and found.get('error')):>17}")
            continue
        print(f"{library:<12} {what[library]:<40} {found['s']:8.2f} {found['mb']:8.1f}")


def compare(a: list[np.ndarray], b: list[np.ndarray]) -> str:
    if not a or not b:
        return ""
    diff = max(float(np.abs(x.astype(np.int16) - y.astype(np.int16)).mean()) for x, y in zip(a, b))
    return f"max mean |diff| {diff:.2f}"


def table(rows: list[Row]) -> None:
    head = f"{'target':<22} {'library':<12} {'open s':>7} {'regions/s':>10} {'MB/region':>10} {'req/region':>11} {'needed MB/region':>17}  note"
    print(head)
    print("-" * len(head))
    for r in rows:
        req = f"{r.requests / r.regions:.1f}" if r.requests is not None else "-"
        print(f"{r.target:<22} {r.library:<12} {r.open_s:7.3f} {r.per_second:10.2f} {r.mb / r.regions:10.2f} "
              f"{req:>11} {r.needed_mb / r.regions:17.2f}  {r.note}")


def ratios(rows: list[Row]) -> None:
    print("\ndicomframes / wsidicom (same target, same run):")
    print(f"{'target':<22} {'regions/s':>10} {'MB/region':>10} {'open time':>10}")
    by = {(r.target, r.library): r for r in rows}
    for target in dict.fromkeys(r.target for r in rows):
        ours, theirs = by.get((target, "dicomframes")), by.get((target, "wsidicom"))
        if ours and theirs:
            mb = f"{ours.mb / theirs.mb:10.2f}" if theirs.mb else f"{'-':>10}"
            print(f"{target:<22} {ours.per_second / theirs.per_second:10.2f} {mb} {ours.open_s / theirs.open_s:10.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=8192, help="level 0 width and height (pixels)")
    ap.add_argument("--regions", type=int, default=30, help="random 1024x1024 regions per run")
    ap.add_argument("--latency-ms", type=float, default=20.0, help="added to each request by the proxy")
    ap.add_argument("--quick", action="store_true", help="a 4096 pixel slide and 10 regions")
    ap.add_argument("--no-remote", action="store_true")
    ap.add_argument("--positions", type=int, default=150_000,
                    help="tiles of the sparse level whose positions are parsed (0: skip)")
    args = ap.parse_args()
    if args.quick:
        args.size, args.regions, args.positions = 4096, 10, min(args.positions, 20_000)

    try:  # import the HTTP stack up front, so that no library's open time pays for it
        import fsspec

        fsspec.filesystem("http")
    except Exception:
        pass
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = build(root, args.size, args.quick)
        locations = regions(args.size, args.regions)
        needed = {k: needed_bytes(v[0], locations) / 1e6 for k, v in files.items()}
        rows: list[Row] = []

        targets: list[tuple[str, str, list[str], object]] = [
            (f"local {kind}", kind, [str(p) for p in paths], None) for kind, paths in files.items()
        ]
        servers = []
        if not args.no_remote:
            from servers import NginxServer, Proxy, find_nginx

            if find_nginx() is None:
                print("nginx is not installed (apt-get install nginx-light): remote rows skipped")
            else:
                nginx = NginxServer(root, root / "nginx-work", find_nginx()).start()
                proxy = Proxy(nginx.url, delay=args.latency_ms / 1000).start()
                # Clients that drop kept-alive connections make the proxy print tracebacks: mute them.
                proxy._server.handle_error = lambda request, client_address: None
                servers += [proxy, nginx]
                for kind, paths in files.items():
                    rel = [p.relative_to(root).as_posix() for p in paths]
                    targets.append((f"http {kind}", kind, [f"{nginx.url}/{r}" for r in rel], nginx))
                    targets.append((f"http+{args.latency_ms:g}ms {kind}", kind, [f"{proxy.url}/{r}" for r in rel], proxy))
        try:
            for name, kind, urls, log in targets:
                print(f"{name}: dicomframes ...", flush=True)
                ours, a = run_dicomframes(name, urls, locations, log)
                ours.needed_mb = needed[kind] * 1.0
                rows.append(ours)
                print(f"{name}: wsidicom ...", flush=True)
                theirs, b = run_wsidicom(name, urls, locations, log)
                if theirs is None:
                    print("wsidicom is not installed (pip install wsidicom): its rows are skipped")
                else:
                    theirs.needed_mb = needed[kind]
                    theirs.note = compare(a, b)
                    rows.append(theirs)
        finally:
            for s in servers:
                s.stop()
        print()
        table(rows)
        ratios(rows)
        if args.positions:
            positions_section(root, args.positions)


if __name__ == "__main__":
    main()
