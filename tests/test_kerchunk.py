"""Kerchunk references (dicomframes.views.kerchunk): zarr reads, through fsspec's
reference filesystem and imagecodecs' numcodecs, what dicomframes reads.

Levels of generated pyramids are compared whole with ``read_region``, files of
frames with ``reader.frame(i)``; over HTTP the references are read by a fresh
Python process that never imports dicomframes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import dicomframes
from dicomframes import RegionError, TranscodeError
from dicomframes.io.local import BytesSource
from dicomframes.samples import write_sample
from tests.helpers import dicomgen
from tests.helpers.wsigen import write_pyramid

zarr = pytest.importorskip("zarr")
fsspec = pytest.importorskip("fsspec")
icn = pytest.importorskip("imagecodecs.numcodecs")
icn.register_codecs(verbose=False)  # what every reader of the references does once


def open_array(refs: dict, name: str, **fs_options):
    """The array `name` of the references, opened as zarr-python 3 documents it."""
    store = zarr.storage.FsspecStore.from_url(
        "reference://", storage_options={"fo": refs, **fs_options}, read_only=True,
    )
    return zarr.open_group(store=store, mode="r", zarr_format=2)[name]


def round_trip(refs: dict) -> dict:
    text = json.dumps(refs)
    back = json.loads(text)
    assert back == refs  # plain JSON: strings, numbers, lists
    return back


# -- whole-slide levels ----------------------------------------------------------------------------
LEVELS = {
    "full-jpeg": dict(codec="jpeg"),
    "sparse-jpeg": dict(codec="jpeg", organizations="TILED_SPARSE", absent_fraction=0.25, shuffle=True),
    "full-j2k": dict(codec="j2k"),
    "sparse-j2k": dict(codec="j2k", organizations="TILED_SPARSE", absent_fraction=0.25, shuffle=True),
    "sparse-native-implicit": dict(codec="native", implicit=True, organizations="TILED_SPARSE",
                                   absent_fraction=0.3, shuffle=True, undefined_lengths=True),
    "concatenation-sparse-j2k": dict(codec="j2k", organizations="TILED_SPARSE", concatenation_parts=3,
                                     absent_fraction=0.1, shuffle=True),
    "no-offset-table-j2k": dict(codec="j2k", basic_offset_table=False),
}


@pytest.mark.parametrize("variant", list(LEVELS))
def test_levels_equal_read_region(tmp_path, variant):
    # 1000x700 in 128x96 tiles: edge tiles are padded in the file, cut by zarr.
    pyr = write_pyramid(tmp_path, width=1000, height=700, levels=3, tile_size=(128, 96), seed=7,
                        label=False, overview=False, **LEVELS[variant])
    with dicomframes.open_slide(tmp_path) as slide:
        for k, level in enumerate(slide.levels):
            refs = round_trip(slide.to_kerchunk(level=k))
            image = open_array(refs, "image")
            want = level.read_region((0, 0), level.size)
            assert image.shape == want.shape and image.chunks == (96, 128, 3) and image.dtype == want.dtype
            got = image[:]
            assert np.array_equal(got, want), f"level {k}: {np.count_nonzero(got != want)} values differ"
            x0, y0, x1, y1 = 77, 50, level.width - 13, level.height - 29  # across tiles, short of the edges
            assert np.array_equal(image[y0:y1, x0:x1], level.read_region((x0, y0), (x1 - x0, y1 - y0)))
            tiles = [key for key in refs["refs"] if key.startswith("image/") and not key.endswith((".zarray", ".zattrs"))]
            written = pyr.levels[k]
            assert len(tiles) == len(written.tiles)  # absent tiles have no reference
            fill = json.loads(refs["refs"]["image/.zarray"])["fill_value"]
            assert fill == (255 if written.absent else None)
            assert refs["refs"][".zattrs"] and json.loads(refs["refs"][".zattrs"])["dicomframes"]["level"] == k
        # Level.to_kerchunk is what Slide.to_kerchunk returns.
        assert slide.levels[1].to_kerchunk() == slide.to_kerchunk(level=1)


def test_jpeg_level_is_rgb_as_dicomframes_returns_it(tmp_path):
    write_pyramid(tmp_path, width=300, height=200, levels=1, tile_size=(128, 96), codec="jpeg",
                  label=False, overview=False)
    with dicomframes.open_slide(tmp_path) as slide:
        reader = slide.levels[0].readers[0]
        assert reader.info.photometric_interpretation == "YBR_FULL_422"
        refs = slide.to_kerchunk()
        compressor = json.loads(refs["refs"]["image/.zarray"])["compressor"]
        assert compressor == {"id": "imagecodecs_jpeg", "colorspace_jpeg": "YCBCR", "colorspace_data": "RGB"}
        assert json.loads(refs["refs"][".zattrs"])["dicomframes"]["photometric_interpretation"] == "RGB"
        tile = open_array(refs, "image")[0:96, 0:128]
        assert np.array_equal(tile, reader.frame(0))


def test_level_planes_and_errors(tmp_path):
    write_pyramid(tmp_path, width=300, height=200, levels=2, tile_size=(128, 96), codec="native",
                  focal_planes=2, label=False, overview=False)
    with dicomframes.open_slide(tmp_path) as slide:
        level = slide.levels[0]
        refs = level.to_kerchunk(focal_plane=1)
        assert np.array_equal(open_array(refs, "image")[:], level.read_region((0, 0), level.size, focal_plane=1))
        with pytest.raises(RegionError, match="focal plane 2"):
            level.to_kerchunk(focal_plane=2)
        with pytest.raises(RegionError, match="level 5 out of range"):
            slide.to_kerchunk(level=5)


# -- files of frames -------------------------------------------------------------------------------
FRAMES = [
    dict(syntax="j2k", offset_table="bot"),
    dict(syntax="j2k", offset_table="none", samples_per_pixel=3),
    dict(syntax="j2k", offset_table="eot", bits_allocated=16),
    dict(syntax="jpegls", offset_table="bot", samples_per_pixel=3),
    dict(syntax="jpegls", offset_table="none", bits_allocated=16),
    dict(syntax="native", samples_per_pixel=3),
    dict(syntax="native", bits_allocated=16),
    dict(syntax="rle", offset_table="eot", bits_allocated=16),
    dict(syntax="rle", offset_table="none"),
]


@pytest.mark.parametrize("options", FRAMES, ids=lambda o: "-".join(str(v) for v in o.values()))
def test_frames_equal_the_reader(tmp_path, options):
    path = write_sample(tmp_path / "f.dcm", frames=7, rows=72, columns=40, **options)
    with dicomframes.open(path) as reader:
        refs = round_trip(reader.to_kerchunk())
        frames = open_array(refs, "frames")
        assert frames.shape == (7,) + reader.format.shape and frames.chunks == (1,) + reader.format.shape
        got = frames[:]
        for i in range(len(reader)):
            assert np.array_equal(got[i], reader.frame(i)), f"frame {i}"
        # Each reference is exactly the frame's codestream (items are padded to even length).
        with open(path, "rb") as f:
            data = f.read()
        for i in range(len(reader)):
            url, offset, length = refs["refs"][f"frames/{i}" + ".0" * len(reader.format.shape)]
            assert url == os.path.abspath(path)
            stored = reader.encoded_frame(i)
            assert data[offset : offset + length].rstrip(b"\0") == stored.rstrip(b"\0")
            assert length - len(stored) in (0, 1) or options["syntax"] == "native"


def test_url_override_and_sources_without_a_name(tmp_path):
    path = write_sample(tmp_path / "f.dcm", frames=3, rows=32, columns=32, syntax="j2k")
    with dicomframes.open(path) as reader:
        refs = reader.to_kerchunk(url="s3://bucket/f.dcm")
        assert {v[0] for k, v in refs["refs"].items() if isinstance(v, list)} == {"s3://bucket/f.dcm"}
    with open(path, "rb") as f:
        raw = f.read()
    with dicomframes.Reader(BytesSource(raw)) as reader:
        with pytest.raises(TranscodeError, match="pass url="):
            reader.to_kerchunk()
        refs = reader.to_kerchunk(url=path)
    assert np.array_equal(open_array(refs, "frames")[2], dicomframes.open(path).frame(2))


@pytest.mark.parametrize("offset_table", ["bot", "none"])
def test_frames_of_several_fragments_are_refused(tmp_path, offset_table):
    path = write_sample(tmp_path / "f.dcm", frames=4, rows=64, columns=64, syntax="jpegls",
                        offset_table=offset_table, fragments_per_frame=2)
    with dicomframes.open(path) as reader:
        with pytest.raises(TranscodeError, match="several fragments") as info:
            reader.to_kerchunk()
    assert info.value.frame == 0 and info.value.path == str(path)
    assert str(path) in str(info.value) and "frame 0" in str(info.value)


# -- what would decode differently -------------------------------------------------------------------
def _native(tmp_path, name, pixels: bytes, **image):
    els = dicomgen.image_elements(frames=2, rows=8, columns=8, **image)
    return dicomgen.write_file(tmp_path / name, dicomgen.EXPLICIT_LE, els, pixels)


def _ybr_j2k(tmp_path):
    import imagecodecs

    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(2)]
    codestreams = [bytes(imagecodecs.jpeg2k_encode(f, level=0, codecformat="J2K", reversible=True, mct=False))
                   for f in frames]
    body, _ = dicomgen.encapsulate([[c] for c in codestreams])
    els = dicomgen.image_elements(frames=2, rows=32, columns=32, samples_per_pixel=3, photometric="YBR_FULL")
    return dicomgen.write_file(tmp_path / "ybr.dcm", dicomgen.J2K, els, body, encapsulated=True)


def _signed_j2k(tmp_path):
    # A signed codestream in an unsigned file: dicomframes reinterprets it at the codestream's precision.
    import imagecodecs

    frames = [np.arange(-512, 512, dtype=np.int16).reshape(32, 32) + k for k in range(2)]
    codestreams = [bytes(imagecodecs.jpeg2k_encode(f, level=0, codecformat="J2K", reversible=True, bitspersample=12))
                   for f in frames]
    body, _ = dicomgen.encapsulate([[c] for c in codestreams])
    els = dicomgen.image_elements(frames=2, rows=32, columns=32, bits_allocated=16, bits_stored=12)
    return dicomgen.write_file(tmp_path / "signed.dcm", dicomgen.J2K, els, body, encapsulated=True)


REFUSED = {
    "rle-colour": (lambda t: write_sample(t / "r.dcm", frames=2, rows=16, columns=16, syntax="rle", samples_per_pixel=3),
                   "decode to planes"),
    "planar-configuration": (lambda t: _native(t, "p.dcm", bytes(2 * 8 * 8 * 3), samples_per_pixel=3,
                                               planar_configuration=1), "Planar Configuration 1"),
    "bits-stored": (lambda t: _native(t, "b.dcm", bytes(2 * 8 * 8 * 2), bits_allocated=16, bits_stored=12),
                    "masks them from Bits Stored 12"),
    "signed-bits-stored": (lambda t: _native(t, "s.dcm", bytes(2 * 8 * 8 * 2), bits_allocated=16, bits_stored=12,
                                             pixel_representation=1), "sign-extends"),
    "bits-allocated-1": (lambda t: _native(t, "1.dcm", bytes(16), bits_allocated=1), "Bits Allocated 1"),
    "native-ybr-422": (lambda t: _native(t, "y.dcm", bytes(2 * 8 * 8 * 2), samples_per_pixel=3,
                                         photometric="YBR_FULL_422"), "subsampled"),
    "native-ybr-full": (lambda t: _native(t, "f.dcm", bytes(2 * 8 * 8 * 3), samples_per_pixel=3,
                                          photometric="YBR_FULL"), "converts to RGB"),
    "j2k-ybr-without-mct": (_ybr_j2k, "converts to RGB"),
    "j2k-signed-codestream": (_signed_j2k, "drops the top 4 bits"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_combinations_that_decode_differently_are_refused(tmp_path, case):
    make, message = REFUSED[case]
    path = make(tmp_path)
    with dicomframes.open(path) as reader:
        with pytest.raises(TranscodeError, match=message) as info:
            reader.to_kerchunk()
        assert info.value.path == reader.path and "kerchunk" in str(info.value)


@pytest.mark.parametrize("case", ["native-ybr-full", "j2k-ybr-without-mct"])
def test_ycbcr_as_stored_is_described(tmp_path, case):
    # Without the conversion (as_rgb=False) the numcodec's output is what the reader returns.
    path = REFUSED[case][0](tmp_path)
    with dicomframes.open(path, as_rgb=False) as reader:
        frames = open_array(reader.to_kerchunk(), "frames")
        for i in range(len(reader)):
            assert np.array_equal(frames[i], reader.frame(i))


def test_the_check_decodes_the_first_frame(tmp_path):
    # 8-bit codestreams in a 16-bit file: dicomframes widens them, a numcodec cannot.
    import imagecodecs

    frames = [np.full((32, 32), 7 * k, np.uint8) for k in range(2)]
    codestreams = [bytes(imagecodecs.jpeg2k_encode(f, level=0, codecformat="J2K", reversible=True)) for f in frames]
    body, _ = dicomgen.encapsulate([[c] for c in codestreams])
    els = dicomgen.image_elements(frames=2, rows=32, columns=32, bits_allocated=16, bits_stored=8)
    path = dicomgen.write_file(tmp_path / "w.dcm", dicomgen.J2K, els, body, encapsulated=True)
    with dicomframes.open(path) as reader:
        assert reader.frame(1).dtype == np.uint16
        with pytest.raises(TranscodeError, match="imagecodecs_jpeg2k gives uint8") as info:
            reader.to_kerchunk()
        assert info.value.frame == 0
        assert "frames/1.0.0" in reader.to_kerchunk(verify=False)["refs"]  # unchecked, as asked


# -- over HTTP, with the references alone -------------------------------------------------------------
READ_WITH_ZARR_ONLY = textwrap.dedent("""
    import json, sys
    import numpy as np, zarr
    import imagecodecs.numcodecs
    imagecodecs.numcodecs.register_codecs(verbose=False)
    refs_path, name, out = sys.argv[1:4]
    store = zarr.storage.FsspecStore.from_url(
        "reference://", read_only=True, storage_options={
            "fo": refs_path, "remote_protocol": "http", "remote_options": {"asynchronous": True}})
    np.save(out, zarr.open_group(store=store, mode="r", zarr_format=2)[name][:])
    assert "dicomframes" not in sys.modules, "the read imported dicomframes"
