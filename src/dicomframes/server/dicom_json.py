"""DICOM JSON (PS3.18 F.2) for search results and metadata, and search matching.

Searches answer from the catalogue's kept attributes (no file is opened);
metadata is the instance's whole header, from ``Reader.dataset`` (pydicom),
with Pixel Data as a ``BulkDataURI``.
"""

from __future__ import annotations

import fnmatch
from typing import Any, Iterable

from dicomframes._dicom.tags import QIDO_ATTRIBUTES
from dicomframes.frames.header import WANTED
from dicomframes.server.catalogue import OF_SERIES, OF_STUDY, Instance

#: keyword -> (tag as 8 hex digits, VR) of every attribute a search can match or return
ATTRIBUTES: dict[str, tuple[str, str]] = {keyword: (f"{tag:08X}", vr)
                                          for tag, (keyword, vr) in (WANTED | QIDO_ATTRIBUTES).items()}
_BY_TAG = {tag: keyword for keyword, (tag, _) in ATTRIBUTES.items()}
_NUMBERS = {"IS", "DS", "US", "UL", "SS", "SL", "FL", "FD"}
_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")

#: what each level of search returns (and may match on): PS3.18 Tables 10.6.1-5 to -7, less what a catalogue lacks
STUDY = ("StudyInstanceUID", *OF_STUDY, "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
         "NumberOfStudyRelatedInstances")
SERIES = ("StudyInstanceUID", "SeriesInstanceUID", "Modality", *OF_SERIES, "NumberOfSeriesRelatedInstances")
INSTANCE = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "Modality", "InstanceNumber",
            "NumberOfFrames", "Rows", "Columns", "ImageType", "TotalPixelMatrixColumns", "TotalPixelMatrixRows",
            "AvailableTransferSyntaxUID")


def keyword_of(key: str) -> str | None:
    """The keyword a query parameter names (a keyword, or a tag as 8 hex digits), if known."""
    if key in ATTRIBUTES:
        return key
    return _BY_TAG.get(key.upper())


def element(keyword: str, value: Any) -> tuple[str, dict[str, Any]]:
    tag, vr = ATTRIBUTES[keyword]
    values = value if isinstance(value, (list, tuple)) else [value]
    if vr in _NUMBERS:
        values = [int(v) if vr in ("IS", "US", "UL", "SS", "SL") else float(v) for v in values]
    elif vr == "PN":  # PS3.18 F.2.2: the component groups by name
        values = [dict(zip(_PN_GROUPS, str(v).split("="))) for v in values]
    else:
        values = [str(v) for v in values]
    return tag, {"vr": vr, "Value": values}


def dataset(values: dict[str, Any]) -> dict[str, Any]:
    """A DICOM JSON object of the (keyword -> value) pairs, values that are None left out."""
    return dict(element(k, v) for k, v in values.items() if v is not None and v != [])


def matches(value: Any, wanted: str, vr: str = "") -> bool:
    """PS3.4 C.2.2.2 matching, the parts a catalogue of kept values can do: a list
    of UIDs (comma or backslash separated), wildcards ``*`` and ``?``, exact
    numbers, ranges of dates and times (``20200101-``, ``-20201231``, ``a-b``);
    person names regardless of case; a multi-valued attribute matches if any value does."""
    values = [] if value is None else value if isinstance(value, (list, tuple)) else [value]
    if vr in ("DA", "TM", "DT") and "-" in wanted:
        low, _, high = wanted.partition("-")
        return any((not low or str(v) >= low) and (not high or str(v)[: len(high)] <= high) for v in values)
    options = [w for w in wanted.replace("\\", ",").split(",") if w != ""]
    if not options:
        return True  # an empty value is universal matching
    fold = str.casefold if vr == "PN" else str
    for v in values or [""]:  # no value: only universal matching and "*" match it
        text = fold(str(v))
        for w in map(fold, options):
            if ("*" in w or "?" in w) and fnmatch.fnmatchcase(text, w):
                return True
            if text == w:
                return True
    return False


def select(rows: Iterable[dict[str, Any]], query: dict[str, str]) -> list[dict[str, Any]]:
    """The rows (keyword -> value) matching every known key of `query`."""
    return [row for row in rows
            if all(k in row and matches(row[k], v, ATTRIBUTES[k][1]) for k, v in query.items())]


def studies(instances: list[Instance]) -> list[dict[str, Any]]:
    by_study: dict[str, list[Instance]] = {}
    for inst in instances:
        by_study.setdefault(inst.study, []).append(inst)
    out = []
    for study, members in by_study.items():
        modalities = sorted({m for inst in members if (m := inst.attributes.get("Modality"))})
        out.append({
            "StudyInstanceUID": study, **_first(members, OF_STUDY), "ModalitiesInStudy": modalities,
            "NumberOfStudyRelatedSeries": len({inst.series for inst in members}),
            "NumberOfStudyRelatedInstances": len(members),
        })
    return out


def series(instances: list[Instance]) -> list[dict[str, Any]]:
    by_series: dict[tuple[str, str], list[Instance]] = {}
    for inst in instances:
        by_series.setdefault((inst.study, inst.series), []).append(inst)
    return [{
        "StudyInstanceUID": study, "SeriesInstanceUID": uid, "Modality": members[0].attributes.get("Modality"),
        **_first(members, OF_SERIES), "NumberOfSeriesRelatedInstances": len(members),
    } for (study, uid), members in by_series.items()]


def _first(members: list[Instance], keywords: tuple[str, ...]) -> dict[str, Any]:
    """Each keyword's value in the first member that has one (instances of a study should agree)."""
    return {k: next((v for inst in members if (v := inst.attributes.get(k)) is not None), None) for k in keywords}


def instance_rows(instances: list[Instance]) -> list[dict[str, Any]]:
    return [{**{k: inst.attributes.get(k) for k in INSTANCE}, "AvailableTransferSyntaxUID": inst.transfer_syntax}
            for inst in instances]


def metadata(ds: Any, pixel_data_uri: str, transfer_syntax: str) -> dict[str, Any]:
    """The DICOM JSON of a pydicom data set (Pixel Data not read), binary values
    inline, Pixel Data as a BulkDataURI, and the syntax frames are stored in."""
    out = ds.to_json_dict(bulk_data_threshold=1 << 62)
    out["00083002"] = {"vr": "UI", "Value": [transfer_syntax]}
    out["7FE00010"] = {"vr": "OB", "BulkDataURI": pixel_data_uri}
    return dict(sorted(out.items()))
