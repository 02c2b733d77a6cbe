"""DICOMweb as a source: dicomframes against dicomweb-client and wsidicom's web client,
reading from Orthanc behind added round trips.

Orthanc (Debian's ``orthanc`` with ``orthanc-dicomweb``) holds a 2,000-frame
JPEG series and a whole-slide pyramid; a proxy in a process of its own
(``tests/helpers/servers.py``) waits ``--delay-ms`` (50) before answering each
request, as a distant service would, and counts the requests. The same files
are served by nginx behind the same kind of proxy, as a bucket would serve
them. Measured, in one run:

- all frames of the series: dicomframes decoding them (``iter_frames``) and
  fetching them as stored (``encoded_frames``); dicomweb-client's
  ``retrieve_instance_frames`` one frame a request (``--peer-frames`` of them,
  the rate scaled) and all frames in one request; dicomframes reading the
  same file by byte ranges from the "bucket" (nginx, the same delay);
- opening the slide (a 3-level 8192x6144 pyramid of 256-pixel JPEG tiles), then
  random regions of its level 0 (``--regions`` of 512x512, then of 2048x2048):
  dicomframes' ``open_slide`` and ``Slide.read_region`` against wsidicom's
  ``WsiDicom.open_web`` and ``read_region``.

Prints a table (frames/s or regions/s, requests, seconds) and the ratios the
issue sets targets for: dicomframes against wsidicom's web client on regions
(target at least 5x), and dicomframes' DICOMweb iteration against its bucket
iteration (target within 1.5x). Run::

    python benchmarks/dicomweb_bench.py               # a few minutes
    python benchmarks/dicomweb_bench.py --quick       # fewer frames and regions
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the repository root: tests.helpers

import dicomframes
from measure import emit, write_jpeg_file
from tests.helpers import orthanc
from tests.helpers.servers import NginxServer, ProxyLog, ServerProcess, find_nginx
from tests.helpers.wsigen import write_pyramid


def _uids(path: Path) -> tuple[str, str, str]:
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID


def _give_uids(path: Path) -> None:
    """The patient and study attributes an archive insists on (Orthanc refuses a file without them)."""
    import pydicom

    ds = pydicom.dcmread(path)
    ds.PatientID = ds.get("PatientID") or "BENCH"
    ds.StudyInstanceUID = ds.get("StudyInstanceUID") or pydicom.uid.generate_uid()
    ds.SeriesInstanceUID = ds.get("SeriesInstanceUID") or pydicom.uid.generate_uid()
    ds.save_as(path)


class Counted:
    """A proxy's request log: requests made since `start`."""

    def __init__(self, log: ProxyLog) -> None:
        self.log = log
        self.mark = 0

    def start(self) -> None:
        self.mark = self.log.mark()

    def requests(self) -> int:
        return len(self.log.since(self.mark))


