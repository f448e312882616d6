"""`streamparse inspect OUT.zarr [--json]`: what a store holds (reads only; writes nothing)."""

from __future__ import annotations

HELP = "summarise a store: schema, model, per source frames, duration, state, drops, people per frame, tracks"


def add_arguments(p) -> None:
    p.add_argument("store", metavar="OUT.zarr", help="a streamparse store (path or fsspec URL)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(args) -> int:
    import json

    from streamparse.cli import CLIError
    from streamparse.results import open_result
    from streamparse.results.summary import format_summary, summarize

    try:
        res = open_result(args.store)
    except (FileNotFoundError, ValueError) as exc:
        raise CLIError(str(exc)) from None
    s = summarize(res)
    print(json.dumps(s, indent=2, default=str) if args.json else format_summary(s))
    return 0
