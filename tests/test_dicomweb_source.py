"""DICOMweb services as sources, against two real servers on 127.0.0.1: Orthanc
(Debian's ``orthanc`` with ``orthanc-dicomweb``; .ci/run installs it, without
it these cases skip, except under CI) and ``dicomframes serve``'s app.

Frames equal the files' frames read locally (byte for byte as stored, and
decoded), slides' regions equal, and the servers' own logs show batching.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

import dicomframes
from dicomframes.errors import StorageError
from dicomframes.samples import write_sample
from dicomframes.server import create_app
from dicomframes.wsi.slide import open_slide
from tests.helpers import orthanc
from tests.helpers.servers import Proxy, free_port
from tests.helpers.serving import Running
from tests.helpers.wsigen import write_pyramid

TEST_FILES = ["color3d_jpeg_baseline.dcm", "emri_small_jpeg_2k_lossless.dcm", "SC_rgb_rle_2frame.dcm",
              "SC_rgb_expb_2frame.dcm", "MR_small.dcm"]
JPEG_FRAMES = 120  # color3d_jpeg_baseline.dcm


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    folder = tmp_path_factory.mktemp("web")
    for name in TEST_FILES:
        shutil.copy(get_testdata_file(name), folder / name)
    ds = pydicom.dcmread(folder / "SC_rgb_rle_2frame.dcm")  # the same image as the big endian one: another UID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(folder / "SC_rgb_rle_2frame.dcm")
    write_sample(str(folder / "jpegls.dcm"), frames=9, rows=32, columns=32, syntax="jpegls")
    write_sample(str(folder / "native.dcm"), frames=12, rows=32, columns=40, samples_per_pixel=3, syntax="native")
    write_pyramid(folder / "slide", width=600, height=400, levels=2, codec="jpeg", tile_size=(128, 128),
                  label=False, overview=False)
    seg = pydicom.dcmread(get_testdata_file("liver.dcm"))  # a binary segmentation, one bit a pixel
    bits = np.random.default_rng(0).integers(0, 2, (3, 5, 7), dtype=np.uint8)
    seg.Rows, seg.Columns, seg.NumberOfFrames = 5, 7, 3
    seg.SOPInstanceUID = seg.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    seg.PixelData = pydicom.pixels.pack_bits(bits)
    seg.save_as(folder / "seg.dcm")
    shutil.copy(get_testdata_file("liver.dcm"), folder / "liver.dcm")  # 512x512: each frame starts on a byte
    write_pyramid(folder / "sparse", width=500, height=300, levels=2, codec="jpeg", tile_size=(128, 128),
                  label=False, overview=False, organizations="TILED_SPARSE", seed=1)
    return folder


def _files(root) -> dict[str, str]:
    """SOP Instance UID -> path of every file under `root`."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            out[pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID] = path
    return out


class _Ours:
    """`dicomframes serve`'s app, its requests counted from its own JSON access log."""

    name = "dicomframes"

    def __init__(self, root) -> None:
        self.lines: list[dict] = []
        handler = logging.Handler()
        handler.emit = lambda record: self.lines.append(json.loads(record.getMessage()))  # type: ignore[method-assign]
        self.handler = handler
        logging.getLogger("dicomframes.access").addHandler(handler)
        self.running = Running(create_app(str(root), access_log="json"))
        self.dicomweb = self.running.url + "/dicomweb"

    def requests(self) -> list[str]:
        return [line["path"] for line in self.lines]

    def stop(self) -> None:
        self.running.stop()
        logging.getLogger("dicomframes.access").removeHandler(self.handler)


class _Orthanc:
    name = "orthanc"

    def __init__(self, root) -> None:
        self.server = orthanc.Orthanc()
        for path in _files(root).values():
            self.server.upload(path)
        self.dicomweb = self.server.dicomweb

    def requests(self) -> list[str]:
        return self.server.requests()

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture(scope="module", params=["dicomframes", "orthanc"])
def service(request, root):
    if request.param == "orthanc" and not orthanc.available():
        if os.environ.get("CI"):
            pytest.fail("Orthanc is missing: .ci/run installs orthanc and orthanc-dicomweb")
        pytest.skip("Orthanc is missing (apt-get install orthanc orthanc-dicomweb)")
    server = _Ours(root) if request.param == "dicomframes" else _Orthanc(root)
    yield server
    server.stop()


def _uids(path: str) -> tuple[str, str, str]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID


def _frames(service, path: str):
    """(the reader over DICOMweb, the reader of the file)."""
    web = dicomframes.dicomweb(service.dicomweb)
    return web, web.open(*_uids(path)), dicomframes.open(path)


