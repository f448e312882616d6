"""`streamparse run`: video files and live streams -> per-frame part/instance label maps in zarr."""

from __future__ import annotations

HELP = "parse videos/streams into a zarr store (Ray decode -> UniParser workers -> zarr)"


def add_arguments(p) -> None:
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="video files, or rtsp/rtmp/http(s)/hls URLs")
    p.add_argument("--out", required=True, help="output zarr store (OUT.zarr)")
    p.add_argument("--config", help="a YAML config file, or an installed preset by name (quality, pipeline_gpu, ...)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--checkpoint", help="checkpoint path; 'none' = random init; default: the shipped weights if they fit")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="inference device")
    p.add_argument("--batch-size", type=int, help="frames per inference batch")
    p.add_argument("--workers", type=int, help="inference actors (default: one per GPU; on CPU by cores, 2 x 1 thread on 2)")
    p.add_argument("--max-frames", type=int, help="stop each source after N frames")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="continue an interrupted run in OUT")
    g.add_argument("--overwrite", action="store_true", help="replace OUT")
    p.add_argument("--ray-address", help="connect to this Ray cluster instead of starting a local one")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--summary-json", metavar="FILE", help="write the final summary here")


def run(args) -> int:
    from streamparse.commands.common import load_run_config

    cfg = load_run_config(args, (("device", "pipeline.device"), ("batch_size", "pipeline.batch_size"),
                                 ("workers", "pipeline.workers"), ("max_frames", "pipeline.max_frames"),
                                 ("ray_address", "pipeline.ray_address")))
    # config errors are reported above, before anything heavy is imported or any path is touched
    from streamparse.cli import CLIError
    from streamparse.store.outputs import OutputError, prepare_output

    mode = "resume" if args.resume else "overwrite" if args.overwrite else "create"
    try:  # outputs first (cheap): a refused path fails before anything heavy starts; the sink checks again
        if "://" not in str(args.out):
            prepare_output(args.out, mode=mode, kind="store")
        if args.summary_json:  # a side file: replaced only if streamparse wrote it
            prepare_output(args.summary_json, mode="overwrite", kind="file", remove=False)
    except OutputError as exc:
        raise CLIError(str(exc)) from None
    from streamparse.checkpoint import CheckpointError
    from streamparse.store.sink import SinkError
    from streamparse.sources import SourceError

    if cfg.pipeline.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise CLIError("--device cuda: no CUDA device is available here (use --device cpu or auto)")
    from streamparse.pipelines.video import PipelineError, run as run_pipeline

    try:
        summary = run_pipeline(cfg, args.sources, args.out, checkpoint=args.checkpoint, mode=mode, progress=not args.no_progress)
    except (SourceError, SinkError, CheckpointError, PipelineError, ValueError) as exc:
        raise CLIError(str(exc).splitlines()[0]) from None
    failed = 0
    for sid, s in summary["sources"].items():
        lag = f", lag p50/p95 {s['lag_p50_s']:.2f}/{s['lag_p95_s']:.2f}s" if s.get("lag_p95_s") is not None else ""
        drops = sum((s.get("dropped") or {}).values())
        drop = f", dropped {drops} ({', '.join(f'{k} {v}' for k, v in s['dropped'].items())})" if drops else ""
        rec = f", reconnects {s['reconnects']}" if s.get("reconnects") else ""
        err = f", errors: {'; '.join(s['errors'])}" if s["errors"] else ""
        print(f"{sid}: {s['frames_written']} frames written ({s.get('fps', 0):.1f} fps){lag}{drop}{rec}{err}")
        failed += bool(s["errors"])
    print(f"store: {summary['out']}" + (" (interrupted; rerun with --resume)" if summary["interrupted"] else ""))
    if args.summary_json:
        from streamparse.store.outputs import write_json

        write_json(args.summary_json, summary)
    if summary["interrupted"]:
        return 130
    return 1 if failed else 0
