"""`dicomframes serve`: DICOMweb over a folder, checked with a real server and real clients.

A uvicorn server runs in a thread on a free port; dicomweb-client searches,
reads metadata, frames (as stored and decoded) and whole instances, and every
answer is compared with what `dicomframes.open` reads from the same file.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time

import numpy as np
import pydicom
import pytest
import requests
from PIL import Image
from pydicom.data import get_testdata_file

pytest.importorskip("starlette")
uvicorn = pytest.importorskip("uvicorn")
from dicomweb_client.api import DICOMwebClient

import dicomframes
from dicomframes.samples import write_sample
from dicomframes.server import create_app
from dicomframes.server.catalogue import Catalogue
from dicomframes.server.media import frame_media, parse_accept
from dicomframes.server.readers import ReaderPool
from dicomframes.wsi.slide import open_slide, resize_area
from tests.helpers.serving import Running, Serving
from tests.helpers.wsigen import write_pyramid

EXPLICIT = "1.2.840.10008.1.2.1"
TEST_FILES = {  # pydicom's multi-frame test files: name -> transfer syntax
    "jpeg.dcm": "color3d_jpeg_baseline.dcm",
    "j2k.dcm": "emri_small_jpeg_2k_lossless.dcm",
    "rle.dcm": "SC_rgb_rle_2frame.dcm",
    "big_endian.dcm": "SC_rgb_expb_2frame.dcm",
}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    folder = tmp_path_factory.mktemp("served")
    for name, source in TEST_FILES.items():
        shutil.copy(get_testdata_file(source), folder / name)
    # pydicom's RLE and big endian files are one image (one SOP Instance UID): make this one another
    ds = pydicom.dcmread(folder / "rle.dcm")
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(folder / "rle.dcm")
    sub = folder / "more"
    sub.mkdir()
    write_sample(str(sub / "native.dcm"), frames=12, rows=32, columns=40, samples_per_pixel=3, syntax="native")
    write_sample(str(sub / "jpegls.dcm"), frames=9, rows=32, columns=32, syntax="jpegls", offset_table="none")
    (folder / "notes.dcm").write_text("not a DICOM file")  # named like one: skipped, counted
    return folder


@pytest.fixture(scope="module")
def files(root):
    """SOP Instance UID -> path, for every DICOM file under the root."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            if name != "notes.dcm":
                out[pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID] = path
    return out


@pytest.fixture(scope="module")
def served(root):
    running = Running(create_app(str(root)))
    yield running
    running.stop()


@pytest.fixture()
def client(served):
    return DICOMwebClient(url=f"{served.url}/dicomweb")


def _uid(obj, tag):
    return obj[tag]["Value"][0]


def _instances(client):
    out = []
    for study in client.search_for_studies():
        for series in client.search_for_series(_uid(study, "0020000D")):
            out += client.search_for_instances(_uid(study, "0020000D"), _uid(series, "0020000E"))
    return out


