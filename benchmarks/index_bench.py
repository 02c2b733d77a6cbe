"""Files without offset tables behind round trips: the walk, and the frame index kept for the next process.

A sample file with an empty Basic Offset Table (one fragment per frame) is
served by nginx behind a proxy that adds ``--latency-ms`` before each answer (a
distant bucket). Measured, each in a fresh process (no fsspec or OS cache of
the bytes beyond the kernel's page cache of the served file):

- cold last frame: open + the last frame, the walk reading one block at a time
  (``readahead 1``, as before issue 15) and several at once (the default);
- warm: open + any frame in a fresh process with the index the cold run kept
  in the cache (``index_cache``), and with a published index file (``index=``);
- pydicom: ``pydicom.pixels.pixel_array(fsspec_file, index=last)`` on the same
  URL (it reads the file through fsspec's read-ahead cache), the peer;
- with ``--syntax jpeg``: the same file as a dual-personality DICOM-TIFF (a TIFF
  header in the preamble, tifffile's IFD at the end listing the fragments), cold
  last frame through its tile table;

with requests and bytes (from the proxy's own counts) and the ratios. Run::

    python benchmarks/index_bench.py               # 8,000 frames, about 100 MB
    python benchmarks/index_bench.py --frames 20000 --size 128
    python benchmarks/index_bench.py --syntax jpeg --frames 20000 --size 256   # the issue's 418 MB case, + TIFF
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the repository root: tests.helpers

from dicomframes.samples import write_sample
from measure import write_jpeg_file
from tests.helpers.servers import NginxServer, Proxy, find_nginx

CHILD = r"""
import json, sys, time
sys.path.insert(0, {root!r})
what, url, frame, extra = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
import fsspec, fsspec.implementations.http, dicomframes  # imports are not what is measured
t = time.perf_counter()
if what == "pydicom":
    import pydicom.pixels
    with fsspec.open(url, "rb") as f:
        arr = pydicom.pixels.pixel_array(f, index=frame)
    print(json.dumps({{"seconds": time.perf_counter() - t, "origin": "-"}}))
else:
    from dicomframes.frames import index as index_module
    index_module._WALK_READAHEAD = extra.pop("readahead", index_module._WALK_READAHEAD)
    out = extra.pop("out", None)
    with dicomframes.open(url, **extra) as r:
        r.frame(frame)
        origin = r.index_origin
        if out:
            open(out, "wb").write(r.keep_index())
    print(json.dumps({{"seconds": time.perf_counter() - t, "origin": origin}}))
"""


def run_child(what: str, url: str, frame: int, extra: dict, env: dict) -> dict:
    code = CHILD.format(root=str(HERE.parent))
    out = subprocess.run([sys.executable, "-c", code, what, url, str(frame), json.dumps(extra)],
                         capture_output=True, text=True, env=env, timeout=600)
    if out.returncode:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=8000, help="frames (8000)")
    ap.add_argument("--size", type=int, default=128, help="frame rows and columns (128)")
    ap.add_argument("--latency-ms", type=int, default=50, help="added before each answer (50)")
    ap.add_argument("--no-peers", action="store_true", help="skip pydicom")
    ap.add_argument("--syntax", default="rle", choices=["rle", "jpeg"],
                    help="RGB RLE (rle), or JPEG baseline (needs imagecodecs), which adds dual-personality rows")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="dicomframes-index-bench-"))
    (work / "root").mkdir()
    if args.syntax == "jpeg":
        from tests.helpers.dual_personality import add_tiff

        path = write_jpeg_file(work / "root" / "walked.dcm", args.frames, args.size, bot=False)
        add_tiff(path, work / "root" / "dual.dcm")
    else:
        path = write_sample(work / "root" / "walked.dcm", frames=args.frames, rows=args.size, columns=args.size,
                            samples_per_pixel=3, syntax="rle", offset_table="none")
    size = os.path.getsize(path)
    nginx = NginxServer(work / "root", work / "nginx", find_nginx()).start()
    proxy = Proxy(nginx.url, delay=args.latency_ms / 1000).start()
    url = f"{proxy.url}/walked.dcm"
    last = args.frames - 1
    env = {**os.environ, "DICOMFRAMES_CACHE": str(work / "cache")}
    rows = []

    def measure(label: str, what: str, frame: int, extra: dict, name: str = "walked.dcm") -> dict:
        mark = nginx.mark()
        got = run_child(what, f"{proxy.url}/{name}", frame, extra, env)
        records = nginx.since(mark)
        got.update(label=label, requests=len(records), bytes=sum(r.bytes for r in records))
        rows.append(got)
        return got

    try:
        measure("cold last frame, readahead 1", "dicomframes", last, {"index_cache": False, "readahead": 1})
        measure("cold last frame, default", "dicomframes", last, {"index_cache": False})
        measure("cold last frame, default, keeps the index", "dicomframes", last, {})
        measure("warm (cache), last frame", "dicomframes", last, {})
        measure("warm (cache), middle frame", "dicomframes", args.frames // 2, {})
        index_file = work / "walked.dfindex"
        run_child("dicomframes", url, last, {"index_cache": False, "out": str(index_file)}, env)
        measure("warm (index file), middle frame", "dicomframes", args.frames // 2,
                {"index_cache": False, "index": str(index_file)})
        if args.syntax == "jpeg":
            measure("dual-personality, cold last frame", "dicomframes", last, {"index_cache": False}, "dual.dcm")
            measure("dual-personality, cold middle frame", "dicomframes", args.frames // 2, {"index_cache": False},
                    "dual.dcm")
        if not args.no_peers:
            measure("pydicom, last frame", "pydicom", last, {})
    finally:
        proxy.stop()
        nginx.stop()

    kind = "JPEG baseline" if args.syntax == "jpeg" else "RLE"
    print(f"\n{args.frames:,} frames of {args.size}x{args.size} RGB {kind}, {size / 1e6:.0f} MB, no offset table, "
          f"{args.latency_ms} ms added to each request\n")
    print(f"| {'what':<44} | {'seconds':>8} | {'requests':>8} | {'x file read':>11} | index from |")
    print(f"|{'-' * 46}|{'-' * 10}:|{'-' * 10}:|{'-' * 13}:|------------|")
    for r in rows:
        print(f"| {r['label']:<44} | {r['seconds']:8.2f} | {r['requests']:8d} | {r['bytes'] / size:11.3f} | {r['origin']:<10} |")
    by = {r["label"]: r for r in rows}
    cold1, cold = by["cold last frame, readahead 1"], by["cold last frame, default"]
    print(f"\ncold walk: readahead {cold1['seconds'] / cold['seconds']:.2f}x faster than one block at a time")
    if "pydicom, last frame" in by:
        print(f"cold last frame: {by['pydicom, last frame']['seconds'] / cold['seconds']:.1f}x faster than pydicom")
    if "dual-personality, cold last frame" in by:
        dual = by["dual-personality, cold last frame"]
        print(f"dual-personality cold last frame: {cold['seconds'] / dual['seconds']:.1f}x faster than the walk, "
              f"{dual['requests']} requests")
    warm = by["warm (cache), last frame"]
    print(f"warm open + frame: {warm['requests']} requests, {warm['seconds']:.2f} s "
          f"({cold['seconds'] / warm['seconds']:.0f}x faster than cold)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
