"""The progress display: a tqdm bar on a terminal, one redrawn line elsewhere."""

from __future__ import annotations

import io

import pytest

from dicomframes import progress
from dicomframes.progress import ProgressBar, clock


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_clock():
    assert clock(None) == "--:--"
    assert clock(5.4) == "00:05"
    assert clock(3725) == "1:02:05"


def test_a_line_when_the_stream_is_no_terminal():
    stream = io.StringIO()
    bar = ProgressBar(4, label="frames", unit="frame", stream=stream, interval=0)
    for done in range(1, 5):
        bar.update(done, detail="1.5 MB/s" if done == 2 else "")
    text = stream.getvalue()
    lines = text.split("\r")[1:]
    assert lines[0].startswith("frames: 1/4 frames") and lines[0].endswith("left")
    assert "1.5 MB/s" in lines[1]
    assert lines[-1].startswith("frames: 4/4 frames") and lines[-1].endswith("total\n")
    bar.close()  # ending twice writes nothing more
    assert stream.getvalue() == text


def test_the_line_redraws_at_most_every_interval():
    stream = io.StringIO()
    bar = ProgressBar(1000, label="x", unit="file", stream=stream, interval=3600)
    for done in range(1, 1001):
        bar.update(done)
    assert stream.getvalue().count("\r") == 2  # the first update and the last one


def test_a_total_given_later():
    stream = io.StringIO()
    with ProgressBar(label="export", unit="file", stream=stream, interval=0) as bar:
        bar.update(1, 3)
        bar.update(3)
    assert "export: 1/3 files" in stream.getvalue() and stream.getvalue().endswith("total\n")


def test_a_tqdm_bar_on_a_terminal():
    pytest.importorskip("tqdm")
    stream = _Terminal()
    bar = ProgressBar(3, label="frames", unit="frame", stream=stream, interval=0)
    for done in (1, 2, 3):
        bar.update(done, detail="9.0 MB/s")
    text = stream.getvalue()
    assert "frames: 100%|" in text and "3/3" in text and "9.0 MB/s" in text
    assert ProgressBar(3, label="x", unit="frame", stream=io.StringIO(), tqdm=True)._bar is not None  # forced


def test_without_tqdm_the_terminal_gets_the_line_and_forcing_it_names_the_extra(monkeypatch):
    monkeypatch.setattr(progress, "_tqdm_class", lambda: None)
    stream = _Terminal()
    ProgressBar(2, label="frames", unit="frame", stream=stream, interval=0).update(2)
    assert stream.getvalue().startswith("\rframes: 2/2 frames")
    with pytest.raises(ImportError, match=r"dicomframes\[progress\]"):
        ProgressBar(2, label="frames", unit="frame", stream=stream, tqdm=True)