def test_every_frame_equals_the_files_frame(service, root):
    files = _files(root)
    assert len(files) == len(TEST_FILES) + 2 + 4 + 2
    for path in files.values():
        if service.name == "orthanc" and path.endswith("seg.dcm"):
            continue  # Orthanc cannot cut it into frames (see the next test)
        web, remote, local = _frames(service, path)
        with remote, local:
            assert len(remote) == len(local), path
            assert remote.info.shape == local.info.shape and remote.info.dtype == local.info.dtype
            np.testing.assert_array_equal(np.asarray(remote), np.asarray(local), err_msg=path)
            if local.header.transfer_syntax.encapsulated:  # asked for as stored: the same bytes
                assert remote.header.transfer_syntax.uid == local.header.transfer_syntax.uid
                for i in range(min(len(local), 5)):
                    assert remote.encoded_frame(i) == local.encoded_frame(i), (path, i)


def test_consecutive_frames_come_in_few_requests(service, root):
    path = os.path.join(root, "color3d_jpeg_baseline.dcm")
    web, remote, local = _frames(service, path)
    with remote, local:
        before = len([p for p in service.requests() if "/frames/" in p])
        opened = remote.stats["requests"]  # the metadata (and, for Orthanc, frame 1 for its syntax)
        assert opened == (1 if service.name == "dicomframes" else 2)
        for got, want in zip(remote.iter_frames(), local.iter_frames()):
            np.testing.assert_array_equal(got, want)
        asked = [p for p in service.requests() if "/frames/" in p][before:]
        stats = remote.stats
        assert stats["bytes"] > sum(len(local.encoded_frame(i)) for i in range(JPEG_FRAMES))
    assert 1 <= len(asked) <= JPEG_FRAMES // 8, asked  # 120 frames in at most 15 requests
    assert stats["requests"] - opened == len(asked) and stats["retries"] == 0  # the reader's own count
    numbers = [n for p in asked for n in p.rsplit("/frames/", 1)[1].split(",")]
    assert sorted(map(int, numbers)) == list(range(1, JPEG_FRAMES + 1))  # each frame asked for once


@pytest.mark.parametrize("name", ["slide", "sparse"])  # TILED_FULL, and TILED_SPARSE (per-frame positions)
def test_a_slide_reads_regions_as_the_files_do(service, root, name):
    web = dicomframes.dicomweb(service.dicomweb)
    levels = sorted(str(p) for p in (root / name).rglob("*.dcm"))
    study, series, _ = _uids(levels[0])
    before = len(service.requests())
    with web.open_slide(study, series) as remote, open_slide(str(root / name)) as local:
        metadata_requests = [p for p in service.requests()[before:] if p.endswith("/metadata")]
        assert len(metadata_requests) == 1  # the whole series' metadata at once
        assert remote.level_dimensions == local.level_dimensions
        for level, (location, size) in [(0, ((0, 0), (500, 300))), (0, ((100, 70), (300, 200))),
                                        (1, ((40, 30), (150, 100)))]:
            np.testing.assert_array_equal(remote.read_region(location, level, size),
                                          local.read_region(location, level, size))


def test_searches_return_plain_python(service, root):
    web = dicomframes.dicomweb(service.dicomweb)
    slide_series = {_uids(p)[1] for p in map(str, root.rglob("*.dcm")) if "slide" in p or "sparse" in p}
    found = web.search_series(modality="SM")
    assert {row["SeriesInstanceUID"] for row in found} == slide_series
    assert all(row["Modality"] == "SM" for row in found)
    instances = web.search_instances(limit=2)
    assert len(instances) == 2 and all(isinstance(row["SOPInstanceUID"], str) for row in instances)
    study = web.search_studies(study=_uids(str(root / "MR_small.dcm"))[0])
    assert len(study) == 1 and isinstance(study[0].get("PatientName", ""), str)


def test_the_header_reads_as_the_files(service, root):
    path = os.path.join(root, "MR_small.dcm")
    web, remote, local = _frames(service, path)
    with remote, local:
        ours, theirs = remote.dataset(), pydicom.dcmread(path, stop_before_pixels=True)
        for keyword in ("PatientName", "Rows", "Columns", "BitsStored", "PixelSpacing", "WindowCenter",
                        "RescaleSlope", "ImageOrientationPatient", "StudyDescription"):
            if keyword in theirs:
                assert ours[keyword].value == theirs[keyword].value, keyword
        assert remote.info.rows == local.info.rows and remote.info.sop_class_uid == local.info.sop_class_uid


