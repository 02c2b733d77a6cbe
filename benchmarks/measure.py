"""What the benchmark scripts share: peak memory of this process, printing a table, JPEG sample files."""

from __future__ import annotations

import resource


def peak_rss_mb() -> float:
    """Peak RSS of this process in MB.

    VmHWM restarts at exec; ru_maxrss would include the parent that forked us.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:  # not Linux
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def children_peak_rss_mb() -> float:
    """Peak RSS of the largest child process (a decoding worker), in MB; 0 if none."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def emit(lines: list[str], markdown: str | None) -> None:
    """Print the table, and also write it to `markdown` when given."""
    table = "\n".join(lines)
    print(table)
    if markdown:
        with open(markdown, "w") as fh:
            fh.write(table + "\n")


def write_jpeg_file(path, frames: int, size: int, *, rgb: bool = True, bot: bool = True):
    """A JPEG baseline multi-frame file of `frames` `size`x`size` frames (imagecodecs'
    encoder: the samples have none), written by pydicom; an empty Basic Offset Table
    unless `bot`. Needs imagecodecs, pydicom and the repository's tests/helpers."""
    import imagecodecs
    from pydicom.uid import JPEGBaseline8Bit

    from dicomframes.samples import sample_frame
    from tests.helpers.encapsulated import write_encapsulated

    spp = 3 if rgb else 1
    # A few distinct frames repeated: encoding 20,000 would take longer than reading them.
    distinct = [sample_frame(i, size, size, spp) for i in range(min(64, frames))]
    codestreams = [imagecodecs.jpeg8_encode(f, level=90) for f in distinct]
    return write_encapsulated(
        path, [distinct[i % len(distinct)] for i in range(frames)],
        [codestreams[i % len(distinct)] for i in range(frames)], JPEGBaseline8Bit,
        bits_stored=8, photometric="YBR_FULL_422" if spp == 3 else "MONOCHROME2", bot=bot,
    )
