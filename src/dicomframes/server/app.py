"""The ASGI app: DICOMweb (QIDO-RS searches, WADO-RS metadata, frames, rendered
frames, instances) and DeepZoom.

Handlers are plain functions, which Starlette runs on its thread pool (its
limiter bounds how many run at once); each opens nothing but the readers of
a bounded pool. URLs carry UIDs only: a request reaches what the catalogue
holds, never a path. Errors are the status codes PS3.18 names, with a line of
text, never a traceback.
"""

from __future__ import annotations

import ctypes
import hashlib
import hmac
import json
import logging
import os
import pickle
import re
import secrets
import threading
from contextlib import asynccontextmanager, contextmanager
from typing import Any, AsyncIterator, Callable, Iterator, Sequence

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from dicomframes.errors import (
    DicomFramesError,
    NotAcceptableError,
    NotFoundError,
    RequestError,
    ServerBusyError,
    SlideError,
    StorageError,
)
from dicomframes.frames.frame_cache import FrameCache
from dicomframes.server import deepzoom, dicom_json, images, pages
from dicomframes.server.catalogue import Catalogue, Instance
from dicomframes.server.media import FrameMedia, available, byte_range, frame_media, instance_media
from dicomframes.server.middleware import AccessLog, Token, hide_token
from dicomframes.server.readers import ReaderPool, SlidePool
from dicomframes.wsi.slide import Slide

log = logging.getLogger("dicomframes.server")

#: frames and instances never change under their UIDs: caches may keep them
IMMUTABLE = "public, max-age=31536000, immutable"
DICOM_JSON = "application/dicom+json"