@pytest.mark.parametrize("name", ["liver.dcm", "seg.dcm"])  # 512x512, and 5x7: frame 1 starts at bit 35
def test_frames_of_one_bit_a_pixel(service, root, name):
    path = os.path.join(root, name)
    expected = pydicom.dcmread(path).pixel_array
    web = dicomframes.dicomweb(service.dicomweb)
    if service.name == "orthanc" and name == "seg.dcm":
        # Orthanc 1.10 answers 400 "Bad file format" for any frame of it: said, not misread
        with pytest.raises(StorageError, match="HTTP 400.*Bad file format"):
            with web.open(*_uids(path)) as remote:
                remote[0]
        return
    with web.open(*_uids(path)) as remote, dicomframes.open(path) as local:
        assert len(remote) == 3 and remote.info.bits_allocated == 1
        for i in range(3):
            np.testing.assert_array_equal(remote[i], expected[i])
            np.testing.assert_array_equal(remote[i], local[i])


def test_a_reader_pickles_small_and_reads_where_it_is_unpickled(service, root):
    path = os.path.join(root, "emri_small_jpeg_2k_lossless.dcm")
    web, remote, local = _frames(service, path)
    with remote, local:
        data = pickle.dumps(remote)
        assert len(data) < 64 * 1024
        again = pickle.loads(data)
        with again:
            np.testing.assert_array_equal(again[3], local[3])


def test_a_dask_array_of_a_remote_instance(service, root):
    pytest.importorskip("dask")
    path = os.path.join(root, "color3d_jpeg_baseline.dcm")
    web, remote, local = _frames(service, path)
    with remote, local:
        array = dicomframes.to_dask(remote, frames_per_chunk=32)
        np.testing.assert_array_equal(array[10:50].compute(scheduler="threads"), local[10:50])


# -- headers, failures --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def guarded(root):
    running = Running(create_app(str(root), token="s3cret"))
    yield running
    running.stop()


def test_headers_may_be_a_callable_called_for_each_request(guarded, root):
    calls = []

    def headers():
        calls.append(1)
        return {"Authorization": "Bearer s3cret"}

    web = dicomframes.dicomweb(guarded.url + "/dicomweb", headers=headers)
    with web.open(*_uids(os.path.join(root, "MR_small.dcm"))) as reader:
        reader[0]
    assert len(calls) == web.session.requests >= 2  # the metadata and the frame


def test_a_refused_token_is_an_error_quoting_the_server(guarded, root):
    web = dicomframes.dicomweb(guarded.url + "/dicomweb", headers={"Authorization": "Bearer nope"})
    with pytest.raises(StorageError, match="HTTP 401.*bearer token is needed") as info:
        web.open(*_uids(os.path.join(root, "MR_small.dcm")))
    assert "/metadata" in str(info.value)
    assert web.session.requests == 1  # a 401 is not retried


def test_unknown_uids_fail_at_once_with_the_servers_404(service):
    web = dicomframes.dicomweb(service.dicomweb)
    with pytest.raises(StorageError, match="HTTP 404"):
        web.open("1.2.3", "4.5.6", "7.8.9")
    assert web.session.requests == 1


def test_a_service_that_refuses_connections_fails_at_once():
    web = dicomframes.dicomweb(f"http://127.0.0.1:{free_port()}/dicom-web", timeout=30)
    with pytest.raises(StorageError, match="refused|Connection") as info:
        web.search_studies()
    assert web.session.requests == 1 and "127.0.0.1" in str(info.value)


@pytest.fixture()
def proxied(root):
    """A proxy that injects faults, in front of our server over `root`: the proxy."""
    running = Running(create_app(str(root)))
    proxy = Proxy(running.url).start()
    yield proxy
    proxy.stop()
    running.stop()


def test_busy_answers_and_dropped_connections_are_retried(proxied, root):
    path = os.path.join(root, "color3d_jpeg_baseline.dcm")
    web = dicomframes.dicomweb(proxied.url + "/dicomweb")
    with web.open(*_uids(path)) as remote, dicomframes.open(path) as local:
        proxied.inject("503", "drop", "reset")
        np.testing.assert_array_equal(np.asarray(remote), np.asarray(local))
        assert remote.stats["retries"] == 3
    statuses = [r.status for r in proxied.settled() if "/frames/" in r.path]
    # the busy answer, the body cut short (logged 200, half sent) and the reset (0), in flight with
    # other batches, in any order; each asked for again, and the frames came whole
    assert statuses.count(503) == 1 and statuses.count(0) == 1
    assert statuses.count(200) == len(statuses) - 2 >= 3


