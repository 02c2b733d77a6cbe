"""Region reads as a viewer makes them: dicomframes vs wsidicom vs OpenSlide, on a wsidicomizer pyramid.

tifffile writes a 4096x3072 OME-TIFF of 256-pixel JPEG tiles and wsidicomizer
converts it to DICOM (3 levels). Then, for each library, in this process, with
a fresh slide each time (so that no cache from an earlier case helps):

- disjoint: 20 regions of 512x512 at level 0 that share no tile (each touches 9);
- overlapping: 200 random 512x512 regions within a 1536x1536 window of level 0,
  as a viewer panning around asks for them (neighbours share most tiles);

regions per second, best of ``--runs``; the same regions for every library,
compared with dicomframes' pixels (exactly equal for wsidicom; OpenSlide may
differ by its own JPEG decoding). The floor: imagecodecs decoding the 9 tiles
of a region from bytes in memory, one thread. Also the growth of peak RSS over
the overlapping runs (the tile cache's bound is 64 MiB).

Needs wsidicomizer (with libturbojpeg), wsidicom, imagecodecs; OpenSlide rows
need ``pip install openslide-python openslide-bin`` (skipped without)::

    python benchmarks/region_bench.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the repository root: tests.helpers

import dicomframes
from measure import peak_rss_mb
from tests.helpers.wsidicomizer import import_wsidicomizer, write_ome_tiff

WIDTH, HEIGHT, TILE, SIZE = 4096, 3072, 256, 512


def disjoint_regions() -> list[tuple[int, int]]:
    """Regions 3 tiles apart, starting half a tile in: each touches 3x3 tiles of its own."""
    return [(128 + 768 * i, 128 + 768 * j) for j in range(4) for i in range(5)]


def overlapping_regions(n: int = 200, window: int = 1536, seed: int = 0) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    x0, y0 = 1000, 700
    return [(x0 + int(rng.integers(0, window - SIZE)), y0 + int(rng.integers(0, window - SIZE))) for _ in range(n)]


class Dicomframes:
    name = "dicomframes"

    def __init__(self, folder: Path, cache: bool = True) -> None:
        self.slide = dicomframes.open_slide(folder, tile_cache=None if cache else False)

    def read(self, x: int, y: int) -> np.ndarray:
        return self.slide.read_region((x, y), 0, (SIZE, SIZE))

    def close(self) -> None:
        self.slide.close()


class Wsidicom:
    name = "wsidicom"

    def __init__(self, folder: Path) -> None:
        import wsidicom

        self.slide = wsidicom.WsiDicom.open(folder)

    def read(self, x: int, y: int) -> np.ndarray:
        return np.asarray(self.slide.read_region((x, y), 0, (SIZE, SIZE)).convert("RGB"))

    def close(self) -> None:
        self.slide.close()


class Openslide:
    name = "OpenSlide"

    def __init__(self, folder: Path) -> None:
        import openslide

        self.slide = openslide.OpenSlide(str(sorted(folder.glob("*.dcm"))[0]))

    def read(self, x: int, y: int) -> np.ndarray:
        return np.asarray(self.slide.read_region((x, y), 0, (SIZE, SIZE)))[..., :3]

    def close(self) -> None:
        self.slide.close()


def rate(make, folder: Path, regions: list[tuple[int, int]], runs: int) -> tuple[float, list[np.ndarray]]:
    best, out = 0.0, []
    for _ in range(runs):
        lib = make(folder)
        try:
            lib.read(0, 0)  # warm up: imports, the decoder, the first tiles' positions
            start = time.perf_counter()
            out = [lib.read(x, y) for x, y in regions]
            best = max(best, len(regions) / (time.perf_counter() - start))
        finally:
            lib.close()
    return best, out


def floor(folder: Path, regions: list[tuple[int, int]]) -> float:
    """Regions/s of decoding their tiles alone: imagecodecs, one thread, bytes in memory."""
    import imagecodecs

    slide = dicomframes.open_slide(folder)
    level = slide.levels[0]
    reader = level.readers[0]
    geometry = reader.tile_geometry
    codestreams = {}
    for x, y in regions:
        for f in geometry.tiles_in(x, y, SIZE, SIZE)[0].tolist():
            codestreams.setdefault(f, reader.encoded_frame(f))
    slide.close()
    start = time.perf_counter()
    for x, y in regions:
        for f in geometry.tiles_in(x, y, SIZE, SIZE)[0].tolist():
            imagecodecs.jpeg8_decode(codestreams[f])
    return len(regions) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="best of (3)")
    args = ap.parse_args(argv)
    WsiDicomizer = import_wsidicomizer()
    libraries = [Dicomframes, Wsidicom]
    try:
        import openslide  # noqa: F401

        libraries.append(Openslide)
    except ImportError:
        print("OpenSlide is not installed: skipping it (pip install openslide-python openslide-bin)")
    with tempfile.TemporaryDirectory(prefix="region_bench_") as tmp:
        tiff = Path(tmp) / "slide.ome.tiff"
        write_ome_tiff(tiff, WIDTH, HEIGHT, TILE)
        folder = Path(tmp) / "dicom"
        folder.mkdir()
        WsiDicomizer.convert(tiff, folder, include_label=False, include_overview=False, workers=1, offset_table="BOT")
        cases = {"disjoint": disjoint_regions(), "overlapping": overlapping_regions()}
        rows: dict[tuple[str, str], float] = {}
        notes = []
        for case, regions in cases.items():
            rows[(case, "floor")] = floor(folder, regions)
            before = peak_rss_mb()
            fps, ours = rate(Dicomframes, folder, regions, args.runs)
            rows[(case, "dicomframes")] = fps
            if case == "overlapping":
                notes.append(f"dicomframes peak RSS grew {peak_rss_mb() - before:.0f} MB over the overlapping runs")
            rows[(case, "dicomframes, no tile cache")], _ = rate(lambda f: Dicomframes(f, cache=False), folder, regions,
                                                                 args.runs)
            for lib in libraries[1:]:
                fps, theirs = rate(lib, folder, regions, args.runs)
                rows[(case, lib.name)] = fps
                differs = max(int(np.abs(a.astype(int) - b.astype(int)).max()) for a, b in zip(ours, theirs))
                notes.append(f"{case}: {lib.name}'s pixels differ from dicomframes' by at most {differs}")
    names = ["floor", "dicomframes", "dicomframes, no tile cache", *[lib.name for lib in libraries[1:]]]
    print(f"\n512x512 regions per second, level 0 of a {WIDTH}x{HEIGHT} wsidicomizer pyramid of {TILE}-pixel JPEG "
          f"tiles, best of {args.runs}\n")
    print("| library | " + " | ".join(cases) + " |")
    print("|---|" + "---:|" * len(cases))
    for name in names:
        print(f"| {name} | " + " | ".join(f"{rows[(c, name)]:,.0f}" for c in cases) + " |")
    print()
    for case in cases:
        ours = rows[(case, "dicomframes")]
        ratios = [f"{ours / rows[(case, name)]:.2f}x {name}" for name in names[2:]]
        print(f"{case}: dicomframes = {ours / rows[(case, 'floor')]:.2f}x the floor, " + ", ".join(ratios))
    for note in notes:
        print(note)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