class Server:
    """The state behind the routes: the catalogue, the open readers and slides,
    the cache of what was rendered, and the bound on decoding at once."""

    def __init__(self, catalogue: Catalogue, readers: ReaderPool, slides: SlidePool, cache: FrameCache,
                 max_frames: int, max_decodes: int, queue_seconds: float, tile_format: str) -> None:
        self.catalogue = catalogue
        self.readers = readers
        self.slides = slides
        self.cache = cache
        self.max_frames = max_frames
        self.decodes = threading.BoundedSemaphore(max_decodes)
        self.queue_seconds = queue_seconds
        self.tile_format = tile_format
        self.token_required = False
        self.public_url = ""  # e.g. https://slides.example.org, for URLs in answers behind a proxy
        self.closed = threading.Event()  # ends timed rescans
        self._making: dict[Any, threading.Event] = {}  # what some request is rendering now
        self._making_lock = threading.Lock()

    def close(self) -> None:
        """Stop timed rescans and close every open reader and slide (the app's shutdown)."""
        self.closed.set()
        self.readers.close()
        self.slides.close()

    @contextmanager
    def decoding(self) -> Iterator[None]:
        """A turn to decode; ServerBusyError where none comes within `queue_seconds`
        (backpressure: a full server says so instead of queueing without bound)."""
        if not self.decodes.acquire(timeout=self.queue_seconds):
            raise ServerBusyError("the server is decoding as much as it takes; retry shortly")
        try:
            yield
        finally:
            self.decodes.release()

    def made_once(self, key: Any, make: Callable[[], bytes]) -> bytes:
        """`make()`'s bytes, kept in the cache under `key`; requests that want the
        same thing while one makes it wait for that one instead of making it too
        (a viewer's neighbours ask for the same tiles at once)."""
        body = self.cache.get(key)
        if body is not None:
            return bytes(body)
        with self._making_lock:
            pending = self._making.get(key)
            mine = pending is None
            if mine:
                pending = self._making[key] = threading.Event()
        assert pending is not None
        if not mine:
            pending.wait(self.queue_seconds)
            body = self.cache.get(key)
            if body is not None:
                return bytes(body)
            # the maker failed, or the cache could not keep it: make it here
        try:
            body = make()
            self.cache.put_encoded(key, body)
            return body
        finally:
            if mine:
                with self._making_lock:
                    del self._making[key]
                pending.set()

    def rescan(self) -> dict[str, Any]:
        """Scan the roots again and serve what is there now. Readers, slides and
        rendered output of files that changed or went are dropped (closed once
        no request uses them); requests meanwhile are served from the old catalogue."""
        before = {i.sop: i for i in self.catalogue.instances()}
        report = self.catalogue.scan()
        after = {i.sop: i for i in self.catalogue.instances()}
        changed = {sop for sop, inst in before.items() if sop not in after or after[sop].location != inst.location}
        series = {before[sop].series for sop in changed} | {after[sop].series for sop in after.keys() - before.keys()}
        self.readers.discard(changed)
        self.slides.discard(series)
        if series:  # the series of every file that changed, went or came
            self.cache.clear()
        log.info("rescan: %d instances, %d added, %d changed or gone", report.instances,
                 len(after.keys() - before.keys()), len(changed))
        return {"instances": report.instances, "added": len(after.keys() - before.keys()), "changed_or_gone": len(changed),
                "skipped": report.skipped, "failed": len(report.failed), "seconds": round(report.seconds, 3)}

    # -- helpers ---------------------------------------------------------------------------------
    def instance(self, request: Request) -> Instance:
        p = request.path_params
        found = self.catalogue.get(p["study"], p["series"], p["sop"])
        if found is None:
            raise NotFoundError("no such instance in this study and series")
        return found

    def members(self, study: str | None = None, series: str | None = None) -> list[Instance]:
        pool = self.catalogue.instances() if series is None else self.catalogue.series(series)
        found = [i for i in pool if study is None or i.study == study]
        if study is not None and not found:
            raise NotFoundError("no such study" if series is None else "no such series in this study")
        return found

    def base(self, request: Request) -> str:
        """The DICOMweb root that URLs in answers (RetrieveURL, BulkDataURI) start with:
        `public_url` where set (behind a proxy), else where the request came."""
        if self.public_url:
            return self.public_url + "/dicomweb"
        url = request.base_url
        server = request.scope.get("server")
        # Some clients (dicomweb-client) send Host without the port; where that host is
        # this socket's own address, the request came straight here, on this port.
        if url.port is None and server and url.hostname == server[0] and server[1] not in (80, 443):
            url = url.replace(port=server[1])
        return str(url).rstrip("/") + "/dicomweb"

    # -- QIDO-RS -----------------------------------------------------------------------------------
    def search(self, request: Request, rows: list[dict[str, Any]], fields: tuple[str, ...],
               url: Any) -> Response:
        query: dict[str, str] = {}
        ignored: list[str] = []
        limit, offset = None, 0
        for key, value in request.query_params.multi_items():
            if key == "limit":
                limit = _count(key, value)
            elif key == "offset":
                offset = _count(key, value)
            elif key in ("includefield", "fuzzymatching"):
                continue  # every attribute kept is returned anyway; matching is exact or wildcards
            else:
                keyword = dicom_json.keyword_of(key)
                if keyword is None or keyword not in fields:
                    ignored.append(key)
                else:
                    query[keyword] = value
        found = sorted(dicom_json.select(rows, query), key=lambda r: tuple(str(r.get(f, "")) for f in fields[:3]))
        found = found[offset:] if limit is None else found[offset : offset + limit]
        body = []
        for row in found:
            obj = dicom_json.dataset({k: row.get(k) for k in fields})
            retrieve = url(row)
            if retrieve is not None:
                obj.update([dicom_json.element("RetrieveURL", retrieve)])
            body.append(obj)
        headers = {}
        if ignored:  # names as given, but printable ASCII only (a header cannot carry line breaks)
            names = ", ".join(re.sub(r'[^\x20-\x7e]|"', "?", key)[:64] for key in ignored[:20])
            headers["Warning"] = f'299 dicomframes "the following parameters are not supported: {names}"'
        return JSONResponse(body, media_type=DICOM_JSON, headers=headers)

    def studies(self, request: Request) -> Response:
        base = self.base(request)
        return self.search(request, dicom_json.studies(self.members()), dicom_json.STUDY,
                           lambda r: f"{base}/studies/{r['StudyInstanceUID']}")

    def series(self, request: Request) -> Response:
        base = self.base(request)
        members = self.members(request.path_params.get("study"))
        return self.search(request, dicom_json.series(members), dicom_json.SERIES,
                           lambda r: f"{base}/studies/{r['StudyInstanceUID']}/series/{r['SeriesInstanceUID']}")

    def instances(self, request: Request) -> Response:
        base = self.base(request)
        p = request.path_params
        members = self.members(p.get("study"), p.get("series"))
        return self.search(
            request, dicom_json.instance_rows(members), dicom_json.INSTANCE,
            lambda r: f"{base}/studies/{r['StudyInstanceUID']}/series/{r['SeriesInstanceUID']}"
                      f"/instances/{r['SOPInstanceUID']}")

    # -- WADO-RS -----------------------------------------------------------------------------------
    def _metadata(self, request: Request, inst: Instance) -> bytes:
        """The instance's DICOM JSON, kept in the cache: the header is parsed once, not per request."""
        url = f"{self.base(request)}/studies/{inst.study}/series/{inst.series}/instances/{inst.sop}"
        key = ("metadata", url)  # the URL carries the host the client used, which the BulkDataURI names
        body = self.cache.get(key)
        if body is None:
            with self.readers.reader(inst) as reader:
                body = json.dumps(dicom_json.metadata(reader.dataset(), url, inst.transfer_syntax)).encode()
            self.cache.put_encoded(key, body)
        return bytes(body)

    def instance_metadata(self, request: Request) -> Response:
        inst = self.instance(request)
        return _cached(request, lambda: b"[" + self._metadata(request, inst) + b"]", DICOM_JSON, f"metadata {inst.sop}")

    def series_metadata(self, request: Request) -> Response:
        p = request.path_params
        members = sorted(self.members(p["study"], p["series"]), key=lambda i: i.sop)
        return _cached(request, lambda: b"[" + b",".join(self._metadata(request, inst) for inst in members) + b"]",
                       DICOM_JSON, "metadata " + " ".join(i.sop for i in members))

    def frames(self, request: Request) -> Response:
        inst = self.instance(request)
        numbers = _frame_numbers(request.path_params["frames"], self.max_frames)
        count = int(inst.attributes.get("NumberOfFrames") or 1)
        beyond = [n for n in numbers if n > count]
        if beyond:
            raise NotFoundError(f"the instance has {count} frames, not frame {beyond[0]}")
        media = frame_media(request.headers.get("accept"), inst.transfer_syntax)
        if media is None:
            raise NotAcceptableError("frames of this instance are available as: " + ", ".join(available(inst.transfer_syntax)))
        # Weak: the frames are the same, the multipart boundary of each answer is not.
        tag = "W/" + _etag(inst.sop, ",".join(map(str, numbers)), media.content_type)
        if _fresh(request, tag):
            return Response(status_code=304, headers={"ETag": tag, "Cache-Control": IMMUTABLE})
        with self.readers.reader(inst) as reader:
            parts = self._frame_parts(reader, media, [n - 1 for n in numbers])
        boundary = secrets.token_hex(16)
        body = b"".join(
            b"--" + boundary.encode() + b"\r\nContent-Type: " + media.content_type.encode() + b"\r\n\r\n" + part + b"\r\n"
            for part in parts
        ) + b"--" + boundary.encode() + b"--\r\n"
        return Response(body, headers={
            "Content-Type": f'multipart/related; type="{media.part_type}"; boundary={boundary}',
            "ETag": tag, "Cache-Control": IMMUTABLE,
        })

    def instance_file(self, request: Request) -> Response:
        """The whole instance as stored, streamed from storage a MiB at a time: as
        multipart/related; type="application/dicom" (PS3.18), or as one application/dicom
        body where that is what the client asks for, which answers single byte ranges (206)."""
        inst = self.instance(request)
        accept = request.headers.get("accept")
        how = instance_media(accept, inst.transfer_syntax)
        if how is None:
            media = frame_media(accept, inst.transfer_syntax)
            if media is not None:  # the instance's bulk data, which its metadata's Pixel Data BulkDataURI names
                return self._pixel_data(inst, media)
            raise NotAcceptableError('instances are available as: multipart/related; type="application/dicom" or '
                                     f"application/dicom, in their stored transfer syntax {inst.transfer_syntax}; "
                                     "their frames as: " + ", ".join(available(inst.transfer_syntax)))
        with self.readers.reader(inst) as reader:
            size = reader.source.find_size() or 0
        if how == "multipart":
            boundary = secrets.token_hex(16)
            head = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            tail = f"\r\n--{boundary}--\r\n".encode()
            return StreamingResponse(self._file_bytes(inst, 0, size, head, tail), headers={
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                "Content-Length": str(len(head) + size + len(tail)), "Cache-Control": IMMUTABLE,
            })
        tag = _etag("instance", inst.sop, str(size))
        headers = {"Content-Type": "application/dicom", "Accept-Ranges": "bytes", "ETag": tag,
                   "Cache-Control": IMMUTABLE}
        if _fresh(request, tag):
            return Response(status_code=304, headers=headers)
        if_range = request.headers.get("if-range")
        try:
            wanted = byte_range(request.headers.get("range"), size) if if_range in (None, tag) else None
        except ValueError:
            return Response(status_code=416, headers={"Content-Range": f"bytes */{size}", **headers})
        start, end = wanted or (0, size)
        headers["Content-Length"] = str(end - start)
        if wanted is not None:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        return StreamingResponse(self._file_bytes(inst, start, end), status_code=206 if wanted else 200,
                                 headers=headers)

    def _pixel_data(self, inst: Instance, media: FrameMedia) -> Response:
        """Every frame of the instance, one part each (PS3.18 bulk data of Pixel Data),
        streamed a few frames at a time: memory holds a batch, not the pixel data."""
        count = int(inst.attributes.get("NumberOfFrames") or 1)
        boundary = secrets.token_hex(16).encode()
        head = b"--" + boundary + b"\r\nContent-Type: " + media.content_type.encode() + b"\r\n\r\n"

        def parts() -> Iterator[bytes]:
            with self.readers.reader(inst) as reader:
                for start in range(0, count, 16):
                    for frame in self._frame_parts(reader, media, range(start, min(count, start + 16))):
                        yield head + frame + b"\r\n"
            yield b"--" + boundary + b"--\r\n"

        return StreamingResponse(parts(), headers={
            "Content-Type": f'multipart/related; type="{media.part_type}"; boundary={boundary.decode()}',
            "Cache-Control": IMMUTABLE,
        })

    def _frame_parts(self, reader: Any, media: FrameMedia, indices: Sequence[int]) -> list[bytes]:
        """The bytes of frames `indices` as `media` says: as stored, or decoded (a turn to decode taken).
        Frames of one bit a pixel are sent each packed from its own first byte, as stored they need not be."""
        fmt = reader.format
        if media.as_stored and (fmt.ts.encapsulated or fmt.bits_allocated != 1):
            return reader.encoded_frames(indices)
        with self.decoding():
            return [_frame_bytes(reader, i) for i in indices]

    def _file_bytes(self, inst: Instance, start: int, end: int, head: bytes = b"",
                    tail: bytes = b"") -> Iterator[bytes]:
        """Bytes `start` to `end` of the instance's file between `head` and `tail`,
        read a MiB at a time with the reader taken while the body is sent."""
        with self.readers.reader(inst) as reader:
            source = reader.source
            if head:
                yield head
            step = 1 << 20
            for offset in range(start, end, step):
                yield source.read(offset, min(step, end - offset))
            if tail:
                yield tail

    def rendered(self, request: Request) -> Response:
        """A frame as a picture (PS3.18 rendered resources): JPEG or PNG by Accept."""
        inst = self.instance(request)
        text = request.path_params.get("frames", "1")
        numbers = _frame_numbers(text, 1)
        count = int(inst.attributes.get("NumberOfFrames") or 1)
        if numbers[0] > count:
            raise NotFoundError(f"the instance has {count} frames, not frame {numbers[0]}")
        fmt = images.choose(request.headers.get("accept"))
        if fmt is None:
            raise NotAcceptableError("rendered frames are available as image/jpeg and image/png")
        tag = _etag("rendered", inst.sop, str(numbers[0]), fmt)
        if _fresh(request, tag):
            return Response(status_code=304, headers={"ETag": tag, "Cache-Control": IMMUTABLE})
        def make() -> bytes:
            with self.readers.reader(inst) as reader, self.decoding():
                i = numbers[0] - 1
                return images.encode(images.to_8bit(reader, i, reader.frame(i)), fmt)

        body = self.made_once(("rendered", inst.sop, numbers[0], fmt), make)
        return Response(body, media_type=images.MEDIA[fmt], headers={"ETag": tag, "Cache-Control": IMMUTABLE})

    def _series(self, series: str) -> list[Instance]:
        members = self.catalogue.series(series)
        if not members:
            raise NotFoundError("no such series")
        return members

    @contextmanager
    def _slide(self, series: str) -> Iterator[Slide]:
        pool = self.slides.slide(series, self._series(series))
        try:
            slide = pool.__enter__()  # opens the series' readers the first time
        except SlideError as exc:
            raise NotFoundError(f"the series is not a whole-slide image: {exc.message}") from None
        try:
            yield slide
        finally:
            pool.__exit__(None, None, None)

    def dzi(self, request: Request) -> Response:
        series = request.path_params["series"]
        with self._slide(series) as slide:
            body = deepzoom.for_slide(slide, self.tile_format).descriptor()
        return Response(body, media_type="application/xml", headers={"Cache-Control": IMMUTABLE})

    def _dz_key(self, request: Request) -> tuple[tuple[Any, ...], str]:
        p = request.path_params
        if p["format"] != self.tile_format:
            raise NotFoundError(f"DeepZoom tiles here are .{self.tile_format}")
        key = ("deepzoom", p["series"], p["level"], p["col"], p["row"], self.tile_format)
        return key, _etag(*map(str, key))

    def dz_tile_at_hand(self, request: Request) -> Response | None:
        """The answer when no file need be touched (a 304, a tile in the cache), else None.
        Run on the event loop: it only looks things up in memory."""
        key, tag = self._dz_key(request)
        if _fresh(request, tag):
            return Response(status_code=304, headers={"ETag": tag, "Cache-Control": IMMUTABLE})
        body = self.cache.get(key)
        if body is None:
            return None
        return Response(body, media_type=images.MEDIA[self.tile_format], headers={"ETag": tag, "Cache-Control": IMMUTABLE})

    def dz_tile(self, request: Request) -> Response:
        """A tile that `dz_tile_at_hand` (tried first, on the event loop) did not have."""
        key, tag = self._dz_key(request)
        p = request.path_params
        series, level, col, row = p["series"], p["level"], p["col"], p["row"]
        def make() -> bytes:
            with self._slide(series) as slide:
                dz = deepzoom.for_slide(slide, self.tile_format)
                stored = deepzoom.stored_tile(slide, dz, level, col, row)
                if stored is not None:
                    return stored
                with self.decoding():
                    return images.encode(deepzoom.made_tile(slide, dz, level, col, row), dz.format)

        body = self.made_once(key, make)
        return Response(body, media_type=images.MEDIA[self.tile_format],
                        headers={"ETag": tag, "Cache-Control": IMMUTABLE})

    # -- pages -------------------------------------------------------------------------------------
    def index(self, request: Request) -> Response:
        return HTMLResponse(pages.index(self.catalogue.instances()))

    def view(self, request: Request) -> Response:
        series = request.path_params["series"]
        self._series(series)
        return HTMLResponse(pages.viewer(series))

    def script(self, request: Request) -> Response:
        return Response(pages.viewer_script(), media_type="text/javascript", headers={"Cache-Control": "no-cache"})

    # -- operations ----------------------------------------------------------------------------------
    def admin_rescan(self, request: Request) -> Response:
        # Behind a token only its holders get here; without one, only this machine may ask.
        if not self.token_required and (request.client is None or request.client.host not in ("127.0.0.1", "::1")):
            return Response("rescans are asked for from this machine, or with --token\n", status_code=403,
                            media_type="text/plain")
        return JSONResponse(self.rescan())

    def ready(self, request: Request) -> Response:
        """For a load balancer: 200 once the catalogue is scanned."""
        return JSONResponse({"ready": True, "instances": len(self.catalogue)})

    def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "pid": os.getpid(), "instances": len(self.catalogue), "open_readers": len(self.readers),
                             "open_slides": len(self.slides), "cache": self.cache.stats(),
                             "skipped": self.catalogue.report.skipped, "failed": len(self.catalogue.report.failed)})


