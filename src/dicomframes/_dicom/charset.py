"""Text values in the data set's Specific Character Set (PS3.5 6.1, PS3.3 C.12.1.1.2).

The header keeps a few names and descriptions (Patient's Name, Study
Description...) for catalogues and searches; they must read as pydicom reads
them. Values without escape sequences are decoded with the first character
set; values with ISO 2022 escape sequences are cut at each escape, and each
piece is decoded with the character set the escape designates, back to the
first one after a delimiter (``^`` in person names, control characters in
text). Bytes a character set cannot decode become U+FFFD, as in pydicom's
default (non-raising) mode.
"""

from __future__ import annotations

import functools
import logging
import re
from typing import Sequence

log = logging.getLogger("dicomframes")

#: the VRs whose values use the Specific Character Set (the rest are ASCII)
TEXT_VRS = frozenset({"SH", "LO", "PN", "ST", "LT", "UC", "UT"})
#: text VRs that hold one value, backslashes included
_SINGLE_VALUED = frozenset({"ST", "LT", "UT"})

_DEFAULT = "latin_1"  # ASCII by the standard; bytes above 0x7F are read as Latin-1, as pydicom does

# Defined Terms (PS3.3 C.12.1.1.2) -> Python codec. The single-byte sets read
# the same with or without code extensions.
_SETS = {
    "": _DEFAULT, "6": _DEFAULT, "13": "shift_jis", "100": "latin_1", "101": "iso8859_2", "109": "iso8859_3",
    "110": "iso8859_4", "126": "iso8859_7", "127": "iso8859_6", "138": "iso8859_8", "144": "iso8859_5",
    "148": "iso8859_9", "166": "tis_620", "203": "iso8859_15",
}
_EXTENSION_ONLY = {"87": "iso2022_jp", "159": "iso2022_jp_2", "149": "euc_kr", "58": "gb2312"}
_STAND_ALONE = {"ISO_IR 192": "utf_8", "GB18030": "gb18030", "GBK": "gbk", "ISO 2022 GBK": "gbk", "ISO 2022 58": "gb2312"}

# Escape sequence -> the codec of the set it designates (PS3.3 Table C.12-3 and C.12-4).
_ESCAPES = {
    b"\x1b(B": _DEFAULT, b"\x1b-A": "latin_1", b"\x1b)I": "shift_jis", b"\x1b(J": "shift_jis",
    b"\x1b$B": "iso2022_jp", b"\x1b-B": "iso8859_2", b"\x1b-C": "iso8859_3", b"\x1b-D": "iso8859_4",
    b"\x1b-F": "iso8859_7", b"\x1b-G": "iso8859_6", b"\x1b-H": "iso8859_8", b"\x1b-L": "iso8859_5",
    b"\x1b-M": "iso8859_9", b"\x1b-T": "tis_620", b"\x1b-b": "iso8859_15", b"\x1b$)C": "euc_kr",
    b"\x1b$(D": "iso2022_jp_2", b"\x1b$)A": "gb2312",
}
# These codecs read their own escape sequences; the others are given the bytes after it.
_READS_ESCAPES = frozenset({"iso2022_jp", "iso2022_jp_2"})
_PIECES = re.compile(rb"[^\x1b]+|\x1b[^\x1b]*")
_TERM = re.compile(r"ISO.?IR.?(\d+)|ISO.2022.IR.(\d+)")
_TEXT_DELIMITERS = b"\r\n\t\f"


def encodings(specific_character_set: str | Sequence[str] | None) -> tuple[str, ...]:
    """The Python codecs of a Specific Character Set value (one term or several).

    Misspelt terms that are plainly one of the Defined Terms (``ISO-IR 100``,
    ``ISO_IR100``) are read as that term; unknown ones as the default, with a warning.
    """
    terms = [specific_character_set] if isinstance(specific_character_set, str) else list(specific_character_set or [])
    out = [_codec(term.strip()) for term in terms] or [_DEFAULT]
    return tuple(out)


@functools.lru_cache(maxsize=128)  # a term is looked up per text value: warn once, not per value
def _codec(term: str) -> str:
    if term in _STAND_ALONE:
        return _STAND_ALONE[term]
    m = _TERM.fullmatch(term)
    number = (m.group(1) or m.group(2)) if m else ("" if term == "" else None)
    if number is not None:
        codec = _SETS.get(number) or _EXTENSION_ONLY.get(number)
        if codec is not None:
            return codec
    log.warning("unknown Specific Character Set term %r; reading the text as ISO_IR 6 (ASCII)", term)
    return _DEFAULT


def decode(raw: bytes, vr: str, sets: Sequence[str]) -> str | list[str]:
    """The text of a value of a `TEXT_VRS` VR: one string, or a list where the value holds several."""
    if vr in _SINGLE_VALUED:
        return _decode(raw, sets, _TEXT_DELIMITERS).rstrip("\x00 ")
    values = [_one(part.strip(b"\x00 "), vr, sets) for part in raw.split(b"\\")]
    return values[0] if len(values) == 1 else values


def _one(raw: bytes, vr: str, sets: Sequence[str]) -> str:
    if vr != "PN":
        return _decode(raw, sets, _TEXT_DELIMITERS)
    # A person name's component groups (alphabetic, ideographic, phonetic) are decoded
    # one by one; each starts in the first character set, as does each component after "^".
    groups = [_decode(group, sets, b"^") for group in raw.split(b"=")]
    while groups and not groups[-1]:
        groups.pop()
    return "=".join(groups)


def _decode(raw: bytes, sets: Sequence[str], delimiters: bytes) -> str:
    if b"\x1b" not in raw:
        return raw.decode(sets[0], errors="replace")
    return "".join(_piece(piece, sets, delimiters) for piece in _PIECES.findall(raw))


def _piece(piece: bytes, sets: Sequence[str], delimiters: bytes) -> str:
    if not piece.startswith(b"\x1b"):
        return piece.decode(sets[0], errors="replace")
    size = 4 if piece[1:3] in (b"$(", b"$)") else 3
    codec = _ESCAPES.get(piece[:size])
    if codec is None or (codec not in sets and codec != _DEFAULT):
        # An escape to a set the data set did not declare: its bytes as the first set reads them.
        return piece.decode(sets[0], errors="replace")
    if codec in _READS_ESCAPES:
        return piece.decode(codec, errors="replace")
    body = piece[size:]
    cut = next((i for i, byte in enumerate(body) if byte in delimiters), len(body))
    return body[:cut].decode(codec, errors="replace") + body[cut:].decode(sets[0], errors="replace")

