"""`streamparse render OUT.zarr --video IN --out overlay.mp4`: the store's parse drawn over its video."""

from __future__ import annotations

HELP = "draw a store's part colours, person outlines and track ids over its video (H.264 MP4)"


def add_arguments(p) -> None:
    from streamparse.commands.common import add_store_and_video

    add_store_and_video(p)
    p.add_argument("--start", type=float, help="first second to render")
    p.add_argument("--end", type=float, help="render up to this second (exclusive)")
    p.add_argument("--out", required=True, help="output MP4 file")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if streamparse wrote it")
    p.add_argument("--legend", action="store_true", help="list the part colours in a corner")
    p.add_argument("--alpha", type=float, default=0.5, help="weight of the part colours (default 0.5)")
    p.add_argument("--crf", type=int, default=23, help="x264 quality (lower = better, default 23)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def open_source(store: str, source: str | None):
    """(Result, source id) or CLIError (one line)."""
    from streamparse.cli import CLIError
    from streamparse.results import open_result

    try:
        res = open_result(store)
    except (FileNotFoundError, ValueError) as exc:
        raise CLIError(str(exc)) from None
    if source is None:
        if len(res.sources) != 1:
            raise CLIError(f"{store} has {len(res.sources)} sources ({', '.join(res.sources) or 'none'}): pick one with --source")
        source = res.sources[0]
    elif source not in res.sources:
        raise CLIError(f"{store} has no source {source!r} (sources: {', '.join(res.sources) or 'none'})")
    return res, source


def run(args) -> int:
    from streamparse.cli import CLIError
    from streamparse.store.outputs import OutputError, prepare_output
    from streamparse.results.video import RenderError, render_video

    try:
        prepare_output(args.out, mode="overwrite" if args.overwrite else "create", kind="file", remove=False)
    except OutputError as exc:
        raise CLIError(str(exc)) from None
    if not str(args.out).lower().endswith((".mp4", ".m4v", ".mov")):
        raise CLIError(f"--out {args.out}: the overlay is an MP4 file (name it .mp4)")
    res, source = open_source(args.store, args.source)
    try:
        info = render_video(res, source, args.video, args.out, start=args.start, end=args.end, legend=args.legend,
                            alpha=args.alpha, crf=args.crf, progress=not args.no_progress)
    except (RenderError, ValueError) as exc:
        raise CLIError(str(exc)) from None
    print(f"wrote {info['out']}: {info['frames']} frames in {info['seconds']:.1f}s ({info['fps']:.0f} fps)")
    return 0
