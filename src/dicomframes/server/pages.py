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
    """Every series, grouped by study; a slide opens in the viewer, any other
    series links its first instance's rendered frame."""
    by_series: dict[tuple[str, str], list[Instance]] = defaultdict(list)
    for inst in instances:
        by_series[(inst.study, inst.series)].append(inst)
    rows = []
    for (study, series), members in sorted(by_series.items()):
        first = min(members, key=lambda i: (int(i.attributes.get("InstanceNumber") or 0), i.sop))
        frames = sum(int(i.attributes.get("NumberOfFrames") or 1) for i in members)
        if any(i.attributes.get("SOPClassUID") == WSI_CLASS for i in members):
            link = f'<a href="/view/{escape(series)}">view slide</a>'
        else:
            link = (f'<a href="/dicomweb/studies/{escape(study)}/series/{escape(series)}/instances/'
                    f'{escape(first.sop)}/rendered">first frame</a>')
        rows.append(
            f"<tr><td><code>{escape(study)}</code></td><td><code>{escape(series)}</code></td>"
            f"<td>{escape(str(first.attributes.get('Modality') or ''))}</td><td>{len(members)}</td>"
            f"<td>{frames}</td><td>{link}</td></tr>")
    body = "\n".join(rows) or '<tr><td colspan="6">No DICOM files were found under the roots.</td></tr>'
    return (f"<!doctype html><html><head><meta charset=utf-8><title>dicomframes</title><style>{_STYLE}</style>"
            f"</head><body><h1>Series served</h1><table><tr><th>Study</th><th>Series</th><th>Modality</th>"
            f"<th>Instances</th><th>Frames</th><th></th></tr>\n{body}\n</table>"
            f'<p>DICOMweb: <a href="/dicomweb/studies"><code>/dicomweb</code></a></p></body></html>')


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
