"""Media types of DICOMweb frames (PS3.18 8.7): what a client accepts, what is sent.

Frames go out as stored (no decoding) when the client accepts the stored
transfer syntax, and decoded to uncompressed bytes when it asks for
``application/octet-stream`` in Explicit VR Little Endian (the default).
No frame is re-encoded into another compressed syntax.
"""

from __future__ import annotations

from dataclasses import dataclass

from dicomframes._dicom.syntaxes import MEDIA_OF_SYNTAX

EXPLICIT_LITTLE = "1.2.840.10008.1.2.1"
#: native transfer syntaxes whose frames, as stored, are the uncompressed (little endian) bytes
_LITTLE_NATIVE = {"1.2.840.10008.1.2", EXPLICIT_LITTLE, "1.2.840.10008.1.2.1.99"}

#: the transfer syntax a media type means when the client names none
DEFAULT_SYNTAX = {
    "application/octet-stream": EXPLICIT_LITTLE, "image/jpeg": "1.2.840.10008.1.2.4.50",
    "image/jls": "1.2.840.10008.1.2.4.80", "image/jp2": "1.2.840.10008.1.2.4.90",
    "image/jpx": "1.2.840.10008.1.2.4.92", "image/jphc": "1.2.840.10008.1.2.4.201",
    "image/dicom-rle": "1.2.840.10008.1.2.5",
}


@dataclass(frozen=True)
class MediaRange:
    type: str  # "multipart/related", "*/*", "image/jpeg", ...
    params: dict[str, str]
    q: float = 1.0


@dataclass(frozen=True)
class FrameMedia:
    """How frames are sent: each part's media type and transfer syntax, and
    whether the stored bytes go out as they are (else decoded)."""

    part_type: str
    transfer_syntax: str
    as_stored: bool

    @property
    def content_type(self) -> str:
        return f"{self.part_type}; transfer-syntax={self.transfer_syntax}"


def _split(text: str, sep: str) -> list[str]:
    """`text` cut at `sep` outside double quotes."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def parse_accept(header: str | None) -> list[MediaRange]:
    """The media ranges of an Accept header, most wanted first (by q, then order);
    none means anything. Malformed ranges are left out."""
    if not header or not header.strip():
        return [MediaRange("*/*", {})]
    ranges = []
    for k, item in enumerate(_split(header, ",")):
        fields = [f.strip() for f in _split(item, ";")]
        kind = fields[0].lower()
        if "/" not in kind:
            continue
        params: dict[str, str] = {}
        for f in fields[1:]:
            if "=" in f:
                key, _, value = f.partition("=")
                params[key.strip().lower()] = value.strip().strip('"')
        try:
            q = float(params.pop("q", "1"))
        except ValueError:
            q = 0.0
        if q > 0:
            ranges.append((-q, k, MediaRange(kind, params, q)))
    return [r for _, _, r in sorted(ranges, key=lambda t: (t[0], t[1]))]


def frame_media(accept: str | None, stored: str) -> FrameMedia | None:
    """How to send frames of a file stored in transfer syntax `stored` to a client
    sending `accept`; None where nothing it accepts can be made."""
    for media in parse_accept(accept):
        if media.type in ("*/*", "multipart/*"):
            inner, syntax = "application/octet-stream", EXPLICIT_LITTLE
        elif media.type == "multipart/related":
            inner = media.params.get("type", "application/octet-stream").lower()
            syntax = media.params.get("transfer-syntax") or DEFAULT_SYNTAX.get(inner, "")
        else:
            continue  # frames come as multipart/related only
        chosen = _choose(inner, syntax, stored)
        if chosen is not None:
            return chosen
    return None


def _choose(inner: str, syntax: str, stored: str) -> FrameMedia | None:
    own = MEDIA_OF_SYNTAX.get(stored, "application/octet-stream")
    if inner == "application/octet-stream":
        if syntax == "*":
            return FrameMedia(inner, stored, True)  # the server's choice: as stored
        if syntax == EXPLICIT_LITTLE:
            return FrameMedia(inner, EXPLICIT_LITTLE, stored in _LITTLE_NATIVE)
        if syntax == stored:
            return FrameMedia(inner, stored, True)
        return None
    if inner == own and syntax in ("*", stored):
        return FrameMedia(inner, stored, True)
    return None


def available(stored: str) -> list[str]:
    """What a client may ask frames of this file as (for a 406's message)."""
    own = MEDIA_OF_SYNTAX.get(stored)
    out = [f'multipart/related; type="application/octet-stream"; transfer-syntax={EXPLICIT_LITTLE}',
           'multipart/related; type="application/octet-stream"; transfer-syntax=*']
    if own is not None:
        out.append(f'multipart/related; type="{own}"; transfer-syntax={stored}')
    return out


def instance_media(accept: str | None, stored: str) -> str | None:
    """How to send a whole instance: "multipart" (multipart/related; type="application/dicom",
    what PS3.18 names), "bare" (one application/dicom body, which byte ranges can cut),
    or None where the client accepts neither in the stored transfer syntax (no instance is transcoded)."""
    for media in parse_accept(accept):
        if media.params.get("transfer-syntax", "*") not in ("*", stored):
            continue
        if media.type in ("*/*", "multipart/*"):
            return "multipart"
        if media.type == "multipart/related" and media.params.get("type", "application/dicom").lower() in (
                "application/dicom", "*/*"):
            return "multipart"
        if media.type in ("application/dicom", "application/*"):
            return "bare"
    return None


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one byte range (first, last + 1) a Range header asks of `size` bytes; None
    where the whole is sent (no header, several ranges, not bytes: RFC 9110 lets a
    server ignore those). Raises ValueError where the range lies past the end (416)."""
    if not header or not header.strip().lower().startswith("bytes="):
        return None
    spec = header.strip()[6:].strip()
    if "," in spec or "-" not in spec:
        return None
    first, _, last = (part.strip() for part in spec.partition("-"))
    if not (first.isdigit() or first == "") or not (last.isdigit() or last == "") or first == last == "":
        return None  # malformed: ignored, as RFC 9110 says
    if first == "":  # the last N bytes
        return (max(0, size - int(last)), size) if int(last) > 0 and size > 0 else _unsatisfiable(size)
    start = int(first)
    if start >= size:
        _unsatisfiable(size)
    end = size if last == "" else min(size, int(last) + 1)
    if end <= start:
        return None  # last before first: invalid, ignored
    return start, end


def _unsatisfiable(size: int) -> tuple[int, int]:
    raise ValueError(f"the instance holds {size} bytes")
