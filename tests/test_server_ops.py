"""Running the server: its pages, readiness, rescans (timed and asked for) and several processes."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import pydicom
import pytest
import requests
from pydicom.data import get_testdata_file

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from dicomframes.server import create_app
from tests.helpers.serving import Running, Serving
from tests.helpers.wsigen import write_pyramid

JPEG = "color3d_jpeg_baseline.dcm"


def _copy(folder, name: str, source: str = JPEG) -> pydicom.Dataset:
    """`source` under `folder` as `name`, with UIDs of its own (another instance in another series)."""
    ds = pydicom.dcmread(get_testdata_file(source))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(folder / name)
    return ds


@pytest.fixture()
def folder(tmp_path):
    _copy(tmp_path, "a.dcm")
    write_pyramid(tmp_path / "slide", width=600, height=400, levels=2, codec="jpeg", tile_size=(128, 128),
                  label=False, overview=False)
    return tmp_path


@contextmanager
def _serving(*roots, **options):
    """The app over `roots` in a uvicorn thread: (the running server, the app's `Server`)."""
    running = Running(create_app(*roots, **options))
    try:
        yield running, running.server.config.app.state.server
    finally:
        running.stop()


def _sops(url: str) -> set[str]:
    return {row["00080018"]["Value"][0] for row in requests.get(f"{url}/dicomweb/instances").json()}


def test_the_index_page_lists_every_series_and_links_slides_to_the_viewer(folder):
    with _serving(str(folder)) as (running, _):
        page = requests.get(running.url + "/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        series = {row["0020000E"]["Value"][0]: row for row in requests.get(f"{running.url}/dicomweb/series").json()}
        assert len(series) == 2
        for uid in series:
            assert uid in page.text
        assert page.text.count('href="/view/') == 1  # the slide; the other series links a rendered frame
        assert page.text.count("/rendered") == 1
        viewed = page.text.split('href="/view/')[1].split('"')[0]
        view = requests.get(f"{running.url}/view/{viewed}")
        assert view.status_code == 200 and f"/deepzoom/{viewed}.dzi" in view.text
        script = requests.get(running.url + "/static/viewer.js")
        assert script.status_code == 200 and "openViewer" in script.text
        assert requests.get(f"{running.url}/view/1.2.3").status_code == 404
        assert requests.get(f"{running.url}/view/..%2F..%2Fetc").status_code == 404


def test_the_index_page_escapes_what_the_files_say(tmp_path):
    ds = _copy(tmp_path, "a.dcm")
    ds.Modality = "<b>"
    ds.save_as(tmp_path / "a.dcm")
    with _serving(str(tmp_path)) as (running, _):
        text = requests.get(running.url + "/").text
        assert "<b>" not in text and "&lt;b&gt;" in text


def test_ready_answers_without_the_token(folder):
    with _serving(str(folder), token="s3cret") as (running, _):
        ready = requests.get(running.url + "/ready")
        assert ready.status_code == 200 and ready.json()["ready"] is True
        assert requests.get(running.url + "/").status_code == 401


def test_a_rescan_asked_for_serves_what_is_there_now_and_forgets_what_went(folder):
    with _serving(str(folder)) as (running, server):
        before = _sops(running.url)
        gone = next(iter(before - {i.sop for i in server.catalogue.instances() if "slide" in str(i.location)}))
        frames = f"{running.url}/dicomweb/studies/{{}}/series/{{}}/instances/{gone}/frames/1"
        inst = next(i for i in server.catalogue.instances() if i.sop == gone)
        url = frames.format(inst.study, inst.series)
        assert requests.get(url, headers={"Accept": "multipart/related; type=application/octet-stream"}).status_code == 200
        assert len(server.readers) == 1  # its reader is open
        added = _copy(folder, "b.dcm")
        (folder / "a.dcm").unlink()
        answer = requests.post(running.url + "/admin/rescan")
        assert answer.status_code == 200, answer.text
        assert answer.json()["added"] == 1 and answer.json()["changed_or_gone"] == 1
        after = _sops(running.url)
        assert after == (before - {gone}) | {added.SOPInstanceUID}
        assert len(server.readers) == 0  # the gone file's reader was closed
        assert requests.get(url, headers={"Accept": "multipart/related; type=application/octet-stream"}).status_code == 404
        assert requests.get(running.url + "/admin/rescan").status_code == 405  # asked for by POST only


def test_a_rescan_needs_the_token_when_there_is_one(folder):
    with _serving(str(folder), token="s3cret") as (running, _):
        assert requests.post(running.url + "/admin/rescan").status_code == 401
        answer = requests.post(running.url + "/admin/rescan", headers={"Authorization": "Bearer s3cret"})
        assert answer.status_code == 200 and answer.json()["instances"] == 3


def test_timed_rescans_find_new_files(folder):
    with _serving(str(folder), rescan_seconds=0.2) as (running, _):
        count = len(_sops(running.url))
        added = _copy(folder, "b.dcm")
        deadline = time.monotonic() + 20
        while added.SOPInstanceUID not in _sops(running.url):
            assert time.monotonic() < deadline, "a timed rescan did not find the new file"
            time.sleep(0.1)
        assert len(_sops(running.url)) == count + 1
    # the app's shutdown ends the timed rescans: nothing keeps scanning behind the next test
    deadline = time.monotonic() + 5
    while any(t.name.startswith("dicomframes-rescan") for t in threading.enumerate()):
        assert time.monotonic() < deadline, "timed rescans went on after the server stopped"
        time.sleep(0.05)


def test_workers_are_server_processes_sharing_one_scan(folder):
    serving = Serving(str(folder), "--workers", "2")
    try:
        assert any("instances" in line and "in " in line for line in serving.lines)
        assert sum("catalogue:" in line for line in serving.lines) <= 1  # scanned once, by the parent
        pids = set()
        deadline = time.monotonic() + 30
        while len(pids) < 2 and time.monotonic() < deadline:
            # a new connection each time: the kernel spreads them over the processes
            health = requests.get(serving.url + "/health", headers={"Connection": "close"}).json()
            assert health["instances"] == 3
            pids.add(health["pid"])
        assert len(pids) == 2
        assert serving.proc.pid not in pids
    finally:
        assert serving.stop() in (0, 130)


def test_frames_of_a_remote_file_asked_together_are_read_together(nginx):
    """A WADO-RS request for 20 neighbouring frames of a file over HTTP reads them in one
    range request (planned reads), and each part is the frame's bytes as stored."""
    import dicomframes

    url = f"{nginx.url}/bot.dcm"
    with _serving(url) as (running, _):
        inst = running.server.config.app.state.server.catalogue.instances()[0]
        path = f"{running.url}/dicomweb/studies/{inst.study}/series/{inst.series}/instances/{inst.sop}/frames/"
        # the header and index are read once the reader opens; count what the frames take after
        first = requests.get(path + "1", headers={"Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'})
        assert first.status_code == 200
        mark = nginx.mark()
        answer = requests.get(path + ",".join(str(n) for n in range(11, 31)),
                              headers={"Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'})
        assert answer.status_code == 200
        ranged = [r for r in nginx.since(mark, 1) if r.path.endswith("/bot.dcm") and r.range]
        assert len(ranged) == 1
        with dicomframes.open(url) as reader:
            expected = [reader.encoded_frame(i) for i in range(10, 30)]
            assert reader.encoded_frames([12, 10, 12, -1]) == [reader.encoded_frame(i) for i in (12, 10, 12, -1)]
        boundary = answer.headers["content-type"].split("boundary=")[1].encode()
        parts = [p.split(b"\r\n\r\n", 1)[1][:-2] for p in answer.content.split(b"--" + boundary)[1:-1]]
        assert parts == expected


def test_metadata_is_made_once_then_kept(folder):
    with _serving(str(folder)) as (running, server):
        inst = next(i for i in server.catalogue.instances() if "slide" not in str(i.location))
        url = f"{running.url}/dicomweb/studies/{inst.study}/series/{inst.series}/instances/{inst.sop}/metadata"
        first = requests.get(url)
        hits = server.cache.stats()["hits"]
        opened = server.readers.opened
        second = requests.get(url)
        assert second.json() == first.json() and first.json()[0]["00080018"]["Value"] == [inst.sop]
        assert server.cache.stats()["hits"] == hits + 1 and server.readers.opened == opened
        series = requests.get(url.rsplit("/instances/", 1)[0] + "/metadata").json()
        assert series == first.json()
        assert requests.get(url, headers={"If-None-Match": second.headers["etag"]}).status_code == 304


def test_a_restarted_server_does_not_walk_a_file_without_offset_table_again(nginx):
    """The frame index a walk built is kept (the reader's index cache, on by default for
    remote files): a server started again over the same file reads the last frame with
    no walk, in a few requests instead of the walk's."""
    url = f"{nginx.url}/walked.dcm"
    counts = []
    for _ in range(2):
        running = Running(create_app(url))
        try:
            inst = running.server.config.app.state.server.catalogue.instances()[0]
            mark = nginx.mark()
            answer = requests.get(
                f"{running.url}/dicomweb/studies/{inst.study}/series/{inst.series}/instances/{inst.sop}/frames/1000",
                headers={"Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'})
            assert answer.status_code == 200
            records = [r for r in nginx.since(mark, 1) if r.path.endswith("/walked.dcm")]
            counts.append((len(records), sum(r.bytes for r in records)))
        finally:
            running.stop()
    (walked, walked_bytes), (again, again_bytes) = counts
    assert again <= 2 < walked and again_bytes * 10 < walked_bytes, counts


def test_a_tile_asked_for_by_many_at_once_is_made_once(folder, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from dicomframes.server import deepzoom

    made = []
    real = deepzoom.made_tile

    def slow_made_tile(*args):
        made.append(args[2:])
        time.sleep(0.3)  # long enough for every request to arrive while it is made
        return real(*args)

    monkeypatch.setattr(deepzoom, "made_tile", slow_made_tile)
    with _serving(str(folder)) as (running, _):
        series = requests.get(f"{running.url}/").text.split('href="/view/')[1].split('"')[0]
        url = f"{running.url}/deepzoom/{series}_files/7/0_0.jpeg"  # 600x400 at 1/4: from level 1, resampled
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: requests.get(url), range(8)))
        assert [a.status_code for a in answers] == [200] * 8
        assert len({a.content for a in answers}) == 1
        assert made == [(7, 0, 0)]
