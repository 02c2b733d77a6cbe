"""The server in a real browser: OpenSeadragon and the server's own viewer page in headless Chromium.

OpenSeadragon comes from the npm registry (``npm ci --prefix tests/browser``)
and is served, with a test page, from another origin than the server's, so
the DeepZoom requests are cross-origin, as for a viewer hosted elsewhere.
Chromium is Debian's (``apt-get install chromium``), driven by Playwright.
`.ci/run` installs both; without them these tests skip, except under CI
(``CI`` set), where a missing browser is a failure.

Each page is checked the same way: every tile request answers 200, and a
screenshot of the home view (the whole slide filling the viewport) matches
the slide's full level resampled to the viewport's size.
"""

from __future__ import annotations

import functools
import io
import os
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dicomframes.server import create_app
from dicomframes.wsi.slide import open_slide
from tests.helpers.serving import Running
from tests.helpers.wsidicomizer import import_wsidicomizer, write_ome_tiff
from tests.helpers.wsigen import write_pyramid

OSD = Path(__file__).parent / "browser" / "node_modules" / "openseadragon" / "build" / "openseadragon"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
VIEW_W, VIEW_H = 800, 560  # the slides' aspect: the home view fills it exactly


def _missing(what: str):
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing: .ci/run installs it")
    pytest.skip(f"{what} is missing")


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright (the [test] extra)")
    if CHROMIUM is None:
        _missing("chromium (apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    """A generated pyramid and one wsidicomizer wrote, both 2000x1400 with 128-pixel JPEG tiles."""
    root = tmp_path_factory.mktemp("browser-slides")
    write_pyramid(root / "generated", width=2000, height=1400, levels=3, codec="jpeg", tile_size=(128, 128))
    WsiDicomizer = import_wsidicomizer()
    tiff = root / "slide.ome.tiff"
    write_ome_tiff(tiff, 2000, 1400, 128)
    (root / "wsidicomizer").mkdir()
    WsiDicomizer.convert(tiff, root / "wsidicomizer", include_label=False, include_overview=False, workers=1)
    return root


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def other_origin(tmp_path_factory):
    """A static site on another port: OpenSeadragon and a page that opens ?dzi=URL in it."""
    if not (OSD / "openseadragon.min.js").exists():
        _missing("OpenSeadragon (npm ci --prefix tests/browser)")
    site = tmp_path_factory.mktemp("site")
    shutil.copy(OSD / "openseadragon.min.js", site)
    (site / "osd.html").write_text(
        "<!doctype html><html><body style='margin:0'>"
        f"<div id='v' style='width:{VIEW_W}px;height:{VIEW_H}px'></div>"
        "<script src='openseadragon.min.js'></script><script>"
        "const dzi = new URLSearchParams(location.search).get('dzi');"
        "window.viewer = OpenSeadragon({id: 'v', tileSources: dzi, crossOriginPolicy: 'Anonymous',"
        " animationTime: 0, blendTime: 0, showNavigationControl: false, immediateRender: false});"
        "</script></body></html>")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(site)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def served(slides, other_origin):
    running = Running(create_app(str(slides), cors_origins=[other_origin]))
    yield running
    running.stop()


def _series(name: str, slides) -> str:
    with open_slide(str(slides / name)) as slide:
        return slide.levels[0].readers[0].header.get("SeriesInstanceUID")


def _expected(slides, name: str) -> np.ndarray:
    with open_slide(str(slides / name)) as slide:
        full = slide.read_region((0, 0), 0, slide.levels[0].size)
    return np.asarray(Image.fromarray(full).resize((VIEW_W, VIEW_H), Image.BOX)).astype(float)


def _similar(shot: bytes, expected: np.ndarray) -> None:
    got = np.asarray(Image.open(io.BytesIO(shot)).convert("RGB")).astype(float)
    assert got.shape == expected.shape
    assert got.std() > 10, "the viewer shows a blank picture"
    error = np.abs(got - expected).mean()
    correlation = np.corrcoef(got.ravel(), expected.ravel())[0, 1]
    assert error < 6 and correlation > 0.97, (error, correlation)


def _open(browser, url: str, ready: str):
    """A page at `url`, once `ready` (a JS expression) holds; and its tile answers."""
    page = browser.new_page(viewport={"width": VIEW_W, "height": VIEW_H})
    answers: list[tuple[str, int]] = []
    page.on("response", lambda r: answers.append((r.url, r.status)) if "/deepzoom/" in r.url else None)
    page.on("requestfailed", lambda r: answers.append((r.url, -1)))
    page.goto(url)
    page.wait_for_function(ready, timeout=30_000)
    return page, answers


@pytest.mark.parametrize("name", ["generated", "wsidicomizer"])
def test_openseadragon_shows_the_slide_from_another_origin(browser, served, other_origin, slides, name):
    series = _series(name, slides)
    osd_ready = "window.viewer && viewer.world.getItemCount() === 1 && viewer.world.getItemAt(0).getFullyLoaded()"
    page, answers = _open(browser, f"{other_origin}/osd.html?dzi={served.url}/deepzoom/{series}.dzi", osd_ready)
    try:
        tiles = [(u, s) for u, s in answers if "_files/" in u]
        assert tiles and all(s == 200 for _, s in answers), answers
        _similar(page.locator("#v").screenshot(), _expected(slides, name))
    finally:
        page.close()


@pytest.mark.parametrize("name", ["generated", "wsidicomizer"])
def test_the_viewer_page_shows_the_slide_and_zooms(browser, served, slides, name):
    series = _series(name, slides)
    loaded = "document.getElementById('slide') && document.getElementById('slide').dataset.loaded === 'true'"
    page, answers = _open(browser, f"{served.url}/view/{series}", loaded)
    try:
        assert all(s == 200 for _, s in answers) and any("_files/" in u for u, _ in answers), answers
        _similar(page.screenshot(), _expected(slides, name))
        levels_before = {int(u.split("_files/")[1].split("/")[0]) for u, _ in answers if "_files/" in u}
        # zoom in about the centre: the next finer level's tiles come, all 200
        page.mouse.move(VIEW_W / 2, VIEW_H / 2)
        page.mouse.wheel(0, -800)
        page.wait_for_function(loaded, timeout=30_000)
        levels_after = {int(u.split("_files/")[1].split("/")[0]) for u, _ in answers if "_files/" in u}
        assert max(levels_after) > max(levels_before)
        assert all(s == 200 for _, s in answers), answers
        # a drag pans: the image point under the pointer follows it
        before = page.evaluate("viewer.view()")
        page.mouse.down()
        page.mouse.move(VIEW_W / 2 + 100, VIEW_H / 2 + 50)
        page.mouse.up()
        after = page.evaluate("viewer.view()")
        assert after["x"] == pytest.approx(before["x"] - 100 * before["scale"])
        assert after["y"] == pytest.approx(before["y"] - 50 * before["scale"])
    finally:
        page.close()


def test_the_index_page_lists_the_slides_and_opens_them_in_the_viewer(browser, served, slides):
    page = browser.new_page(viewport={"width": VIEW_W, "height": VIEW_H})
    try:
        page.goto(served.url + "/")
        links = page.locator("a", has_text="view slide")
        assert links.count() == 2
        links.first.click()
        page.wait_for_function("document.getElementById('slide').dataset.loaded === 'true'", timeout=30_000)
        assert "/view/" in page.url
    finally:
        page.close()


def test_a_browser_signs_in_by_the_link_serve_prints_and_then_sees_the_slide(browser, slides):
    running = Running(create_app(str(slides), token="s3cret"))
    try:
        series = _series("generated", slides)
        locked = browser.new_page()
        try:
            assert locked.goto(f"{running.url}/view/{series}").status == 401
        finally:
            locked.close()
        loaded = "document.getElementById('slide') && document.getElementById('slide').dataset.loaded === 'true'"
        page, answers = _open(browser, f"{running.url}/view/{series}?token=s3cret", loaded)
        try:
            assert page.url == f"{running.url}/view/{series}"  # the token is out of the address bar
            assert answers and all(s == 200 for _, s in answers), answers
            _similar(page.screenshot(), _expected(slides, "generated"))
            (cookie,) = page.context.cookies()
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and "s3cret" not in cookie["value"]
        finally:
            page.close()
    finally:
        running.stop()
