"""`streamparse export`: turn a training checkpoint into a shippable one (fp16 weights, plain data)."""

from __future__ import annotations

import json

HELP = "export a checkpoint for shipping (fp16 weights, optional metrics record)"


def add_arguments(p) -> None:
    p.add_argument("checkpoint", help="a streamparse checkpoint (e.g. WORK_DIR/last.pt or best.pt)")
    p.add_argument("out", help="where to write the exported checkpoint")
    p.add_argument("--half", action="store_true", help="store floating-point weights as fp16 (half the size)")
    p.add_argument("--metrics-json", metavar="FILE", help="record these evaluation metrics in the checkpoint")


def run(args) -> int:
    from streamparse.checkpoint import CheckpointError, export_checkpoint
    from streamparse.cli import CLIError
    from streamparse.store.outputs import OutputError, prepare_output

    try:  # OUT: new, or a streamparse checkpoint (replaced); never another file
        prepare_output(args.out, mode="overwrite", kind="file", remove=False)
    except OutputError as exc:
        raise CLIError(str(exc)) from None

    extra = None
    if args.metrics_json:
        try:
            with open(args.metrics_json) as f:
                extra = {"metrics": json.load(f)}
        except (OSError, ValueError) as exc:
            raise CLIError(f"cannot read {args.metrics_json}: {exc}") from None
    try:
        path, sha, size = export_checkpoint(args.checkpoint, args.out, half=args.half, extra=extra)
    except CheckpointError as exc:
        raise CLIError(str(exc)) from None
    print(f"wrote {path} ({size / 2**20:.1f} MiB, sha256 {sha})")
    return 0