# -- request parts ---------------------------------------------------------------------------------
def _count(key: str, value: str) -> int:
    if not value.isdigit():
        raise RequestError(f"{key} must be a whole number, not {value!r}")
    return int(value)


def _frame_numbers(text: str, most: int) -> list[int]:
    """Frame numbers of a WADO-RS frame list ("1,5,9": 1-based, PS3.18 10.4.1.1.4)."""
    items = text.split(",")
    if len(items) > most:
        raise RequestError(f"at most {most} frames per request, not {len(items)}")
    numbers = []
    for item in items:
        if not item.strip().isdigit():
            raise RequestError(f"frame numbers are whole numbers from 1, not {item!r}")
        n = int(item)
        if n < 1:
            raise RequestError("frame numbers start at 1")
        numbers.append(n)
    return numbers


def _frame_bytes(reader: Any, i: int) -> bytes:
    """Frame `i` decoded, as uncompressed little-endian bytes (one bit a pixel packed, as stored)."""
    frame = reader.frame(i)
    if reader.format.bits_allocated == 1:
        return np.packbits(frame.ravel(), bitorder="little").tobytes()
    return np.ascontiguousarray(frame, dtype=frame.dtype.newbyteorder("<")).tobytes()


def _etag(*parts: str) -> str:
    return '"' + hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:32] + '"'


