"""`streamparse archive`: every video of an archive into OUTDIR, one store per video, resumably."""

from __future__ import annotations

HELP = "parse an archive of videos into OUTDIR (one store per video, index.jsonl, resumable; local Ray or a cluster)"


def add_arguments(p) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="video files, folders (recursive, by video extension), globs, or manifests (.txt: one path a line; "
                        ".jsonl: {\"uri\": ..., \"id\": ...})")
    p.add_argument("--out", required=True, metavar="OUTDIR", help="output folder (a path, or s3://bucket/prefix)")
    p.add_argument("--config", help="a YAML config file, or an installed preset by name (quality, pipeline_gpu, ...)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--checkpoint", help="checkpoint path; 'none' = random init; default: the shipped weights if they fit")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="inference device")
    p.add_argument("--batch-size", type=int, help="frames per inference batch")
    p.add_argument("--workers", type=int, default=0,
                   help="inference actors in all (default: one per GPU; on CPU sized from each node's CPUs)")
    p.add_argument("--concurrency", type=int, default=0, help="videos in flight at once (default: 2 per inference actor)")
    p.add_argument("--resume", action="store_true",
                   help="continue an archive in OUTDIR (skip finished videos, continue partial ones); also fine on a new OUTDIR")
    p.add_argument("--ray-address", help="connect to this Ray cluster (default: $RAY_ADDRESS inside a Ray job, else a local Ray)")
    p.add_argument("--max-videos", type=int, default=0, metavar="N", help="process at most N videos in this invocation")
    p.add_argument("--quarantine-after", type=int, default=3, metavar="N",
                   help="a video that failed the same way N times is quarantined (skipped by --resume)")
    p.add_argument("--retry-quarantined", action="store_true", help="with --resume: try quarantined videos again")
    p.add_argument("--report", metavar="FILE", help="write the final report (JSON, one row per video) here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    from streamparse.cli import CLIError
    from streamparse.commands.common import load_run_config

    cfg = load_run_config(args, (("device", "pipeline.device"), ("batch_size", "pipeline.batch_size")))
    for name in ("workers", "concurrency", "max_videos"):
        if getattr(args, name) < 0:
            raise CLIError(f"--{name.replace('_', '-')} must be >= 0")
    from streamparse.store.outputs import OutputError, prepare_output

    if args.report:  # a side file: replaced only if streamparse wrote it (checked before the run)
        try:
            prepare_output(args.report, mode="overwrite", kind="file", remove=False)
        except OutputError as exc:
            raise CLIError(str(exc)) from None
    from streamparse.checkpoint import CheckpointError
    from streamparse.archive.inputs import InputError
    from streamparse.archive.report import format_summary
    from streamparse.pipelines.archive import PipelineError, run_archive
    from streamparse.store.sink import SinkError

    try:
        report = run_archive(cfg, args.inputs, args.out, checkpoint=args.checkpoint, resume=args.resume,
                             ray_address=args.ray_address or "", max_videos=args.max_videos, concurrency=args.concurrency,
                             workers=args.workers, quarantine_after=args.quarantine_after,
                             retry_quarantined=args.retry_quarantined, report_path=args.report,
                             progress=not args.no_progress)
    except (InputError, OutputError, SinkError, CheckpointError, PipelineError, ValueError) as exc:
        raise CLIError(str(exc).splitlines()[0]) from None
    print(format_summary(report))
    if report["interrupted"]:
        return 130
    c = report["counts"]
    return 1 if c["failed"] or c["quarantined"] else 0