def timed(counted: Counted, work) -> tuple[float, int, object]:
    counted.start()
    start = time.perf_counter()
    result = work()
    seconds = time.perf_counter() - start
    return seconds, counted.requests(), result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--size", type=int, default=256, help="frame rows and columns")
    ap.add_argument("--peer-frames", type=int, default=100, help="frames dicomweb-client reads one a request")
    ap.add_argument("--regions", type=int, default=20)
    ap.add_argument("--delay-ms", type=int, default=50)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--markdown", help="also write the table to this file")
    args = ap.parse_args()
    if args.quick:
        args.frames, args.peer_frames, args.regions = 500, 40, 8
    if not orthanc.available():
        sys.exit("needs Orthanc: apt-get install orthanc orthanc-dicomweb")
    if find_nginx() is None:
        sys.exit("needs nginx: apt-get install nginx-light")
    from dicomweb_client.api import DICOMwebClient
    from wsidicom import WsiDicom
    from wsidicom.web import WsiDicomWebClient

    rows: list[tuple[str, str, float, int, float]] = []  # (work, who, per second, requests, seconds)
    with tempfile.TemporaryDirectory() as work:
        root = Path(work)
        series = root / "series.dcm"
        write_jpeg_file(series, args.frames, args.size)
        _give_uids(series)
        write_pyramid(root / "slide", width=8192, height=6144, levels=3, codec="jpeg", tile_size=(256, 256),
                      label=False, overview=False)
        server = orthanc.Orthanc(threads=32)
        nginx = NginxServer(root, root / "nginx").start()
        try:
            started = time.perf_counter()
            for path in [series, *sorted((root / "slide").rglob("*.dcm"))]:
                server.upload(path)
            ingest = time.perf_counter() - started
            with ServerProcess("--upstream", server.url, "--delays-ms", str(args.delay_ms)) as web_proxy, \
                    ServerProcess("--upstream", nginx.url, "--delays-ms", str(args.delay_ms)) as bucket_proxy:
                web_url = web_proxy.info["proxies"][str(args.delay_ms)] + "/dicom-web"
                bucket_url = bucket_proxy.info["proxies"][str(args.delay_ms)]
                on_web = Counted(ProxyLog(web_proxy.info["proxies"][str(args.delay_ms)]))
                on_bucket = Counted(ProxyLog(bucket_url))
                study, uid, sop = _uids(series)
                n = args.frames

                web = dicomframes.dicomweb(web_url)
                def iterate():
                    with web.open(study, uid, sop) as reader:
                        return sum(1 for _ in reader.iter_frames())

                s, r, _ = timed(on_web, iterate)
                rows.append(("all frames, decoded", "dicomframes (DICOMweb)", n / s, r, s))
                with web.open(study, uid, sop) as reader:
                    s, r, _ = timed(on_web, lambda: reader.encoded_frames(range(n)))
                rows.append(("all frames, as stored", "dicomframes (DICOMweb)", n / s, r, s))
                client = DICOMwebClient(url=web_url)
                one = args.peer_frames
                stored = (("application/octet-stream", "*"),)  # as stored, as dicomframes asks
                s, r, _ = timed(on_web, lambda: [client.retrieve_instance_frames(
                    study, uid, sop, frame_numbers=[k], media_types=stored) for k in range(1, one + 1)])
                rows.append(("all frames, as stored", "dicomweb-client, a frame a request", one / s, r * n // one,
                             s * n / one))
                s, r, _ = timed(on_web, lambda: client.retrieve_instance_frames(
                    study, uid, sop, frame_numbers=list(range(1, n + 1)), media_types=stored))
                rows.append(("all frames, as stored", "dicomweb-client, one request", n / s, r, s))
                def iterate_bucket():
                    with dicomframes.open(f"{bucket_url}/series.dcm") as reader:
                        return sum(1 for _ in reader.iter_frames())

                s, r, _ = timed(on_bucket, iterate_bucket)
                rows.append(("all frames, decoded", "dicomframes (bucket: byte ranges)", n / s, r, s))

                s_study, s_series, _ = _uids(next((root / "slide").rglob("*.dcm")))

                def open_ours():
                    return web.open_slide(s_study, s_series)

                def open_theirs():
                    return WsiDicom.open_web(WsiDicomWebClient(DICOMwebClient(url=web_url)), s_study, s_series)

                for who, opening in (("dicomframes", open_ours), ("wsidicom web client", open_theirs)):
                    s, r, slide = timed(on_web, opening)
                    rows.append(("open the slide (3 levels)", who, 1 / s, r, s))
                    for size in (512, 2048):
                        rng = random.Random(size)
                        places = [(rng.randrange(0, 8192 - size), rng.randrange(0, 6144 - size))
                                  for _ in range(args.regions)]
                        s, r, _ = timed(on_web, lambda slide=slide, size=size, places=places: [
                            slide.read_region(p, 0, (size, size)) for p in places])
                        rows.append((f"{args.regions} regions {size}x{size} at level 0", who, args.regions / s, r, s))
                    slide.close()
        finally:
            nginx.stop()
            server.stop()

    lines = [f"DICOMweb from Orthanc behind +{args.delay_ms} ms a request; {args.frames} frames of "
             f"{args.size}x{args.size} RGB JPEG; Orthanc took {ingest:.1f} s to ingest the files", "",
             "| work | who | per second | requests | seconds |", "|---|---|---:|---:|---:|"]
    lines += [f"| {w} | {who} | {rate:,.1f} | {req:,} | {sec:.2f} |" for w, who, rate, req, sec in rows]
    by = {(w, who): rate for w, who, rate, _, _ in rows}
    ours, theirs = "dicomframes", "wsidicom web client"
    lines += ["", "| ratio | measured | target |", "|---|---:|---:|"]
    for work in [w for w, who, *_ in rows if who == ours and (w.startswith("open") or "regions" in w)]:
        lines.append(f"| {work}, dicomframes / wsidicom web client (per second) | "
                     f"{by[(work, ours)] / by[(work, theirs)]:.2f}x | {'>= 5x' if 'regions' in work else ''} |")
    web_rate = by[("all frames, decoded", "dicomframes (DICOMweb)")]
    bucket_rate = by[("all frames, decoded", "dicomframes (bucket: byte ranges)")]
    stored = by[("all frames, as stored", "dicomframes (DICOMweb)")]
    lines += [f"| iteration, DICOMweb / bucket (frames/s) | {web_rate / bucket_rate:.2f} | >= 0.67 (within 1.5x) |",
              f"| as stored, dicomframes / dicomweb-client a frame a request | "
              f"{stored / by[('all frames, as stored', 'dicomweb-client, a frame a request')]:.0f}x | |",
              f"| as stored, dicomframes / dicomweb-client in one request | "
              f"{stored / by[('all frames, as stored', 'dicomweb-client, one request')]:.2f}x | |"]
    emit(lines, args.markdown)


if __name__ == "__main__":
    main()
