"""Stream every frame of a multi-frame file with flat memory.

    python examples/stream_frames.py [FILE]

Without FILE, writes a 500-frame sample (RLE, 512x512) to examples/output/.
"""

import os
import resource
import sys
import time

import numpy as np

import dicomframes
from dicomframes.samples import write_sample


def main() -> None:
    if len(sys.argv) > 1:
        path = sys.argv[1]
    else:
        os.makedirs("examples/output", exist_ok=True)
        path = write_sample("examples/output/cine.dcm", frames=500, rows=512, columns=512, syntax="rle")
    start = time.perf_counter()
    with dicomframes.open(path) as reader:
        print(reader)
        means = np.empty(len(reader))
        for i, frame in enumerate(reader):  # decoded ahead on all cores, yielded in order
            means[i] = frame.mean()
        seconds = time.perf_counter() - start
        print(f"{len(reader)} frames in {seconds:.2f} s; mean intensity {means.mean():.1f}")
        print("storage:", reader.stats)
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
