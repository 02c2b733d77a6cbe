"""Means of files with Dask on a 2-worker LocalCluster vs in-process iteration.

For each file and each storage (the local disk; HTTP from nginx on 127.0.0.1,
if nginx is installed) it measures frames per second of the mean of every
pixel of the file (``--reduce all``, the default) or of each frame
(``--reduce frame``), computed

- in-process: ``for frame in reader.iter_frames()`` (decoding on the machine's
  cores: threads or worker processes, as the reader chooses), and
- on a cluster: ``dicomframes.to_dask(src).mean().compute()`` (or
  ``.mean(axis=(1, 2, 3))``) on a
  ``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)``,

and the bytes each moved from storage, opening included (in-process: the
reader's counters, ``reader.stats``; on the cluster: nginx's access log for
HTTP, and for the local file the client's reader plus
``dicomframes.integrations.dask.io_stats`` of every worker). Both run warm (the
cluster started, the reader's decoder pool started) and the best of
``--repeat`` interleaved runs counts. Then it prints the ratios: cluster rate over
in-process rate (target >= 0.8 on 2 cores), bytes over the file's size
(target <= 1.1).

    python benchmarks/dask_bench.py            # about 3 minutes on 2 cores
    python benchmarks/dask_bench.py --quick    # under a minute
    # issue 16's job: 256x256 RGB JPEG (imagecodecs), per-frame means, 20 chunks
    python benchmarks/dask_bench.py --files jpeg --reduce frame --chunks 20 --frames 2000 20000
    python benchmarks/dask_bench.py --clusters default,no-trim   # also workers without
                                               # Dask's MALLOC_TRIM_THRESHOLD_ setting
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the repository root: tests.helpers

import numpy as np

import dicomframes
from dicomframes.integrations.dask import io_stats, reset_io_stats
from dicomframes.samples import write_sample
from tests.helpers.servers import NginxServer, find_nginx


def cpu_seconds() -> float:
    """CPU seconds used so far by this process and its children (workers, decoder pools)."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil is in the [test] extra
        return float("nan")
    me = psutil.Process()
    total = 0.0
    for proc in [me] + me.children(recursive=True):
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


@dataclass
class Row:
    file: str
    storage: str
    method: str
    frames: int
    seconds: float
    nbytes: int
    size: int
    cpu: float  # CPU seconds, all processes

    @property
    def fps(self) -> float:
        return self.frames / self.seconds


class InProcess:
    """Iteration in this process, with one reader kept open (its decoder pool starts once)."""

    def __init__(self, src: str) -> None:
        self.reader = dicomframes.open(src)
        self.opening = self.reader.stats["bytes"]
        for _ in self.reader.iter_frames(range(min(64, len(self.reader)))):  # warm: pools started
            pass

    def run(self, per_frame: bool) -> tuple[float, int, float, float]:
        """Seconds, bytes moved (opening included), the mean (of the frames' means
        where `per_frame`), CPU seconds."""
        reader = self.reader
        before = reader.stats["bytes"]
        cpu = cpu_seconds()
        start = time.perf_counter()
        if per_frame:
            means = [frame.mean(dtype=np.float64) for frame in reader.iter_frames()]
            mean = float(np.mean(means))
        else:
            total = 0.0
            for frame in reader.iter_frames():
                total += float(frame.sum(dtype=np.float64))
            mean = total / (len(reader) * int(np.prod(reader.format.shape)))
        seconds = time.perf_counter() - start
        return seconds, self.opening + reader.stats["bytes"] - before, mean, cpu_seconds() - cpu

    def close(self) -> None:
        self.reader.close()


def on_cluster(client, src: str, frames_per_chunk: int, per_frame: bool, log=None) -> tuple[float, int, float, float]:
    """Seconds (opening included), bytes moved (opening included: nginx's log for HTTP,
    else the client's reader plus every worker's `io_stats`), the mean, CPU seconds."""
    from dicomframes import Reader

    client.run(reset_io_stats)
    mark = log.mark() if log is not None else 0
    cpu = cpu_seconds()
    start = time.perf_counter()
    arr = dicomframes.to_dask(src, frames_per_chunk=frames_per_chunk)
    if per_frame:
        mean = float(np.mean(arr.mean(axis=tuple(range(1, arr.ndim)), dtype=np.float64).compute(scheduler=client)))
    else:
        mean = float(arr.mean(dtype=np.float64).compute(scheduler=client))
    seconds = time.perf_counter() - start
    cpu = cpu_seconds() - cpu
    if log is not None:
        nbytes = sum(r.bytes for r in log.since(mark))
    else:
        opened = sum(v.stats["bytes"] for v in dict(arr.__dask_graph__()).values() if isinstance(v, Reader))
        nbytes = opened + sum(s["bytes"] for s in client.run(io_stats).values())
    return seconds, nbytes, mean, cpu