def _fresh(request: Request, tag: str) -> bool:
    wanted = request.headers.get("if-none-match")
    if not wanted:
        return False
    return wanted.strip() == "*" or any(hmac.compare_digest(t.strip(), tag) for t in wanted.split(","))


def _cached(request: Request, body: Callable[[], bytes], media_type: str, what: str) -> Response:
    """`body()` with an ETag naming `what`; a 304 (and no body made) where the client has it."""
    tag = _etag(what)
    if _fresh(request, tag):
        return Response(status_code=304, headers={"ETag": tag})
    return Response(body(), media_type=media_type, headers={"ETag": tag})


def _rescan_every(server: Server, seconds: float) -> None:
    """A daemon thread scanning again every `seconds` until the server closes
    (a failed scan is logged; the old catalogue stays)."""
    def loop() -> None:
        while not server.closed.wait(seconds):
            try:
                server.rescan()
            except Exception:  # a listing that failed now may work next time
                log.exception("rescan failed")

    threading.Thread(target=loop, name="dicomframes-rescan", daemon=True).start()


def _closing(server: Server):
    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        yield
        server.close()

    return lifespan


# -- the app ---------------------------------------------------------------------------------------
def _handler(server: Server, name: str):
    method = getattr(server, name)
    at_hand = getattr(server, f"{name}_at_hand", None)

    async def endpoint(request: Request) -> Response:
        # What memory answers is answered on the event loop; the rest on Starlette's
        # thread pool (its limiter bounds the threads), where waiting on storage is fine.
        if at_hand is not None:
            answer = _answer(request, at_hand)
            if answer is not None:
                return answer
        answer = await run_in_threadpool(_answer, request, method)
        assert answer is not None  # the handlers themselves always answer
        return answer

    endpoint.__name__ = name
    return endpoint


