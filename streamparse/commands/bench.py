"""`streamparse bench model|pipeline|live|gpu|analytics`: benchmarks that print numbers (not tests)."""

from __future__ import annotations

import json

HELP = "benchmarks: model (UniParser vs Mask R-CNN), pipeline (end-to-end vs model-only vs naive), live, gpu, analytics"


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="suite", metavar="SUITE", required=True)
    m = sub.add_parser("model", help="ms/image of each UniParser variant, split by stage, vs Mask R-CNN")
    m.add_argument("--variants", nargs="+", default=None, help="registered model names")
    m.add_argument("--sizes", nargs="+", default=["512x512", "800x1344"], help="HxW input sizes")
    m.add_argument("--reps", type=int, default=5)
    m.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    m.add_argument("--num-classes", type=int, default=20)
    m.add_argument("--json", metavar="FILE")
    from streamparse.bench.live import add_live_arguments

    lv = sub.add_parser("live", help="an endless live RTSP stream: achieved fps, p50/p95 lag, drop rate, memory")
    add_live_arguments(lv)
    lv.add_argument("--json", metavar="FILE")
    an = sub.add_parser("analytics", help="reading results: instances()/part_areas() on 10,000 frames, render fps at 640x480")
    an.add_argument("--frames", type=int, default=10000, help="frames of the store read by the table timings")
    an.add_argument("--people", type=int, default=8)
    an.add_argument("--render-frames", type=int, default=150)
    an.add_argument("--reps", type=int, default=3)
    an.add_argument("--json", metavar="FILE")
    for name, hlp in (("pipeline", "streamparse run vs model-only vs a naive loop"),
                      ("gpu", "the GPU path (CUDA streams on vs off); needs a CUDA device")):
        sp = sub.add_parser(name, help=hlp)
        sp.add_argument("--json", metavar="FILE")
        sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
        sp.add_argument("--frames", type=int, default=300)
        sp.add_argument("--video", help="video file (default: a generated synthetic video)")
        sp.add_argument("--config", help="YAML config (default: the embedded defaults)")
        sp.add_argument("--checkpoint", default=None, help="weights: a path, 'none' (random init) or the shipped default")
        sp.add_argument("--size", default="256x256", help="HxW of the generated video")
        sp.add_argument("--no-progress", action="store_true")


def _sizes(items):
    out = []
    for s in items:
        h, _, w = s.lower().partition("x")
        out.append((int(h), int(w)))
    return out


def run(args) -> int:
    from streamparse.cli import CLIError
    from streamparse.outputs import OutputError, prepare_output, write_json

    if args.json:  # checked before a long benchmark, written after it
        try:
            prepare_output(args.json, mode="overwrite", kind="file", remove=False)
        except OutputError as exc:
            raise CLIError(str(exc)) from None

    if args.suite == "model":
        from streamparse.bench.model import DEFAULT_VARIANTS, format_table, run_model_bench

        res = run_model_bench(variants=args.variants or DEFAULT_VARIANTS, sizes=_sizes(args.sizes), reps=args.reps,
                              threads=args.threads, num_classes=args.num_classes)
        print(format_table(res))
    elif args.suite == "pipeline":
        try:
            from streamparse.bench.pipeline import format_pipeline, run_pipeline_bench
        except ImportError as exc:
            raise CLIError(f"pipeline benchmark unavailable: {exc}") from None
        res = run_pipeline_bench(args)
        print(format_pipeline(res))
    elif args.suite == "analytics":
        from streamparse.bench.analytics import format_analytics, run_analytics_bench

        res = run_analytics_bench(frames=args.frames, people=args.people, render_frames=args.render_frames, reps=args.reps)
        print(format_analytics(res))
    elif args.suite == "live":
        from streamparse.bench.live import run_live

        try:
            res = run_live(args)
        except RuntimeError as exc:
            raise CLIError(str(exc)) from None
        print(json.dumps({k: v for k, v in res.items() if k != "samples"}, indent=2))
    else:
        import torch

        if not torch.cuda.is_available():
            raise CLIError("no CUDA device here: run 'streamparse bench gpu' on a machine with a GPU")
        from streamparse.bench.gpu import run_gpu_bench

        res = run_gpu_bench(args)
        print(json.dumps(res, indent=2))
    if args.json:
        write_json(args.json, res)
        print(f"figures written to {args.json}")
    return 0
