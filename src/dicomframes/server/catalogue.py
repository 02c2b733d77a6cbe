"""What a server serves: the instances under its roots, by UID, from their headers alone.

Roots are folders, URL prefixes (anything fsspec lists) or single files. A
scan opens every file's header concurrently (opening is waiting on storage),
keeps a few attributes and where the file is, and closes it again: the
catalogue is small however large the files. Files that are not DICOM are
skipped and counted; files that fail to open are counted with their error.
URLs carry UIDs, never paths, so a request can only reach what a scan found.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from dicomframes.errors import DicomFramesError, NotDicomError
from dicomframes.reader import Reader
from dicomframes.reader import open as open_reader
from dicomframes.wsi.slide import list_instances

log = logging.getLogger("dicomframes.server")

#: the attributes of a study (a study list shows them; taken from its instances' headers), and of a series
OF_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
            "AccessionNumber", "ReferringPhysicianName", "StudyDescription", "StudyID")
OF_SERIES = ("SeriesDescription", "SeriesNumber", "SeriesDate")
#: header values kept for each instance (what searches match and return)
KEPT = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "Modality",
        "InstanceNumber", "NumberOfFrames", "Rows", "Columns", "ImageType",
        "TotalPixelMatrixColumns", "TotalPixelMatrixRows", *OF_STUDY, *OF_SERIES)


@dataclass(frozen=True)
class Instance:
    """One instance: its UIDs, the kept attributes, and how to open it again."""

    study: str
    series: str
    sop: str
    #: what `dicomframes.open` takes: a path, a URL, or an (fs, path) pair from a listing
    location: Any
    #: the stored transfer syntax's UID
    transfer_syntax: str
    #: keyword -> value, for the keywords of `KEPT` the header has
    attributes: dict[str, Any] = field(hash=False, compare=False)


@dataclass
class ScanReport:
    instances: int = 0
    skipped: int = 0  # not DICOM
    failed: dict[str, str] = field(default_factory=dict)  # location -> error
    duplicates: int = 0  # a SOP Instance UID seen before (the first location is kept)
    seconds: float = 0.0


def _name(location: Any) -> str:
    return location[1] if isinstance(location, tuple) else str(location)


class Catalogue:
    """The instances under `roots`, found by `scan` (again on demand)."""

    def __init__(self, roots: Iterable[Any], storage_options: dict[str, Any] | None = None,
                 max_workers: int = 8) -> None:
        self.roots = list(roots)
        self.storage_options = dict(storage_options or {})
        self.max_workers = max_workers
        self._lock = threading.Lock()
        self._instances: dict[str, Instance] = {}
        self._series: dict[str, list[Instance]] = {}
        self.report = ScanReport()

    # -- scanning ----------------------------------------------------------------------------
    def scan(self, progress: Callable[[int, int], None] | None = None) -> ScanReport:
        """Read every file's header under the roots; the catalogue becomes what was found.
        `progress(done, total)` is called as files are read."""
        start = time.perf_counter()
        items: list[tuple[Any, bool]] = []
        for root in self.roots:
            found, listed = list_instances(root, self.storage_options)
            items.extend((item, listed) for item in found)
        report = ScanReport()
        instances: dict[str, Instance] = {}
        done = 0

        def one(item: tuple[Any, bool]) -> Instance | BaseException | None:
            location, listed = item
            try:
                options = {} if isinstance(location, tuple) else self.storage_options
                with open_reader(location, **options) as reader:
                    return _instance(reader, location)
            except NotDicomError as exc:
                return None if listed else exc
            except DicomFramesError as exc:
                return exc

        with ThreadPoolExecutor(max(1, min(self.max_workers, len(items) or 1)),
                                thread_name_prefix="dicomframes-scan") as pool:
            for (location, _), result in zip(items, pool.map(one, items)):
                done += 1
                if progress is not None:
                    progress(done, len(items))
                if result is None:
                    report.skipped += 1
                elif isinstance(result, BaseException):
                    report.failed[_name(location)] = str(result)
                    log.warning("skipping %s: %s", _name(location), result)
                elif result.sop in instances:
                    report.duplicates += 1
                    log.warning("%s: SOP Instance UID %s already served from %s", _name(location), result.sop,
                                _name(instances[result.sop].location))
                else:
                    instances[result.sop] = result
        report.instances = len(instances)
        report.seconds = time.perf_counter() - start
        by_series: dict[str, list[Instance]] = {}
        for inst in instances.values():
            by_series.setdefault(inst.series, []).append(inst)
        with self._lock:
            self._instances = instances
            self._series = by_series
            self.report = report
        log.info("catalogue: %d instances, %d files skipped (not DICOM), %d failed, in %.2f s",
                 report.instances, report.skipped, len(report.failed), report.seconds)
        return report

    # -- handing over to server processes (pickled: the lock is made again) -----------------
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -- lookups -----------------------------------------------------------------------------
    def instances(self) -> list[Instance]:
        with self._lock:
            return list(self._instances.values())

    def series(self, series: str) -> list[Instance]:
        """The instances of a series (any study), none if it is not here."""
        with self._lock:
            return list(self._series.get(series, ()))

    def get(self, study: str, series: str, sop: str) -> Instance | None:
        """The instance with these UIDs, or None (a UID of another study or series is not it)."""
        with self._lock:
            found = self._instances.get(sop)
        if found is None or found.study != study or found.series != series:
            return None
        return found

    def __len__(self) -> int:
        with self._lock:
            return len(self._instances)


def _instance(reader: Reader, location: Any) -> Instance:
    header = reader.header
    values = {key: header.get(key) for key in KEPT if header.get(key) not in (None, "", [])}
    values.setdefault("NumberOfFrames", len(reader))
    missing = [key for key in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID") if not values.get(key)]
    if missing:
        raise DicomFramesError(f"the file has no {', '.join(missing)}", path=reader.path)
    return Instance(values["StudyInstanceUID"], values["SeriesInstanceUID"], values["SOPInstanceUID"],
                    location, header.transfer_syntax.uid, values)
