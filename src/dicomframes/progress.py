"""Progress of long work (frames, export, decompress), drawn on a stream.

On a terminal, with tqdm installed (the ``[progress]`` extra), a tqdm bar;
otherwise one line redrawn in place, at most every `interval` seconds:
``label: done/total units  rate units/s  [detail  ]time left``. Callers decide
whether to show progress at all (the CLI: when stderr is a terminal, unless
``--quiet``); this module only draws it.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


def clock(seconds: float | None) -> str:
    """Seconds as ``mm:ss`` (``h:mm:ss`` past an hour); ``--:--`` when unknown."""
    if seconds is None:
        return "--:--"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def _tqdm_class() -> Any:
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm


class ProgressBar:
    """Progress towards `total` `unit`s (the total may be given later, with `update`).

    `tqdm`: None picks a tqdm bar when tqdm is installed and `stream` is a
    terminal; True or False forces the choice (True needs tqdm).
    """

    def __init__(
        self, total: int | None = None, *, label: str, unit: str, stream: TextIO | None = None,
        interval: float = 0.25, tqdm: bool | None = None,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.label, self.unit, self.total, self.interval = label, unit, total, interval
        self.start = time.perf_counter()
        self._last = float("-inf")
        self._open_line = False
        bar_class = _tqdm_class()
        if tqdm is None:
            isatty = getattr(self.stream, "isatty", None)
            tqdm = bar_class is not None and bool(isatty and isatty())
        if tqdm and bar_class is None:
            raise ImportError("a tqdm progress bar needs tqdm: pip install 'dicomframes[progress]'")
        self._bar = bar_class(
            total=total, desc=label, unit=f" {unit}s", file=self.stream, mininterval=interval,
            dynamic_ncols=True, leave=True,
        ) if tqdm else None

    def update(self, done: int, total: int | None = None, detail: str = "") -> None:
        """`done` units of `total` (or of the total given before) are done."""
        if total is not None:
            self.total = total
        finished = self.total is not None and done >= self.total
        if self._bar is not None:
            if total is not None and self._bar.total != total:
                self._bar.total = total
            if detail:
                self._bar.set_postfix_str(detail, refresh=False)
            self._bar.update(done - self._bar.n)
            if finished:
                self.close()
            return
        now = time.perf_counter()
        if not finished and now - self._last < self.interval:
            return
        self._last = now
        seconds = now - self.start
        rate = done / seconds if seconds > 0 else 0.0
        total_text = "?" if self.total is None else f"{self.total:,}"
        width = len(total_text)
        if finished:
            when = f"{clock(seconds)} total"
        else:
            left = (self.total - done) / rate if rate and self.total is not None else None
            when = f"{clock(left)} left"
        text = f"\r{self.label}: {done:>{width},}/{total_text} {self.unit}s  {rate:,.1f} {self.unit}s/s  "
        self.stream.write(text + (f"{detail}  " if detail else "") + when)
        self._open_line = True
        if finished:
            self.close()
        else:
            self.stream.flush()

    def close(self) -> None:
        """End the display (its line stays); safe to call more than once."""
        if self._bar is not None:
            self._bar.close()
            return
        if self._open_line:
            self.stream.write("\n")
            self.stream.flush()
            self._open_line = False

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
