"""The ``dicomframes`` command: ``info``, ``frames``, ``decompress`` and ``sample``."""

from __future__ import annotations

import argparse
import json
import sys
import time

from dicomframes.errors import DicomFramesError


def _peak_rss_mb() -> float | None:
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 1024 / 1024


def _open(args):
    from dicomframes.reader import open as open_reader

    options = {}
    if getattr(args, "anon", False):
        options["anon"] = True
    return open_reader(args.path, decoder=getattr(args, "decoder", None), **options)


def cmd_info(args) -> int:
    with _open(args) as reader:
        info = reader.info.as_dict()
        if args.walk and reader.info.index_kind == "walked":
            info["fragments"] = reader.index.walk_all()
        if args.json:
            print(json.dumps(info, indent=2, default=str))
        else:
            width = max(map(len, info))
            for key, value in info.items():
                print(f"{key:<{width}}  {value}")
    return 0


def cmd_frames(args) -> int:
    start = time.perf_counter()
    count = 0
    last_report = start
    with _open(args) as reader:
        total = len(reader) if args.limit is None else min(args.limit, len(reader))
        indices = range(total)
        show = args.progress or (args.progress is None and sys.stderr.isatty())
        for _frame in reader.iter_frames(indices):
            count += 1
            now = time.perf_counter()
            if show and (now - last_report > 0.5 or count == total):
                rate = count / max(now - start, 1e-9)
                left = (total - count) / rate if rate else 0
                print(f"\r{count}/{total} frames  {rate:,.0f} frames/s  {left:,.0f} s left", end="", file=sys.stderr)
                last_report = now
        if show:
            print(file=sys.stderr)
        seconds = time.perf_counter() - start
        stats = reader.stats
    peak = _peak_rss_mb()
    result = {
        "frames": count,
        "seconds": round(seconds, 3),
        "frames_per_second": round(count / seconds, 1) if seconds else None,
        "peak_rss_mb": round(peak, 1) if peak is not None else None,
        "requests": stats["requests"],
        "bytes_read": stats["bytes"],
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{count} frames in {seconds:.2f} s ({result['frames_per_second']} frames/s), "
            f"peak RSS {result['peak_rss_mb']} MB, {stats['requests']} requests, {stats['bytes']:,} bytes read"
        )
    return 0


def cmd_sample(args) -> int:
    from dicomframes.samples import write_sample

    try:
        path = write_sample(
            args.out, frames=args.frames, rows=args.rows, columns=args.columns,
            samples_per_pixel=args.samples, syntax=args.syntax, offset_table=args.offset_table,
        )
    except ValueError as exc:
        print(f"dicomframes sample: error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


def cmd_decompress(args) -> int:
    from dicomframes.transcode.decompress import ProgressDisplay, decompress

    src = args.path
    if args.anon:
        import fsspec

        src = fsspec.core.url_to_fs(args.path, anon=True)  # anonymous reads; the destination uses its own credentials
    show = args.progress if args.progress is not None else sys.stderr.isatty()
    display = ProgressDisplay(sys.stderr) if show else None
    start = time.perf_counter()
    try:
        out = decompress(
            src, args.out, as_rgb=not args.keep_ybr, generate_instance_uid=not args.keep_uid,
            workers=args.workers, overwrite=args.force, encapsulated=args.encapsulated,
            decoder=args.decoder, progress=display,
        )
    finally:
        if display is not None:
            display.close()
    if args.json:
        print(json.dumps({"output": out, "seconds": round(time.perf_counter() - start, 3)}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dicomframes", description="Stream the frames of multi-frame DICOM files.")
    sub = parser.add_subparsers(dest="command", required=True)

    def source_args(p):
        p.add_argument("path", help="a local path or an fsspec URL (s3://, gs://, https://)")
        p.add_argument("--anon", action="store_true", help="anonymous access to a public bucket")
        p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("info", help="what the file holds, and how its frames are indexed")
    source_args(p)
    p.add_argument("--walk", action="store_true", help="walk all fragments of a file without offset table")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("frames", help="decode every frame; print frames, seconds and peak memory")
    source_args(p)
    p.add_argument("--limit", type=int, default=None, help="stop after this many frames")
    p.add_argument("--decoder", default=None, help="decoder backend (default: fastest installed)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help="show progress on stderr")
    p.set_defaults(func=cmd_frames)

    p = sub.add_parser(
        "decompress", help="write a decompressed copy (Explicit VR Little Endian), streaming with flat memory",
        description="Write what pydicom's decompress() + save_as() write, one frame at a time.",
    )
    source_args(p)
    p.add_argument("out", help="the destination: a local path or an fsspec URL")
    p.add_argument("--keep-ybr", action="store_true", help="keep YCbCr frames as YCbCr (default: convert to RGB)")
    p.add_argument("--keep-uid", action="store_true", help="keep the SOP Instance UID (default: a new one)")
    p.add_argument(
        "--encapsulated", action="store_true",
        help="write Encapsulated Uncompressed Explicit VR Little Endian (needed past 4 GiB of pixel data)",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing destination")
    p.add_argument("--decoder", default=None, help="decoder backend (default: fastest installed; pylibjpeg: as pydicom)")
    p.add_argument("--workers", type=int, default=None, help="frames decoded in parallel (default: the cores)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show progress on stderr (default: when stderr is a terminal)")
    p.set_defaults(func=cmd_decompress)

    p = sub.add_parser("sample", help="write a sample multi-frame file (offline, for trying things out)")
    p.add_argument("out")
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--rows", type=int, default=256)
    p.add_argument("--columns", type=int, default=256)
    p.add_argument("--samples", type=int, default=1, choices=(1, 3))
    p.add_argument("--syntax", default="rle", choices=("native", "rle", "jpegls", "j2k"))
    p.add_argument("--offset-table", default="bot", choices=("bot", "eot", "none"))
    p.set_defaults(func=cmd_sample)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except DicomFramesError as exc:
        print(f"dicomframes: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
