"""The command line run as users run it: ``python -m dicomframes`` in a subprocess, on real files.

Every bad input ends in one line on stderr, no traceback, and its documented
exit code (docs/cli.md): 1 error, 2 usage, 3 incomplete file.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest
from pydicom.data import get_testdata_file

from dicomframes.samples import write_sample

CLI = [sys.executable, "-m", "dicomframes"]


def run(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=120, **kw)


def assert_one_line_error(out: subprocess.CompletedProcess, code: int, *words: str) -> str:
    assert out.returncode == code, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr and "Traceback" not in out.stdout
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    rle = write_sample(root / "rle.dcm", frames=10, rows=32, columns=32, syntax="rle", offset_table="bot")
    native = write_sample(root / "native.dcm", frames=6, rows=16, columns=16, syntax="native")
    walked = write_sample(root / "walked.dcm", frames=8, rows=32, columns=32, syntax="rle", offset_table="none")
    data = open(rle, "rb").read()
    truncated = root / "truncated.dcm"
    truncated.write_bytes(data[: len(data) - 300])
    walked_truncated = root / "walked_truncated.dcm"
    walked_truncated.write_bytes(open(walked, "rb").read()[:-300])
    not_dicom = root / "notes.txt"
    not_dicom.write_text("not a DICOM file\n" * 20)
    return {
        "root": root, "rle": rle, "native": native, "truncated": str(truncated),
        "walked_truncated": str(walked_truncated), "not_dicom": str(not_dicom),
        "j2k": get_testdata_file("emri_small_jpeg_2k_lossless.dcm"),
        "jpeg": get_testdata_file("SC_rgb_jpeg_dcmtk.dcm"),
    }


# -- what works ----------------------------------------------------------------------------------------


def test_version_and_help():
    out = run("--version")
    assert out.returncode == 0 and out.stdout.startswith("dicomframes ")
    out = run()
    assert out.returncode == 2 and "usage: dicomframes" in out.stderr and "info" in out.stderr and not out.stdout
    out = run("frames", "--help")
    assert out.returncode == 0
    assert "(default: all)" in out.stdout and "(default: False)" in out.stdout and "--endpoint-url" in out.stdout


def test_info_on_corpus_files_names_the_decoder(files):
    out = run("info", files["j2k"], "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["complete"] is True and info["decoder"] in ("imagecodecs", "pylibjpeg")
    out = run("info", files["native"], "--json")
    assert json.loads(out.stdout)["decoder"] == "none (native)"
    out = run("info", files["jpeg"])
    assert out.returncode == 0 and "complete" in out.stdout and "decoder" in out.stdout


def test_info_several_paths(files):
    out = run("info", files["rle"], files["j2k"], "--json")
    assert out.returncode == 0, out.stderr
    infos = json.loads(out.stdout)
    assert isinstance(infos, list) and [i["path"] for i in infos] == [files["rle"], files["j2k"]]
    out = run("info", files["rle"], files["native"])
    assert out.returncode == 0
    assert out.stdout.count("number_of_frames") == 2 and "\n\n" in out.stdout


def test_info_several_paths_one_missing(files):
    missing = files["root"] / "missing.dcm"
    out = run("info", files["rle"], missing, "--json")
    assert_one_line_error(out, 1, str(missing))
    infos = json.loads(out.stdout)
    assert infos[0]["number_of_frames"] == 10 and infos[1]["path"] == str(missing) and "error" in infos[1]


def test_frames_reads_for_local_files(files):
    out = run("frames", files["j2k"], "--decoder", "pylibjpeg")
    assert out.returncode == 0, out.stderr
    assert " read" in out.stdout and "request" not in out.stdout and "decoder pylibjpeg" in out.stdout
    out = run("frames", files["native"], "--json", "--limit", "0")
    assert out.returncode == 0 and json.loads(out.stdout)["frames"] == 0


def test_sample_force(files):
    target = files["root"] / "forced.dcm"
    assert run("sample", target, "--frames", "2", "--rows", "8", "--columns", "8").returncode == 0
    before = target.stat().st_size
    assert_one_line_error(run("sample", target, "--frames", "3"), 1, "exists", "--force")
    assert target.stat().st_size == before
    out = run("sample", target, "--frames", "3", "--rows", "8", "--columns", "8", "--force")
    assert out.returncode == 0 and target.stat().st_size > before


# -- bad inputs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["info", "frames"])
def test_missing_file(files, command):
    missing = files["root"] / "nope.dcm"
    assert_one_line_error(run(command, missing), 1, "dicomframes: error:", str(missing))


@pytest.mark.parametrize("command", ["info", "frames"])
def test_directory_points_to_the_slide_api(files, command):
    line = assert_one_line_error(run(command, files["root"]), 1, "directory", "open_slide")
    assert "IsADirectoryError" not in line and "Is a directory" not in line


@pytest.mark.parametrize("command", ["info", "frames"])
def test_not_dicom(files, command):
    assert_one_line_error(run(command, files["not_dicom"]), 1, "dicomframes: error:", files["not_dicom"])


@pytest.mark.parametrize("name", ["truncated", "walked_truncated"])
def test_info_reports_a_truncated_file(files, name):
    out = run("info", files[name])
    assert out.returncode == 3, out.stderr
    assert "Traceback" not in out.stderr
    assert "complete" in out.stdout and "no (" in out.stdout
    out = run("info", files[name], "--json")
    assert out.returncode == 3 and json.loads(out.stdout)["complete"] is False
    if name == "truncated":
        size = os.path.getsize(files[name])
        assert f"the file ends at {size:,}" in run("info", files[name]).stdout


def test_frames_on_a_truncated_file_counts_what_was_decoded(files):
    assert_one_line_error(run("frames", files["truncated"]), 1, "9 of 10 frames decoded before the error")


@pytest.mark.parametrize(
    "args, words",
    [
        (["frames", "{rle}", "--decoder", "bogus"], ["--decoder", "imagecodecs", "pylibjpeg"]),
        (["frames", "{native}", "--decoder", "bogus"], ["--decoder", "pylibjpeg"]),
        (["decompress", "{rle}", "{root}/out.dcm", "--decoder", "bogus"], ["--decoder", "pylibjpeg"]),
        (["frames", "{rle}", "--limit", "-5"], ["--limit", "at least 0"]),
        (["frames", "{rle}", "--limit", "many"], ["--limit"]),
        (["frames", "{rle}", "--workers", "0"], ["--workers", "at least 1"]),
        (["decompress", "{rle}", "{root}/out.dcm", "--workers", "-3"], ["--workers", "at least 1"]),
        (["info", "s3://bucket/key.dcm", "-o", "endpointurl"], ["key=value"]),
        (["info", "s3://bucket/key.dcm", "--timeout", "0"], ["--timeout"]),
        (["info", "https://example.invalid/x.dcm", "--endpoint-url", "http://localhost:1"], ["--endpoint-url"]),
        (["info"], ["PATH"]),
        (["bogus"], ["invalid choice"]),
        (["sample", "s3://bucket/sample.dcm"], ["local file"]),
        (["sample", "gs://bucket/sample.dcm", "--frames", "0"], ["--frames"]),
    ],
)
def test_usage_errors_exit_2(files, args, words):
    args = [a.format(**files) for a in args]
    assert_one_line_error(run(*args), 2, *words)
    assert not (files["root"] / "out.dcm").exists()


def test_sample_destinations(files, tmp_path):
    assert_one_line_error(run("sample", tmp_path / "no" / "such" / "s.dcm"), 1, "does not exist")
    assert_one_line_error(run("sample", tmp_path), 1, "directory")
    existing = tmp_path / "keep.dcm"
    existing.write_bytes(b"precious")
    assert_one_line_error(run("sample", existing), 1, "exists")
    assert existing.read_bytes() == b"precious"


def test_decompress_existing_destination_exits_1(files, tmp_path):
    out = tmp_path / "out.dcm"
    out.write_bytes(b"precious")
    assert_one_line_error(run("decompress", files["rle"], out), 1, "exists", "--force")
    assert out.read_bytes() == b"precious"


def test_storage_error_is_one_line():
    # connection refused on an fsspec filesystem outside the handled set: no traceback
    out = run("info", "ftp://127.0.0.1:1/x.dcm")
    assert_one_line_error(out, 1, "dicomframes:")


# -- pipes ---------------------------------------------------------------------------------------------


def test_piping_into_head_ends_quietly(files):
    # Enough output (hundreds of kB) that writes go on after head has exited.
    paths = " ".join([shlex.quote(files["rle"])] * 300)
    cli = " ".join(map(shlex.quote, CLI))
    for command in (f"info {paths} --json", f"info {paths}"):
        out = subprocess.run(
            f"set -o pipefail; {cli} {command} | head -1", shell=True, executable="/bin/bash",
            capture_output=True, text=True, timeout=120,
        )
        assert out.stdout.count("\n") == 1
        assert out.stderr == "", out.stderr
        assert out.returncode == 141  # the documented exit code for a closed pipe (128 + SIGPIPE)


@pytest.mark.parametrize("command", [["info", "--json"], ["frames"]])
def test_closed_stdout_ends_quietly(files, command):
    proc = subprocess.Popen(
        [*CLI, command[0], files["rle"], *command[1:]], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # the reader went away before the command wrote anything
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 141
    assert err == "", err
    # and through a shell pipeline, as users type it
    cli = " ".join(map(shlex.quote, CLI))
    out = subprocess.run(
        f"{cli} {command[0]} {shlex.quote(files['rle'])} {' '.join(command[1:])} | head -1",
        shell=True, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0 and out.stdout.count("\n") == 1 and "Traceback" not in out.stderr


# -- object storage ------------------------------------------------------------------------------------


def test_storage_flags_reach_s3(s3):
    options = s3.server.storage_options()
    region = options["client_kwargs"]["region_name"]
    out = run(
        "info", s3.url("native.dcm"), "--json", "--endpoint-url", s3.server.url,
        "-o", f"key={options['key']}", "-o", f"secret={options['secret']}",
        "-o", "client_kwargs=" + json.dumps({"region_name": region}), "--timeout", "20", "-v",
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["number_of_frames"] == 300
    out = run(
        "frames", s3.url("native.dcm"), "--limit", "5", "--endpoint-url", s3.server.url,
        "-o", f"key={options['key']}", "-o", f"secret={options['secret']}",
        "-o", "client_kwargs=" + json.dumps({"region_name": region}),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("5 frames in") and "request" in out.stdout
