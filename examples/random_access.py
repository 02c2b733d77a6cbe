"""Random access: one frame costs one read of that frame's bytes.

    python examples/random_access.py [FILE]

Without FILE, writes a 2,000-frame JPEG-LS sample without an offset table, so
frames are located by walking item headers, only as far as needed.
"""

import os
import sys

import dicomframes
from dicomframes.samples import write_sample


def main() -> None:
    if len(sys.argv) > 1:
        path = sys.argv[1]
    else:
        os.makedirs("examples/output", exist_ok=True)
        path = write_sample("examples/output/tiles.dcm", frames=2000, rows=128, columns=128,
                            syntax="jpegls", offset_table="none")
    with dicomframes.open(path) as reader:
        print(reader.info.index_kind, "index,", len(reader), "frames")
        before = dict(reader.stats)
        tile = reader.frame(1234)
        after = reader.stats
        print(f"frame 1234: {tile.shape} {tile.dtype}; "
              f"{after['requests'] - before['requests']} reads, {after['bytes'] - before['bytes']:,} bytes")
        codestream = reader.encoded_frame(7)
        print(f"frame 7 as stored: {len(codestream):,} bytes starting {codestream[:4].hex()}")
        picks = [1999, 3, 3, 500]
        for i, frame in zip(picks, reader.iter_frames(picks)):
            print(f"frame {i}: min {frame.min()} max {frame.max()}")


if __name__ == "__main__":
    main()
