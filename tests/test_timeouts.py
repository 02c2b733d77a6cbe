"""Remote failures fail fast and say what was tried.

Against real sockets on 127.0.0.1: a port where nothing listens (refused), a
server that accepts connections and never answers (`SilentServer`), nginx and
moto behind a fault-injecting proxy; and a host under the reserved ``.invalid``
TLD, which the local resolver refuses without asking the network. The time
bounds are the failure latencies the library promises (refused and unresolvable
hosts: at once, without retrying; a hung server: after ``timeout=``), not
benchmarks.
"""

from __future__ import annotations

import logging
import pickle
import re
import socket
import time

import pytest

import dicomframes
from dicomframes import StorageError
from dicomframes.io.failures import is_transient
from dicomframes.io.remote import DEFAULT_TIMEOUT, FsspecSource
from dicomframes.io.storage_options import accepted_options
from tests.helpers.servers import SilentServer, free_port

KEYS = {"key": "testing", "secret": "testing", "skip_instance_cache": True}


def endpoint_options(endpoint: str) -> dict:
    """s3fs options for an S3 endpoint at `endpoint` (dummy credentials)."""
    return {**KEYS, "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}


def target(kind: str, endpoint: str) -> tuple[str, dict]:
    """(URL, storage options) of a file behind `endpoint` (``http://host:port``)."""
    if kind == "http":
        return f"{endpoint}/x.dcm", {}
    return "s3://bucket/x.dcm", endpoint_options(endpoint)


def failure(url: str, **options) -> tuple[StorageError, float]:
    """The error `dicomframes.open` raises, and the seconds it took to come."""
    started = time.monotonic()
    with pytest.raises(StorageError) as info:
        dicomframes.open(url, **options)
    return info.value, time.monotonic() - started


@pytest.fixture
def silent():
    with SilentServer() as server:
        yield server


# -- refused, unresolvable: at once, not retried --------------------------------------------------

@pytest.mark.parametrize("kind", ["http", "s3"])
def test_refused_connection_fails_at_once(kind, caplog):
    port = free_port()  # bound, then closed: nothing listens there
    url, options = target(kind, f"http://127.0.0.1:{port}")
    with caplog.at_level(logging.INFO, logger="dicomframes"):
        err, took = failure(url, **options)
    assert took < 5, took
    text = str(err)
    assert f"connection refused by 127.0.0.1:{port}" in text and "not retried" in text
    assert err.path == url and err.byte_range is not None
    assert "\n" not in text
    assert not [r for r in caplog.records if "retrying" in r.getMessage()]


@pytest.mark.parametrize("kind", ["http", "s3"])
def test_unresolvable_host_fails_at_once(kind, caplog):
    url, options = target(kind, "http://nohost.invalid")
    with caplog.at_level(logging.INFO, logger="dicomframes"):
        err, took = failure(url, **options)
    assert took < 5, took
    assert "cannot resolve the host name 'nohost.invalid'" in str(err) and "not retried" in str(err)
    assert not [r for r in caplog.records if "retrying" in r.getMessage()]


# -- a server that accepts and never answers: after timeout= ---------------------------------------

@pytest.mark.parametrize("kind", ["http", "s3"])
def test_hung_server_fails_after_the_timeout(kind, silent):
    url, options = target(kind, silent.url)
    err, took = failure(url, timeout=3, **options)
    assert 2.5 <= took <= 10, took
    text = str(err)
    match = re.search(rf"no answer from 127\.0\.0\.1:{silent.port} in ([\d.]+) s after (\d+) tr(y|ies)", text)
    assert match, text
    assert 2.5 <= float(match.group(1)) <= 10
    tries = int(match.group(2))
    assert tries >= 2  # it was retried within the budget
    assert "timeout=3 s" in text
    assert silent.accepted >= 1  # the connection was made: the server hung, it was not down


def test_request_timeout_is_per_attempt_within_the_timeout(silent, caplog):
    url = f"{silent.url}/x.dcm"
    with caplog.at_level(logging.INFO, logger="dicomframes"):
        err, took = failure(url, timeout=3, request_timeout=0.5, backoff=0.01)
    assert 2.5 <= took <= 10, took
    tries = int(re.search(r"after (\d+) tries", str(err)).group(1))
    assert tries == 5  # the default for HTTP: 0.5 s each, well within the 3 s
    retries = [r for r in caplog.records if r.getMessage().startswith("retrying")]
    assert len(retries) == tries - 1


def test_timeout_is_the_whole_budget_even_with_long_attempts(silent):
    err, took = failure(f"{silent.url}/x.dcm", timeout=2.5, request_timeout=60)
    assert 2 <= took <= 8, took
    assert "after 1 try " in str(err)


def test_default_timeout_is_30_seconds():
    assert DEFAULT_TIMEOUT == 30
    source = FsspecSource("http://127.0.0.1:1/x.dcm")
    assert source.timeout == 30
    # one attempt is a share of it (plus time for the bytes asked for)
    assert source._timeout(0) * source.tries == pytest.approx(30)


@pytest.mark.parametrize("value", [0, -1])
def test_timeout_must_be_positive(value):
    with pytest.raises(ValueError, match="timeout"):
        FsspecSource("http://127.0.0.1:1/x.dcm", timeout=value)


def test_timeout_travels_with_the_source():
    source = FsspecSource("http://127.0.0.1:1/x.dcm", timeout=7, request_timeout=2)
    for other in (pickle.loads(pickle.dumps(source)), source.reopen()):
        assert other.timeout == 7 and other.request_timeout == 2


# -- S3: botocore's own retries and timeouts ------------------------------------------------------

def test_s3_defaults_turn_botocore_retries_off_and_bound_its_timeouts():
    source = FsspecSource("s3://bucket/x.dcm", timeout=6, **endpoint_options("http://127.0.0.1:1"))
    config = source.fs.config_kwargs
    assert config["retries"] == {"total_max_attempts": 1}
    assert config["connect_timeout"] == config["read_timeout"] == 6 / source.tries
    assert "config_kwargs" not in source.storage_options  # what pickles is what the user gave


def test_s3_config_given_by_the_user_wins():
    given = {"retries": {"max_attempts": 3, "mode": "standard"}, "read_timeout": 7}
    source = FsspecSource("s3://bucket/x.dcm", config_kwargs=given, **endpoint_options("http://127.0.0.1:1"))
    config = source.fs.config_kwargs
    assert config["retries"] == {"max_attempts": 3, "mode": "standard"} and config["read_timeout"] == 7
    assert config["connect_timeout"] == DEFAULT_TIMEOUT / source.tries  # the one not given
    assert given == {"retries": {"max_attempts": 3, "mode": "standard"}, "read_timeout": 7}  # not changed


# -- retries are logged -------------------------------------------------------------------------

@pytest.mark.parametrize("fault", ["503", "drop"])
def test_each_retry_is_logged(faulty_http, remote_dir, caplog, fault):
    url = f"{faulty_http.url}/bot.dcm"
    with dicomframes.open(remote_dir / "bot.dcm") as local, dicomframes.open(url, backoff=0.01) as reader:
        span = local.index.span(500)
        faulty_http.inject(fault)
        with caplog.at_level(logging.INFO, logger="dicomframes"):
            assert reader.encoded_frame(500) == local.encoded_frame(500)
        assert reader.stats["retries"] == 1
    records = [r for r in caplog.records if r.getMessage().startswith("retrying")]
    assert len(records) == 1
    record = records[0]
    assert record.levelno == logging.INFO and record.name.startswith("dicomframes")
    message = record.getMessage()
    assert url in message
    assert f"bytes {span.offset}..{span.offset + span.length - 1}" in message
    assert "attempt 2 of 5" in message
    assert re.search(r"in \d+\.\d\d s: ", message)  # the delay, then the reason
    if fault == "503":
        assert "503" in message


# -- options and URLs checked before any I/O ------------------------------------------------------

@pytest.mark.parametrize(
    "kind, typo, meant",
    [("s3", "endpointurl", "endpoint_url"), ("s3", "anonymous", "anon"), ("http", "header", "headers"),
     ("http", "timout", "timeout"), ("s3", "client_kwarg", "client_kwargs")],
)
def test_mistyped_storage_option_is_refused_before_any_io(kind, typo, meant, silent):
    url, options = target(kind, silent.url)
    options[typo] = "x"
    err, took = failure(url, **options)
    assert took < 5
    text = str(err)
    assert repr(typo) in text and repr(meant) in text and "did you mean" in text
    time.sleep(0.1)
    assert silent.accepted == 0  # refused before connecting anywhere


def test_several_mistyped_options_are_each_named():
    with pytest.raises(StorageError, match="options") as info:
        FsspecSource("s3://bucket/x.dcm", endpointurl="http://127.0.0.1:1", secrett="s")
    assert "'endpointurl'" in str(info.value) and "'secrett'" in str(info.value)


def test_real_s3_options_are_accepted(s3):
    options = {
        "key": s3.server.key, "secret": s3.server.secret, "endpoint_url": s3.proxy.url,
        "client_kwargs": {"region_name": s3.server.region}, "config_kwargs": {"read_timeout": 20},
        "skip_instance_cache": True, "use_listings_cache": False, "anon": False,
    }
    with dicomframes.open(s3.url("bot.dcm"), **options) as reader:
        assert reader.frame(0) is not None
    FsspecSource("s3://bucket/x.dcm", anon=True, endpoint_url="http://127.0.0.1:1", profile=None)


def test_real_http_options_are_accepted(nginx):
    with dicomframes.open(
        f"{nginx.url}/bot.dcm", client_kwargs={"trust_env": False}, headers={"X-Test": "1"},
        skip_instance_cache=True,
    ) as reader:
        assert reader.frame(0) is not None


def test_filesystems_passing_options_on_to_unknown_places_accept_anything():
    import fsspec

    assert accepted_options(fsspec.get_filesystem_class("ftp")) is None
    assert {"anon", "key", "secret", "client_kwargs", "endpoint_url", "config_kwargs", "profile"} <= accepted_options(
        fsspec.get_filesystem_class("s3")
    )
    assert {"client_kwargs", "headers", "auth", "ssl", "proxy"} <= accepted_options(fsspec.get_filesystem_class("http"))


@pytest.mark.parametrize("url, says", [
    ("s3://", "no bucket in the URL"), ("s3://bucket", "no object key in the URL"),
    ("s3://bucket/", "no object key in the URL"), ("gs://bucket", "no object key in the URL"),
])
def test_object_store_url_without_a_key_is_one_line(url, says):
    err, took = failure(url, **endpoint_options("http://127.0.0.1:1"))
    text = str(err)
    assert says in text and "\n" not in text and len(text) < 200, text
    assert "regex" not in text.lower()
    assert took < 5


# -- the classification behind it -----------------------------------------------------------------

def test_refused_and_unresolvable_are_permanent_resets_are_not():
    from botocore.exceptions import EndpointConnectionError

    assert not is_transient(ConnectionRefusedError(111, "refused"))
    assert not is_transient(socket.gaierror(-2, "Name or service not known"))
    assert is_transient(ConnectionResetError(104, "reset"))

    def wrapped(cause: BaseException) -> BaseException:
        err = EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
        err.__cause__ = cause
        return err

    assert not is_transient(wrapped(ConnectionRefusedError(111, "refused")))
    assert not is_transient(wrapped(socket.gaierror(-2, "unknown")))
    assert is_transient(wrapped(ConnectionResetError(104, "reset")))
    assert is_transient(wrapped(TimeoutError()))
