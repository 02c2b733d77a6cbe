"""The command line: sample, info, frames."""

from __future__ import annotations

import json
import subprocess
import sys

from dicomframes.cli import main


def test_sample_info_frames(tmp_path, capsys):
    path = str(tmp_path / "s.dcm")
    assert main(["sample", path, "--frames", "12", "--rows", "40", "--columns", "48", "--syntax", "jpegls"]) == 0
    assert capsys.readouterr().out.strip() == path

    assert main(["info", path, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["number_of_frames"] == 12 and info["rows"] == 40 and info["columns"] == 48
    assert info["index_kind"] == "BOT" and info["transfer_syntax_uid"] == "1.2.840.10008.1.2.4.80"

    assert main(["frames", path, "--json", "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["frames"] == 12 and result["peak_rss_mb"] > 0 and result["requests"] >= 1


def test_walk_counts_fragments(tmp_path, capsys):
    path = str(tmp_path / "w.dcm")
    main(["sample", path, "--frames", "5", "--offset-table", "none", "--rows", "32", "--columns", "32"])
    capsys.readouterr()
    assert main(["info", path, "--walk", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["index_kind"] == "walked" and info["fragments"] == 5


def test_errors_are_messages_not_tracebacks(tmp_path, capsys):
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\x04\x00" + b"1.2\x00")
    assert main(["info", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dicomframes: error:") and str(bad) in err
    assert main(["sample", str(tmp_path / "x.dcm"), "--syntax", "j2k", "--rows", "16"]) == 2
    assert "error" in capsys.readouterr().err


def test_module_entry_point(tmp_path):
    path = str(tmp_path / "m.dcm")
    out = subprocess.run([sys.executable, "-m", "dicomframes", "sample", path, "--frames", "3"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    out = subprocess.run([sys.executable, "-m", "dicomframes", "frames", path], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("3 frames in")
