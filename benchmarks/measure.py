"""What the benchmark scripts share: peak memory of this process, printing a table."""

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