def test_a_service_that_will_not_choose_the_syntax_is_asked_by_the_syntaxs_media_type(proxied, root):
    proxied.fail_always("406-any-syntax")
    path = os.path.join(root, "emri_small_jpeg_2k_lossless.dcm")
    web = dicomframes.dicomweb(proxied.url + "/dicomweb")
    with web.open(*_uids(path)) as remote, dicomframes.open(path) as local:
        np.testing.assert_array_equal(np.asarray(remote), np.asarray(local))
        assert remote.encoded_frame(3) == local.encoded_frame(3)
    statuses = [r.status for r in proxied.settled() if "/frames/" in r.path]
    assert statuses.count(406) == 1 and statuses.count(200) == len(statuses) - 1 >= 1  # refused once


def test_a_service_that_fails_for_good_says_what_was_tried(proxied, root):
    web = dicomframes.dicomweb(proxied.url + "/dicomweb", timeout=5, tries=3)
    path = os.path.join(root, "MR_small.dcm")
    with web.open(*_uids(path)) as remote:
        proxied.fail_always("503")
        with pytest.raises(StorageError, match="after 3 tries.*HTTP 503.*injected 503") as info:
            remote[0]
        assert info.value.frame == 0


_dataset = None


def _init(dataset) -> None:
    global _dataset
    _dataset = dataset


def _get(k: int):
    return k, _dataset[k]


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_data_loaders_worker_processes_read_remote_frames(service, root, method):
    import multiprocessing

    path = os.path.join(root, "color3d_jpeg_baseline.dcm")
    web, remote, local = _frames(service, path)
    with remote, local:
        dataset = dicomframes.FrameDataset([remote])
        dataset[0]  # the parent has connections before the workers start
        with multiprocessing.get_context(method).Pool(2, initializer=_init, initargs=(dataset,)) as pool:
            got = dict(pool.map(_get, range(0, JPEG_FRAMES, 7)))
        for k, frame in got.items():
            np.testing.assert_array_equal(frame, local[k])


def test_the_command_line_reads_a_dicomweb_instance_by_its_url(guarded, root):
    import subprocess
    import sys

    path = os.path.join(root, "color3d_jpeg_baseline.dcm")
    study, series, sop = _uids(path)
    url = f"{guarded.url}/dicomweb/studies/{study}/series/{series}/instances/{sop}"
    auth = ["--header", "Authorization: Bearer s3cret"]
    info = subprocess.run([sys.executable, "-m", "dicomframes", "info", url, "--json", *auth],
                          capture_output=True, text=True, timeout=120)
    assert info.returncode == 0, info.stderr
    fields = json.loads(info.stdout)
    assert fields["number_of_frames"] == JPEG_FRAMES and fields["index_kind"] == "dicomweb"
    assert fields["transfer_syntax_uid"] == "1.2.840.10008.1.2.4.50" and fields["complete"] is None
    frames = subprocess.run([sys.executable, "-m", "dicomframes", "frames", url, "-q", *auth],
                            capture_output=True, text=True, timeout=120)
    assert frames.returncode == 0, frames.stderr
    assert f"{JPEG_FRAMES} frames" in frames.stdout + frames.stderr
    refused = subprocess.run([sys.executable, "-m", "dicomframes", "info", url], capture_output=True, text=True,
                             timeout=120)
    assert refused.returncode == 1 and "HTTP 401" in refused.stderr and "Traceback" not in refused.stderr
    bad = subprocess.run([sys.executable, "-m", "dicomframes", "info", url, "--header", "no colon"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--header" in bad.stderr


def test_the_command_line_exports_frames_of_a_dicomweb_instance(guarded, root, tmp_path):
    import subprocess
    import sys

    from PIL import Image

    path = os.path.join(root, "emri_small_jpeg_2k_lossless.dcm")
    study, series, sop = _uids(path)
    url = f"{guarded.url}/dicomweb/studies/{study}/series/{series}/instances/{sop}"
    done = subprocess.run([sys.executable, "-m", "dicomframes", "export", url, str(tmp_path / "f{frame}.png"),
                           "--frames", "2,5", "-q", "--header", "Authorization: Bearer s3cret"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with dicomframes.open(path) as local:
        for k in (2, 5):
            np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / f"f{k}.png")), local[k])
    region = subprocess.run([sys.executable, "-m", "dicomframes", "export", url, str(tmp_path / "r.png"),
                             "--region", "0,0,8,8"], capture_output=True, text=True, timeout=120)
    assert region.returncode == 2 and "open_slide" in region.stderr
