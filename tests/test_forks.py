"""A forked child never closes the parent's fsspec connections (real servers: nginx, moto).

In a forked child the parent's pooled connections are registered in the epoll
instance parent and child share; a child that closes them (fsspec's finalizer
of a filesystem instance that became garbage there, aiohttp's connector) removes
the parent's registrations, and the parent's next request on one hangs: the
server answers, the parent's event loop is never told.

fsspec's own fork handler empties its instance caches in the child, so an
instance that only the cache held is garbage there. Whether our handler saw it
first depended on the order the handlers were registered in: importing fsspec
before dicomframes (as importing zarr does) broke it. So these tests run a fresh
interpreter that imports fsspec first, and make the child collect its garbage.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

import dicomframes

KiB = 1 << 10

# argv: url, storage options (JSON), how ("cached" | "uncached" | "inherited")
SCRIPT = r"""
import gc, json, os, sys, time

import fsspec.core  # before dicomframes: fsspec's fork handlers are registered first (as zarr's import does)

import dicomframes

url, options, how = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
limits = dict(request_timeout=3.0, tries=1)
if how == "cached":
    # The filesystem is fsspec's cached instance; the reader is gone before the
    # fork, so in the child only fsspec's cache held it, and fsspec empties it there.
    options.pop("skip_instance_cache", None)
    with dicomframes.open(url, **limits, **options) as reader:
        reader.frame(10)  # a pooled keep-alive connection now
    del reader
else:
    # An instance outside the cache, held by the reader only (as s3 readers are
    # with skip_instance_cache=True, or a filesystem given with the path).
    fs, path = fsspec.core.url_to_fs(url, **{**options, "skip_instance_cache": True})
    reader = dicomframes.open((fs, path), **limits)
    del fs
    reader.frame(10)
gc.collect()

pid = os.fork()
if pid == 0:
    if how == "uncached":
        del reader  # the child drops what it inherited, unused
    elif how == "inherited":
        reader.frame(20)  # the child reads through the reader it inherited, then drops it
        del reader
    gc.collect()  # any child's garbage collection, at some point
    os._exit(0)
_, status = os.waitpid(pid, 0)

started = time.monotonic()
if how == "cached":  # the same cached filesystem, the same connection pool
    with dicomframes.open(url, **limits, **options) as reader:
        reader.frame(500)
else:
    reader.frame(500)
    reader.frame(900)
print(json.dumps({"child": os.waitstatus_to_exitcode(status), "seconds": time.monotonic() - started}))
"""


@pytest.fixture(params=["http", "s3"])
def target(request) -> tuple[str, dict]:
    """(URL of eot.dcm, storage options) on nginx or on moto's S3."""
    if request.param == "http":
        return f"{request.getfixturevalue('nginx').url}/eot.dcm", {}
    s3 = request.getfixturevalue("s3")
    return s3.url("eot.dcm"), s3.options


@pytest.mark.parametrize("how", ["cached", "uncached", "inherited"])
def test_child_garbage_collection_leaves_the_parents_connections(target, remote_dir, how):
    url, options = target
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, url, json.dumps(options), how],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["child"] == 0
    assert result["seconds"] < 3, result  # promptly: no request waited for its timeout


def _collect_in_child(queue) -> None:
    import gc

    gc.collect()
    queue.put("collected")


def test_forked_child_collecting_garbage_in_this_process(nginx, remote_dir):
    """The same, in the test process itself (whatever imported fsspec first here)."""
    import multiprocessing

    url = f"{nginx.url}/eot.dcm"
    with dicomframes.open(url, request_timeout=5.0, tries=1) as reader, dicomframes.open(remote_dir / "eot.dcm") as local:
        reader.frame(10)
        expected = int(local.frame(700).sum())
    del reader  # fsspec's instance cache alone holds the filesystem
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_collect_in_child, args=(queue,))
    child.start()
    assert queue.get(timeout=60) == "collected"
    child.join(60)
    assert child.exitcode == 0
    started = time.monotonic()
    with dicomframes.open(url, request_timeout=5.0, tries=1) as again:  # the same pooled connections
        assert int(again.frame(700).sum()) == expected
        assert again.stats["retries"] == 0
    assert time.monotonic() - started < 5
