"""Random access: what one frame costs to read.

    python examples/random_access.py [FILE]

With an offset table (BOT or EOT), one frame costs one read of that frame's
bytes. Without one, the first frame asked for past the frames located so far
costs a walk over the item headers up to it, read in blocks (64 KiB locally,
4 MiB remotely), once; after that, every located frame is again one read (or
none, while its bytes are still in the reader's block cache).

Without FILE, writes a 2,000-frame JPEG-LS sample without an offset table and
shows both costs.
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
        steps = [(1234, "first access"), (10, "already located"), (1234, "again")]
        for i, what in steps:
            before = dict(reader.stats)
            tile = reader.frame(i)
            after = reader.stats
            reads = after["requests"] - before["requests"]
            print(f"frame {i} ({what}): {tile.shape} {tile.dtype}; "
                  f"{reads} read{'' if reads == 1 else 's'}, {after['bytes'] - before['bytes']:,} bytes")
        codestream = reader.encoded_frame(7)
        print(f"frame 7 as stored: {len(codestream):,} bytes starting {codestream[:4].hex()}")
        picks = [1999, 3, 3, 500]
        for i, frame in zip(picks, reader.iter_frames(picks)):
            print(f"frame {i}: min {frame.min()} max {frame.max()}")


if __name__ == "__main__":
    main()
