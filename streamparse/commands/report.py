"""`streamparse report OUT.zarr --video IN --out report.html`: one self-contained static page."""

from __future__ import annotations

HELP = "a self-contained HTML report of a store: summary, people and tracks over time, part areas, an overlay clip"


def add_arguments(p) -> None:
    from streamparse.commands.common import add_store_and_video

    add_store_and_video(p)
    p.add_argument("--out", required=True, help="output HTML file")
    p.add_argument("--clip-seconds", type=float, default=5.0, help="length of the embedded overlay clip (default 5)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if streamparse wrote it")


def run(args) -> int:
    from streamparse.cli import CLIError
    from streamparse.commands.render import open_source
    from streamparse.store.outputs import OutputError, prepare_output
    from streamparse.results.report import build_report
    from streamparse.results.video import RenderError

    try:
        prepare_output(args.out, mode="overwrite" if args.overwrite else "create", kind="file", remove=False)
    except OutputError as exc:
        raise CLIError(str(exc)) from None
    if not str(args.out).lower().endswith((".html", ".htm")):
        raise CLIError(f"--out {args.out}: the report is an HTML file (name it .html)")
    if args.clip_seconds <= 0:
        raise CLIError("--clip-seconds must be > 0")
    res, source = open_source(args.store, args.source)
    try:
        info = build_report(res, source, args.video, args.out, clip_seconds=args.clip_seconds)
    except (RenderError, ValueError) as exc:
        raise CLIError(str(exc)) from None
    print(f"wrote {info['out']} ({info['bytes'] / 1e6:.1f} MB, {info['tracks']} tracks, a {info['clip_frames']}-frame clip)")
    return 0
