"""The HTML pages: the list of studies and series, and the viewer of a slide.

Plain HTML with every value escaped; the viewer is the project's own small
script (`static/viewer.js`), which reads the DeepZoom endpoint like any
other DeepZoom viewer.
"""

from __future__ import annotations

from collections import defaultdict
from functools import cache
from html import escape
from importlib.resources import files

from dicomframes.server.catalogue import Instance

#: VL Whole Slide Microscopy Image Storage
WSI_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"

_STYLE = ("body{font:15px system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse}"
          "td,th{padding:.3em .8em;border-bottom:1px solid #ddd;text-align:left}code{font-size:13px}")


@cache
def viewer_script() -> bytes:
    return files("dicomframes.server").joinpath("static/viewer.js").read_bytes()


def index(instances: list[Instance]) -> str:
    """Every series, grouped by study (patient, date, description); a slide opens
    in the viewer, any other series links its first instance's rendered frame."""
    by_series: dict[tuple[str, str], list[Instance]] = defaultdict(list)
    for inst in instances:
        by_series[(inst.study, inst.series)].append(inst)
    rows = []
    for (study, series), members in sorted(by_series.items(), key=_by_patient_and_date):
        first = min(members, key=lambda i: (int(i.attributes.get("InstanceNumber") or 0), i.sop))
        frames = sum(int(i.attributes.get("NumberOfFrames") or 1) for i in members)
        if any(i.attributes.get("SOPClassUID") == WSI_CLASS for i in members):
            link = f'<a href="/view/{escape(series)}">view slide</a>'
        else:
            link = (f'<a href="/dicomweb/studies/{escape(study)}/series/{escape(series)}/instances/'
                    f'{escape(first.sop)}/rendered">first frame</a>')
        a = first.attributes
        patient = _lines(_person(a.get("PatientName")), a.get("PatientID"))
        described = _lines(" ".join(filter(None, (_date(a.get("StudyDate")), a.get("StudyDescription")))),
                           f"<code>{escape(study)}</code>", escaped=1)
        series_cell = _lines(a.get("SeriesDescription"), f"<code>{escape(series)}</code>", escaped=1)
        rows.append(
            f"<tr><td>{patient}</td><td>{described}</td><td>{series_cell}</td>"
            f"<td>{escape(str(a.get('Modality') or ''))}</td><td>{len(members)}</td>"
            f"<td>{frames}</td><td>{link}</td></tr>")
    body = "\n".join(rows) or '<tr><td colspan="7">No DICOM files were found under the roots.</td></tr>'
    return (f"<!doctype html><html><head><meta charset=utf-8><title>dicomframes</title><style>{_STYLE}</style>"
            f"</head><body><h1>Series served</h1><table><tr><th>Patient</th><th>Study</th><th>Series</th>"
            f"<th>Modality</th><th>Instances</th><th>Frames</th><th></th></tr>\n{body}\n</table>"
            f'<p>DICOMweb: <a href="/dicomweb/studies"><code>/dicomweb</code></a></p></body></html>')


def _by_patient_and_date(item: tuple[tuple[str, str], list[Instance]]) -> tuple[str, ...]:
    (study, series), members = item
    a = members[0].attributes
    return (str(a.get("PatientName") or ""), str(a.get("PatientID") or ""), str(a.get("StudyDate") or ""), study,
            str(a.get("SeriesNumber") or "").zfill(8), series)


def _lines(*parts: object, escaped: int = 0) -> str:
    """The non-empty parts on lines of their own, escaped but for the last `escaped` (already markup)."""
    cut = len(parts) - escaped
    shown = [escape(str(p)) for p in parts[:cut] if p] + [str(p) for p in parts[cut:] if p]
    return "<br>".join(shown)


def _person(name: object) -> str:
    """A Person Name as read: its first component group, "Family^Given" as "Family, Given"."""
    if not name:
        return ""
    family, _, rest = str(name).split("=")[0].partition("^")
    given = " ".join(p for p in rest.split("^") if p)
    return f"{family}, {given}" if given else family


def _date(value: object) -> str:
    text = str(value or "")
    return f"{text[:4]}-{text[4:6]}-{text[6:8]}" if len(text) == 8 and text.isdigit() else text


def viewer(series: str) -> str:
    """The viewer page of one slide, filling the window."""
    dzi = f"/deepzoom/{escape(series)}.dzi"
    return (f"<!doctype html><html><head><meta charset=utf-8><title>{escape(series)}</title>"
            "<style>html,body{margin:0;height:100%;overflow:hidden}"
            "canvas{display:block;width:100vw;height:100vh;cursor:grab;background:#fff}</style>"
            f'</head><body><canvas id="slide"></canvas><script src="/static/viewer.js"></script>'
            f'<script>openViewer(document.getElementById("slide"), "{dzi}")'
            ".then(v => { window.viewer = v; }, e => { document.body.textContent = String(e); });"
            "</script></body></html>")
