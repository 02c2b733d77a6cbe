"""Decompress a multi-frame file to native Explicit VR Little Endian, with flat memory.

    python examples/decompress_file.py [IN [OUT]]

Without IN, writes a 400-frame JPEG-LS sample (512x512) to examples/output/.
The same from a shell:  dicomframes decompress IN OUT  (add --progress, --keep-ybr,
--keep-uid, --encapsulated, --force as needed). IN and OUT may be fsspec URLs
(s3://bucket/key ...; URLs need the ``[remote]`` extra: pip install ".[remote]").
"""

import os
import resource
import sys
import time

import dicomframes
from dicomframes.samples import write_sample
from dicomframes.transcode.decompress import ProgressDisplay


def main() -> None:
    if len(sys.argv) > 1:
        src = sys.argv[1]
    else:
        os.makedirs("examples/output", exist_ok=True)
        src = "examples/output/cine_jpegls.dcm"
        if not os.path.exists(src):
            write_sample(src, frames=400, rows=512, columns=512, syntax="jpegls")
    dst = sys.argv[2] if len(sys.argv) > 2 else os.path.splitext(src)[0] + "_native.dcm"

    start = time.perf_counter()
    dicomframes.decompress(src, dst, overwrite=True, progress=ProgressDisplay())
    seconds = time.perf_counter() - start
    with dicomframes.open(dst) as reader:
        print(reader)
    size = os.path.getsize(dst) if "://" not in dst else None
    if size:
        print(f"wrote {size / 1e6:.0f} MB in {seconds:.2f} s ({size / 1e6 / seconds:.0f} MB/s)")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
