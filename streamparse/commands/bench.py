"""`streamparse bench model|pipeline|live|gpu|track|analytics|archive`: benchmarks that print numbers (not tests)."""

from __future__ import annotations

import json

HELP = ("benchmarks: model (UniParser vs Mask R-CNN), pipeline (end-to-end vs model-only vs naive), live, gpu, track, analytics, "
        "archive (one archive run vs a run per video)")


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="suite", metavar="SUITE", required=True)
    m = sub.add_parser("model", help="ms/image of each UniParser variant, split by stage, vs Mask R-CNN; with --runtime: "
                                     "the dense heads on torch / OpenVINO / ONNX Runtime and their label-map agreement")
    m.add_argument("--variants", nargs="+", default=None, help="registered model names")
    m.add_argument("--sizes", nargs="+", default=None,
                   help="HxW input sizes (default 512x512 800x1344; with --runtime 512x512 256x448)")
    m.add_argument("--reps", type=int, default=5, help="repetitions (with --runtime: alternated rounds)")
    m.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    m.add_argument("--num-classes", type=int, default=20)
    m.add_argument("--runtime", metavar="LIST", help="compare runtimes, e.g. torch,openvino,onnxruntime (the shipped weights)")
    m.add_argument("--precision", metavar="LIST", help="with --runtime: only these precisions, e.g. fp32,bf16,int8 (default: all)")
    m.add_argument("--batches", nargs="+", type=int, default=[1, 4], help="with --runtime: batch sizes (default 1 4)")
    m.add_argument("--checkpoint", default="default", help="with --runtime: weights ('default' = shipped, 'none' = random init)")
    m.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="with --runtime: config overrides")
    m.add_argument("--device", default="cpu", help="without --runtime: cpu or cuda (default cpu)")
    m.add_argument("--amp", choices=("none", "fp16", "bf16"), default="none",
                   help="without --runtime: autocast precision (the paper's GPU setting: bf16 at 800x1333)")
    m.add_argument("--no-maskrcnn", action="store_true", help="without --runtime: skip the Mask R-CNN reference")
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
    ar = sub.add_parser("archive", help="streamparse archive vs one streamparse run per video vs the model alone, on synthetic videos")
    ar.add_argument("--videos", type=int, default=24, help="synthetic videos (default 24)")
    ar.add_argument("--frames", type=int, default=60, help="frames per video (default 60)")
    ar.add_argument("--size", default="256x256", help="HxW of the videos (default 256x256)")
    ar.add_argument("--config", help="a YAML config file or preset name (default: the embedded defaults)")
    ar.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ar.add_argument("--checkpoint", default=None, help="weights: a path, 'none' (random init) or the shipped default")
    ar.add_argument("--work", help="keep the videos and outputs in this new folder (default: a temporary one, removed)")
    ar.add_argument("--device", help="cpu | cuda | auto (= --set pipeline.device=...)")
    ar.add_argument("--json", metavar="FILE")
    ar.add_argument("--no-progress", action="store_true")
    for name, hlp in (("pipeline", "streamparse run vs model-only vs a naive loop"),
                      ("gpu", "the GPU path (CUDA streams on vs off); needs a CUDA device")):
        sp = sub.add_parser(name, help=hlp)
        sp.add_argument("--json", metavar="FILE")
        sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
        sp.add_argument("--frames", type=int, default=300)
        sp.add_argument("--video", help="video file (default: a generated synthetic video)")
        sp.add_argument("--config", help="a YAML config file or preset name (default: the embedded defaults)")
        sp.add_argument("--checkpoint", default=None, help="weights: a path, 'none' (random init) or the shipped default")
        sp.add_argument("--size", default="256x256", help="HxW of the generated video")
        sp.add_argument("--no-progress", action="store_true")
        if name == "pipeline":
            sp.add_argument("--device", help="cpu | cuda | auto (= --set pipeline.device=...)")


    tr = sub.add_parser("track", help="person tracking: IoU-only vs ByteTrack vs embedding-only vs the full tracker "
                                      "(+ ablations) on the same stored detections of synthetic tracking videos")
    tr.add_argument("--data", required=True, help="synthetic tracking videos (made here if absent: videos/, videos_gt/)")
    tr.add_argument("--work", required=True, help="folder of the detection stores, one subfolder per preset (reused)")
    tr.add_argument("--seed", type=int, default=2027, help="seed of the videos made (default 2027, never used for tuning)")
    tr.add_argument("--videos", type=int, default=10)
    tr.add_argument("--frames", type=int, default=160)
    tr.add_argument("--preset", action="append", default=None, metavar="NAME[:KEY=VALUE;...]",
                    help="detections: model config overrides, e.g. 512:model.input_size=[512,896];model.cate_score_thresh=0.275 "
                         "(';'-separated; default: 256 and 512, the shipped weights' presets)")
    tr.add_argument("--set", action="append", default=[], metavar="track.KEY=VALUE", help="the full tracker's parameters")
    tr.add_argument("--bytetrack", action="append", default=[], metavar="KEY=VALUE", help="ByteTrackTracker parameters")
    tr.add_argument("--checkpoint", default="default")
    tr.add_argument("--threads", type=int, default=1, help="torch threads for the detections (default 1)")
    tr.add_argument("--no-gt", action="store_true", help="skip the GT-detections upper bound")
    tr.add_argument("--json", metavar="FILE")
    tr.add_argument("--no-progress", action="store_true")


