"""`streamparse eval-tracks`: mask-based HOTA / IDF1 / MOTA / ID switches / fragmentations of a store's tracks."""

from __future__ import annotations

import json
from pathlib import Path

HELP = "score a store's person tracks against synthetic video GT (mask HOTA, IDF1, MOTA, IDsw, Frag; TrackEval)"


def add_arguments(p) -> None:
    p.add_argument("--data", required=True, type=Path, help="GT folder of the videos (streamparse synth ... videos_gt/)")
    p.add_argument("--store", required=True, type=Path, help="schema-v2 store (OUT.zarr)")
    p.add_argument("--source", help="score only this source (default: every source whose id names a GT video)")
    p.add_argument("--json", metavar="FILE", help="write the figures here")


def format_result(res: dict) -> str:
    cols = ("HOTA", "IDF1", "MOTA", "IDSW", "Frag")
    lines = [f"{'video':<24} " + " ".join(f"{c:>6}" for c in cols)]
    for name, r in [*res["videos"].items(), ("overall", res["overall"])]:
        lines.append(f"{name:<24} " + " ".join(f"{r[c]:6.3f}" if isinstance(r[c], float) else f"{r[c]:6d}" for c in cols))
    r = res.get("rows")
    if r:
        lines.append(f"rows at mask IoU 0.5: detected precision {r['precision_detected']:.3f} recall {r['recall_detected']:.3f}; "
                     f"with the {r['rows_recovered']} recovered and {r['rows_interpolated']} interpolated "
                     f"({r['true_recovered'] + r['true_interpolated']} true): precision {r['precision_all']:.3f} "
                     f"recall {r['recall_all']:.3f}")
    return "\n".join(lines)


def run(args) -> int:
    from streamparse.cli import CLIError
    from streamparse.evaluation.tracks import TrackEvalError, evaluate_store
    from streamparse.tracking.store import StoreError

    try:
        res = evaluate_store(args.data, args.store, source=args.source)
    except (TrackEvalError, StoreError) as exc:
        raise CLIError(str(exc)) from None
    print(format_result(res))
    if args.json:
        Path(args.json).write_text(json.dumps({"generator": "streamparse eval-tracks", **res}, indent=2))
        print(f"figures written to {args.json}")
    return 0
