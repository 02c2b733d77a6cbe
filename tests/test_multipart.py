"""The streaming multipart/related parser: every part as sent, whatever the chunking, in bounded memory."""

from __future__ import annotations

import os
import random

import pytest

from dicomframes.errors import StorageError
from dicomframes.io.multipart import boundary_of, header_param, parts


def _body(bodies: list[bytes], boundary: str, preamble: bytes = b"", epilogue: bytes = b"") -> bytes:
    out = preamble
    for body in bodies:
        out += f"--{boundary}\r\nContent-Type: application/octet-stream\r\nX-N: {len(body)}\r\n\r\n".encode()
        out += body + b"\r\n"
    return out + f"--{boundary}--\r\n".encode() + epilogue


def _reader(data: bytes, step: int):
    pos = 0

    def read(n: int) -> bytes:
        nonlocal pos
        out = data[pos : pos + min(n, step)]
        pos += len(out)
        return out

    return read


@pytest.mark.parametrize("step", [1, 3, 7, 64, 1000, 1 << 20])
def test_every_part_comes_out_as_sent_whatever_the_chunking(step):
    rng = random.Random(step)
    boundary = "b0undary"
    bodies = [b"", b"x", b"\r\n", b"--b0undar", b"x--b0undary-in-the-middle"] + [
        os.urandom(rng.randrange(0, 5000)) for _ in range(20)]
    data = _body(bodies, boundary, preamble=b"ignored preamble\r\n", epilogue=b"ignored epilogue")
    got = list(parts(_reader(data, step), boundary, "answer"))
    assert [b for _, b in got] == bodies
    assert [h["x-n"] for h, _ in got] == [str(len(b)) for b in bodies]
    assert all(h["content-type"] == "application/octet-stream" for h, _ in got)


def test_a_body_may_start_with_its_delimiter_and_have_no_parts():
    assert list(parts(_reader(b"--b--\r\n", 5), "b", "answer")) == []


def test_boundaries_in_content_types():
    assert boundary_of('multipart/related; type="application/octet-stream"; boundary="a b=c"') == "a b=c"
    assert boundary_of("multipart/related; BOUNDARY=xyz") == "xyz"
    with pytest.raises(ValueError):
        boundary_of("multipart/related; type=x")
    # Orthanc's: a semicolon inside the quoted type is not a parameter's end
    orthanc = 'multipart/related; type="application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"; boundary=b1'
    assert boundary_of(orthanc) == "b1"
    assert header_param(orthanc, "transfer-syntax") is None
    assert header_param(orthanc, "type") == "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"
    assert header_param("application/octet-stream; transfer-syntax=1.2.840.10008.1.2.4.50",
                        "transfer-syntax") == "1.2.840.10008.1.2.4.50"


@pytest.mark.parametrize("data, message", [
    (b"no delimiter at all" * 2000, "no opening boundary"),
    (b"--b\r\nContent-Type: x\r\n\r\nhalf a part", "ends inside a part"),
    (b"--b\r\nContent-Type: x", "no end of headers"),
])
def test_broken_bodies_are_storage_errors_naming_the_answer(data, message):
    with pytest.raises(StorageError, match=message) as info:
        list(parts(_reader(data, 10), "b", "http://host/frames/1"))
    assert "http://host/frames/1" in str(info.value)


def test_a_part_over_the_bound_is_refused_before_it_is_all_read():
    data = _body([b"z" * 100_000], "b")
    read = _reader(data, 1000)
    with pytest.raises(StorageError, match="over 10000 bytes"):
        list(parts(read, "b", "answer", max_part=10_000))
    assert read(1 << 30)  # the rest of the body was never read