def _kv(items, prefix=""):
    import yaml

    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.startswith(prefix):
            raise ValueError(f"expected {prefix}KEY=VALUE, got {item!r}")
        out[key[len(prefix):]] = yaml.safe_load(value)
    return out


def _run_track(args) -> dict:
    from streamparse.bench.track import PRESETS, format_track_table, prepare_bench, run_track_bench
    from streamparse.cli import CLIError
    from streamparse.config import ConfigError, TrackConfig
    from streamparse.plan import track_kwargs as tracker_kwargs

    try:
        base = tracker_kwargs(TrackConfig(**_kv(args.set, "track.")))
        bt = _kv(args.bytetrack)
    except (ValueError, TypeError) as exc:
        raise CLIError(str(exc).splitlines()[0]) from None
    presets = PRESETS
    if args.preset:
        presets = {}
        for item in args.preset:
            name, _, rest = item.partition(":")
            presets[name] = [x for x in rest.split(";") if x]
    try:
        stores = prepare_bench(args.data, args.work, seed=args.seed, num_videos=args.videos, frames=args.frames,
                               presets=presets, checkpoint=args.checkpoint, threads=args.threads, progress=not args.no_progress)
    except (ConfigError, ValueError, OSError) as exc:
        raise CLIError(str(exc).splitlines()[0]) from None
    res = run_track_bench(args.data, stores, base=base, bytetrack_params=bt, with_gt=not args.no_gt, progress=not args.no_progress)
    res["presets_overrides"] = presets
    print(format_track_table(res))
    return res


def _sizes(items):
    out = []
    for s in items:
        h, _, w = s.lower().partition("x")
        out.append((int(h), int(w)))
    return out


def run(args) -> int:
    from streamparse.cli import CLIError
    from streamparse.store.outputs import OutputError, prepare_output, write_json

    if args.json:  # checked before a long benchmark, written after it
        try:
            prepare_output(args.json, mode="overwrite", kind="file", remove=False)
        except OutputError as exc:
            raise CLIError(str(exc)) from None
    if getattr(args, "device", None) and args.suite in ("pipeline", "archive"):
        args.set = [*args.set, f"pipeline.device={args.device}"]

    if args.suite == "model" and args.runtime:
        from streamparse.bench.runtimes import DEFAULT_SIZES, format_runtime_table, parse_list, run_runtime_bench
        from streamparse.config import ConfigError

        try:
            res = run_runtime_bench(parse_list(args.runtime), parse_list(args.precision),
                                    sizes=_sizes(args.sizes) if args.sizes else DEFAULT_SIZES, batches=args.batches,
                                    rounds=args.reps, checkpoint=args.checkpoint, overrides=list(args.set), threads=args.threads)
        except (ConfigError, ValueError, OSError) as exc:
            raise CLIError(str(exc).splitlines()[0]) from None
        print(format_runtime_table(res))
    elif args.suite == "model":
        from streamparse.bench.model import DEFAULT_VARIANTS, format_table, run_model_bench

        try:
            res = run_model_bench(variants=args.variants or DEFAULT_VARIANTS, sizes=_sizes(args.sizes or ["512x512", "800x1344"]),
                                  reps=args.reps, threads=args.threads, num_classes=args.num_classes, device=args.device,
                                  amp=args.amp, maskrcnn=not args.no_maskrcnn)
        except (ValueError, RuntimeError) as exc:  # e.g. an op without a kernel at this precision on this device
            raise CLIError(str(exc).splitlines()[0]) from None
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
    elif args.suite == "track":
        res = _run_track(args)
    elif args.suite == "archive":
        from streamparse.bench.archive import format_archive, run_archive_bench

        (h, w), = _sizes([args.size])
        try:
            res = run_archive_bench(videos=args.videos, frames=args.frames, size=(h, w), checkpoint=args.checkpoint,
                                    config=args.config, overrides=list(args.set), work=args.work, progress=not args.no_progress)
        except (ValueError, RuntimeError, OSError) as exc:
            raise CLIError(str(exc).splitlines()[0]) from None
        print(format_archive(res))
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