CONFIGS = {
    # name: (label in the table, dask config for the workers' environment)
    "default": ("dask 2 workers", {}),
    "no-trim": ("dask 2 workers, MALLOC_TRIM_THRESHOLD_ unset",
                {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller files, one run each")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--frames-per-chunk", type=int, default=64)
    parser.add_argument("--chunks", type=int, help="chunks per file instead of --frames-per-chunk")
    parser.add_argument("--reduce", choices=["all", "frame"], default="all",
                        help="the mean of the whole file, or of each frame")
    parser.add_argument("--files", nargs="+", choices=["jpegls", "rle", "native", "jpeg"],
                        default=["jpegls", "rle", "native"], help="kinds of file to measure")
    parser.add_argument("--frames", type=int, nargs="+",
                        help="frames of the jpeg file(s) (default 2000, 400 with --quick)")
    parser.add_argument("--clusters", default="default",
                        help="comma-separated cluster configurations to run, of: " + ", ".join(CONFIGS)
                        + " (no-trim: workers started without Dask's MALLOC_TRIM_THRESHOLD_=65536)")
    args = parser.parse_args()
    repeat = 1 if args.quick else args.repeat
    n = 400 if args.quick else 2000
    configs = [c.strip() for c in args.clusters.split(",") if c.strip()]
    for c in configs:
        if c not in CONFIGS:
            parser.error(f"unknown cluster configuration {c!r}; one of {', '.join(CONFIGS)}")

    import dask
    from distributed import Client, LocalCluster

    files = {
        # name: (kind, write_sample arguments)
        "jpegls 512x512": ("jpegls", dict(frames=n // 2, rows=512, columns=512, syntax="jpegls")),
        "rle 512x512 rgb": ("rle", dict(frames=n // 4, rows=512, columns=512, samples_per_pixel=3, syntax="rle")),
        "rle 256x256": ("rle", dict(frames=n, rows=256, columns=256, syntax="rle")),
        "native 512x512": ("native", dict(frames=n // 2, rows=512, columns=512, syntax="native")),
    }
    files = {name: kw for name, (kind, kw) in files.items() if kind in args.files}
    if "jpeg" in args.files:
        for count in args.frames or [n]:
            files[f"jpeg 256x256 rgb {count}"] = dict(frames=count, jpeg=True)
    per_frame = args.reduce == "frame"
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as root:
        paths = {}
        for name, kw in files.items():
            path = os.path.join(root, name.replace(" ", "_") + ".dcm")
            if kw.get("jpeg"):
                from measure import write_jpeg_file  # imagecodecs encodes it

                paths[name] = str(write_jpeg_file(path, kw["frames"], 256))
            else:
                paths[name] = write_sample(path, **kw)
        nginx = None
        if find_nginx():
            nginx = NginxServer(root, os.path.join(root, "nginx")).start()
        else:
            print("nginx is not installed: HTTP rows skipped (apt-get install nginx-light)", file=sys.stderr)
        clients = {}
        try:
            for c in configs:
                with dask.config.set(CONFIGS[c][1]):  # read when the nanny spawns its worker
                    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           dashboard_address=None, silence_logs=logging.ERROR)
                clients[c] = Client(cluster, set_as_default=False)
                env = clients[c].run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_"))
                print(f"  cluster {c}: workers' MALLOC_TRIM_THRESHOLD_={sorted(set(env.values()), key=str)}", file=sys.stderr)
            # Warm the workers (imports, decoders) on a small file.
            warm = write_sample(os.path.join(root, "warm.dcm"), frames=40, rows=64, columns=64, syntax="jpegls")
            for client in clients.values():
                dicomframes.to_dask(warm, frames_per_chunk=10).sum().compute(scheduler=client)
            for name, path in paths.items():
                frames, size = files[name]["frames"], os.path.getsize(path)
                storages = [("local", path, None)]
                if nginx is not None:
                    storages.append(("http", f"{nginx.url}/{os.path.basename(path)}", nginx))
                for storage, src, log in storages:
                    fpc = -(-frames // args.chunks) if args.chunks else args.frames_per_chunk
                    local = InProcess(src)
                    for client in clients.values():
                        on_cluster(client, src, fpc, per_frame)  # warm: every worker's decoder imported
                    best = {k: (float("inf"), 0, 0.0, 0.0) for k in ["in-process", *clients]}
                    try:
                        for _ in range(repeat):  # interleaved: all see the same machine
                            best["in-process"] = min(best["in-process"], local.run(per_frame))
                            for c, client in clients.items():
                                best[c] = min(best[c], on_cluster(client, src, fpc, per_frame, log))
                    finally:
                        local.close()
                    for k, (seconds, nbytes, mean, cpu) in best.items():
                        label = k if k == "in-process" else CONFIGS[k][0]
                        rows.append(Row(name, storage, label, frames, seconds, nbytes, size, cpu))
                        if not np.isclose(mean, best["in-process"][2], rtol=1e-9):
                            raise SystemExit(f"means differ for {name} ({storage}, {label})")
                    print(f"  {name:16} {storage:5}: " + ", ".join(
                        f"{k} {frames / v[0]:7.0f} fps" for k, v in best.items()), file=sys.stderr)
        finally:
            for client in clients.values():
                cluster = client.cluster
                client.close()
                cluster.close()
            if nginx is not None:
                nginx.stop()

    chunking = f"{args.chunks} chunks per file" if args.chunks else f"frames_per_chunk={args.frames_per_chunk}"
    print(f"\n{os.cpu_count()} cores; {chunking}; mean of each {'frame' if per_frame else 'file'}; best of {repeat}\n")
    print("| file | storage | method | frames | frames/s | CPU ms / frame | MB moved | bytes / file |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r.file} | {r.storage} | {r.method} | {r.frames} | {r.fps:,.0f} | {1000 * r.cpu / r.frames:.2f} "
              f"| {r.nbytes / 1e6:.1f} | {r.nbytes / r.size:.3f} |")
    print("\n| file | storage | cluster | dask / in-process (frames/s) | dask / in-process (CPU per frame) | dask bytes / file |")
    print("|---|---|---|---:|---:|---:|")
    base = None
    for r in rows:
        if r.method == "in-process":
            base = r
            continue
        print(f"| {r.file} | {r.storage} | {r.method.replace('dask 2 workers', '').strip(', ') or 'default'} "
              f"| {r.fps / base.fps:.2f}x | {r.cpu / base.cpu:.2f}x | {r.nbytes / r.size:.3f} |")


if __name__ == "__main__":
    main()
