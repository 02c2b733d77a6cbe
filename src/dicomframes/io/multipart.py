"""multipart/related bodies (RFC 2046 5.1, as DICOMweb sends frames) parsed as a stream.

The parts come out one at a time as the body is read in chunks: memory holds
the part being read and one chunk, however many parts the body has. The
boundary is looked for only in bytes not searched before (plus the length of
the delimiter, which may straddle two chunks), so a large part costs linear
time, not a search of the whole part per chunk.
"""

from __future__ import annotations

import re
from typing import Callable, Iterator

from dicomframes.errors import StorageError

_CHUNK = 1 << 20
#: headers of one part longer than this are not a DICOMweb answer
_MAX_PART_HEADERS = 16 * 1024


def header_param(value: str, name: str) -> str | None:
    """Parameter `name` of a header value such as a Content-Type (``type/sub; a=1; b="x; y"``),
    unquoted; None where it has none. Semicolons inside quotes do not separate parameters."""
    for param in re.split(r';(?=(?:[^"]*"[^"]*")*[^"]*$)', value)[1:]:
        key, _, found = param.strip().partition("=")
        if key.strip().lower() == name:
            return found.strip().strip('"')
    return None


def boundary_of(content_type: str) -> str:
    """The ``boundary`` parameter of a multipart Content-Type header."""
    boundary = header_param(content_type, "boundary")
    if not boundary:
        raise ValueError(f"no boundary in Content-Type {content_type!r}")
    return boundary


def parts(read: Callable[[int], bytes], boundary: str, name: str, max_part: int = 1 << 31,
          ) -> Iterator[tuple[dict[str, str], bytes]]:
    """(headers, body) of each part of the body that `read(n)` returns (b"" at its end).

    A part longer than `max_part`, or a body that ends before its closing
    delimiter, is a `StorageError` naming `name`.
    """
    delimiter = b"--" + boundary.encode("latin-1")
    between = b"\r\n" + delimiter
    buf = bytearray()
    start = 0  # where the unread bytes of `buf` begin: parts are cut at offsets, not off the front
    ended = False

    def more() -> bool:
        nonlocal ended, start
        if ended:
            return False
        chunk = read(_CHUNK)
        if not chunk:
            ended = True
            return False
        if start > len(buf) // 2:  # drop what was handed out: amortised, each byte moved at most once or twice
            del buf[:start]
            start = 0
        buf.extend(chunk)
        return True

    # The preamble, up to the first delimiter (it may start the body, with no CRLF before it).
    searched = 0
    while True:
        at = buf.find(delimiter, searched)
        if at >= 0:
            start = at + len(delimiter)
            break
        searched = max(0, len(buf) - len(delimiter))
        if len(buf) > _MAX_PART_HEADERS or not more():  # (nothing is handed out yet: `start` is 0)
            raise StorageError("the multipart answer has no opening boundary", path=name)
    while True:
        while len(buf) - start < 2 and more():
            pass
        if buf[start : start + 2] == b"--":
            return  # the closing delimiter
        # The rest of the delimiter line (transport padding, then CRLF), then the part's headers.
        while (end := buf.find(b"\r\n\r\n", start)) < 0:
            if len(buf) - start > _MAX_PART_HEADERS or not more():
                raise StorageError("a part of the multipart answer has no end of headers", path=name)
        head = bytes(buf[start:end]).decode("latin-1").split("\r\n")
        start = end + 4
        headers = {}
        for line in head[1:]:  # head[0] is what followed the delimiter on its line
            key, sep, value = line.partition(":")
            if sep:
                headers[key.strip().lower()] = value.strip()
        searched = start
        while (at := buf.find(between, searched)) < 0:
            if len(buf) - start > max_part + len(between):
                raise StorageError(f"a part of the multipart answer is over {max_part} bytes", path=name)
            offset = searched - start  # `more` may move the unread bytes to the front
            searched = max(offset, len(buf) - start - len(between) + 1)
            if not more():
                raise StorageError("the multipart answer ends inside a part (cut short?)", path=name)
            searched += start
        body = bytes(buf[start:at])
        start = at + len(between)
        yield headers, body
