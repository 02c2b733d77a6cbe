"""Shared fixtures: sample files, and real servers on 127.0.0.1 (nginx, moto's S3).

The servers are real processes or threads listening on sockets (see
``tests/servers.py``): nginx for HTTP (Range honoured, requests counted from its
access log) and moto's `ThreadedMotoServer` for S3, reached through s3fs with a
counting proxy in front. Without nginx installed the HTTP tests are skipped,
except under CI (``CI`` set), where a missing nginx is a failure: ``.ci/run``
installs it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.servers import MotoS3Server, NginxServer, Proxy, find_nginx

# name -> write_sample arguments. Frames of ~12.6 KB (RLE) / ~2.4 KB x 2 fragments
# (JPEG-LS), files of a few MB: larger than the 256 KiB first read, several walk blocks.
REMOTE_SAMPLES: dict[str, dict] = {
    "bot.dcm": dict(frames=1000, rows=128, columns=128, syntax="rle", offset_table="bot"),
    "eot.dcm": dict(frames=1000, rows=128, columns=128, syntax="rle", offset_table="eot"),
    "walked.dcm": dict(frames=1000, rows=128, columns=128, syntax="rle", offset_table="none"),
    "walked_fragments.dcm": dict(frames=600, rows=128, columns=128, syntax="jpegls", offset_table="none", fragments_per_frame=2),
    "native.dcm": dict(frames=300, rows=64, columns=64, syntax="native"),
    # Frames of ~200 KB: the first frame lies beyond the first read.
    "bot_large_frames.dcm": dict(frames=20, rows=768, columns=768, syntax="rle", offset_table="bot"),
    "eot_large_frames.dcm": dict(frames=20, rows=768, columns=768, syntax="rle", offset_table="eot"),
}
S3_BUCKET = "dicomframes-test"


@pytest.fixture(autouse=True)
def _pydicom_config_restored():
    """pydicom's global settings as they were before each test: importing
    wsidicomizer turns on pydicom's future behaviour (validation errors instead
    of warnings), which would change what every later test compares with."""
    try:
        import pydicom.config as config
    except ImportError:  # pragma: no cover - pydicom is a test dependency
        yield
        return
    settings = config.settings
    before = (config._use_future, settings.reading_validation_mode, settings.writing_validation_mode)
    yield
    config._use_future, settings.reading_validation_mode, settings.writing_validation_mode = before


@pytest.fixture(autouse=True)
def _own_index_cache(tmp_path_factory, monkeypatch):
    """Each test starts with an empty frame index cache of its own (remote
    readers use one by default), never the user's."""
    monkeypatch.setenv("DICOMFRAMES_CACHE", str(tmp_path_factory.mktemp("index-cache")))


@pytest.fixture(scope="session")
def remote_dir(tmp_path_factory) -> Path:
    """A directory of sample files that the servers serve."""
    from dicomframes.samples import write_sample

    root = tmp_path_factory.mktemp("www")
    for name, kwargs in REMOTE_SAMPLES.items():
        write_sample(root / name, **kwargs)
    return root


@pytest.fixture(scope="session")
def nginx_binary() -> str:
    binary = find_nginx()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("nginx is not installed, and CI is set: .ci/run must install it (apt-get install nginx-light)")
        pytest.skip("nginx is not installed (apt-get install nginx-light); CI runs these tests")
    return binary


@pytest.fixture(scope="session")
def nginx(remote_dir, nginx_binary, tmp_path_factory):
    """nginx serving `remote_dir` on 127.0.0.1; ``nginx.records()`` parses its access log."""
    server = NginxServer(remote_dir, tmp_path_factory.mktemp("nginx"), nginx_binary).start()
    yield server
    server.stop()


@dataclass
class S3Fixture:
    server: MotoS3Server
    proxy: Proxy  # counts requests (moto keeps no access log)
    bucket: str

    def url(self, name: str) -> str:
        return f"s3://{self.bucket}/{name}"

    @property
    def options(self) -> dict:
        """Storage options for s3fs, through the counting proxy."""
        return self.server.storage_options(self.proxy.url)


@pytest.fixture(scope="session")
def s3(remote_dir):
    """moto's S3 server holding the sample files, behind a counting proxy."""
    server = MotoS3Server().start()
    proxy = Proxy(server.url).start()
    client = server.client()
    client.create_bucket(Bucket=S3_BUCKET)
    for name in REMOTE_SAMPLES:
        client.upload_file(str(remote_dir / name), S3_BUCKET, name)
    yield S3Fixture(server, proxy, S3_BUCKET)
    proxy.stop()
    server.stop()


@pytest.fixture
def faulty_http(nginx):
    """A fault-injecting proxy in front of nginx (fresh for each test)."""
    proxy = Proxy(nginx.url).start()
    proxy.stall_seconds = 20.0
    yield proxy
    proxy.stop()
