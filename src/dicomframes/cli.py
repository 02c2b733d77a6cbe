"""The ``dicomframes`` command: ``info``, ``frames``, ``export``, ``decompress``, ``add-offset-table`` and ``sample``.

Exit codes (docs/cli.md): 0 success, 1 an error (the file, the storage, the
destination), 2 a usage error (bad options, no command), 3 ``info`` found an
incomplete file, 130 interrupted (Ctrl-C), 141 standard output closed early
(``| head``), as for a command killed by SIGPIPE. Every error is one line on
stderr; no input ends in a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from typing import Any

from dicomframes.errors import (
    DestinationError,
    DestinationExistsError,
    DicomFramesError,
    FrameIndexError,
    MissingDependencyError,
    TruncatedFileError,
)
from dicomframes.progress import ProgressBar

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INCOMPLETE = 3
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for `yes | head -1`

#: schemes whose fsspec filesystems take ``endpoint_url=`` (s3fs, gcsfs)
_ENDPOINT_SCHEMES = ("s3", "s3a", "gs", "gcs")


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors on one line (and a pointer to --help)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)\n")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown on every option; None defaults described in words in the help itself."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default is None and "default" in text:
            return text
        return super()._get_help_string(action)


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _error(message: object) -> None:
    print(f"dicomframes: error: {_one_line(message)}", file=sys.stderr)


def _usage_error(args, message: str) -> None:
    """Exit 2 with `message` on one line, as argparse does for the options it checks itself."""
    args.parser.error(message)


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


def _peak_rss_mb() -> float | None:
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 1024 / 1024


# -- argument types ------------------------------------------------------------------------------------


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def _storage_option(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"{text!r} is not key=value (for example -o anon=true)")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key, value


def decoder_names() -> list[str]:
    """The decoder backends `--decoder` accepts: those registered for a compressed syntax."""
    from dicomframes._dicom.syntaxes import SYNTAXES
    from dicomframes.frames import codecs

    names: set[str] = set()
    for ts in SYNTAXES.values():
        if ts.encapsulated and not codecs.family_for(ts).pixel_bytes:
            names.update(b.name for b in codecs.backends_for(ts))
    return sorted(names)


# -- opening -------------------------------------------------------------------------------------------


def _storage_options(args, url: str) -> dict[str, Any]:
    """The fsspec options (and the source's time budget per read) the storage flags ask for, for `url`."""
    options: dict[str, Any] = dict(getattr(args, "storage_options", None) or [])
    if getattr(args, "anon", False):
        options["anon"] = True
    endpoint = getattr(args, "endpoint_url", None)
    if endpoint:
        scheme = url.split("://", 1)[0].lower()
        if scheme not in _ENDPOINT_SCHEMES:
            _usage_error(
                args, f"--endpoint-url applies to s3:// and gs:// URLs, not {scheme}:// (pass other options with -o key=value)"
            )
        options["endpoint_url"] = endpoint
    if getattr(args, "timeout", None) is not None:
        options["timeout"] = args.timeout
    headers = _headers(args)
    if headers:
        if not url.lower().startswith(("http://", "https://")):
            _usage_error(args, "--header applies to http:// and https:// URLs (for buckets pass -o key=value)")
        options["headers"] = {**options.get("headers", {}), **headers}
    return options


def _check_local_input(path: str) -> None:
    """A directory or a missing file, said plainly before opening."""
    from dicomframes.io.resolve import is_url, local_path

    if is_url(path):
        return
    local = local_path(path)
    if os.path.isdir(local):
        raise DicomFramesError(
            "is a directory, not a DICOM file", path=path,
            hint="give one file; for a whole-slide folder use dicomframes.open_slide(path) in Python",
        )


def _open(args, path: str):
    from dicomframes.io.resolve import is_url
    from dicomframes.reader import open as open_reader
    from dicomframes.web.client import instance_url, open_url

    _check_local_input(path)
    if instance_url(path) is not None:  # a DICOMweb instance: its metadata, then frames by WADO-RS
        timeout = getattr(args, "timeout", None)
        return open_url(path, _headers(args) or None, decoder=getattr(args, "decoder", None),
                        **({"timeout": timeout} if timeout is not None else {}))
    options = _storage_options(args, path) if is_url(path) else {}
    return open_reader(path, decoder=getattr(args, "decoder", None), **options)


def _headers(args) -> dict[str, str]:
    """The ``--header "Name: value"`` flags as a dict."""
    out: dict[str, str] = {}
    for given in getattr(args, "headers", None) or []:
        name, sep, value = given.partition(":")
        if not sep or not name.strip():
            _usage_error(args, f'--header takes "Name: value", not {given!r}')
        out[name.strip()] = value.strip()
    return out


def _show_progress(args) -> bool:
    if getattr(args, "quiet", False):
        return False
    progress = getattr(args, "progress", None)
    return progress if progress is not None else sys.stderr.isatty()


def _decoder_name(reader) -> str:
    """The decoder backend's name, "none (native)" for native data."""
    try:
        backend = reader.backend
    except DicomFramesError as exc:
        return f"none installed ({_one_line(exc.hint or exc.message)})"
    return "none (native)" if backend is None else backend.name


# -- info ----------------------------------------------------------------------------------------------


def _completeness(reader) -> tuple[bool | None, str]:
    """Whether the file holds all of its last frame, and in words why (or why not)."""
    n = len(reader)
    if n == 0:
        return True, "yes"
    if reader.info.index_kind == "dicomweb":
        return None, "unknown (a DICOMweb service holds the frames; each is checked when it is read)"
    try:
        span = reader.index.span(n - 1)
    except (TruncatedFileError, FrameIndexError) as exc:
        return False, f"no (the last frame cannot be located: {_one_line(exc.message)})"
    end = span.offset + span.length
    size = reader.data_source.size
    if size is None:
        return None, "unknown (the file's size is not known yet)"
    if end > size:
        return False, f"no (the file ends at {size:,}, the last frame needs {end:,})"
    return True, "yes"


def _int_or_none(value: Any) -> int | None:
    value = value[0] if isinstance(value, list) and value else value
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _image_type(value: Any) -> list[str] | None:
    """Image Type as a list of its values (a single value, or a backslash-joined string, split)."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return str(value).split("\\")


def _whole_slide(reader) -> dict[str, Any] | None:
    """The tiled image's matrix, tile grid, organisation, image type and pixel spacing; None if not tiled.

    What the geometry cannot tell (a damaged or inconsistent header) is null, with the reason in
    ``geometry_error``: `info` reports what is known and does not fail on it.
    """
    header = reader.header
    if header.get("TotalPixelMatrixColumns") is None:
        return None
    width = _int_or_none(header.get("TotalPixelMatrixColumns"))
    height = _int_or_none(header.get("TotalPixelMatrixRows"))
    out: dict[str, Any] = {
        "total_pixel_matrix": [width, height] if width is not None and height is not None else None,
        "tile_grid": None,
        "organization": None,
        "image_type": _image_type(header.get("ImageType")),
        "pixel_spacing": None,
        "geometry_error": None,
    }
    try:
        geometry = reader.tile_geometry
    except DicomFramesError as exc:
        out["geometry_error"] = _one_line(exc.message)
        return out
    out["total_pixel_matrix"] = [geometry.width, geometry.height]
    out["tile_grid"] = [geometry.tiles_across, geometry.tiles_down]
    out["organization"] = geometry.organization
    try:
        spacing = geometry.pixel_spacing
    except DicomFramesError as exc:
        out["geometry_error"] = f"pixel spacing: {_one_line(exc.message)}"
    else:
        out["pixel_spacing"] = [float(v) for v in spacing] if spacing is not None else None
    return out


def _info_text(key: str, value: Any) -> str:
    """The text form of the fields that `info` adds to `ImageInfo`'s."""
    if key == "file_size":
        return "unknown" if value is None else _plural(value, "byte")
    if key == "lossy":
        return "yes" if value else "no"
    if key in ("total_pixel_matrix", "tile_grid"):
        if value is None:
            return "unknown"
        return f"{value[0]:,} x {value[1]:,}" + (" tiles (across x down)" if key == "tile_grid" else " pixels")
    if key == "pixel_spacing":
        return "unknown" if value is None else f"{value[0]:g} x {value[1]:g} mm (row x column)"
    if key == "image_type":
        return "unknown" if value is None else "\\".join(value)
    if value is None and key in ("modality", "organization"):
        return "unknown"
    return str(value)


def _info_one(args, path: str) -> tuple[dict[str, Any], bool | None, str]:
    with _open(args, path) as reader:
        info = reader.info.as_dict()
        info["modality"] = reader.header.get("Modality")
        info["file_size"] = None if reader.info.index_kind == "dicomweb" else reader.source.size
        info["lossy"] = bool(reader.header.transfer_syntax.lossy)
        info["whole_slide"] = _whole_slide(reader)
        if args.walk and reader.info.index_kind == "walked":
            info["fragments"] = reader.index.walk_all()
        complete, words = _completeness(reader)
        info["complete"] = complete
        info["decoder"] = _decoder_name(reader)
    return info, complete, words


def cmd_info(args) -> int:
    results: list[dict[str, Any]] = []
    code = EXIT_OK
    for k, path in enumerate(args.paths):
        try:
            info, complete, words = _info_one(args, path)
        except DicomFramesError as exc:
            _error(exc)
            code = EXIT_ERROR
            results.append({"path": path, "error": _one_line(exc)})
            continue
        if complete is False and code == EXIT_OK:
            code = EXIT_INCOMPLETE
        results.append(info)
        if not args.json:
            if k:
                print()
            shown: dict[str, Any] = {}
            for key, value in info.items():
                if key == "whole_slide":  # its fields on lines of their own, where it is there
                    for sub, item in (value or {}).items():
                        if sub != "geometry_error" or item is not None:
                            shown[sub] = _info_text(sub, item)
                elif key != "complete":
                    shown[key] = _info_text(key, value)
            shown["complete"] = words
            width = max(map(len, shown))
            for key, value in shown.items():
                print(f"{key:<{width}}  {value}")
    if args.json:
        out = results[0] if len(args.paths) == 1 else results
        if len(args.paths) > 1 or "error" not in out:
            print(json.dumps(out, indent=2, default=str))
    return code


# -- frames --------------------------------------------------------------------------------------------


def cmd_frames(args) -> int:
    from dicomframes.io.local import LocalFileSource

    start = time.perf_counter()
    count = 0
    show = _show_progress(args)
    with _open(args, args.path) as reader:
        total = len(reader) if args.limit is None else min(args.limit, len(reader))
        bar = ProgressBar(total, label="frames", unit="frame") if show else None
        try:
            for _frame in reader.iter_frames(range(total), workers=args.workers):
                count += 1
                if bar is not None:
                    bar.update(count)
        except DicomFramesError as exc:
            if bar is not None:
                bar.close()
            _error(f"{exc}; {count:,} of {_plural(total, 'frame')} decoded before the error")
            return EXIT_ERROR
        if bar is not None:
            bar.close()
        seconds = time.perf_counter() - start
        stats = reader.stats
        local = isinstance(reader.source, LocalFileSource)
        decoder = _decoder_name(reader) if count else (
            "none (native)" if not reader.format.ts.encapsulated else "none (no frame decoded)"
        )
    peak = _peak_rss_mb()
    result = {
        "frames": count,
        "seconds": round(seconds, 3),
        "frames_per_second": round(count / seconds, 1) if seconds else None,
        "peak_rss_mb": round(peak, 1) if peak is not None else None,
        "requests": stats["requests"],
        "bytes_read": stats["bytes"],
        "decoder": decoder,
    }
    if args.json:
        print(json.dumps(result))
    else:
        reads = _plural(int(stats["requests"]), "read" if local else "request")
        print(
            f"{_plural(count, 'frame')} in {seconds:.2f} s ({result['frames_per_second']} frames/s), "
            f"decoder {decoder}, peak RSS {result['peak_rss_mb']} MB, {reads}, "
            f"{_plural(int(stats['bytes']), 'byte')} read"
        )
    return EXIT_OK


# -- index ---------------------------------------------------------------------------------------------


def cmd_index(args) -> int:
    """Locate every frame (and parse whole-slide tile positions) and keep them in an index file."""
    from dicomframes.frames.index_cache import IndexCache
    from dicomframes.io.resolve import is_url
    from dicomframes.reader import open as open_reader

    _check_local_input(args.path)
    options = _storage_options(args, args.path) if is_url(args.path) else {}
    start = time.perf_counter()
    with open_reader(args.path, index_cache=False, **options) as reader:
        n = len(reader)
        bar = ProgressBar(n, label="index", unit="frame") if _show_progress(args) else None
        try:
            step = max(1, n // 200)
            for i in range(0, n, step):
                reader.index.span(i)
                if bar is not None:
                    bar.update(i + 1)
            reader.locate_all()
            if bar is not None:
                bar.update(n)
        finally:
            if bar is not None:
                bar.close()
        geometry = None
        if reader.header.get("TotalPixelMatrixColumns") is not None:
            try:
                geometry = reader.tile_geometry
                geometry.positions()  # parses sparse positions; arithmetic for full tiling
            except DicomFramesError as exc:
                logging.getLogger("dicomframes").warning("%s: no tile positions kept: %s", args.path, exc.message)
        data = reader.keep_index()
        stats = reader.stats
        kind = reader.index.kind
        url = reader.source.name
        identity = reader.identity
    if args.out is not None:
        from dicomframes.transcode.destination import write_bytes

        written = write_bytes(args.out, data, overwrite=args.force)
    else:
        cache = IndexCache(args.cache) if args.cache else IndexCache()
        written = cache.store(url, identity, data)
        if written is None:
            raise DestinationError("cannot write the index cache entry", path=cache.location)
    seconds = time.perf_counter() - start
    result = {"index": written, "frames": n, "index_kind": kind, "bytes": len(data),
              "tile_positions": geometry is not None and bool(geometry.kept_positions()),
              "seconds": round(seconds, 3), "requests": stats["requests"], "bytes_read": stats["bytes"]}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{written}: {_plural(n, 'frame')} ({kind}), {_plural(len(data), 'byte')}, in {seconds:.2f} s, "
              f"{_plural(int(stats['requests']), 'request')}")
    return EXIT_OK


# -- sample --------------------------------------------------------------------------------------------


def cmd_sample(args) -> int:
    from dicomframes.io.resolve import is_url, local_path
    from dicomframes.samples import write_sample

    if is_url(args.out):
        _usage_error(args, f"sample writes a local file, not {args.out} (write it locally, then copy it)")
    path = local_path(args.out)
    if os.path.isdir(path):
        raise DestinationError("is a directory", path=args.out, hint="give a file name, e.g. sample.dcm inside it")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise DestinationError(f"the folder {folder} does not exist", path=args.out, hint="create it first")
    if os.path.lexists(path) and not args.force:
        raise DestinationExistsError("the destination exists", path=args.out, hint="pass --force to replace it")
    try:
        written = write_sample(
            path, frames=args.frames, rows=args.rows, columns=args.columns,
            samples_per_pixel=args.samples, syntax=args.syntax, offset_table=args.offset_table,
        )
    except ValueError as exc:
        print(f"dicomframes sample: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        raise DestinationError(f"cannot write: {exc.strerror or exc}", path=args.out) from exc
    print(written)
    return EXIT_OK


# -- decompress ----------------------------------------------------------------------------------------


def _transcode(args, label: str, write) -> int:
    """Run ``write(src, progress)`` for a command that copies SRC to DST (the
    storage flags apply to the source; the destination uses its own credentials)."""
    from dicomframes.io.resolve import is_url
    from dicomframes.transcode.decompress import ProgressDisplay

    src: Any = args.path
    _check_local_input(src)
    if is_url(src):
        from dicomframes.io.remote import FsspecSource

        src = FsspecSource(args.path, **_storage_options(args, args.path))
    display = ProgressDisplay(sys.stderr, label=label) if _show_progress(args) else None
    start = time.perf_counter()
    try:
        out = write(src, display)
    finally:
        if display is not None:
            display.close()
    if args.json:
        print(json.dumps({"output": out, "seconds": round(time.perf_counter() - start, 3)}))
    return EXIT_OK


def cmd_decompress(args) -> int:
    from dicomframes.transcode.decompress import decompress

    return _transcode(args, "decompress", lambda src, progress: decompress(
        src, args.out, as_rgb=not args.keep_ybr, generate_instance_uid=not args.keep_uid,
        workers=args.workers, overwrite=args.force, encapsulated=args.encapsulated,
        decoder=args.decoder, progress=progress,
    ))


# -- add-offset-table ----------------------------------------------------------------------------------


def cmd_add_offset_table(args) -> int:
    from dicomframes.transcode.offset_table import add_offset_table

    return _transcode(args, "add-offset-table",
                      lambda src, progress: add_offset_table(src, args.out, overwrite=args.force, progress=progress))


# -- export --------------------------------------------------------------------------------------------


def _frame_list(text: str) -> str:
    from dicomframes.transcode.export import parse_frame_list

    try:
        parse_frame_list(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _region(text: str) -> tuple[int, int, int, int]:
    fields = text.split(",")
    try:
        x, y, w, h = (int(f) for f in fields)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not X,Y,W,H (four integers, e.g. 0,0,512,512)") from None
    problems = [f"{name} must be at least {low}, not {v}"
                for name, v, low in (("X", x, 0), ("Y", y, 0), ("W", w, 1), ("H", h, 1)) if v < low]
    if problems:
        raise argparse.ArgumentTypeError(f"{text!r}: " + "; ".join(problems))
    return x, y, w, h


def cmd_serve(args) -> int:
    from dicomframes.io.resolve import is_url
    from dicomframes.server import INSTALL

    try:
        import uvicorn

        from dicomframes.server.app import create_app, limit_heap
        from dicomframes.server.catalogue import Catalogue
    except ImportError as exc:
        raise MissingDependencyError(f"serve needs {exc.name or 'the [server] extra'}", hint=INSTALL) from None
    urls = [r for r in args.roots if is_url(r)]
    options = _storage_options(args, urls[0]) if urls else {}
    catalogue = Catalogue(args.roots, options)
    bar = ProgressBar(label="scan", unit="file") if _show_progress(args) else None
    try:
        report = catalogue.scan(progress=bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    print(f"dicomframes: {report.instances} instances ({report.skipped} files not DICOM, {len(report.failed)} failed) "
          f"in {report.seconds:.1f} s", file=sys.stderr)
    if args.token:  # a browser signs in once by this link (then a cookie stands for the token)
        where = f"http://{args.host}:{args.port}" if args.port else "the address uvicorn names below"
        print(f"dicomframes: in a browser, open {where}/?token={args.token}", file=sys.stderr)
    settings = dict(roots=args.roots, storage_options=options, catalogue=catalogue, max_open=args.max_open,
                    max_slides=args.max_slides, cache_mb=args.cache_mb, max_decodes=args.max_decodes,
                    max_frames=args.max_frames, token=args.token, cors_origins=args.cors or None,
                    rescan_seconds=args.rescan, public_url=args.public_url, access_log=args.access_log)
    # JSON access lines come from our middleware; uvicorn's own would say it all twice.
    uvicorn_log = dict(log_level="info", access_log=args.access_log == "text")
    # uvicorn's own lines say where it listens (the port chosen, for --port 0) and log each request.
    if args.workers == 1:
        limit_heap()
        uvicorn.run(create_app(**settings), host=args.host, port=args.port, **uvicorn_log)
        return EXIT_OK
    # N processes of uvicorn's, each with its own readers and caches; the catalogue is scanned
    # once, here, and handed to them in a file only this user can read.
    import pickle
    import tempfile

    from dicomframes.server.app import SETTINGS_ENV

    with tempfile.TemporaryDirectory(prefix="dicomframes-serve-") as folder:
        path = os.path.join(folder, "settings.pickle")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            pickle.dump(settings, f)
        os.environ[SETTINGS_ENV] = path
        uvicorn.run("dicomframes.server.app:from_environment", factory=True, workers=args.workers,
                    host=args.host, port=args.port, **uvicorn_log)
    return EXIT_OK


def cmd_export(args) -> int:
    from dicomframes.io.resolve import is_url
    from dicomframes.transcode import export

    if is_url(args.out):
        _usage_error(args, f"export writes local files, not {args.out} (write them locally, then copy them)")
    if args.level is not None and args.region is None:
        _usage_error(args, "--level applies to --region only")
    from dicomframes.web.client import instance_url

    web = instance_url(args.path) is not None
    if web and (args.region is not None or args.thumbnail is not None):
        _usage_error(args, "a DICOMweb instance URL exports frames; for a slide's regions use "
                           "dicomframes.dicomweb(URL).open_slide(study, series) in Python")
    options = _storage_options(args, args.path) if is_url(args.path) and not web else {}
    start = time.perf_counter()
    try:
        if args.region is None and args.thumbnail is None:
            if not is_url(args.path) and os.path.isdir(args.path):
                raise DicomFramesError(
                    "is a directory, not a DICOM file", path=args.path,
                    hint="give one file; for a whole-slide folder use --region or --thumbnail",
                )
            # A DICOMweb instance is opened here (its headers, its service); anything else by export_frames.
            src = _open(args, args.path) if web else args.path
            opening = {} if web else dict(decoder=args.decoder, workers=args.workers, **options)
            bar = ProgressBar(label="export", unit="file") if _show_progress(args) else None
            try:
                with src if web else contextlib.nullcontext():
                    written = export.export_frames(
                        src, args.out, frames=args.frames, format=args.format, overwrite=args.force,
                        progress=bar.update if bar is not None else None, **opening,
                    )
            finally:
                if bar is not None:
                    bar.close()
        else:
            from dicomframes.wsi.slide import open_slide

            with open_slide(args.path, decoder=args.decoder, workers=args.workers, **options) as slide:
                if args.region is not None:
                    level = args.level or 0
                    if level >= slide.level_count:
                        _usage_error(args, f"--level {level} out of range: the slide has levels 0 to {slide.level_count - 1}")
                    x, y, w, h = args.region
                    written = [export.export_region(slide, args.out, (x, y), (w, h), level=level,
                                                    format=args.format, overwrite=args.force)]
                else:
                    written = [export.export_thumbnail(slide, args.out, args.thumbnail,
                                                       format=args.format, overwrite=args.force)]
    except DicomFramesError:
        raise
    except ValueError as exc:  # the frame list against the file, the destination's name
        _usage_error(args, str(exc))
    if args.json:
        print(json.dumps({"outputs": written, "seconds": round(time.perf_counter() - start, 3)}))
    else:
        for path in written:
            print(path)
    return EXIT_OK


# -- the parser ----------------------------------------------------------------------------------------


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dicomframes")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree without installing
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="dicomframes", formatter_class=_HelpFormatter,
        description="Stream the frames of multi-frame DICOM files.",
        epilog="Exit codes: 0 ok, 1 error, 2 usage error, 3 incomplete file (info). See docs/cli.md.",
    )
    parser.add_argument("--version", action="version", version=f"dicomframes {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    decoders = decoder_names()

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=0,
                        help="log what happens (retries, fallbacks) on stderr; -vv for more")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress display (overrides --progress)")

    storage = argparse.ArgumentParser(add_help=False)
    group = storage.add_argument_group("storage (URLs only; ignored for local paths)")
    group.add_argument("--anon", action="store_true", help="anonymous access to a public bucket")
    group.add_argument("--endpoint-url", metavar="URL", default=None,
                       help="an S3-compatible (or GCS) endpoint, e.g. http://localhost:9000 (default: the provider's)")
    group.add_argument("-o", "--storage-option", dest="storage_options", metavar="KEY=VALUE", action="append",
                       type=_storage_option, default=[],
                       help="an fsspec storage option (repeatable); VALUE is parsed as JSON where it parses, "
                            "else taken as a string")
    group.add_argument("--timeout", metavar="SECONDS", type=_seconds, default=None,
                       help="seconds one read may take in all, retries included (default: 30)")
    group.add_argument("--header", dest="headers", metavar='"NAME: VALUE"', action="append", default=[],
                       help="an HTTP header for http(s) URLs and DICOMweb services, e.g. "
                            '"Authorization: Bearer TOKEN" (repeatable)')

    def decoder_arg(p):
        p.add_argument("--decoder", default=None, choices=decoders,
                       help="decoder backend (default: the fastest installed; pylibjpeg decodes as pydicom)")

    def progress_arg(p):
        p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                       help="show progress on stderr (default: when stderr is a terminal)")

    def add(name: str, **kw):
        p = sub.add_parser(name, formatter_class=_HelpFormatter, **kw)
        p.set_defaults(parser=p)  # for usage errors found after parsing
        return p

    p = add("info", parents=[common, storage], help="what the files hold, how their frames are indexed, whether complete",
            description="Describe each file; exit 3 when one is incomplete (its last frame lies past its end).")
    p.add_argument("paths", nargs="+", metavar="PATH", help="local paths or fsspec URLs (s3://, gs://, https://)")
    p.add_argument("--json", action="store_true", help="print JSON (an object; a list of them for several paths)")
    p.add_argument("--walk", action="store_true", help="walk all fragments of a file without offset table")
    p.set_defaults(func=cmd_info)

    p = add("frames", parents=[common, storage], help="decode every frame; print frames, seconds and peak memory")
    p.add_argument("path", help="a local path or an fsspec URL (s3://, gs://, https://)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--limit", type=_int_at_least(0), default=None, help="stop after this many frames (default: all)")
    p.add_argument("--workers", type=_int_at_least(1), default=None,
                   help="frames decoded in parallel (default: the available cores)")
    decoder_arg(p)
    progress_arg(p)
    p.set_defaults(func=cmd_frames)

    p = add(
        "export", parents=[common, storage],
        help="write frames, a whole-slide region or a thumbnail as PNG, TIFF or NumPy files",
        description="Write frames (one file each), or for whole-slide files a region or a thumbnail, "
                    "as PNG, TIFF or .npy files, pixel for pixel as the reader gives them. "
                    'PNG and TIFF need the [export] extra (pip install "dicomframes[export]").',
    )
    p.add_argument("path", metavar="SRC",
                   help="a DICOM file; for --region and --thumbnail a whole-slide folder, file or URL prefix")
    p.add_argument("out", metavar="OUT",
                   help="a folder (frame00042.png ...), a pattern with {frame} (out/f{frame:05d}.png), or a file "
                        "name for one frame, a region or a thumbnail")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--frames", type=_frame_list, default=None, metavar="LIST",
                      help="frames to write: indices and start:stop[:step] ranges, e.g. 0:10,42 (default: all)")
    what.add_argument("--region", type=_region, default=None, metavar="X,Y,W,H",
                      help="a whole-slide region: X,Y in level 0 pixels, W,H at --level (default: none)")
    what.add_argument("--thumbnail", type=_int_at_least(1), default=None, metavar="N",
                      help="the whole slide scaled to fit N x N pixels (default: none)")
    p.add_argument("--level", type=_int_at_least(0), default=None, help="the pyramid level of --region (default: 0)")
    p.add_argument("--format", choices=("png", "tiff", "npy"), default=None,
                   help="the file format (default: from OUT's suffix; png for a folder)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    decoder_arg(p)
    p.add_argument("--workers", type=_int_at_least(1), default=None,
                   help="frames decoded in parallel (default: the available cores)")
    progress_arg(p)
    p.add_argument("--json", action="store_true", help='print JSON: {"outputs", "seconds"}')
    p.set_defaults(func=cmd_export)

    p = add(
        "decompress", parents=[common, storage],
        help="write a decompressed copy (Explicit VR Little Endian), streaming with flat memory",
        description="Write what pydicom's decompress() + save_as() write, one frame at a time. "
                    "The storage options apply to the source; the destination uses its own credentials.",
    )
    p.add_argument("path", help="the source: a local path or an fsspec URL")
    p.add_argument("out", help="the destination: a local path or an fsspec URL")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--keep-ybr", action="store_true", help="keep YCbCr frames as YCbCr (else: convert to RGB)")
    p.add_argument("--keep-uid", action="store_true", help="keep the SOP Instance UID (else: a new one)")
    p.add_argument(
        "--encapsulated", action="store_true",
        help="write Encapsulated Uncompressed Explicit VR Little Endian (needed past 4 GiB of pixel data)",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing destination")
    decoder_arg(p)
    p.add_argument("--workers", type=_int_at_least(1), default=None,
                   help="frames decoded in parallel (default: the available cores)")
    progress_arg(p)
    p.set_defaults(func=cmd_decompress)

    p = add(
        "add-offset-table", parents=[common, storage],
        help="write a copy with an Extended Offset Table (fragments unchanged), streaming with flat memory",
        description="Copy an encapsulated (compressed) file byte for byte, adding an Extended Offset Table "
                    "so that readers find every frame without walking the fragments (a Basic Offset Table "
                    "where frames span several fragments). "
                    "The storage options apply to the source; the destination uses its own credentials.",
    )
    p.add_argument("path", metavar="SRC", help="the source: a local path or an fsspec URL")
    p.add_argument("out", metavar="DST", help="the destination: a local path or an fsspec URL")
    p.add_argument("--json", action="store_true", help='print JSON: {"output", "seconds"}')
    p.add_argument("--force", action="store_true", help="overwrite an existing destination")
    progress_arg(p)
    p.set_defaults(func=cmd_add_offset_table)

    p = add(
        "index", parents=[common, storage],
        help="locate every frame now and keep the frame index, so later opens need not walk",
        description="Walk a file without offset tables (or read its tables), parse whole-slide tile positions, "
                    "and write what was learnt: into the index cache (what open() uses by default for URLs), "
                    "or with --out into an index file to publish beside the slide (open(src, index=FILE)).",
    )
    p.add_argument("path", metavar="SRC", help="a local path or an fsspec URL")
    p.add_argument("--out", default=None, metavar="FILE", help="write an index file here (default: the index cache)")
    p.add_argument("--cache", default=None, metavar="DIR",
                   help="the index cache folder (default: $DICOMFRAMES_CACHE, else ~/.cache/dicomframes/indexes)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    p.add_argument("--json", action="store_true", help="print JSON")
    progress_arg(p)
    p.set_defaults(func=cmd_index)

    p = add(
        "serve", parents=[common, storage],
        help="serve folders, buckets or files over DICOMweb (QIDO-RS, WADO-RS) and DeepZoom, with flat memory",
        description="Scan the roots' headers once, then serve searches, metadata, frames (as stored, or "
                    "decoded to uncompressed bytes) and whole instances at http://HOST:PORT/dicomweb, "
                    "DeepZoom at /deepzoom, and a page listing the series (slides open in a viewer) at /. "
                    'Needs the [server] extra (pip install "dicomframes[server]").',
    )
    p.add_argument("roots", nargs="+", metavar="ROOT", help="folders, fsspec URL prefixes (s3://bucket/prefix/) or files")
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=_int_at_least(0), default=8642, help="the port (0: any free one)")
    p.add_argument("--max-open", type=_int_at_least(1), default=64, help="readers kept open at most")
    p.add_argument("--max-slides", type=_int_at_least(1), default=8, help="whole-slide series kept open at most")
    p.add_argument("--cache-mb", type=float, default=64, help="MB of rendered frames and DeepZoom tiles kept")
    p.add_argument("--max-decodes", type=_int_at_least(1), default=None,
                   help="requests decoding at once; more wait, then get 503 (default: the cores)")
    p.add_argument("--max-frames", type=_int_at_least(1), default=512, help="frames one request may ask for")
    p.add_argument("--token", default=os.environ.get("DICOMFRAMES_TOKEN"),
                   help="require Authorization: Bearer TOKEN (default: $DICOMFRAMES_TOKEN; none: open)")
    p.add_argument("--access-log", choices=["text", "json"], default="text",
                   help="request lines as uvicorn writes them, or one JSON object each (default: text)")
    p.add_argument("--public-url", default=None, metavar="URL",
                   help="the address clients reach the server by, for URLs in answers (behind a proxy)")
    p.add_argument("--cors", action="append", default=[], metavar="ORIGIN",
                   help="an origin whose pages may call the server (repeatable; * for any)")
    p.add_argument("--rescan", type=float, default=None, metavar="SECONDS",
                   help="scan the roots again every SECONDS (also on demand: POST /admin/rescan)")
    p.add_argument("--workers", type=_int_at_least(1), default=1,
                   help="server processes (uvicorn's), each with its own readers and caches")
    p.set_defaults(func=cmd_serve)

    p = add("sample", parents=[common], help="write a sample multi-frame file (offline, for trying things out)")
    p.add_argument("out", help="the local file to write")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.add_argument("--frames", type=_int_at_least(1), default=200, help="number of frames")
    p.add_argument("--rows", type=_int_at_least(1), default=256, help="rows of each frame")
    p.add_argument("--columns", type=_int_at_least(1), default=256, help="columns of each frame")
    p.add_argument("--samples", type=int, default=1, choices=(1, 3), help="samples per pixel (1 grey, 3 RGB)")
    p.add_argument("--syntax", default="rle", choices=("native", "rle", "jpegls", "j2k"), help="transfer syntax")
    p.add_argument("--offset-table", default="bot", choices=("bot", "eot", "none"),
                   help="Basic Offset Table, Extended Offset Table, or none")
    p.set_defaults(func=cmd_sample)
    return parser


# -- running -------------------------------------------------------------------------------------------


def _logging_handler(verbose: int) -> logging.Handler:
    logger = logging.getLogger("dicomframes")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("dicomframes: %(levelname)s: %(message)s"))
    level = logging.WARNING if not verbose else logging.INFO if verbose == 1 else logging.DEBUG
    handler.setLevel(level)
    logger.addHandler(handler)
    if verbose:
        logger.setLevel(level)
    return handler


def _quiet_stdout() -> None:
    """After a broken pipe: send what is left of stdout to devnull, so the exit flush is silent."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # pragma: no cover - stdout is not a file
        pass


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (see the module docstring)."""
    parser = build_parser()
    if argv is None:
        argv = sys.argv[1:]
    if not argv:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    args = parser.parse_args(argv)  # exits 2 on usage errors, 0 after --help / --version
    logger = logging.getLogger("dicomframes")
    old_level = logger.level
    handler = _logging_handler(getattr(args, "verbose", 0))
    try:
        code = args.func(args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except DicomFramesError as exc:
        _error(exc)
        return EXIT_ERROR
    except OSError as exc:  # the system or the network, not a bug: said as it is
        _error(f"{type(exc).__name__}: {exc}")
        return EXIT_ERROR
    except Exception as exc:  # a bug: one line, and a request to report it
        print(
            f"dicomframes: internal error: {type(exc).__name__}: {_one_line(exc)} "
            "(this is a bug; please report it with the command line that caused it)",
            file=sys.stderr,
        )
        return EXIT_ERROR
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


if __name__ == "__main__":
    sys.exit(main())
