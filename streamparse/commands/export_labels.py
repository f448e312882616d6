"""`streamparse export-labels OUT.zarr --format coco|youtube-vis|mots|cihp --out DIR`: labels for other tools."""

from __future__ import annotations

HELP = "export a store's people as COCO (RLE), YouTube-VIS, MOTS (txt/PNG) or the CIHP folder layout"


def add_arguments(p) -> None:
    from streamparse.exports import FORMATS

    p.add_argument("store", metavar="OUT.zarr", help="a streamparse store (path or fsspec URL)")
    p.add_argument("--format", required=True, choices=list(FORMATS), help="label format")
    p.add_argument("--out", required=True, help="output folder (new, empty, or an earlier export with --overwrite)")
    p.add_argument("--source", action="append", help="source id (repeatable; default: every source)")
    p.add_argument("--every", type=int, default=1, metavar="N", help="every N-th committed frame (default 1)")
    p.add_argument("--parts", action="store_true", help="coco: also one annotation per (person, part)")
    p.add_argument("--video", help="the source's video: also write the frames as JPEG (required for cihp)")
    p.add_argument("--all-rows", action="store_true",
                   help="also the people a tracker recovered or interpolated (default: detected people only)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it is a streamparse export")


def run(args) -> int:
    from pathlib import Path

    from streamparse.cli import CLIError
    from streamparse.exports import ExportError, export_labels
    from streamparse.store.outputs import OutputError, finish_dir, prepare_output
    from streamparse.results import open_result
    from streamparse.results.video import RenderError

    try:
        prepare_output(args.out, mode="overwrite" if args.overwrite else "create", kind="dir")
    except OutputError as exc:
        raise CLIError(str(exc)) from None
    try:
        res = open_result(args.store)
    except (FileNotFoundError, ValueError) as exc:
        raise CLIError(str(exc)) from None
    for s in args.source or []:
        if s not in res.sources:
            raise CLIError(f"{args.store} has no source {s!r} (sources: {', '.join(res.sources) or 'none'})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        summary = export_labels(res, args.format, out, sources=args.source, every=args.every, parts=args.parts,
                                video=args.video, origin=None if args.all_rows else "detected")
    except (ExportError, RenderError) as exc:
        raise CLIError(str(exc)) from None
    finally:  # even a failed export leaves a folder that is ours (so --overwrite may replace it)
        finish_dir(out, f"labels-{args.format}", {"store": str(args.store)})
    print(f"wrote {args.format} labels to {out}: " + ", ".join(f"{v} {k}" for k, v in summary.items() if k != "files"))
    return 0
