"""Tile positions of a big TILED_SPARSE level: dicomframes vs wsidicom.

Writes (once, into ``--folder``, reused when present) a TILED_SPARSE level of
``--tiles`` 16x16 native tiles stored in random order, whose Per-Frame
Functional Groups Sequence holds one item per tile (Plane Position (Slide) with
X/Y/Z offsets as DS text and column/row positions as SL). Then, each in a fresh
process (so that peak RSS is honest: the child's VmHWM):

- dicomframes: open + tile positions as arrays (``tile_geometry.positions()``),
  then + one 512x512 region;
- dicomframes positions with the vectorised path switched off (the per-item
  parser it falls back to), for comparison;
- wsidicom: ``WsiDicom.open([file])`` and ``WsiDicom.open(folder)``, each + ``read_region`` of
  the same 512x512 region (the ratio is taken against the faster).

    python benchmarks/sparse_bench.py                  # 150,000 tiles
    python benchmarks/sparse_bench.py --tiles 20000    # quicker
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the repository root: tests.helpers

_CHILD = """
import json, sys, time
import numpy
{imports}
PATH, FOLDER = {path!r}, {folder!r}
def hwm():
    # VmHWM, not ru_maxrss: after fork + exec, ru_maxrss starts from the parent's
    # peak (this script's, which held the generated image), VmHWM from this process's own.
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
t0 = time.perf_counter()
{work}
print(json.dumps({{"s": time.perf_counter() - t0, "t_positions": locals().get("t_positions"),
                  "rss_mb": hwm(), "check": check}}))
"""

_CASES = {  # name -> (what, imports, work)
    "dicomframes": ("open + positions + one 512x512 region", "import dicomframes", """
r = dicomframes.open(PATH)
rows, cols, _, _ = r.tile_geometry.positions()
t_positions = time.perf_counter() - t0
region = numpy.asarray(r.read_region((0, 0), (512, 512)))
check = [len(rows), int(rows.sum()), int(cols.sum()), int(region.astype(numpy.int64).sum())]
"""),
    "dicomframes-general": ("open + positions (vectorised path off)", "import dicomframes\n"
                            "import dicomframes.views.functional_groups as fg\nfg._VECTOR_MIN_ITEMS = 1 << 62", """
r = dicomframes.open(PATH)
rows, cols, _, _ = r.tile_geometry.positions()
t_positions = time.perf_counter() - t0
check = [len(rows), int(rows.sum()), int(cols.sum())]
"""),
    "wsidicom": ("open([file]) + one 512x512 region", "from wsidicom import WsiDicom", """
s = WsiDicom.open([PATH])
region = numpy.asarray(s.read_region((0, 0), 0, (512, 512)))[..., :3]
check = [int(region.astype(numpy.int64).sum())]
"""),
    "wsidicom-folder": ("open(folder) + one 512x512 region", "from wsidicom import WsiDicom", """
s = WsiDicom.open(FOLDER)
region = numpy.asarray(s.read_region((0, 0), 0, (512, 512)))[..., :3]
check = [int(region.astype(numpy.int64).sum())]
"""),
}


def build(folder: Path, tiles: int) -> Path:
    from tests.helpers import wsigen

    path = folder / "sparse.dcm"
    if path.exists():
        return path
    across = 400
    down = -(-tiles // across)
    print(f"writing a TILED_SPARSE level of {across * down:,} 16x16 native tiles (stored shuffled) ...", flush=True)
    t0 = time.perf_counter()
    image = wsigen.large_image(across * 16, down * 16, cell=16)
    wsigen.write_level(folder, "sparse", image, tile_size=(16, 16), codec="native",
                       organization="TILED_SPARSE", shuffle=True)
    print(f"written in {time.perf_counter() - t0:.1f} s", flush=True)
    return path


def measure(case: str, path: Path) -> dict:
    _, imports, work = _CASES[case]
    code = _CHILD.format(imports=imports, work=work, path=str(path), folder=str(path.parent))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        return {"error": lines[-1] if lines else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiles", type=int, default=150_000)
    ap.add_argument("--folder", type=Path, help="where the level is written (kept); default a temporary folder")
    ap.add_argument("--repeat", type=int, default=3, help="runs per case; the fastest is reported")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        path = build(folder, args.tiles)
        import dicomframes

        with dicomframes.open(path) as reader:
            _, length = reader.header.sequences["PerFrameFunctionalGroupsSequence"]
        print(f"file {path.stat().st_size / 1e6:.1f} MB, Per-Frame Functional Groups Sequence "
              f"{length / 1e6:.1f} MB\n", flush=True)
        results = {}
        for case in _CASES:
            runs = [measure(case, path) for _ in range(args.repeat)]
            good = [r for r in runs if "error" not in r]
            results[case] = min(good, key=lambda r: r["s"]) if good else runs[0]
        print(f"{'library':<22} {'what':<40} {'seconds':>8} {'positions s':>12} {'peak RSS MB':>12}")
        for case, (what, _, _) in _CASES.items():
            r = results[case]
            if "error" in r:
                print(f"{case:<22} {what:<40} failed: {r['error']}")
                continue
            tp = f"{r['t_positions']:12.3f}" if r.get("t_positions") is not None else f"{'-':>12}"
            print(f"{case:<22} {what:<40} {r['s']:8.3f} {tp} {r['rss_mb']:12.1f}")
        ours = results["dicomframes"]
        theirs = min((results[c] for c in ("wsidicom", "wsidicom-folder") if "error" not in results[c]),
                     key=lambda r: r["s"], default={"error": "failed"})
        if "error" not in ours and "error" not in theirs:
            print(f"\nwsidicom open + region / dicomframes positions: {theirs['s'] / ours['t_positions']:.2f}x")
            print(f"wsidicom open + region / dicomframes open + positions + region: {theirs['s'] / ours['s']:.2f}x")
            if ours["check"][-1] != theirs["check"][-1]:
                print("warning: the two regions differ")


if __name__ == "__main__":
    main()
