"""The command line: sample, info, frames."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from dicomframes import cli, progress
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


# -- info: modality, file size, lossy flag, whole-slide fields (docs/cli.md) ---------------------------

def _pyramid_level(tmp_path, level=0):
    from tests.helpers.wsigen import write_pyramid

    pyr = write_pyramid(tmp_path / "slide", width=600, height=400, levels=2, codec="native",
                        label=False, overview=False)
    return str(pyr.levels[level].paths[0])


def test_info_metadata_of_a_sample_file(tmp_path, capsys):
    import os

    path = str(tmp_path / "s.dcm")
    main(["sample", path, "--frames", "2", "--rows", "8", "--columns", "8"])
    capsys.readouterr()
    assert main(["info", path, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["modality"] == "OT" and info["lossy"] is False
    assert info["file_size"] == os.path.getsize(path)
    assert info["whole_slide"] is None  # not tiled
    assert main(["info", path]) == 0
    lines = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert lines["modality"] == "OT" and lines["lossy"] == "no"
    assert lines["file_size"] == f"{os.path.getsize(path):,} bytes"
    assert "total_pixel_matrix" not in lines and "tile_grid" not in lines


def test_info_lossy_flag(tmp_path, capsys):
    path = str(tmp_path / "j.dcm")
    main(["sample", path, "--frames", "2", "--rows", "32", "--columns", "32", "--syntax", "j2k"])
    capsys.readouterr()
    assert main(["info", path, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    from dicomframes._dicom.syntaxes import SYNTAXES

    assert info["lossy"] is SYNTAXES[info["transfer_syntax_uid"]].lossy


def test_info_whole_slide_level(tmp_path, capsys):
    path = _pyramid_level(tmp_path, level=1)  # 300 x 200 in tiles of 128 x 96
    assert main(["info", path, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["modality"] == "SM" and info["lossy"] is False
    assert info["whole_slide"] == {
        "total_pixel_matrix": [300, 200], "tile_grid": [3, 3], "organization": "TILED_FULL",
        "image_type": ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"], "pixel_spacing": [0.001, 0.001],
        "geometry_error": None,
    }
    assert main(["info", path]) == 0
    lines = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert lines["total_pixel_matrix"] == "300 x 200 pixels"
    assert lines["tile_grid"] == "3 x 3 tiles (across x down)"
    assert lines["organization"] == "TILED_FULL"
    assert lines["image_type"] == "ORIGINAL\\PRIMARY\\VOLUME\\NONE"
    assert lines["pixel_spacing"] == "0.001 x 0.001 mm (row x column)"
    assert "geometry_error" not in lines and lines["complete"] == "yes"


def test_info_whole_slide_sparse(tmp_path, capsys):
    from tests.helpers.wsigen import write_pyramid

    pyr = write_pyramid(tmp_path / "sparse", width=600, height=400, levels=1, codec="native",
                        label=False, overview=False, organizations="TILED_SPARSE")
    assert main(["info", str(pyr.levels[0].paths[0]), "--json"]) == 0
    slide = json.loads(capsys.readouterr().out)["whole_slide"]
    assert slide["organization"] == "TILED_SPARSE" and slide["tile_grid"] == [5, 5]
    assert slide["pixel_spacing"] == [0.0005, 0.0005]


@pytest.mark.parametrize("error", ["NotTiledError", "InvalidFileError"])
def test_info_reports_what_is_known_when_the_geometry_fails(tmp_path, capsys, monkeypatch, error):
    from dicomframes import errors
    from dicomframes.reader import Reader

    path = _pyramid_level(tmp_path)

    def broken(self):
        raise getattr(errors, error)("the tile geometry is broken", path=path)

    monkeypatch.setattr(Reader, "tile_geometry", property(broken))
    assert main(["info", path, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["number_of_frames"] == 25 and info["modality"] == "SM"
    slide = info["whole_slide"]
    assert slide["total_pixel_matrix"] == [600, 400] and slide["image_type"][2] == "VOLUME"
    assert slide["tile_grid"] is None and slide["organization"] is None and slide["pixel_spacing"] is None
    assert "the tile geometry is broken" in slide["geometry_error"]
    assert main(["info", path]) == 0
    out = capsys.readouterr().out
    assert "tile_grid                   unknown" in out and "the tile geometry is broken" in out


def test_info_pixel_spacing_failure_keeps_the_rest(tmp_path, capsys, monkeypatch):
    from dicomframes.errors import InvalidFileError
    from dicomframes.views.geometry import TileGeometry

    path = _pyramid_level(tmp_path)

    def broken(self):
        raise InvalidFileError("bad shared functional groups", path=path)

    monkeypatch.setattr(TileGeometry, "pixel_spacing", property(broken))
    assert main(["info", path, "--json"]) == 0
    slide = json.loads(capsys.readouterr().out)["whole_slide"]
    assert slide["tile_grid"] == [5, 5] and slide["organization"] == "TILED_FULL"
    assert slide["pixel_spacing"] is None and "bad shared functional groups" in slide["geometry_error"]


# -- progress: the same flags and default for frames, export and decompress -----------------------------

_PROGRESS_LABELS = {"frames": "frames: 3/3 frames", "export": "export: 3/3 files", "decompress": "decompress: 3/3 frames"}


def _progress_command(command, path, tmp_path):
    if command == "frames":
        return ["frames", path]
    if command == "export":
        return ["export", path, str(tmp_path / f"out-{len(list(tmp_path.iterdir()))}"), "--format", "npy"]
    return ["decompress", path, str(tmp_path / f"d-{len(list(tmp_path.iterdir()))}.dcm")]


@pytest.mark.parametrize("command", ["frames", "export", "decompress"])
def test_progress_flags_are_the_same_for_long_commands(tmp_path, capsys, command):
    path = str(tmp_path / "s.dcm")
    main(["sample", path, "--frames", "3", "--rows", "16", "--columns", "16"])
    capsys.readouterr()
    args = cli.build_parser().parse_args(_progress_command(command, path, tmp_path))
    assert args.progress is None and args.quiet is False  # the default: on when stderr is a terminal
    for flags, shown in (([], False), (["--progress"], True), (["--no-progress"], False),
                         (["--progress", "-q"], False), (["--quiet", "--progress"], False)):
        assert main(_progress_command(command, path, tmp_path) + flags) == 0, flags
        err = capsys.readouterr().err
        assert (_PROGRESS_LABELS[command] in err) is shown, (flags, err)
        if not shown:
            assert err == "", (flags, err)


@pytest.mark.parametrize("command", ["frames", "export", "decompress"])
def test_progress_follows_the_terminal(tmp_path, capsys, monkeypatch, command):
    path = str(tmp_path / "s.dcm")
    main(["sample", path, "--frames", "3", "--rows", "16", "--columns", "16"])
    capsys.readouterr()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    # With tqdm installed (the [progress] extra; the tests install it): a tqdm bar.
    pytest.importorskip("tqdm")
    assert main(_progress_command(command, path, tmp_path)) == 0
    err = capsys.readouterr().err
    label = _PROGRESS_LABELS[command].split(":")[0]
    assert f"{label}: 100%|" in err and "| 3/3 [" in err, err
    assert main(_progress_command(command, path, tmp_path) + ["-q"]) == 0
    assert capsys.readouterr().err == ""
    # Without tqdm: the one-line display.
    monkeypatch.setattr(progress, "_tqdm_class", lambda: None)
    assert main(_progress_command(command, path, tmp_path)) == 0
    assert _PROGRESS_LABELS[command] in capsys.readouterr().err


@pytest.mark.parametrize("command", ["frames", "export", "decompress"])
def test_progress_nothing_on_stderr_when_piped(tmp_path, command):
    path = str(tmp_path / "s.dcm")
    assert main(["sample", path, "--frames", "3", "--rows", "16", "--columns", "16"]) == 0
    run = [sys.executable, "-m", "dicomframes", *_progress_command(command, path, tmp_path)]
    out = subprocess.run(run, capture_output=True, text=True)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    run = [sys.executable, "-m", "dicomframes", *_progress_command(command, path, tmp_path), "--progress"]
    out = subprocess.run(run, capture_output=True, text=True)
    assert out.returncode == 0 and _PROGRESS_LABELS[command] in out.stderr, out.stderr
