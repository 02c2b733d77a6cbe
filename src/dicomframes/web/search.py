"""QIDO-RS searches in plain Python: filters as keyword arguments, results as dicts of keyword -> value."""

from __future__ import annotations

from typing import Any

from dicomframes._dicom.json_dataset import person_name
from dicomframes._dicom.tags import QIDO_ATTRIBUTES
from dicomframes.frames.header import WANTED

#: short names a search takes besides keywords and tags
ALIASES = {
    "study": "StudyInstanceUID", "series": "SeriesInstanceUID", "instance": "SOPInstanceUID",
    "modality": "Modality", "patient_id": "PatientID", "patient_name": "PatientName",
    "accession_number": "AccessionNumber", "study_date": "StudyDate", "sop_class": "SOPClassUID",
}
#: tag (8 hex digits) -> keyword of what searches return
KEYWORDS: dict[str, str] = {f"{tag:08X}": keyword for tag, (keyword, _) in (WANTED | QIDO_ATTRIBUTES).items()}


def query(filters: dict[str, Any]) -> list[tuple[str, str]]:
    """The query parameters of `filters`: ``limit``, ``offset``, ``fields`` (includefield),
    ``fuzzy`` (fuzzymatching), and attribute values (a list: any of them)."""
    out: list[tuple[str, str]] = []
    for key, value in filters.items():
        if value is None:
            continue
        if key in ("limit", "offset"):
            out.append((key, str(int(value))))
        elif key == "fields":
            fields = [value] if isinstance(value, str) else list(value)
            out.extend(("includefield", ALIASES.get(f, f)) for f in fields)
        elif key == "fuzzy":
            out.append(("fuzzymatching", "true" if value else "false"))
        else:
            text = ",".join(map(str, value)) if isinstance(value, (list, tuple, set)) else str(value)
            out.append((ALIASES.get(key, key), text))
    return out


def plain(row: dict[str, Any]) -> dict[str, Any]:
    """A DICOM JSON object as keyword -> value: one value as itself, several as a
    list, a person name as its text ("Family^Given=Ideographic=Phonetic"),
    sequences as lists of such dicts; tags without a known keyword keep their tag."""
    out: dict[str, Any] = {}
    for tag, attribute in row.items():
        if not isinstance(attribute, dict):
            continue
        values = attribute.get("Value")
        if values is None:
            continue
        if attribute.get("vr") == "SQ":
            value: Any = [plain(item) for item in values if isinstance(item, dict)]
        else:
            values = [person_name(v) if attribute.get("vr") == "PN" else v for v in values]
            value = values[0] if len(values) == 1 else values
        out[KEYWORDS.get(tag.upper(), tag)] = value
    return out
