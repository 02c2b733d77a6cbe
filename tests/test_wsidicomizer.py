"""Whole-slide files written by other software: wsidicomizer (wsidicom's converter).

tifffile writes a tiled, pyramidal OME-TIFF; wsidicomizer converts it to DICOM
with each of its offset-table options (``none`` leaves out the Basic Offset
Table item, ``EOT`` writes lengths that count the 8-byte item headers: both
depart from PS3.5 A.4 in ways that leave no doubt about the frames) and with
transcoding to JPEG 2000 and RLE. Frames are compared with pydicom's (with the
same JPEG decoder, pylibjpeg's libjpeg), regions with wsidicom's `read_region`.

wsidicomizer needs libturbojpeg (Debian's `libturbojpeg0`, which `.ci/run`
installs). Without it these tests skip, except under CI (``CI`` set), where a
missing converter is a failure.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

import dicomframes
from tests.helpers.wsidicomizer import import_wsidicomizer, write_ome_tiff

WIDTH, HEIGHT, TILE = 2048, 1536, 256
#: (name, wsidicomizer convert() arguments): each a folder of three levels
VARIANTS = {
    "jpeg-none": dict(offset_table="none"),
    "jpeg-empty": dict(offset_table="empty"),
    "jpeg-bot": dict(offset_table="BOT"),
    "jpeg-eot": dict(offset_table="EOT"),
    "j2k-eot": dict(offset_table="EOT", lossless="j2k"),
    "rle-bot": dict(offset_table="BOT", lossless="rle"),
}
INDEX_KIND = {"jpeg-none": "walked", "jpeg-empty": "walked", "jpeg-bot": "BOT", "jpeg-eot": "EOT", "j2k-eot": "EOT", "rle-bot": "BOT"}


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[str, Path]:
    """Each variant's folder of DICOM files, written by wsidicomizer."""
    WsiDicomizer = import_wsidicomizer()
    from wsidicom.codec import Jpeg2kSettings, RleSettings

    root = tmp_path_factory.mktemp("wsidicomizer")
    tiff = root / "slide.ome.tiff"
    write_ome_tiff(tiff, WIDTH, HEIGHT, TILE)
    folders = {}
    for name, args in VARIANTS.items():
        args = dict(args)
        lossless = args.pop("lossless", None)
        if lossless:
            args["encoding"] = Jpeg2kSettings(levels=[0]) if lossless == "j2k" else RleSettings()
            args["force_transcoding"] = True
        out = root / name
        out.mkdir()
        WsiDicomizer.convert(tiff, out, include_label=False, include_overview=False, workers=1, **args)
        folders[name] = out
    return folders


def _files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.dcm"))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_index_kind_and_warnings(converted, variant, caplog):
    caplog.set_level(logging.WARNING, logger="dicomframes")
    for path in _files(converted[variant]):
        with dicomframes.open(path) as reader:
            assert reader.index.kind == INDEX_KIND[variant]
            reader.frame(len(reader) - 1)
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert ("left it out" in warned) == (variant == "jpeg-none")
    assert ("count each item's 8-byte header" in warned) == variant.endswith("-eot")


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "jpeg-none"])
def test_frames_equal_pydicom(converted, variant):
    pydicom = pytest.importorskip("pydicom")
    for path in _files(converted[variant]):
        with dicomframes.open(path, decoder="pylibjpeg") as reader:
            theirs = list(pydicom.iter_pixels(path))
            assert len(reader) == len(theirs)
            for i, expected in enumerate(theirs):
                assert np.array_equal(reader.frame(i), expected), (path.name, i)


def test_frames_without_a_table_item_equal_the_same_tiles_with_one(converted):
    """pydicom refuses a Pixel Data that starts with a fragment; the fragments are
    the TIFF's own JPEG tiles, the same in every JPEG variant: compare with the BOT one."""
    ours, with_table = _by_frame_count(converted["jpeg-none"]), _by_frame_count(converted["jpeg-bot"])
    assert sorted(ours) == sorted(with_table)
    for n, path in ours.items():
        with dicomframes.open(path) as a, dicomframes.open(with_table[n]) as b:
            for i in range(n):
                assert a.encoded_frame(i) == b.encoded_frame(i)
                assert np.array_equal(a.frame(i), b.frame(i))


def _by_frame_count(folder: Path) -> dict[int, Path]:
    out = {}
    for path in _files(folder):
        with dicomframes.open(path) as reader:
            out[len(reader)] = path
    return out


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_regions_equal_wsidicom(converted, variant):
    wsidicom = pytest.importorskip("wsidicom")
    folder = converted[variant]
    # wsidicom does not read its own files without a table item ("First item in
    # table should be at offset 0"): compare those with the same tiles with a table.
    reference = converted["jpeg-bot"] if variant == "jpeg-none" else folder
    rng = np.random.default_rng(7)
    with wsidicom.WsiDicom.open(reference) as theirs, dicomframes.open_slide(folder) as ours:
        assert [tuple(lv.size.to_tuple()) for lv in theirs.levels] == [lv.size for lv in ours.levels]
        for k, level in enumerate(ours.levels):
            spots = [(0, 0, level.width, min(level.height, 300)), (level.width - 77, level.height - 55, 77, 55)]
            for _ in range(5):
                w, h = (int(v) for v in rng.integers(1, 600, 2))
                w, h = min(w, level.width), min(h, level.height)
                spots.append((int(rng.integers(0, level.width - w + 1)), int(rng.integers(0, level.height - h + 1)), w, h))
            for x, y, w, h in spots:
                a = np.asarray(theirs.read_region((x, y), k, (w, h)).convert("RGB"))
                # wsidicom's location is in the level's pixels, ours (like OpenSlide's) in level 0's.
                b = ours.read_region((int(x * level.downsample), int(y * level.downsample)), k, (w, h))
                assert np.array_equal(a, b), (variant, k, x, y, w, h)


def test_lossless_levels_equal_the_tiff_pixels(converted):
    """JPEG 2000 and RLE pyramids hold the decoded TIFF tiles exactly."""
    tifffile = pytest.importorskip("tifffile")
    tiff = converted["rle-bot"].parent / "slide.ome.tiff"
    with tifffile.TiffFile(tiff) as tif:
        levels = [s.asarray() for s in tif.series[0].levels]
    for variant in ("j2k-eot", "rle-bot"):
        with dicomframes.open_slide(converted[variant]) as slide:
            for k, expected in enumerate(levels):
                lv = slide.levels[k]
                assert np.array_equal(lv.read_region((0, 0), (lv.width, lv.height)), expected), (variant, k)


def test_eot_frame_reads_touch_only_the_frame(converted):
    """With the Extended Offset Table (lengths fixed up), a frame is one read, no walk."""
    path = max(_files(converted["jpeg-eot"]), key=lambda p: p.stat().st_size)
    with dicomframes.open(path) as reader:
        before = reader.stats["requests"]
        reader.frame(len(reader) - 1)
        assert reader.stats["requests"] - before <= 1