# -- searches ------------------------------------------------------------------------------------
def test_searches_find_every_instance_and_nothing_else(client, files):
    found = _instances(client)
    assert sorted(_uid(i, "00080018") for i in found) == sorted(files)
    assert {_uid(i, "00083002") for i in found} >= {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.5"}
    for inst in found:
        with dicomframes.open(files[_uid(inst, "00080018")]) as reader:
            assert inst["00280008"]["Value"] == [len(reader)]
            assert inst["00280010"]["Value"] == [reader.format.rows]
            assert inst["00081190"]["Value"][0].endswith(f"/instances/{reader.header.get('SOPInstanceUID')}")


def test_study_results_count_their_series_and_instances(client, files):
    studies = client.search_for_studies()
    by_study: dict[str, list[str]] = {}
    for path in files.values():
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        by_study.setdefault(ds.StudyInstanceUID, []).append(ds.SeriesInstanceUID)
    assert sorted(_uid(s, "0020000D") for s in studies) == sorted(by_study)
    for s in studies:
        series = by_study[_uid(s, "0020000D")]
        assert s["00201206"]["Value"] == [len(set(series))]
        assert s["00201208"]["Value"] == [len(series)]


def test_matching_limit_and_offset(client, files):
    modalities = {pydicom.dcmread(p, stop_before_pixels=True).get("Modality") for p in files.values()}
    for modality in modalities - {None}:
        series = client.search_for_series(search_filters={"Modality": modality})
        assert series and all(_uid(s, "00080060") == modality for s in series)
    everything = client.search_for_series()
    page = client.search_for_series(limit=2, offset=1)
    assert [_uid(s, "0020000E") for s in page] == [_uid(s, "0020000E") for s in everything[1:3]]
    sop = next(iter(files))
    one = client.search_for_instances(search_filters={"SOPInstanceUID": sop})
    assert [_uid(i, "00080018") for i in one] == [sop]
    assert client.search_for_instances(search_filters={"SOPInstanceUID": "1.2.3.4"}) == []


# -- frames --------------------------------------------------------------------------------------
def _where(files, sop):
    ds = pydicom.dcmread(files[sop], stop_before_pixels=True)
    return ds.StudyInstanceUID, ds.SeriesInstanceUID, sop


def test_frames_as_stored_are_the_encoded_frames_byte_for_byte(client, files):
    for sop, path in files.items():
        with dicomframes.open(path) as reader:
            numbers = sorted({1, len(reader)})
            got = client.retrieve_instance_frames(*_where(files, sop), frame_numbers=numbers,
                                                  media_types=(("application/octet-stream", "*"),))
            assert got == [reader.encoded_frame(n - 1) for n in numbers], path


def test_frames_decoded_are_the_reader_frames(client, files):
    for sop, path in files.items():
        with dicomframes.open(path) as reader:
            numbers = list(range(1, len(reader) + 1))[:3]
            got = client.retrieve_instance_frames(*_where(files, sop), frame_numbers=numbers,
                                                  media_types=(("application/octet-stream", EXPLICIT),))
            for n, data in zip(numbers, got):
                frame = reader.frame(n - 1)
                assert data == frame.astype(frame.dtype.newbyteorder("<")).tobytes(), (path, n)
            if reader.header.transfer_syntax.uid != "1.2.840.10008.1.2.4.50":  # lossless: pydicom's pixels too
                np.testing.assert_array_equal(
                    np.frombuffer(got[0], reader.format.dtype.newbyteorder("<")).reshape(reader.format.shape),
                    pydicom.dcmread(path).pixel_array[0],
                )


def test_frames_in_their_own_image_media_type(client, files):
    sop = next(s for s, p in files.items() if p.endswith("jpeg.dcm"))
    with dicomframes.open(files[sop]) as reader:
        got = client.retrieve_instance_frames(*_where(files, sop), frame_numbers=[2, 7],
                                              media_types=(("image/jpeg", "1.2.840.10008.1.2.4.50"),))
        assert got == [reader.encoded_frame(1), reader.encoded_frame(6)]


def test_unacceptable_media_types_are_406_naming_what_is_available(served, files):
    study, series, sop = _where(files, next(s for s, p in files.items() if p.endswith("jpeg.dcm")))
    url = f"{served.url}/dicomweb/studies/{study}/series/{series}/instances/{sop}/frames/1"
    answer = requests.get(url, headers={"Accept": 'multipart/related; type="image/jp2"'})
    assert answer.status_code == 406
    assert "image/jpeg" in answer.text and "transfer-syntax=*" in answer.text


def test_frames_carry_etags_and_conditional_requests_are_304(served, files):
    study, series, sop = _where(files, next(iter(files)))
    url = f"{served.url}/dicomweb/studies/{study}/series/{series}/instances/{sop}/frames/1"
    first = requests.get(url)
    assert first.status_code == 200 and "immutable" in first.headers["Cache-Control"]
    assert first.headers["ETag"].startswith("W/")  # the multipart boundary differs between answers
    again = requests.get(url, headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and again.content == b""
    other = requests.get(url, headers={"If-None-Match": '"something else"'})
    assert other.status_code == 200 and other.content


@pytest.mark.parametrize("tail,status", [
    ("frames/0", 400), ("frames/1,x", 400), ("frames/", 404), ("frames/1,,2", 400), ("frames/-1", 400),
    ("frames/100000", 404), ("frames/" + ",".join(["1"] * 600), 400),
])
def test_bad_frame_lists(served, files, tail, status):
    study, series, sop = _where(files, next(iter(files)))
    answer = requests.get(f"{served.url}/dicomweb/studies/{study}/series/{series}/instances/{sop}/{tail}")
    assert answer.status_code == status, answer.text
    assert "Traceback" not in answer.text


def test_unknown_uids_and_paths_are_404(served, files):
    study, series, sop = _where(files, next(iter(files)))
    base = f"{served.url}/dicomweb"
    for url in (f"{base}/studies/1.2.3/series", f"{base}/studies/{study}/series/1.2.3/instances",
                f"{base}/studies/{study}/series/{series}/instances/1.2.3/frames/1",
                f"{base}/studies/1.2.3/series/{series}/instances/{sop}/metadata",  # a UID of another study
                f"{base}/studies/{study}/series/{series}/instances/..%2F..%2Fnotes.dcm/frames/1",
                f"{base}/studies/../series/{series}/instances/{sop}/frames/1",
                f"{base}/../../etc/passwd"):
        answer = requests.get(url)
        assert answer.status_code == 404, url
    assert requests.get(f"{base}/studies", params={"limit": "many"}).status_code == 400
    odd = requests.get(f"{base}/studies", params={"PatientName\r\nX-Injected: 1": "x", "Colour": "red"})
    assert odd.status_code == 200 and "x-injected" not in odd.headers
    assert "Colour" in odd.headers["Warning"] and "\n" not in odd.headers["Warning"]


# -- metadata and instances ------------------------------------------------------------------------
def test_instance_metadata_is_the_header_as_dicom_json(client, files):
    for sop, path in files.items():
        meta = client.retrieve_instance_metadata(*_where(files, sop))
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        expected = ds.to_json_dict(bulk_data_threshold=1 << 62)
        for tag, value in expected.items():
            assert meta[tag] == value, (path, tag)
        assert meta["00083002"]["Value"] == [ds.file_meta.TransferSyntaxUID]
        assert meta["7FE00010"]["BulkDataURI"].endswith(f"/instances/{sop}")
        assert "InlineBinary" not in meta["7FE00010"]


def test_the_pixel_data_bulk_data_uri_gives_every_frame(client, files):
    for sop, path in files.items():
        uri = client.retrieve_instance_metadata(*_where(files, sop))["7FE00010"]["BulkDataURI"]
        with dicomframes.open(path) as reader:
            decoded = client.retrieve_bulkdata(uri, media_types=(("application/octet-stream", EXPLICIT),))
            assert len(decoded) == len(reader), path
            for i, part in enumerate(decoded):
                frame = reader.frame(i)
                assert part == frame.astype(frame.dtype.newbyteorder("<")).tobytes(), (path, i)
            stored = client.retrieve_bulkdata(uri, media_types=(("application/octet-stream", "*"),))
            assert stored == [reader.encoded_frame(i) for i in range(len(reader))], path


def test_series_metadata_lists_its_instances(client, files):
    sop = next(iter(files))
    study, series, _ = _where(files, sop)
    metas = client.retrieve_series_metadata(study, series)
    members = [s for s in files if _where(files, s)[:2] == (study, series)]
    assert sorted(_uid(m, "00080018") for m in metas) == sorted(members)


def test_whole_instances_are_the_files(client, files):
    for sop, path in files.items():
        ds = client.retrieve_instance(*_where(files, sop))
        original = pydicom.dcmread(path)
        assert ds.SOPInstanceUID == sop
        assert ds.PixelData == original.PixelData


def _instance_url(served, files, sop):
    study, series, _ = _where(files, sop)
    return f"{served.url}/dicomweb/studies/{study}/series/{series}/instances/{sop}"


def test_a_whole_instance_as_one_body_answers_byte_ranges(served, files):
    sop, path = next((s, p) for s, p in files.items() if p.endswith("jpeg.dcm"))
    data = open(path, "rb").read()
    url = _instance_url(served, files, sop)
    bare = {"Accept": "application/dicom"}
    whole = requests.get(url, headers=bare)
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["content-type"] == "application/dicom" and whole.headers["accept-ranges"] == "bytes"
    assert int(whole.headers["content-length"]) == len(data)
    for asked, (first, last) in {"bytes=100-199": (100, 200), "bytes=-50": (len(data) - 50, len(data)),
                                 f"bytes={len(data) - 10}-": (len(data) - 10, len(data)),
                                 f"bytes=0-{len(data) * 2}": (0, len(data))}.items():
        part = requests.get(url, headers={**bare, "Range": asked})
        assert part.status_code == 206, asked
        assert part.content == data[first:last], asked
        assert part.headers["content-range"] == f"bytes {first}-{last - 1}/{len(data)}"
    past = requests.get(url, headers={**bare, "Range": f"bytes={len(data)}-"})
    assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{len(data)}"
    # several ranges, malformed ones and a stale If-Range: the whole file (RFC 9110 lets a server ignore them)
    for extra in ({"Range": "bytes=0-1,5-9"}, {"Range": "bytes=9-1"}, {"Range": "lines=1-2"},
                  {"Range": "bytes=0-9", "If-Range": '"another"'}):
        again = requests.get(url, headers={**bare, **extra})
        assert again.status_code == 200 and again.content == data, extra
    fresh = requests.get(url, headers={**bare, "If-None-Match": whole.headers["etag"]})
    assert fresh.status_code == 304
    assert requests.head(url, headers=bare).headers["content-length"] == str(len(data))


def test_a_reader_opens_a_served_instance_by_its_url_and_reads_frames_by_range(served, files):
    sop, path = next((s, p) for s, p in files.items() if p.endswith("jpeg.dcm"))
    with dicomframes.open(path) as local, dicomframes.open(
            _instance_url(served, files, sop), headers={"Accept": "application/dicom"}) as remote:
        assert len(remote) == len(local)
        for i in range(len(local)):
            assert remote.encoded_frame(i) == local.encoded_frame(i)
            np.testing.assert_array_equal(remote.frame(i), local.frame(i))


def test_whole_instances_in_another_transfer_syntax_are_406(served, files):
    sop = next(s for s, p in files.items() if p.endswith("jpeg.dcm"))
    answer = requests.get(_instance_url(served, files, sop),
                          headers={"Accept": 'multipart/related; type="application/dicom"; '
                                             "transfer-syntax=1.2.840.10008.1.2.1"})
    assert answer.status_code == 406 and "1.2.840.10008.1.2.4.50" in answer.text
    multipart = requests.get(_instance_url(served, files, sop), headers={"Range": "bytes=0-9"})
    assert multipart.status_code == 200  # a range of a multipart body is not offered
    assert multipart.headers["content-type"].startswith('multipart/related; type="application/dicom"')
    assert int(multipart.headers["content-length"]) == len(multipart.content)


# -- the catalogue, the readers, safety -------------------------------------------------------------
def test_the_scan_counts_what_it_skipped(root, tmp_path):
    catalogue = Catalogue([str(root)])
    report = catalogue.scan()
    assert report.instances == len(TEST_FILES) + 2 and report.skipped == 1 and not report.failed
    assert report.duplicates == 0
    shutil.copy(get_testdata_file("SC_rgb_rle_2frame.dcm"), tmp_path / "a.dcm")
    shutil.copy(get_testdata_file("SC_rgb_expb_2frame.dcm"), tmp_path / "b.dcm")  # the same SOP Instance UID
    (tmp_path / "c.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\x04\x00")  # cut short
    report = Catalogue([str(tmp_path)]).scan()
    assert (report.instances, report.duplicates, report.skipped) == (1, 1, 0)
    assert list(report.failed) == [str(tmp_path / "c.dcm")]


def test_the_reader_pool_keeps_at_most_its_capacity_and_never_closes_a_reader_in_use(root):
    catalogue = Catalogue([str(root)])
    catalogue.scan()
    pool = ReaderPool(capacity=2)
    instances = catalogue.instances()
    with pool.reader(instances[0]) as held:
        for inst in instances[1:]:
            with pool.reader(inst) as reader:
                assert len(reader) >= 1
            assert len(pool) <= 2
        assert len(held.encoded_frame(0)) > 0  # evicted meanwhile, not closed: still in use
    assert held._closed  # closed by its last user
    assert len(pool) <= 2
    pool.close()


def test_a_token_is_required_when_set(root):
    running = Running(create_app(str(root), token="s3cret"))
    try:
        assert requests.get(f"{running.url}/dicomweb/studies").status_code == 401
        bad = requests.get(f"{running.url}/dicomweb/studies", headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401
        good = requests.get(f"{running.url}/dicomweb/studies", headers={"Authorization": "Bearer s3cret"})
        assert good.status_code == 200 and good.json()
        assert requests.get(f"{running.url}/health").json()["status"] == "ok"  # for load balancers
    finally:
        running.stop()


def test_a_browser_signs_in_once_by_a_link_and_a_cookie_stands_for_the_token(root):
    running = Running(create_app(str(root), token="s3cret"))
    try:
        browser = requests.Session()
        assert browser.get(f"{running.url}/?token=nope", allow_redirects=False).status_code == 401
        signed = browser.get(f"{running.url}/dicomweb/studies?limit=1&token=s3cret", allow_redirects=False)
        assert signed.status_code == 303 and signed.headers["location"] == "/dicomweb/studies?limit=1"
        cookie = signed.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "s3cret" not in cookie
        assert len(browser.get(f"{running.url}/dicomweb/studies?limit=1").json()) == 1
        assert browser.get(f"{running.url}/").status_code == 200
        # the cookie reads, it does not change anything: the admin endpoint needs the header
        assert browser.post(f"{running.url}/admin/rescan").status_code == 401
        assert browser.post(f"{running.url}/admin/rescan", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        forged = requests.get(f"{running.url}/", cookies={"dicomframes_token": "s3cret"})
        assert forged.status_code == 401
    finally:
        running.stop()


def test_urls_in_answers_start_with_the_public_url_where_given(root):
    running = Running(create_app(str(root), public_url="https://slides.example.org/"))
    try:
        rows = requests.get(f"{running.url}/dicomweb/instances").json()
        assert rows and all(r["00081190"]["Value"][0].startswith("https://slides.example.org/dicomweb/studies/")
                            for r in rows)
    finally:
        running.stop()
    running = Running(create_app(str(root)))
    try:
        # without it, a Host header that leaves the port out (as dicomweb-client sends) names this port
        rows = requests.get(f"{running.url}/dicomweb/instances", headers={"Host": "127.0.0.1"}).json()
        assert all(r["00081190"]["Value"][0].startswith(running.url + "/dicomweb/") for r in rows)
        rows = requests.get(f"{running.url}/dicomweb/instances", headers={"Host": "viewer.example"}).json()
        assert all(r["00081190"]["Value"][0].startswith("http://viewer.example/dicomweb/") for r in rows)
    finally:
        running.stop()


def test_cors_origins_are_allowed_when_configured(root):
    running = Running(create_app(str(root), cors_origins=["http://viewer.example"]))
    try:
        answer = requests.get(f"{running.url}/dicomweb/studies", headers={"Origin": "http://viewer.example"})
        assert answer.headers["access-control-allow-origin"] == "http://viewer.example"
        other = requests.get(f"{running.url}/dicomweb/studies", headers={"Origin": "http://elsewhere.example"})
        assert "access-control-allow-origin" not in other.headers
    finally:
        running.stop()
    # behind a token, a viewer elsewhere sends the header; its browser's preflight carries none
    running = Running(create_app(str(root), cors_origins=["http://viewer.example"], token="s3cret"))
    try:
        preflight = requests.options(f"{running.url}/dicomweb/studies", headers={
            "Origin": "http://viewer.example", "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization, range"})
        assert preflight.status_code == 200, preflight.text
        assert preflight.headers["access-control-allow-origin"] == "http://viewer.example"
        assert "range" in preflight.headers["access-control-allow-headers"].lower()
        assert requests.get(f"{running.url}/dicomweb/studies", headers={"Origin": "http://viewer.example"}
                            ).status_code == 401
    finally:
        running.stop()


@pytest.mark.parametrize("accept,expected", [
    (None, ("application/octet-stream", EXPLICIT, False)),
    ("*/*", ("application/octet-stream", EXPLICIT, False)),
    ('multipart/related; type="application/octet-stream"; transfer-syntax=*',
     ("application/octet-stream", "1.2.840.10008.1.2.4.50", True)),
    ('multipart/related; type="image/jpeg"', ("image/jpeg", "1.2.840.10008.1.2.4.50", True)),
    ('multipart/related; type="image/jp2", multipart/related; type="image/jpeg"; q=0.5',
     ("image/jpeg", "1.2.840.10008.1.2.4.50", True)),
    ('multipart/related; type="image/jpeg"; q=0.1, multipart/related; type="application/octet-stream"',
     ("application/octet-stream", EXPLICIT, False)),
    ('multipart/related; type="image/jp2"', None),
    ("image/jpeg", None),
])
def test_frame_media_negotiation(accept, expected):
    got = frame_media(accept, "1.2.840.10008.1.2.4.50")
    assert (None if got is None else (got.part_type, got.transfer_syntax, got.as_stored)) == expected


def test_native_frames_as_stored_need_no_decoding():
    got = frame_media('multipart/related; type="application/octet-stream"', EXPLICIT)
    assert got is not None and got.as_stored
    big = frame_media('multipart/related; type="application/octet-stream"', "1.2.840.10008.1.2.2")
    assert big is not None and not big.as_stored  # big endian: swapped by decoding


def test_accept_parsing_keeps_quoted_commas_and_drops_q0():
    ranges = parse_accept('multipart/related; type="a/b,c"; q=0.9, text/plain; q=0, image/png')
    assert [(r.type, r.params) for r in ranges] == [("image/png", {}), ("multipart/related", {"type": "a/b,c"})]


# -- the command line ------------------------------------------------------------------------------
def test_the_serve_command_serves_until_interrupted(root):
    serving = Serving(str(root))
    try:
        lines = "".join(serving.lines)
        assert "instances (1 files not DICOM, 0 failed)" in lines, lines
        health = requests.get(f"{serving.url}/health").json()
        assert health["instances"] == len(TEST_FILES) + 2
        assert requests.get(f"{serving.url}/dicomweb/studies").status_code == 200
    finally:
        returncode = serving.stop()
    assert returncode in (0, 130)


def test_the_serve_command_prints_a_sign_in_link_and_keeps_the_token_out_of_its_log(root):
    serving = Serving(str(root), "--token", "s3cret")
    try:
        assert "/?token=s3cret" in "".join(serving.lines)  # the operator's link, printed once
        printed = len(serving.lines)
        signed = requests.get(f"{serving.url}/?token=s3cret", allow_redirects=False)
        assert signed.status_code == 303
        deadline = time.monotonic() + 10
        while not any("303" in line for line in serving.lines[printed:]) and time.monotonic() < deadline:
            time.sleep(0.05)
        logged = "".join(serving.lines[printed:])
        assert "GET /?token=*** " in logged and "s3cret" not in logged, logged
    finally:
        serving.stop()


def test_json_access_lines_say_what_each_request_got(root):
    serving = Serving(str(root), "--access-log", "json", "--token", "s3cret")
    try:
        printed = len(serving.lines)
        auth = {"Authorization": "Bearer s3cret"}
        studies = requests.get(f"{serving.url}/dicomweb/studies?limit=1", headers=auth)
        assert requests.get(f"{serving.url}/dicomweb/studies/1.2.3/series", headers=auth).status_code == 404
        assert requests.get(f"{serving.url}/?token=s3cret", allow_redirects=False).status_code == 303
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            rows = [json.loads(line) for line in serving.lines[printed:] if line.startswith("{")]
            rows = [r for r in rows if r["path"] != "/ready"]  # the helper's own readiness polls
            if len(rows) >= 3:
                break
            time.sleep(0.05)
        assert [(r["method"], r["path"], r["status"]) for r in rows] == [
            ("GET", "/dicomweb/studies", 200), ("GET", "/dicomweb/studies/1.2.3/series", 404), ("GET", "/", 303)]
        assert rows[0]["query"] == "limit=1" and rows[0]["bytes"] == len(studies.content)
        assert rows[2]["query"] == "token=***" and rows[0]["client"] == "127.0.0.1" and rows[0]["ms"] >= 0
        assert not any("s3cret" in line for line in serving.lines[printed:])
        assert not any('"GET /dicomweb' in line for line in serving.lines[printed:])  # uvicorn's lines are off
    finally:
        serving.stop()


# -- DeepZoom and rendered frames -------------------------------------------------------------------
WIDTH, HEIGHT, TILE = 1000, 700, 128


@pytest.fixture(scope="module")
def pyramids(tmp_path_factory):
    """Two whole-slide series: JPEG baseline tiles, and lossless JPEG 2000 ones."""
    root = tmp_path_factory.mktemp("pyramids")
    jpeg = write_pyramid(root / "jpeg", width=WIDTH, height=HEIGHT, levels=3, codec="jpeg", tile_size=(TILE, TILE))
    j2k = write_pyramid(root / "j2k", width=WIDTH, height=HEIGHT, levels=3, codec="j2k", tile_size=(TILE, TILE),
                        label=False, overview=False, seed=4)
    return root, jpeg, j2k


@pytest.fixture(scope="module")
def tiles_jpeg(pyramids):
    running = Running(create_app(str(pyramids[0] / "jpeg")))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def tiles_png(pyramids):
    running = Running(create_app(str(pyramids[0] / "j2k"), tile_format="png"))
    yield running
    running.stop()


def _picture(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_the_dzi_descriptor_describes_level_0(tiles_jpeg, pyramids):
    series = pyramids[1].uids.series
    answer = requests.get(f"{tiles_jpeg.url}/deepzoom/{series}.dzi")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/xml")
    assert f'TileSize="{TILE}"' in answer.text and 'Overlap="0"' in answer.text and 'Format="jpeg"' in answer.text
    assert f'Width="{WIDTH}" Height="{HEIGHT}"' in answer.text


def test_a_tile_that_is_a_stored_tile_is_sent_as_stored(tiles_jpeg, pyramids):
    series = pyramids[1].uids.series
    with open_slide(str(pyramids[0] / "jpeg")) as slide:
        # DeepZoom level 10 is full size (1000 < 2**10); level 8 (250 x 175) has one whole tile
        for level, stored, cell in ((10, 0, 1), (9, 1, 1), (8, 2, 0)):
            reader = slide.levels[stored].readers[0]
            frame = reader.tile_geometry.frame_at(cell, cell)
            answer = requests.get(f"{tiles_jpeg.url}/deepzoom/{series}_files/{level}/{cell}_{cell}.jpeg")
            assert answer.status_code == 200 and answer.headers["content-type"] == "image/jpeg"
            assert answer.content == reader.encoded_frame(frame), level


def test_tiles_cut_by_the_edge_are_made_to_size(tiles_jpeg, pyramids):
    series = pyramids[1].uids.series
    answer = requests.get(f"{tiles_jpeg.url}/deepzoom/{series}_files/10/7_5.jpeg")
    assert answer.status_code == 200
    assert _picture(answer.content).shape == (HEIGHT - 5 * TILE, WIDTH - 7 * TILE, 3)
    answer = requests.get(f"{tiles_jpeg.url}/deepzoom/{series}_files/0/0_0.jpeg")
    assert _picture(answer.content).shape[:2] == (1, 1)


def test_made_tiles_equal_the_slide_resampled(tiles_png, pyramids):
    series = pyramids[2].uids.series
    with open_slide(str(pyramids[0] / "j2k")) as slide:
        levels = {lv.downsample: lv for lv in slide.levels}
        for level, col, row in ((10, 2, 3), (10, 7, 5), (9, 1, 2), (8, 0, 1), (7, 0, 0), (6, 0, 0)):
            scale = 2 ** (10 - level)
            answer = requests.get(f"{tiles_png.url}/deepzoom/{series}_files/{level}/{col}_{row}.png")
            assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
            got = _picture(answer.content)
            dw, dh = -(-WIDTH // scale), -(-HEIGHT // scale)
            w, h = min(TILE, dw - col * TILE), min(TILE, dh - row * TILE)
            if scale in levels:  # a stored level of this scale: its pixels
                expected = levels[scale].read_region((col * TILE, row * TILE), (w, h))
            else:  # the next finer stored level, area-averaged
                finer = max(d for d in levels if d < scale)
                f = int(scale // finer)
                lv = levels[finer]
                x0, y0 = col * TILE * f, row * TILE * f
                region = lv.read_region((x0, y0), (min(w * f, lv.width - x0), min(h * f, lv.height - y0)))
                expected = resize_area(region, w, h)
            np.testing.assert_array_equal(got, expected, err_msg=f"level {level} tile {col},{row}")


@pytest.mark.parametrize("tail", ["11/0_0.png", "10/8_0.png", "10/0_6.png", "10/0_0.jpeg", "x/0_0.png", "10/0_0"])
def test_bad_deepzoom_requests_are_404(tiles_png, pyramids, tail):
    series = pyramids[2].uids.series
    assert requests.get(f"{tiles_png.url}/deepzoom/{series}_files/{tail}").status_code == 404
    assert requests.get(f"{tiles_png.url}/deepzoom/1.2.3.dzi").status_code == 404


def test_a_series_that_is_not_a_slide_has_no_deepzoom(served, files):
    _, series, _ = _where(files, next(s for s, p in files.items() if p.endswith("jpeg.dcm")))
    answer = requests.get(f"{served.url}/deepzoom/{series}.dzi")
    assert answer.status_code == 404 and "not a whole-slide image" in answer.text


def test_made_tiles_are_cached(tiles_png, pyramids):
    series = pyramids[2].uids.series
    url = f"{tiles_png.url}/deepzoom/{series}_files/7/0_0.png"
    first = requests.get(url).content
    before = requests.get(f"{tiles_png.url}/health").json()["cache"]
    assert requests.get(url).content == first
    after = requests.get(f"{tiles_png.url}/health").json()["cache"]
    assert after["hits"] == before["hits"] + 1 and after["bytes"] <= after["max_bytes"]


def test_a_busy_server_answers_503_with_retry_after(pyramids):
    app = create_app(str(pyramids[0] / "j2k"), tile_format="png", max_decodes=1, queue_seconds=0.05)
    running = Running(app)
    series = pyramids[2].uids.series
    try:
        server = app.state.server
        assert server.decodes.acquire(timeout=1)  # as a long decode would hold it
        try:
            answer = requests.get(f"{running.url}/deepzoom/{series}_files/9/0_0.png")
            assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"
        finally:
            server.decodes.release()
        assert requests.get(f"{running.url}/deepzoom/{series}_files/9/0_0.png").status_code == 200
    finally:
        running.stop()


def test_rendered_frames(served, files):
    for sop, path in files.items():
        study, series, _ = _where(files, sop)
        base = f"{served.url}/dicomweb/studies/{study}/series/{series}/instances/{sop}"
        with dicomframes.open(path) as reader:
            frame = reader.frame(1)
            answer = requests.get(f"{base}/frames/2/rendered", headers={"Accept": "image/png"})
            assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
            got = _picture(answer.content)
            assert got.dtype == np.uint8 and got.shape[:2] == frame.shape[:2]
            if frame.dtype == np.uint8:
                np.testing.assert_array_equal(got, frame)
            else:  # windowed into 8 bits: the order of values is kept
                assert got.min() == 0 and got.max() == 255
            jpeg = requests.get(f"{base}/rendered")
            assert jpeg.headers["content-type"] == "image/jpeg" and _picture(jpeg.content).shape[:2] == frame.shape[:2]
        assert requests.get(f"{base}/frames/1/rendered", headers={"Accept": "text/html"}).status_code == 406
        assert requests.get(f"{base}/frames/1,2/rendered").status_code == 400


def test_wsidicoms_web_client_reads_the_slide_as_it_reads_the_files(tiles_jpeg, pyramids):
    from wsidicom import WsiDicom
    from wsidicom.web import WsiDicomWebClient

    uids = pyramids[1].uids
    client = WsiDicomWebClient(DICOMwebClient(url=f"{tiles_jpeg.url}/dicomweb"))
    with WsiDicom.open_web(client, uids.study, uids.series) as web, \
            WsiDicom.open(str(pyramids[0] / "jpeg")) as local:
        assert len(web.levels) == len(local.levels) == 3
        for level, location, size in ((0, (100, 50), (300, 200)), (1, (0, 0), (500, 350)), (2, (240, 160), (10, 15))):
            np.testing.assert_array_equal(np.asarray(web.read_region(location, level, size)),
                                          np.asarray(local.read_region(location, level, size)), err_msg=str(level))
        # (Not the label: its frame is native, and wsidicom 0.31 hands the bytearray dicomweb-client
        # gives it to pydicom, which takes it for a list of values: the same with any DICOMweb server.)