def _answer(request: Request, method: Any) -> Response | None:
    try:
        return method(request)
    except RequestError as exc:  # the client's error: its status, no log line
        headers = {"Retry-After": "1"} if exc.status == 503 else None
        return Response(exc.message + "\n", status_code=exc.status, media_type="text/plain", headers=headers)
    except StorageError as exc:
        log.warning("%s: %s", request.url.path, exc)
        return Response(f"the file could not be read: {exc.message}\n", status_code=502, media_type="text/plain")
    except DicomFramesError as exc:
        log.warning("%s: %s", request.url.path, exc)
        return Response(f"the file is damaged: {exc}\n", status_code=500, media_type="text/plain")


def create_app(roots: Any, *, storage_options: dict[str, Any] | None = None, max_open: int = 64,
               max_slides: int = 8, cache_mb: float = 64, max_frames: int = 512, max_decodes: int | None = None,
               queue_seconds: float = 5.0, tile_format: str = "jpeg", token: str | None = None,
               cors_origins: list[str] | None = None, catalogue: Catalogue | None = None,
               rescan_seconds: float | None = None, public_url: str | None = None,
               access_log: str = "text") -> Starlette:
    """The ASGI app serving the DICOM files under `roots` (folders, URL prefixes,
    files; scanned now unless a scanned `catalogue` is given).

    `max_open` readers and `max_slides` whole-slide series stay open at most
    (least recently used closed); up to `cache_mb` MB of rendered frames and
    DeepZoom tiles are kept; a request asks for at most `max_frames` frames;
    at most `max_decodes` requests decode at once (default: the cores), a
    request that waits `queue_seconds` for its turn gets 503 with Retry-After;
    DeepZoom tiles are `tile_format` ("jpeg" or "png"); `token` (if given)
    must come as ``Authorization: Bearer <token>``; `cors_origins` may call
    it from other origins (a viewer served elsewhere); every
    `rescan_seconds` (if given) the roots are scanned again, as
    ``POST /admin/rescan`` does on demand. URLs in answers start with
    `public_url` (say ``https://slides.example.org``, behind a proxy) where
    given, else with the address the request came to. `access_log="json"` logs
    each request as one JSON line on the ``dicomframes.access`` logger (stderr
    unless it has handlers), for log pipelines; "text" leaves it to uvicorn.
    """
    if tile_format not in images.MEDIA:
        raise ValueError(f"tile_format must be one of {sorted(images.MEDIA)}, not {tile_format!r}")
    if access_log not in ("text", "json"):
        raise ValueError(f"access_log must be 'text' or 'json', not {access_log!r}")
    if catalogue is None:
        catalogue = Catalogue(roots if isinstance(roots, (list, tuple)) else [roots], storage_options)
        catalogue.scan()
    server = Server(catalogue, ReaderPool(max_open, storage_options), SlidePool(max_slides, storage_options),
                    FrameCache(int(cache_mb * 1e6), second_chance=False), max_frames, max_decodes or os.cpu_count() or 2,
                    queue_seconds, tile_format)
    server.token_required = bool(token)
    server.public_url = (public_url or "").rstrip("/")
    if rescan_seconds:
        _rescan_every(server, rescan_seconds)
    study, series, sop = "{study}", "{series}", "{sop}"
    prefix = "/dicomweb"
    routes = [
        Route("/", _handler(server, "index")),
        Route("/view/{series}", _handler(server, "view")),
        Route("/static/viewer.js", _handler(server, "script")),
        Route("/health", _handler(server, "health")),
        Route("/ready", _handler(server, "ready")),
        Route("/admin/rescan", _handler(server, "admin_rescan"), methods=["POST"]),
        Route(f"{prefix}/studies", _handler(server, "studies")),
        Route(f"{prefix}/series", _handler(server, "series")),
        Route(f"{prefix}/instances", _handler(server, "instances")),
        Route(f"{prefix}/studies/{study}/series", _handler(server, "series")),
        Route(f"{prefix}/studies/{study}/instances", _handler(server, "instances")),
        Route(f"{prefix}/studies/{study}/series/{series}/instances", _handler(server, "instances")),
        Route(f"{prefix}/studies/{study}/series/{series}/metadata", _handler(server, "series_metadata")),
        Route(f"{prefix}/studies/{study}/series/{series}/instances/{sop}", _handler(server, "instance_file")),
        Route(f"{prefix}/studies/{study}/series/{series}/instances/{sop}/metadata",
              _handler(server, "instance_metadata")),
        Route(f"{prefix}/studies/{study}/series/{series}/instances/{sop}/frames/{{frames}}",
              _handler(server, "frames")),
        Route(f"{prefix}/studies/{study}/series/{series}/instances/{sop}/frames/{{frames}}/rendered",
              _handler(server, "rendered")),
        Route(f"{prefix}/studies/{study}/series/{series}/instances/{sop}/rendered", _handler(server, "rendered")),
        Route("/deepzoom/{series}.dzi", _handler(server, "dzi")),
        Route("/deepzoom/{series}_files/{level:int}/{col:int}_{row:int}.{format}", _handler(server, "dz_tile")),
    ]
    middleware = []
    if cors_origins:
        middleware.append(Middleware(CORSMiddleware, allow_origins=cors_origins, allow_methods=["GET", "HEAD"],
                                     allow_headers=["Accept", "Authorization", "If-None-Match", "Range", "If-Range"],
                                     expose_headers=["ETag", "Warning", "Content-Range", "Accept-Ranges"]))
    app = Starlette(routes=routes, middleware=middleware, lifespan=_closing(server))
    app.state.server = server
    outer: Any = app
    if token:
        outer = Token(outer, token)
        hide_token(logging.getLogger("uvicorn.access"))
    if access_log == "json":
        outer = AccessLog(outer)
    outer.state = app.state
    return outer


