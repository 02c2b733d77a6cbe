"""The command line: sample, info, frames."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from dicomframes import cli
from dicomframes.cli import main
from dicomframes.errors import DicomFramesError


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
    # A data error exits 1 (usage errors exit 2: docs/cli.md); it was 2 before the two were told apart.
    assert main(["info", str(bad)]) == 1
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


# -- exit codes, messages, options (docs/cli.md) -------------------------------------------------------

def _boom(exc):
    def run(args):
        raise exc
    return run


@pytest.mark.parametrize(
    "exc, code, words",
    [
        (KeyboardInterrupt(), 130, []),
        (DicomFramesError("it broke", path="x.dcm"), 1, ["dicomframes: error: x.dcm: it broke"]),
        (RuntimeError("unexpected\nstate"), 1, ["internal error", "RuntimeError", "unexpected state", "report"]),
        (ConnectionRefusedError(111, "Connection refused"), 1, ["dicomframes: error:", "Connection refused"]),
    ],
)
def test_every_exception_is_one_line(tmp_path, capsys, monkeypatch, exc, code, words):
    path = str(tmp_path / "s.dcm")
    assert main(["sample", path, "--frames", "2", "--rows", "8", "--columns", "8"]) == 0
    capsys.readouterr()
    monkeypatch.setattr(cli, "cmd_info", _boom(exc))
    assert main(["info", path]) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if words:
        assert len(err.strip().splitlines()) == 1
        for word in words:
            assert word in err
    else:
        assert err == ""


def test_no_arguments_prints_help(capsys):
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: dicomframes") and "frames" in err and "sample" in err


def test_version(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0 and capsys.readouterr().out.startswith("dicomframes ")


def test_decoder_choices_come_from_the_registry():
    from dicomframes.frames import codecs

    names = cli.decoder_names()
    assert "pylibjpeg" in names and "numpy" not in names
    assert set(names) <= {b.name for b in codecs._BACKENDS}


def test_storage_flags_become_options():
    args = cli.build_parser().parse_args([
        "info", "s3://bucket/key.dcm", "--anon", "--endpoint-url", "http://localhost:9000",
        "-o", "max_concurrency=4", "-o", "profile=dev", "-o", 'client_kwargs={"region_name": "eu-west-1"}',
        "-o", "use_ssl=false", "--timeout", "2.5",
    ])
    assert cli._storage_options(args, args.paths[0]) == {
        "anon": True, "endpoint_url": "http://localhost:9000", "max_concurrency": 4, "profile": "dev",
        "client_kwargs": {"region_name": "eu-west-1"}, "use_ssl": False, "timeout": 2.5,
    }
    with pytest.raises(SystemExit) as exit:
        cli._storage_options(args, "https://example.org/x.dcm")
    assert exit.value.code == 2


def test_storage_flags_are_ignored_for_local_paths(tmp_path, capsys):
    path = str(tmp_path / "s.dcm")
    main(["sample", path, "--frames", "2", "--rows", "8", "--columns", "8"])
    capsys.readouterr()
    assert main(["info", path, "--anon", "-o", "key=x", "--timeout", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["number_of_frames"] == 2


def test_verbose_logs_at_info(tmp_path, capsys, monkeypatch):
    path = str(tmp_path / "s.dcm")
    main(["sample", path, "--frames", "2", "--rows", "8", "--columns", "8"])
    capsys.readouterr()

    def logs(args):
        logging.getLogger("dicomframes.io.remote").info("retrying bytes 0..10")
        return 0

    monkeypatch.setattr(cli, "cmd_info", logs)
    handlers = list(logging.getLogger("dicomframes").handlers)
    assert main(["info", path]) == 0
    assert "retrying" not in capsys.readouterr().err
    assert main(["info", path, "-v"]) == 0
    assert "retrying bytes 0..10" in capsys.readouterr().err
    assert logging.getLogger("dicomframes").handlers == handlers  # main() leaves no handler behind


def test_quiet_turns_progress_off(tmp_path, capsys):
    path = str(tmp_path / "s.dcm")
    main(["sample", path, "--frames", "3", "--rows", "8", "--columns", "8"])
    capsys.readouterr()
    assert main(["frames", path, "--progress", "-q"]) == 0
    assert "3/3 frames" not in capsys.readouterr().err
    assert main(["frames", path, "--progress"]) == 0
    assert "3/3 frames" in capsys.readouterr().err


def test_info_json_one_object_or_a_list(tmp_path, capsys):
    a, b = str(tmp_path / "a.dcm"), str(tmp_path / "b.dcm")
    main(["sample", a, "--frames", "2", "--rows", "8", "--columns", "8", "--syntax", "native"])
    main(["sample", b, "--frames", "3", "--rows", "8", "--columns", "8"])
    capsys.readouterr()
    assert main(["info", a, "--json"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert one["number_of_frames"] == 2 and one["complete"] is True and one["decoder"] == "none (native)"
    assert main(["info", a, b, "--json"]) == 0
    assert [i["number_of_frames"] for i in json.loads(capsys.readouterr().out)] == [2, 3]


def test_frames_truncated_counts_decoded(tmp_path, capsys):
    path = tmp_path / "t.dcm"
    main(["sample", str(path), "--frames", "4", "--rows", "16", "--columns", "16"])
    capsys.readouterr()
    path.write_bytes(path.read_bytes()[:-40])
    assert main(["info", str(path)]) == 3
    assert "complete" in capsys.readouterr().out
    assert main(["frames", str(path), "--no-progress"]) == 1
    assert "3 of 4 frames decoded before the error" in capsys.readouterr().err