""")


def _read_elsewhere(tmp_path, refs: dict, name: str) -> np.ndarray:
    refs_path, out = tmp_path / f"{name}.json", tmp_path / f"{name}.npy"
    refs_path.write_text(json.dumps(refs))
    script = tmp_path / "read.py"
    script.write_text(READ_WITH_ZARR_ONLY)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, str(script), str(refs_path), name, str(out)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    return np.load(out)


def test_references_read_over_http_without_dicomframes(tmp_path, nginx, remote_dir):
    sample = write_sample(remote_dir / "kerchunk-frames.dcm", frames=20, rows=64, columns=48,
                          syntax="jpegls", offset_table="none", samples_per_pixel=3)
    write_pyramid(remote_dir / "kerchunk-wsi", width=1000, height=700, levels=2, tile_size=(128, 96), codec="jpeg",
                  organizations="TILED_SPARSE", absent_fraction=0.2, shuffle=True, label=False, overview=False)
    # References made over HTTP name the URL the reader was opened with.
    with dicomframes.open(f"{nginx.url}/kerchunk-frames.dcm") as reader:
        refs = reader.to_kerchunk()
        assert {v[0] for v in refs["refs"].values() if isinstance(v, list)} == {f"{nginx.url}/kerchunk-frames.dcm"}
        want = np.stack([reader.frame(i) for i in range(len(reader))])
    before = nginx.mark()
    got = _read_elsewhere(tmp_path, refs, "frames")
    assert np.array_equal(got, want)
    ranges = [r for r in nginx.since(before) if "kerchunk-frames" in r.path]
    assert ranges and all(r.range for r in ranges)  # range requests of the frames, never the whole file
    assert sum(r.bytes for r in ranges) < os.path.getsize(sample)
    # A level made from local files, for the place they will be read from.
    with dicomframes.open_slide(remote_dir / "kerchunk-wsi") as slide:
        level = slide.levels[0]
        refs = slide.to_kerchunk(url=lambda p: f"{nginx.url}/kerchunk-wsi/{os.path.basename(p)}")
        want = level.read_region((0, 0), level.size)
    assert np.array_equal(_read_elsewhere(tmp_path, refs, "image"), want)


def test_xarray_opens_a_level(tmp_path):
    xr = pytest.importorskip("xarray")
    write_pyramid(tmp_path, width=500, height=300, levels=1, tile_size=(128, 96), codec="j2k",
                  organizations="TILED_SPARSE", absent_fraction=0.3, shuffle=True, label=False, overview=False)
    with dicomframes.open_slide(tmp_path) as slide:
        refs = slide.to_kerchunk()
        want = slide.levels[0].read_region((0, 0), slide.dimensions)
    store = zarr.storage.FsspecStore.from_url("reference://", storage_options={"fo": refs}, read_only=True)
    ds = xr.open_zarr(store, zarr_format=2, consolidated=False, mask_and_scale=False)
    assert ds["image"].dims == ("y", "x", "sample")
    assert np.array_equal(ds["image"].values, want)
