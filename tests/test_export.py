"""`dicomframes export` and `dicomframes.transcode.export`: frames, regions and thumbnails
as PNG, TIFF and .npy files, read back and compared pixel for pixel with the reader."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from PIL import Image

import dicomframes
from dicomframes.errors import DestinationExistsError, MissingDependencyError, TranscodeError
from dicomframes.samples import write_sample
from dicomframes.transcode import export
from tests.helpers import wsigen

CLI = [sys.executable, "-m", "dicomframes"]


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=120)


def one_line_error(out: subprocess.CompletedProcess, code: int, *words: str) -> str:
    assert out.returncode == code, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def read_back(path) -> np.ndarray:
    path = str(path)
    if path.endswith(".png"):
        with Image.open(path) as im:
            return np.asarray(im)
    if path.endswith((".tif", ".tiff")):
        return tifffile.imread(path)
    return np.load(path, allow_pickle=False)


KINDS = {  # name: (samples_per_pixel, bits_allocated)
    "grey8": (1, 8), "grey16": (1, 16), "rgb8": (3, 8), "rgb16": (3, 16),
}


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    root = tmp_path_factory.mktemp("export-src")
    return {
        name: write_sample(root / f"{name}.dcm", frames=6, rows=24, columns=40, samples_per_pixel=spp,
                           bits_allocated=bits, syntax="rle", seed=k)
        for k, (name, (spp, bits)) in enumerate(KINDS.items())
    }


def png_holds(kind: str) -> bool:
    return kind != "rgb16"  # Pillow writes no 16-bit RGB PNG; refused (see test below)


@pytest.mark.parametrize("fmt", ["png", "tiff", "npy"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_frames_round_trip_pixel_for_pixel(samples, tmp_path, kind, fmt):
    src = samples[kind]
    if fmt == "png" and not png_holds(kind):  # refused before anything is written
        with pytest.raises(TranscodeError):
            export.export_frames(src, tmp_path / "out", frames="0:2,5", format=fmt)
        assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
        return
    written = export.export_frames(src, tmp_path / "out", frames="0:2,5", format=fmt)
    assert [p.rsplit("/", 1)[1] for p in written] == [f"frame{i:05d}.{fmt}" for i in (0, 1, 5)]
    with dicomframes.open(src) as reader:
        for i, path in zip((0, 1, 5), written):
            expected = reader.frame(i)
            got = read_back(path)
            assert got.dtype == expected.dtype and got.shape == expected.shape
            assert np.array_equal(got, expected)
            assert expected.max() > 0


def test_pattern_and_single_file(samples, tmp_path):
    written = export.export_frames(samples["grey16"], str(tmp_path / "f{frame:03d}.tif"), frames="::2")
    assert written == [str(tmp_path / f"f{i:03d}.tif") for i in (0, 2, 4)]
    (one,) = export.export_frames(samples["rgb8"], tmp_path / "last.npy", frames="-1")
    with dicomframes.open(samples["rgb8"]) as reader:
        assert np.array_equal(np.load(one), reader.frame(5))
    with pytest.raises(ValueError, match="names one file but 2 frames"):
        export.export_frames(samples["rgb8"], tmp_path / "x.png", frames="0,1")
    with pytest.raises(ValueError, match="same name"):
        export.export_frames(samples["rgb8"], str(tmp_path / "x{frame!s:.0}.png"), frames="0,1")
    with pytest.raises(ValueError, match="cannot tell the format"):
        export.export_frames(samples["rgb8"], tmp_path / "x.jpg", frames="0")


def test_png_refuses_what_it_cannot_hold(samples, tmp_path):
    with pytest.raises(TranscodeError, match="--format tiff") as info:
        export.export_frames(samples["rgb16"], tmp_path / "out", format="png")
    assert "npy" in str(info.value)
    assert not any((tmp_path / "out").glob("*.png"))
    with pytest.raises(TranscodeError, match="int16"):
        export.check_writable(np.int16, (4, 4), "png")
    export.check_writable(np.float32, (4, 4), "tiff")


def test_existing_output_refused_before_anything_is_written(samples, tmp_path):
    out = tmp_path / "out"
    export.export_frames(samples["grey8"], out, frames="1")
    before = (out / "frame00001.png").read_bytes()
    with pytest.raises(DestinationExistsError, match="frame00001.png"):
        export.export_frames(samples["grey8"], out, frames="0:3")
    assert not (out / "frame00000.png").exists()
    assert (out / "frame00001.png").read_bytes() == before
    export.export_frames(samples["grey8"], out, frames="0:3", overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["frame00000.png", "frame00001.png", "frame00002.png"]


def test_progress_called_per_file(samples, tmp_path):
    calls = []
    export.export_frames(samples["grey8"], tmp_path, format="npy", progress=lambda d, t: calls.append((d, t)))
    assert calls == [(k, 6) for k in range(1, 7)]


def test_missing_library_names_the_extra(samples, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tifffile", None)
    with pytest.raises(MissingDependencyError, match=r'dicomframes\[export\]'):
        export.export_frames(samples["grey8"], tmp_path / "a.tiff", frames="0")
    export.export_frames(samples["grey8"], tmp_path / "a.npy", frames="0")  # .npy needs nothing


# -- frame lists ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec, count, expected", [
    ("0:10,42", 50, [*range(10), 42]),
    ("3", 5, [3]),
    ("-1", 5, [4]),
    ("::2", 5, [0, 2, 4]),
    ("5:", 7, [5, 6]),
    (":3", 7, [0, 1, 2]),
    ("4:0:-2", 7, [4, 2]),
    ("0:100", 3, [0, 1, 2]),  # ranges are clipped, as slices are
    ("1,1,0:2", 5, [1, 0]),  # each frame once, first mention first
    (" 1 , 2 ", 5, [1, 2]),
])
def test_frame_lists(spec, count, expected):
    assert export.select_frames(spec, count) == expected


@pytest.mark.parametrize("spec, words", [
    ("", ["empty list"]),
    ("1,,2", ["empty item"]),
    ("a", ["'a' is not a frame index"]),
    ("0:x,::0,1:2:3:4", ["'x' is not an integer", "step cannot be 0", "more than start:stop:step"]),
    ("1.5", ["'1.5'"]),
])
def test_bad_frame_lists_list_every_problem(spec, words):
    with pytest.raises(ValueError) as info:
        export.parse_frame_list(spec)
    for word in words:
        assert word in str(info.value)


def test_frames_out_of_range():
    with pytest.raises(ValueError, match=r"frames 9, -7 out of range: the file has 5 frames \(0 to 4\)"):
        export.select_frames("1,9,-7", 5)
    with pytest.raises(ValueError, match="selects no frames"):
        export.select_frames("3:1", 5)


# -- whole-slide regions and thumbnails ----------------------------------------------------------------


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory):
    root = tmp_path_factory.mktemp("export-wsi")
    wsigen.write_pyramid(root / "slide", width=600, height=400, levels=2, tile_size=(128, 96), codec="native",
                         label=False, overview=False)
    return root / "slide"


@pytest.mark.parametrize("fmt", ["png", "tiff", "npy"])
def test_region_equals_read_region(pyramid, tmp_path, fmt):
    with dicomframes.open_slide(pyramid) as slide:
        expected = slide.read_region((100, 50), 1, (150, 90))
        path = export.export_region(slide, tmp_path / f"r.{fmt}", (100, 50), (150, 90), level=1)
        assert np.array_equal(read_back(path), expected)
        level0 = slide.read_region((0, 0), 0, (200, 100))
    out = run("export", pyramid, tmp_path / "cli.tiff", "--region", "0,0,200,100")
    assert out.returncode == 0, out.stderr
    assert np.array_equal(read_back(tmp_path / "cli.tiff"), level0)


def test_thumbnail_equals_slide_thumbnail(pyramid, tmp_path):
    with dicomframes.open_slide(pyramid) as slide:
        expected = slide.thumbnail((128, 128))
        path = export.export_thumbnail(slide, tmp_path, 128)
    assert path.endswith("thumbnail.png")
    got = read_back(path)
    assert got.shape[1] == 128 and np.array_equal(got, expected)
    out = run("export", pyramid, tmp_path / "t.npy", "--thumbnail", "128")
    assert out.returncode == 0, out.stderr
    assert np.array_equal(np.load(tmp_path / "t.npy"), expected)
    again = run("export", pyramid, tmp_path / "t.npy", "--thumbnail", "128")
    one_line_error(again, 1, "t.npy", "exists", "--force")


# -- the command line ----------------------------------------------------------------------------------


def test_cli_exports_frames(samples, tmp_path):
    out = run("export", samples["rgb8"], tmp_path / "o", "--frames", "0:2,4", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert [p.rsplit("/", 1)[1] for p in result["outputs"]] == ["frame00000.png", "frame00001.png", "frame00004.png"]
    with dicomframes.open(samples["rgb8"]) as reader:
        assert np.array_equal(read_back(result["outputs"][2]), reader.frame(4))
    assert out.stderr == ""  # no progress when stderr is not a terminal
    shown = run("export", samples["grey8"], tmp_path / "p", "--progress")
    assert shown.returncode == 0 and "export: 6/6 files" in shown.stderr
    quiet = run("export", samples["grey8"], tmp_path / "q", "--progress", "-q")
    assert quiet.returncode == 0 and quiet.stderr == ""
    plain = run("export", samples["grey16"], str(tmp_path / "g{frame}.tif"), "--frames", "1")
    assert plain.returncode == 0 and plain.stdout.strip() == str(tmp_path / "g1.tif")


@pytest.mark.parametrize("args, code, words", [
    (["--frames", "0:x,,"], 2, ["--frames", "'x' is not an integer", "empty item"]),
    (["--frames", "5,99"], 2, ["frame 99 out of range", "6 frames (0 to 5)"]),
    (["--region", "1,2,3"], 2, ["X,Y,W,H"]),
    (["--region", "0,0,0,5"], 2, ["W must be at least 1"]),
    (["--level", "1"], 2, ["--level applies to --region only"]),
    (["--frames", "1", "--thumbnail", "5"], 2, ["not allowed with"]),
    (["--format", "jpeg"], 2, ["png", "tiff", "npy"]),
    (["--thumbnail", "0"], 2, ["at least 1"]),
])
def test_cli_usage_errors(samples, tmp_path, args, code, words):
    one_line_error(run("export", samples["grey8"], tmp_path / "o", *args), code, *words)


def test_cli_errors(samples, tmp_path, pyramid):
    one_line_error(run("export", samples["rgb16"], tmp_path / "o", "--format", "png"), 1,
                   "PNG", "--format tiff", "--format npy")
    run("export", samples["grey8"], tmp_path / "o", "--frames", "2")
    one_line_error(run("export", samples["grey8"], tmp_path / "o", "--frames", "2"), 1, "frame00002.png", "--force")
    assert run("export", samples["grey8"], tmp_path / "o", "--frames", "2", "--force").returncode == 0
    one_line_error(run("export", samples["grey8"], tmp_path / "x.png"), 2, "names one file but 6 frames")
    one_line_error(run("export", samples["grey8"], tmp_path / "nowhere" / "f{frame}.png"), 1, "does not exist")
    one_line_error(run("export", samples["grey8"], "s3://bucket/x.png", "--frames", "0"), 2, "local files")
    one_line_error(run("export", pyramid, tmp_path / "d"), 1, "directory", "--region or --thumbnail")
    one_line_error(run("export", pyramid, tmp_path / "r.png", "--region", "0,0,10,10", "--level", "5"), 2,
                   "--level 5 out of range", "0 to 1")
    one_line_error(run("export", tmp_path / "missing.dcm", tmp_path / "m"), 1, "missing.dcm")
