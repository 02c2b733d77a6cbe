"""Train-style loading of DICOM frames with PyTorch's DataLoader and 2 worker processes.

    python examples/torch_loader.py [FILE_OR_URL ...] [--frames N]

`dicomframes.FrameDataset` is a map-style dataset over the frames of many files
(``__len__``, ``__getitem__``, and ``__getitems__`` for whole batches). Headers
are read once, here; each DataLoader worker receives the dataset pickled small
(fork or spawn) and opens its own file handles or connections.

Without FILE_OR_URL, writes two sample files to a temporary folder. Without
torch installed, the same dataset is read with a plain loop (and it says so).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

import dicomframes
from dicomframes.samples import write_sample


def samples(folder: str, frames: int) -> list[str]:
    return [
        write_sample(os.path.join(folder, "a.dcm"), frames=frames, rows=128, columns=128, syntax="rle"),
        write_sample(os.path.join(folder, "b.dcm"), frames=frames // 2, rows=128, columns=128, syntax="jpegls", seed=1),
    ]


def with_torch(dataset: dicomframes.FrameDataset, torch) -> tuple[int, float]:
    from torch.utils.data import DataLoader

    # Frames come as NumPy arrays; the default collate stacks them into tensors.
    loader = DataLoader(dataset, batch_size=16, shuffle=True, num_workers=2,
                        multiprocessing_context="spawn", persistent_workers=False)
    count, total = 0, 0.0
    for batch in loader:  # (16, 128, 128) uint8 tensors
        count += len(batch)
        total += float(batch.double().sum())
    return count, total


def without_torch(dataset: dicomframes.FrameDataset) -> tuple[int, float]:
    order = np.random.default_rng(0).permutation(len(dataset))
    count, total = 0, 0.0
    for start in range(0, len(order), 16):  # batches, as a data loader would ask for them
        batch = np.stack(dataset.__getitems__(order[start : start + 16].tolist()))
        count += len(batch)
        total += float(batch.sum(dtype=np.float64))
    return count, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="*", help="DICOM files or URLs (default: two samples)")
    parser.add_argument("--frames", type=int, default=400, help="frames of the first sample file")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        sources = args.sources or samples(folder, args.frames)
        with dicomframes.FrameDataset(sources) as dataset:
            print(dataset)
            start = time.perf_counter()
            try:
                import torch
            except ImportError:
                torch = None
            if torch is not None:
                count, total = with_torch(dataset, torch)
                how = "torch DataLoader, 2 worker processes"
            else:
                print("torch is not installed: reading the dataset with a plain loop instead "
                      "(pip install torch to use DataLoader(dataset, num_workers=2))")
                count, total = without_torch(dataset)
                how = "plain loop"
            seconds = time.perf_counter() - start
            print(f"{count} frames in {seconds:.2f} s ({how}); mean pixel {total / (count * 128 * 128):.2f}")


if __name__ == "__main__":
    sys.exit(main())