_M_MMAP_THRESHOLD, _M_ARENA_MAX = -3, -8  # glibc's mallopt parameters


def limit_heap(arenas: int = 2, mmap_threshold: int = 1 << 20) -> None:
    """Keep glibc's heap from holding what requests freed, in a server process of our own.

    By default each request thread gets a malloc arena of its own (up to 8 per
    core), and glibc raises its mmap threshold after each large block freed, so
    the regions that resampled tiles are made from end up in the arenas and
    stay there: 16 clients asking for resampled tiles measured 400 MB of RSS.
    With 2 arenas and blocks of 1 MiB and more always mapped (and unmapped when
    freed), the same load peaks near 100 MB. Called by `dicomframes serve` only,
    never where the app is mounted in a process of someone else's.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return
    mallopt(_M_ARENA_MAX, arenas)
    mallopt(_M_MMAP_THRESHOLD, mmap_threshold)  # a fixed threshold: glibc no longer raises it


#: where `dicomframes serve --workers N` leaves its settings for the server processes
SETTINGS_ENV = "DICOMFRAMES_SERVE_SETTINGS"


def from_environment() -> Starlette:
    """The app of one of the processes of ``dicomframes serve --workers N``
    (uvicorn's factory): the settings, scanned catalogue included, come from
    the private file the parent wrote, so the processes do not scan again."""
    with open(os.environ[SETTINGS_ENV], "rb") as f:
        settings = pickle.load(f)  # written by our own parent, in a folder only it can write
    limit_heap()
    return create_app(**settings)
