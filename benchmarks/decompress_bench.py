"""Decompressing a whole-slide-like file: `dicomframes decompress` vs pydicom, same run.

Writes a 2,000-frame JPEG Baseline file of 256x256 RGB tiles (YCbCr 4:2:2,
encoded with imagecodecs, the data set written with pydicom), then measures,
each side in its own process so its peak RSS (VmHWM) is its own:

- ``dicomframes decompress IN OUT`` (default decoder: imagecodecs where installed, all cores)
- ``dicomframes decompress IN OUT --decoder pylibjpeg`` (pydicom's decoders: identical pixels)
- pydicom: ``dcmread`` + ``pydicom.pixels.decompress`` + ``save_as``

and checks that each output's pixel data equal pydicom's (byte for byte for the
pylibjpeg run; imagecodecs may differ by a grey level on lossy JPEG).

Usage:  python benchmarks/decompress_bench.py [--frames 2000] [--tile 256] [--markdown FILE]
Needs:  pydicom, imagecodecs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from measure import children_peak_rss_mb, emit, peak_rss_mb

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


def tile(size: int, k: int, rng) -> np.ndarray:
    """A tissue-like RGB tile: smooth blobs, stain colours, fine noise."""
    y, x = np.mgrid[0:size, 0:size] / size
    phase = k * 0.37
    base = 0.5 + 0.25 * np.sin(6 * x + phase) * np.cos(5 * y - phase) + 0.15 * np.sin(23 * (x + y) + phase)
    v = np.clip(base + rng.normal(0, 0.04, (size, size)), 0, 1)
    rgb = np.stack([230 - 90 * v, 200 - 150 * v, 220 - 60 * v], axis=-1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def write(path: str, frames: int, size: int) -> None:
    import imagecodecs
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import generate_uid

    rng = np.random.default_rng(0)
    streams = [
        bytes(imagecodecs.jpeg8_encode(tile(size, k, rng), level=90, colorspace="RGB", outcolorspace="YCBCR", subsampling="422"))
        for k in range(frames)
    ]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = JPEG_BASELINE
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.6"  # VL Whole Slide Microscopy
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "SM"
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.PlanarConfiguration = 0
    ds.NumberOfFrames = frames
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "01"
    ds.PixelData = encapsulate(streams, has_bot=True)
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)


# -- one side, in its own process ------------------------------------------------------------


def run_one(kind: str, src: str, dst: str) -> dict:
    start = time.perf_counter()
    if kind == "pydicom":
        import pydicom
        from pydicom.pixels import decompress

        ds = pydicom.dcmread(src)
        decompress(ds)
        ds.save_as(dst)
    else:
        from dicomframes.cli import main

        argv = ["decompress", src, dst, "--force", "--no-progress"]
        if kind == "dicomframes-pylibjpeg":
            argv += ["--decoder", "pylibjpeg"]
        if main(argv) != 0:
            raise SystemExit("dicomframes decompress failed")
    seconds = time.perf_counter() - start
    kids = children_peak_rss_mb()
    return {"seconds": seconds, "rss_mb": peak_rss_mb(), "worker_rss_mb": kids}


def measure(kind: str, src: str, dst: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--run-one", kind, src, dst], capture_output=True, text=True)
    if out.returncode:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def pixel_digest(path: str) -> str:
    """SHA-256 of the Pixel Data value, read in pieces (the file may be large)."""
    import dicomframes

    with dicomframes.open(path) as reader:
        offset, length = reader.header.pixel_offset, reader.header.pixel_length
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(offset)
        left = length
        while left:
            chunk = f.read(min(left, 8 << 20))
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--markdown", help="also write the table to this file")
    ap.add_argument("--run-one", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run_one:
        print(json.dumps(run_one(*args.run_one)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "slide.dcm")
        write(src, args.frames, args.tile)
        native = args.frames * args.tile * args.tile * 3
        kinds = ["pydicom", "dicomframes", "dicomframes-pylibjpeg"]
        results, digests = {}, {}
        for kind in kinds:
            dst = os.path.join(tmp, f"{kind}.dcm")
            results[kind] = measure(kind, src, dst)
            if "error" not in results[kind]:
                digests[kind] = pixel_digest(dst)
                os.remove(dst)
        size_mb = os.path.getsize(src) / 1e6

    ref = results["pydicom"]
    lines = [
        f"{args.frames} frames of {args.tile}x{args.tile} RGB, JPEG Baseline YCbCr 4:2:2: "
        f"{size_mb:.1f} MB in, {native / 1e6:.0f} MB of native pixel data out; {os.cpu_count()} cores",
        "",
        "| side | seconds | x pydicom speed | peak RSS MB (main) | x pydicom RSS | workers' peak RSS MB | pixel data = pydicom |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    names = {
        "pydicom": "pydicom dcmread + decompress + save_as",
        "dicomframes": "dicomframes decompress (default decoder)",
        "dicomframes-pylibjpeg": "dicomframes decompress --decoder pylibjpeg",
    }
    for kind in kinds:
        r = results[kind]
        if "error" in r:
            lines.append(f"| {names[kind]} | error: {r['error']} | | | | | |")
            continue
        speed = ref["seconds"] / r["seconds"] if "seconds" in ref else float("nan")
        rss = r["rss_mb"] / ref["rss_mb"] if "rss_mb" in ref else float("nan")
        same = "—" if kind == "pydicom" else ("yes" if digests.get(kind) == digests.get("pydicom") else "no (lossy decoder differs)")
        kids = f"{r['worker_rss_mb']:.0f}" if r["worker_rss_mb"] else ""
        lines.append(f"| {names[kind]} | {r['seconds']:.2f} | {speed:.2f} | {r['rss_mb']:.0f} | {rss:.2f} | {kids} | {same} |")
    emit(lines, args.markdown)


if __name__ == "__main__":
    main()
