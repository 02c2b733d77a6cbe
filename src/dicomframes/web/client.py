"""A DICOMweb service as a source of readers and slides: `dicomweb(url)`.

Opening an instance costs one metadata request (a slide: one for its whole
series). Its DICOM JSON is encoded back into a data set header, which the
same header parser and views read as they read a file's; frames come by
WADO-RS frame retrieval (`dicomframes.frames.web_frames`), batched, several
requests in flight, into the same decode pipeline. So a reader of a DICOMweb
instance is the same `Reader`: frames, iteration, regions, Dask, pickling.

The transfer syntax frames are asked for is read from the metadata
(``AvailableTransferSyntaxUID``, else ``TransferSyntaxUID``), never found by
trying codecs one by one: compressed frames are asked for as stored (the
server sends its bytes, decoding is ours), uncompressed ones as Explicit VR
Little Endian. Metadata that names no syntax costs one more request: frame 1,
asked for as stored, whose part says its syntax.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

from dicomframes._dicom import encode
from dicomframes._dicom.json_dataset import encode as encode_json
from dicomframes._dicom.syntaxes import EXPLICIT_VR_LITTLE_ENDIAN, lookup
from dicomframes._dicom.tags import TRANSFER_SYNTAX_UID
from dicomframes.errors import SlideError, StorageError, UnsupportedTransferSyntaxError
from dicomframes.frames.header import Header
from dicomframes.frames.web_frames import NumberedIndex, WebFrames, expected_bytes, syntax_of
from dicomframes.io.local import BytesSource
from dicomframes.io.policy import FetchPolicy
from dicomframes.io.source import Source
from dicomframes.io.web_session import DEFAULT_TIMEOUT, Headers, Traffic, WebSession
from dicomframes.reader import Reader, open_all, tile_cache_for
from dicomframes.web.search import plain, query
from dicomframes.wsi.slide import Slide

AS_STORED = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
UNCOMPRESSED = f'multipart/related; type="application/octet-stream"; transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN.uid}'
_READER_OPTIONS = ("as_rgb", "decoder", "workers", "max_inflight", "tile_cache")


class _Metadata(BytesSource):
    """The header of a DICOMweb instance, encoded from its metadata: the reader's
    source, though frames come from the service (so it reads as remote storage)."""

    remote = True

    def fetch_policy(self) -> FetchPolicy:
        # Each request is a round trip, and a service may parse the file anew for each
        # (Orthanc: some 40 ms whatever it sends): few large batches (up to 256 frames,
        # about 4 MiB), 4 in flight, the first small so that the first frame comes soon.
        return FetchPolicy(max_request=4 << 20, batch_bytes=8 << 20, max_frames=256, first_batch_bytes=1 << 20,
                           concurrency=4)


class DicomWeb:
    """A DICOMweb service (its root URL, such as ``https://host/dicom-web``).

    `headers` go with every request (a dict, or a callable returning one per
    request, for tokens that expire); `timeout` bounds each request, retries
    included; `concurrency` is the requests in flight for one read of many frames.
    """

    def __init__(self, url: str, headers: Headers = None, *, timeout: float = DEFAULT_TIMEOUT, tries: int = 4,
                 concurrency: int = 4) -> None:
        self.session = WebSession(url, headers, timeout=timeout, tries=tries)
        self.concurrency = concurrency

    @property
    def url(self) -> str:
        return self.session.url

    # -- QIDO-RS -----------------------------------------------------------------------------------
    def search_studies(self, **filters: Any) -> list[dict[str, Any]]:
        """Studies matching `filters` (keywords, tags or the short names of
        `dicomframes.web.search.ALIASES`; ``limit``, ``offset``, ``fields``),
        each a dict of keyword -> value."""
        return [plain(row) for row in self.session.get_json("studies", query(filters))]

    def search_series(self, study: str | None = None, **filters: Any) -> list[dict[str, Any]]:
        path = f"studies/{study}/series" if study else "series"
        return [plain(row) for row in self.session.get_json(path, query(filters))]

    def search_instances(self, study: str | None = None, series: str | None = None,
                         **filters: Any) -> list[dict[str, Any]]:
        if series and not study:
            filters = {"SeriesInstanceUID": series, **filters}
        path = (f"studies/{study}/series/{series}/instances" if study and series
                else f"studies/{study}/instances" if study else "instances")
        return [plain(row) for row in self.session.get_json(path, query(filters))]

    # -- WADO-RS -----------------------------------------------------------------------------------
    def metadata(self, study: str, series: str, instance: str | None = None, *,
                 traffic: Traffic | None = None) -> list[dict[str, Any]]:
        """The DICOM JSON of one instance, or of every instance of the series."""
        path = f"studies/{study}/series/{series}" + (f"/instances/{instance}" if instance else "") + "/metadata"
        found = self.session.get_json(path, traffic=traffic)
        if not isinstance(found, list) or not found:
            raise StorageError("the service has no metadata for it", path=self.session.url_of(path))
        return found

    def open(self, study: str, series: str, instance: str, **options: Any) -> Reader:
        """A `Reader` of one instance (one metadata request; frames when read).
        `options`: ``as_rgb``, ``decoder``, ``workers``, ``max_inflight``, ``tile_cache``."""
        traffic = Traffic()  # the reader's requests, its metadata's included
        return self._reader(self.metadata(study, series, instance, traffic=traffic)[0], _check(options), traffic)

    def open_slide(self, study: str, series: str, **options: Any) -> Slide:
        """A `Slide` of a whole-slide series, from one series metadata request."""
        options = _check(options)
        images = [meta for meta in self.metadata(study, series) if _value(meta, "00280010")]  # Rows: images only
        if not images:
            raise SlideError(f"series {series} of study {study} holds no images", path=self.url)
        # Concurrently: where the metadata names no transfer syntax, each instance costs a request.
        readers = open_all(images, lambda meta: self._reader(meta, options, Traffic()))
        try:
            return Slide(readers)
        except BaseException:
            for reader in readers:
                reader.close()
            raise

    def _reader(self, meta: dict[str, Any], options: dict[str, Any], traffic: Traffic) -> Reader:
        uids = [_value(meta, tag) for tag in ("0020000D", "0020000E", "00080018")]
        if not all(uids):
            raise StorageError("the metadata has no Study, Series or SOP Instance UID", path=self.url)
        path = "studies/{}/series/{}/instances/{}".format(*uids)
        name = f"{self.url}/{path}"
        stored = _value(meta, "00083002") or _value(meta, "00020010") or self._syntax_of_frame_1(path, traffic)
        ts = lookup(stored)
        if ts is None:
            raise UnsupportedTransferSyntaxError(f"the service stores it in transfer syntax {stored}, which "
                                                 "dicomframes cannot decode", path=name)
        pixels: tuple[str, int | None]
        if ts.encapsulated:
            accept, syntax, pixels = AS_STORED, ts.uid, ("OB", None)
        else:  # uncompressed, whatever the stored encoding: the DICOMweb default, little endian
            accept, syntax = UNCOMPRESSED, EXPLICIT_VR_LITTLE_ENDIAN.uid
            frames = int(_value(meta, "00280008") or 1)
            rows, columns = int(_value(meta, "00280010") or 0), int(_value(meta, "00280011") or 0)
            samples, bits = int(_value(meta, "00280002") or 1), int(_value(meta, "00280100") or 8)
            length = frames * rows * columns * samples * bits // 8
            vr = (meta.get("7FE00010") or {}).get("vr", "OW")
            pixels = (vr if vr in ("OB", "OW") else "OW", length + length % 2)
            ts = EXPLICIT_VR_LITTLE_ENDIAN
        data = encode.file_meta([encode.text(TRANSFER_SYNTAX_UID, "UI", syntax)]) + encode_json(
            meta, name, pixel_data=pixels)
        source = _Metadata(data, name)
        session, concurrency = self.session, self.concurrency

        def frames_of(header: Header, data_source: Source) -> tuple[NumberedIndex, WebFrames]:
            v = header.values
            bits = int(v.get("Rows") or 0) * int(v.get("Columns") or 0) * int(v.get("SamplesPerPixel") or 1) * \
                max(1, int(v.get("BitsAllocated") or 8))
            decoded = -(-bits // 8)  # one bit a pixel: each frame packed from its own first byte
            index = NumberedIndex(header, data_source, int(v.get("NumberOfFrames") or 1),
                                  expected_bytes(decoded, ts.encapsulated))
            # A part bigger than twice its decoded size (plus a MiB) is not a frame: refused, not kept.
            return index, WebFrames(session, path, index, accept, syntax, max_part=2 * decoded + (1 << 20),
                                    concurrency=concurrency, traffic=traffic)

        return Reader(source, frames=frames_of, **{**options, "tile_cache": tile_cache_for(options.get("tile_cache"))})

    def _syntax_of_frame_1(self, path: str, traffic: Traffic) -> str:
        """The transfer syntax of metadata that names none (Orthanc's): frame 1 asked
        for as stored, whose part says its syntax; where the service cannot send it
        so (Orthanc, for big endian files), frame 1 uncompressed, and the frames are
        read uncompressed. Two requests at most, never one per codec."""
        url = f"{self.url}/{path}/frames/1"
        try:
            answer = self.session.get_parts(f"{path}/frames/1", AS_STORED, tries=1, traffic=traffic)
        except StorageError:  # (a service that is not there fails this request too, saying so)
            self.session.get_parts(f"{path}/frames/1", UNCOMPRESSED, traffic=traffic)
            return EXPLICIT_VR_LITTLE_ENDIAN.uid
        for headers, _ in answer[:1]:
            said = syntax_of(headers.get("content-type", ""))
            if said:
                return said
        raise StorageError("neither the metadata nor the frames say what transfer syntax they are in", path=url)

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> DicomWeb:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<DicomWeb {self.url}>"


def _value(meta: dict[str, Any], tag: str) -> Any:
    values = (meta.get(tag) or {}).get("Value") or [None]
    return values[0]


def _check(options: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - set(_READER_OPTIONS))
    if unknown:
        raise TypeError(f"unknown reader options {unknown}; these are taken: {', '.join(_READER_OPTIONS)}")
    return options


#: the URL of a DICOMweb instance: the service's root, then the three UIDs
INSTANCE_URL = re.compile(r"(https?://.+?)/studies/([0-9.]+)/series/([0-9.]+)/instances/([0-9.]+)/?")


def instance_url(url: str) -> tuple[str, str, str, str] | None:
    """(service root, study, series, instance) where `url` is a DICOMweb instance's URL, else None."""
    m = INSTANCE_URL.fullmatch(url.strip())
    return (m.group(1), m.group(2), m.group(3), m.group(4)) if m else None


def open_url(url: str, headers: Headers = None, *, timeout: float = DEFAULT_TIMEOUT, **options: Any) -> Reader:
    """A `Reader` of the DICOMweb instance at `url` (``.../studies/S/series/E/instances/I``)."""
    parts = instance_url(url)
    if parts is None:
        raise StorageError("not the URL of a DICOMweb instance (.../studies/UID/series/UID/instances/UID)", path=url)
    root, study, series, instance = parts
    return DicomWeb(root, headers, timeout=timeout).open(study, series, instance, **options)


def dicomweb(url: str, headers: Headers = None, *, timeout: float = DEFAULT_TIMEOUT, tries: int = 4,
             concurrency: int = 4) -> DicomWeb:
    """A DICOMweb service to search and open instances and slides from (see `DicomWeb`)."""
    return DicomWeb(url, headers, timeout=timeout, tries=tries, concurrency=concurrency)


__all__: Sequence[str] = ("DicomWeb", "dicomweb")
