"""The mean of every frame of a multi-frame file, computed by a Dask cluster.

    python examples/dask_mean.py [FILE_OR_URL] [--scheduler tcp://host:8786]

Needs the ``[dask]`` extra (``pip install ".[dask]"``); URLs need ``[remote]``.
Without FILE_OR_URL, writes a 600-frame sample (RLE, 256x256) to a temporary
folder. Without --scheduler, starts a LocalCluster of 2 worker processes. The
graph holds the reader once (pickled small); each task reads its chunk of
frames with planned, coalesced range reads.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time

import numpy as np

import dicomframes
from dicomframes.samples import write_sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", help="a DICOM file or URL (default: a sample)")
    parser.add_argument("--scheduler", help="address of a running Dask scheduler")
    parser.add_argument("--frames-per-chunk", type=int, default=64)
    args = parser.parse_args()

    try:
        from distributed import Client, LocalCluster
    except ImportError:
        sys.exit('This example needs Dask and distributed: pip install ".[dask]" (from the repository root)')

    with tempfile.TemporaryDirectory() as folder:
        src = args.source or write_sample(os.path.join(folder, "cine.dcm"), frames=600, rows=256, columns=256, syntax="rle")
        if args.scheduler:
            client, cluster = Client(args.scheduler), None
        else:
            cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                   dashboard_address=None, silence_logs=logging.ERROR)
            client = Client(cluster)
        try:
            frames = dicomframes.to_dask(src, frames_per_chunk=args.frames_per_chunk)
            print(frames)
            start = time.perf_counter()
            per_frame = frames.mean(axis=tuple(range(1, frames.ndim))).compute()
            seconds = time.perf_counter() - start
            print(f"{len(per_frame)} frame means in {seconds:.2f} s ({len(per_frame) / seconds:,.0f} frames/s); "
                  f"overall mean {per_frame.mean():.3f}")
            print("brightest frame:", int(np.argmax(per_frame)))
            if cluster is not None:
                from dicomframes.integrations.dask import io_stats

                moved = client.run(io_stats)
                print("read by the workers:", {w[-5:]: s for w, s in moved.items()})
        finally:
            client.close()
            if cluster is not None:
                cluster.close()


if __name__ == "__main__":
    main()
