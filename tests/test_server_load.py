"""Memory under load: `dicomframes serve` over 50 slides while 64 clients read random DeepZoom tiles.

The server runs as its own process with its defaults (64 MB of cache, 8
slides open, decodes bounded by the cores); its resident memory is sampled
throughout. Bounds, not timings: the peak stays under 250 MB, and a second
round of the same load leaves it where the first did (nothing grows with
the requests served). Every answer is a tile or, under backpressure, a 503.
"""

from __future__ import annotations

import random
import threading
import time

import psutil
import pytest
import requests

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from dicomframes.server.deepzoom import DeepZoom
from dicomframes.wsi.slide import open_slide
from tests.helpers.serving import Serving
from tests.helpers.wsigen import write_pyramid

SLIDES, CLIENTS, REQUESTS_EACH = 50, 64, 25
WIDTH, HEIGHT, TILE = 1536, 1024, 128


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    root = tmp_path_factory.mktemp("fifty")
    series = []
    for k in range(SLIDES):
        write_pyramid(root / f"s{k:02d}", width=WIDTH, height=HEIGHT, levels=3, codec="jpeg",
                      tile_size=(TILE, TILE), label=False, overview=False, seed=k)
        with open_slide(str(root / f"s{k:02d}")) as slide:
            series.append(slide.levels[0].readers[0].header.get("SeriesInstanceUID"))
    return root, series


def _rss(proc: psutil.Process) -> int:
    return proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))


def _round(url: str, series: list[str], seed: int) -> dict[int, int]:
    dz = DeepZoom(WIDTH, HEIGHT, TILE)
    statuses: dict[int, int] = {}
    lock = threading.Lock()

    def client(k: int) -> None:
        rng = random.Random(seed * 1000 + k)
        with requests.Session() as session:
            for _ in range(REQUESTS_EACH):
                level = rng.randint(dz.max_level - 4, dz.max_level)
                cols, rows = dz.tiles(level)
                uid = rng.choice(series)
                answer = session.get(f"{url}/deepzoom/{uid}_files/{level}/{rng.randrange(cols)}_{rng.randrange(rows)}.jpeg",
                                     timeout=60)
                with lock:
                    statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses


@pytest.mark.slow
def test_memory_stays_bounded_under_64_clients_on_50_slides(slides):
    root, series = slides
    serving = Serving(str(root))
    proc = psutil.Process(serving.proc.pid)
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss(proc))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        idle = _rss(proc)
        sampler.start()
        first = _round(serving.url, series, 1)
        after_first = _rss(proc)
        second = _round(serving.url, series, 2)
        after_second = _rss(proc)
        stop.set()
        sampler.join()
        health = requests.get(serving.url + "/health").json()
    finally:
        stop.set()
        serving.stop()
    for statuses in (first, second):
        assert set(statuses) <= {200, 503} and statuses.get(200, 0) >= CLIENTS * REQUESTS_EACH // 2, statuses
    print(f"idle {idle / 1e6:.0f} MB, peak {peak[0] / 1e6:.0f} MB, after {after_first / 1e6:.0f} and "
          f"{after_second / 1e6:.0f} MB; {first} {second}; {health['open_slides']} slides open")
    assert peak[0] < 250e6
    assert health["open_slides"] <= 8 and health["cache"]["bytes"] <= 64e6
    # the second round, as large as the first, leaves memory where the first did
    assert after_second < after_first + 20e6
    assert after_second < idle + 64e6 + 60e6  # the idle process, a full cache, and the allocator's slack
