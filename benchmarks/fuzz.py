"""A longer fuzz campaign than CI runs: mutate every corpus file for a while.

    python benchmarks/fuzz.py --minutes 10 [--out crashes/]

Each batch of mutants is checked in a child process, so a codec that crashes
the interpreter (a segfault, an abort) is caught and its input saved to --out.
The contract checked is the one of tests/test_hostile.py: every frame comes
back with the right shape or a DicomFramesError is raised; nothing else, no
hang (per-case alarm), no runaway memory. For the property test with more
examples: DICOMFRAMES_FUZZ=2000 python -m pytest tests/test_hostile.py
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")  # the repository root: the tests package


def child(paths: list[str]) -> None:
    sys.path.insert(0, ROOT)
    from tests.test_hostile import _contract

    for path in paths:
        print(path, flush=True)  # the parent knows which input a crash came from
        _contract(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=5)
    ap.add_argument("--out", default="fuzz-crashes")
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        child(args.child)
        return
    sys.path.insert(0, ROOT)
    import dicomframes
    from tests.test_corpus import CORPUS
    from tests.test_hostile import _mutants

    sources = []
    for p in CORPUS:
        try:
            with dicomframes.open(p):
                sources.append(p)
        except dicomframes.DicomFramesError:
            pass
    deadline = time.time() + args.minutes * 60
    seed, cases, failures = 0, 0, 0
    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        while time.time() < deadline:
            seed += 1
            batch = []
            # Rotate through the corpus so every file gets its share of mutants.
            start = (seed * 3) % len(sources)
            for p in sources[start:] + sources[:start]:
                for kind, data in _mutants(open(p, "rb").read(), seed=seed * 7919 + len(p), count=4):
                    path = os.path.join(tmp, f"{len(batch)}.dcm")
                    with open(path, "wb") as fh:
                        fh.write(data)
                    batch.append(path)
                    if len(batch) >= args.batch:
                        break
                if len(batch) >= args.batch:
                    break
            run = subprocess.run([sys.executable, __file__, "--child", *batch], capture_output=True, text=True)
            cases += len(batch)
            if run.returncode:
                failures += 1
                last = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else batch[0]
                saved = os.path.join(args.out, f"seed{seed}-{os.path.basename(last)}")
                with open(last, "rb") as src, open(saved, "wb") as dst:
                    dst.write(src.read())
                print(f"FAILURE (exit {run.returncode}) on {saved}:\n{run.stderr[-2000:]}")
            for path in batch:
                os.remove(path)
            if seed % 20 == 0:
                print(f"{cases} cases, {failures} failures", flush=True)
    print(f"\n{cases} cases in {args.minutes} min, {failures} failing batches; inputs in {args.out}/")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
