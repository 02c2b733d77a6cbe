"""Read frames in batches into one buffer you own, as a training loop does.

    python examples/batches.py [FILE] [--batch 64]

Without FILE, writes a 2,000-frame sample (JPEG-LS, 256x256) to examples/output/.
`reader.read_into` fills the same array batch after batch: no array per frame,
and with the `[fast]` extra the frames are decoded straight into it.
"""

import argparse
import os
import resource
import time

import numpy as np

import dicomframes
from dicomframes.samples import write_sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--frames", type=int, default=2000, help="frames of the sample written without FILE")
    args = parser.parse_args()
    path = args.file
    if path is None:
        os.makedirs("examples/output", exist_ok=True)
        path = write_sample("examples/output/batches.dcm", frames=args.frames, rows=256, columns=256, syntax="jpegls")
    with dicomframes.open(path) as reader:
        print(reader)
        n = len(reader)
        batch = np.empty((args.batch, *reader.format.shape), reader.format.dtype)  # reused for every batch
        start = time.perf_counter()
        total = 0.0
        for a in range(0, n, args.batch):
            b = min(a + args.batch, n)
            frames = reader.read_into(range(a, b), batch[: b - a])
            if a == 0:  # the same pixels as one frame at a time
                assert all(np.array_equal(frames[k], reader.frame(k)) for k in range(b - a))
            total += float(frames.mean(dtype=np.float64)) * (b - a)  # your training step here
        seconds = time.perf_counter() - start
        print(f"{n} frames in {seconds:.2f} s ({n / seconds:,.0f} frames/s) in batches of {args.batch}; "
              f"mean intensity {total / n:.1f}")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
