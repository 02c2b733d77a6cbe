"""Remote frame reading: dicomframes vs pydicom vs highdicom, over HTTP and S3 on 127.0.0.1.

The same sample files are served by nginx (HTTP) and by moto's S3 server, each
behind a small proxy (``tests/servers.py``) that counts requests and body bytes
and, for the "+50 ms" rows, waits 50 ms before answering each request (a round
trip to a distant bucket). moto and the proxies run in a process of their own,
so they do not compete with the measured code for the GIL. For each library it
measures:

- first frame: seconds from nothing to the first decoded frame (open + frame 0);
- iteration: frames per second reading frames in order (all frames for
  dicomframes; the first ``--peer-frames`` for the peers, whose reads through
  an fsspec file object are slow), with the requests and bytes that took;
- random: ``--random`` random frames one at a time (``--peer-random`` for the
  peers), seconds per frame, requests and bytes;

and prints one table, then the ratios: frames per second and bytes per frame of
dicomframes against each peer measured in the same run, and dicomframes remote
against dicomframes on the local file (measured again just before each remote
row, as other load on the machine changes).

Peers: ``pydicom.pixels.iter_pixels`` / ``pixel_array(index=)`` on an fsspec
file object (fsspec's default read-ahead cache), and highdicom's
``imread(..., lazy_frame_retrieval=True)`` + ``get_stored_frame`` (if installed).

Needs: nginx (``apt-get install nginx-light``) for HTTP; moto[server], s3fs for
S3; aiohttp for HTTP through fsspec. Run::

    python benchmarks/remote_bench.py            # a few minutes
    python benchmarks/remote_bench.py --quick    # under a minute
    python benchmarks/remote_bench.py --before   # + rows with one batch in flight (before issue 15)
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the repository root: tests.helpers

import fsspec

import dicomframes
from dicomframes.io.remote import FsspecSource
from dicomframes.samples import write_sample
from measure import write_jpeg_file
from tests.helpers.servers import NginxServer, ProxyLog, ServerProcess, find_nginx

BUCKET = "bench"


@dataclass
class Row:
    backend: str
    latency_ms: int
    file: str
    library: str
    first_s: float | None = None
    iter_frames: int = 0
    iter_fps: float | None = None
    iter_requests: int | None = None
    iter_mb: float | None = None
    iter_needed_mb: float | None = None
    random_frames: int = 0
    random_s_per_frame: float | None = None
    random_requests: int | None = None
    random_mb: float | None = None
    random_needed_mb: float | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)

    def iteration(self, frames: int, secs: float, requests: int, mb: float, needed_mb: float) -> None:
        self.iter_frames, self.iter_fps, self.iter_requests, self.iter_mb = frames, frames / secs, requests, mb
        self.iter_needed_mb = needed_mb

    def random_access(self, wanted: list[int], sizes: list[int], secs: float, requests: int, mb: float) -> None:
        self.random_frames, self.random_s_per_frame = len(wanted), secs / len(wanted)
        self.random_requests, self.random_mb = requests, mb
        self.random_needed_mb = sum(sizes[i] for i in wanted) / 1e6


class Target:
    """One file on one backend behind one proxy: how each library opens it."""

    def __init__(self, backend: str, url: str, proxy: ProxyLog, options: dict) -> None:
        self.backend, self.url, self.proxy, self.options = backend, url, proxy, options

    def dicomframes(self) -> dicomframes.Reader:
        return dicomframes.open(self.url, **self.options)

    def fsspec_file(self):
        fs, path = fsspec.core.url_to_fs(self.url, **self.options)
        return fs.open(path, "rb")  # fsspec's defaults: read-ahead block cache

    def counted(self, fn):
        """Run `fn`; return (result, seconds, requests, MB) as the proxy saw them."""
        mark = self.proxy.mark()
        start = time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - start
        recs = self.proxy.since(mark)
        return out, seconds, len(recs), sum(r.bytes for r in recs) / 1e6


def make_files(root: Path, args) -> dict[str, Path]:
    files = {}
    for table in args.tables:
        path = root / f"{table}.dcm"
        if args.syntax == "jpeg":  # the case: the decoder fastest locally (imagecodecs, [fast])
            if table not in ("bot", "none"):
                raise SystemExit("--syntax jpeg writes --tables bot and/or none")
            write_jpeg_file(path, args.frames, args.size, rgb=args.rgb, bot=table == "bot")
        else:
            write_sample(path, frames=args.frames, rows=args.size, columns=args.size, syntax=args.syntax,
                         offset_table=table, samples_per_pixel=3 if args.rgb else 1)
        files[table] = path
    return files


def encoded_sizes(path: Path) -> list[int]:
    with dicomframes.open(path) as r:
        r.index.walk_all()
        return [r.index.span(i).length for i in range(len(r))]


def bench_local(path: Path) -> Row:
    row = Row("local", 0, path.name, "dicomframes")
    with dicomframes.open(path) as r:  # warm up: imports, the decoder, worker processes
        sum(1 for _ in r.iter_frames(range(min(64, len(r)))))
    start = time.perf_counter()
    with dicomframes.open(path) as r:
        r.frame(0)
        row.first_s = time.perf_counter() - start
    start = time.perf_counter()
    with dicomframes.open(path) as r:
        n = sum(1 for _ in r)
    row.iter_frames, row.iter_fps = n, n / (time.perf_counter() - start)
    return row


def bench_dicomframes(t: Target, name: str, sizes: list[int], header: int, args, latency: int, local: Path) -> Row:
    row = Row(t.backend, latency, name, "dicomframes")
    with t.dicomframes() as r:  # warm up: imports, the decoder, the HTTP session
        r.frame(len(sizes) - 1)
    # The local baseline, measured now, under the same conditions.
    row.extra["local_fps"] = bench_local(local).iter_fps

    def first():
        with t.dicomframes() as r:
            return r.frame(0)

    _, row.first_s, _, _ = t.counted(first)

    def iterate():
        with t.dicomframes() as r:
            n = sum(1 for _ in r)
            return n, dict(r.stats)

    (n, stats), secs, req, mb = t.counted(iterate)
    row.iteration(n, secs, req, mb, (sum(sizes) + header) / 1e6)
    if stats["requests"] != req:
        row.note += f"stats {stats['requests']} req != server {req}; "

    wanted = random.Random(1).sample(range(len(sizes)), min(args.random, len(sizes)))
    with t.dicomframes() as r:
        def rand():
            for i in wanted:
                r.frame(i)
        _, secs, req, mb = t.counted(rand)
    row.random_access(wanted, sizes, secs, req, mb)
    return row


@contextlib.contextmanager
def one_batch_in_flight():
    """Remote reads planned as before issue 15: one batch fetched at a time."""
    own = FsspecSource.fetch_policy
    FsspecSource.fetch_policy = lambda self: replace(own(self), concurrency=1)  # type: ignore[method-assign]
    try:
        yield
    finally:
        FsspecSource.fetch_policy = own  # type: ignore[method-assign]


def bench_pydicom(t: Target, name: str, sizes: list[int], args, latency: int) -> Row:
    from pydicom.pixels import iter_pixels, pixel_array

    row = Row(t.backend, latency, name, "pydicom")
    n = min(args.peer_frames, len(sizes))
    with t.fsspec_file() as f:  # warm up
        pixel_array(f, index=0)

    def first():
        with t.fsspec_file() as f:
            return next(iter_pixels(f))

    _, row.first_s, _, _ = t.counted(first)

    def iterate():
        with t.fsspec_file() as f:
            return sum(1 for _ in iter_pixels(f, indices=range(n)))

    got, secs, req, mb = t.counted(iterate)
    row.iteration(got, secs, req, mb, sum(sizes[:n]) / 1e6)

    wanted = random.Random(1).sample(range(len(sizes)), min(args.peer_random, len(sizes)))

    def rand():
        with t.fsspec_file() as f:
            for i in wanted:
                pixel_array(f, index=i)

    _, secs, req, mb = t.counted(rand)
    row.random_access(wanted, sizes, secs, req, mb)
    return row


def bench_highdicom(t: Target, name: str, sizes: list[int], args, latency: int) -> Row:
    import highdicom as hd

    row = Row(t.backend, latency, name, "highdicom")
    n = min(args.peer_frames, len(sizes))

    def first():
        with t.fsspec_file() as f:
            return hd.imread(f, lazy_frame_retrieval=True).get_stored_frame(1)

    _, row.first_s, _, _ = t.counted(first)

    def iterate():
        with t.fsspec_file() as f:
            im = hd.imread(f, lazy_frame_retrieval=True)
            for k in range(n):
                im.get_stored_frame(k + 1)
            return n

    got, secs, req, mb = t.counted(iterate)
    row.iteration(got, secs, req, mb, sum(sizes[:n]) / 1e6)

    wanted = random.Random(1).sample(range(len(sizes)), min(args.peer_random, len(sizes)))

    def rand():
        with t.fsspec_file() as f:
            im = hd.imread(f, lazy_frame_retrieval=True)
            for i in wanted:
                im.get_stored_frame(i + 1)

    _, secs, req, mb = t.counted(rand)
    row.random_access(wanted, sizes, secs, req, mb)
    return row


def fmt(v, spec=".3g") -> str:
    return "-" if v is None else format(v, spec)


def print_table(rows: list[Row]) -> None:
    head = ("backend", "lat", "file", "library", "1st frame s", "iter n", "iter fps", "iter req",
            "iter MB", "MB/needed", "rand n", "rand s/frame", "rand req", "rand MB", "MB/needed")
    lines = [head]
    for r in rows:
        lines.append((
            r.backend, f"{r.latency_ms}ms", r.file, r.library, fmt(r.first_s), str(r.iter_frames or "-"),
            fmt(r.iter_fps, ".0f"), fmt(r.iter_requests, "d"), fmt(r.iter_mb, ".1f"),
            fmt(r.iter_mb / r.iter_needed_mb if r.iter_mb is not None and r.iter_needed_mb else None, ".2f"),
            str(r.random_frames or "-"), fmt(r.random_s_per_frame), fmt(r.random_requests, "d"),
            fmt(r.random_mb, ".2f"),
            fmt(r.random_mb / r.random_needed_mb if r.random_mb is not None and r.random_needed_mb else None, ".2f"),
        ))
    widths = [max(len(line[k]) for line in lines) for k in range(len(head))]
    for j, line in enumerate(lines):
        print("  ".join(cell.rjust(w) if k >= 4 else cell.ljust(w) for k, (cell, w) in enumerate(zip(line, widths))))
        if j == 0:
            print("  ".join("-" * w for w in widths))
    for r in rows:
        if r.note:
            print(f"note: {r.backend} {r.latency_ms}ms {r.file} {r.library}: {r.note}")


def print_ratios(rows: list[Row]) -> None:
    print("\nratios (same run, same machine):")
    groups: dict[tuple, dict[str, Row]] = {}
    for r in rows:
        if r.backend != "local":
            groups.setdefault((r.backend, r.latency_ms, r.file), {})[r.library] = r
    for (backend, lat, name), libs in groups.items():
        d = libs.get("dicomframes")
        if d is None:
            continue
        parts = []
        if d.iter_fps and d.extra.get("local_fps"):
            parts.append(f"remote/local fps {d.iter_fps / d.extra['local_fps']:.2f}")
        one = libs.get("dicomframes 1 batch")
        if one is not None and one.iter_fps and one.extra.get("local_fps"):
            parts.append(f"1 batch in flight: remote/local fps {one.iter_fps / one.extra['local_fps']:.2f}")
        for peer in ("pydicom", "highdicom"):
            p = libs.get(peer)
            if p is None or not p.iter_fps:
                continue
            fps = d.iter_fps / p.iter_fps
            bpf_d = d.iter_mb / d.iter_frames
            bpf_p = p.iter_mb / p.iter_frames
            rand = ""
            if p.random_s_per_frame and d.random_s_per_frame:
                rand = (f", random: {p.random_s_per_frame / d.random_s_per_frame:.1f}x faster, "
                        f"{(p.random_mb / p.random_frames) / max(d.random_mb / d.random_frames, 1e-9):.0f}x fewer bytes/frame")
            parts.append(f"vs {peer}: iteration {fps:.1f}x fps, {bpf_p / max(bpf_d, 1e-9):.0f}x fewer bytes/frame{rand}")
        print(f"  {backend:5s} {lat:3d}ms {name:12s} " + "; ".join(parts))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Numbers are for this machine and 127.0.0.1; compare ratios, not absolutes.")
    ap.add_argument("--frames", type=int, default=2000, help="frames per file (2000)")
    ap.add_argument("--size", type=int, default=256, help="frame rows and columns (256)")
    ap.add_argument("--rgb", action="store_true", help="3 samples per pixel")
    ap.add_argument("--syntax", default="jpegls", choices=["rle", "jpegls", "j2k", "native", "jpeg"],
                    help="(jpegls; jpeg: baseline, needs imagecodecs)")
    ap.add_argument("--tables", default="bot,none", help="offset tables, comma-separated: bot,eot,none (bot,none)")
    ap.add_argument("--backends", default="http,s3", help="http,s3 (both)")
    ap.add_argument("--latency-ms", type=int, default=50, help="added latency per request for the slow rows (50)")
    ap.add_argument("--random", type=int, default=100, help="random frames read by dicomframes (100)")
    ap.add_argument("--peer-frames", type=int, default=100, help="frames iterated by pydicom / highdicom (100)")
    ap.add_argument("--peer-random", type=int, default=20, help="random frames read by the peers (20)")
    ap.add_argument("--no-peers", action="store_true", help="measure dicomframes only")
    ap.add_argument("--before", action="store_true",
                    help="also measure dicomframes with one batch in flight (as before issue 15)")
    ap.add_argument("--quick", action="store_true", help="500 frames, HTTP only, bot only, fewer peer frames")
    args = ap.parse_args(argv)
    if args.quick:
        args.frames, args.backends, args.tables = 500, "http", "bot"
        args.peer_frames, args.peer_random, args.random = 50, 10, 50
    args.tables = [t.strip() for t in args.tables.split(",") if t.strip()]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    peers = []
    if not args.no_peers:
        peers.append(("pydicom", bench_pydicom))
        try:
            import highdicom  # noqa: F401

            peers.append(("highdicom", bench_highdicom))
        except ImportError:
            print("highdicom is not installed: skipping it (pip install highdicom)")

    with tempfile.TemporaryDirectory(prefix="remote_bench_") as tmp:
        root = Path(tmp) / "www"
        root.mkdir()
        t0 = time.perf_counter()
        files = make_files(root, args)
        print(f"wrote {len(files)} files of {args.frames} {args.size}x{args.size} {args.syntax} frames "
              f"({', '.join(f'{p.name} {p.stat().st_size / 1e6:.1f} MB' for p in files.values())}) "
              f"in {time.perf_counter() - t0:.1f} s")
        sizes = {name: encoded_sizes(path) for name, path in files.items()}
        rows = [bench_local(path) for path in files.values()]  # (each remote row measures its own baseline too)

        # Servers (and the proxies that count and delay) run in processes of
        # their own, so that they do not compete with the measured code for the GIL.
        servers: list = []
        delays = f"0,{args.latency_ms}"
        targets: list[tuple[str, int, str, Path, dict]] = []  # backend, latency, url, path, options
        try:
            if "http" in backends:
                if find_nginx() is None:
                    print("nginx is not installed: skipping HTTP (apt-get install nginx-light)")
                else:
                    ng = NginxServer(root, Path(tmp) / "nginx").start()
                    servers.append(ng)
                    proc = ServerProcess("--upstream", ng.url, "--delays-ms", delays)
                    servers.append(proc)
                    for ms, url in proc.info["proxies"].items():
                        for path in files.values():
                            targets.append(("http", int(ms), f"{url}/{path.name}", path, {}))
            if "s3" in backends:
                import boto3

                proc = ServerProcess("--moto", "--delays-ms", delays)
                servers.append(proc)
                client = boto3.client("s3", endpoint_url=proc.info["moto"], aws_access_key_id="testing",
                                      aws_secret_access_key="testing", region_name="us-east-1")
                client.create_bucket(Bucket=BUCKET)
                for path in files.values():
                    client.upload_file(str(path), BUCKET, path.name)
                for ms, url in proc.info["proxies"].items():
                    options = {"key": "testing", "secret": "testing",
                               "client_kwargs": {"endpoint_url": url, "region_name": "us-east-1"}}
                    for path in files.values():
                        targets.append(("s3", int(ms), f"s3://{BUCKET}/{path.name}", path, options))
            for backend, latency, url, path, options in targets:
                proxy_url = options["client_kwargs"]["endpoint_url"] if options else url.rsplit("/", 1)[0]
                target = Target(backend, url, ProxyLog(proxy_url), options)
                table = path.stem
                t0 = time.perf_counter()
                rows.append(bench_dicomframes(target, path.name, sizes[table], FsspecSource.header_block, args, latency, path))
                if args.before:
                    with one_batch_in_flight():
                        rows.append(bench_dicomframes(target, path.name, sizes[table], FsspecSource.header_block,
                                                      args, latency, path))
                    rows[-1].library = "dicomframes 1 batch"
                for _, bench in peers:
                    rows.append(bench(target, path.name, sizes[table], args, latency))
                print(f"  {backend} +{latency} ms {path.name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        finally:
            for server in servers:
                server.stop()
    print()
    print_table(rows)
    print_ratios(rows)
    print("\nMB/needed: bytes transferred / encoded bytes of the frames read (+ the first read for dicomframes "
          "iteration).\nPeers iterate only their first --peer-frames frames: compare per-frame rates and bytes.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
