"""`streamparse train`: train UniParser on a CIHP/MHPv2-layout dataset (one process or Ray DDP)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from streamparse.cli import CLIError

HELP = "train UniParser (SGD, warm-up + step lr, checkpoints, exact resume; --num-workers N for Ray DDP)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", type=Path, metavar="CONFIG", help="training config (YAML)")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="output folder (default work_dirs/<config name>)")
    p.add_argument("--resume", default=None, metavar="auto|PATH",
                   help="auto = continue the work dir's last_state.pt if there is one; or a last_state.pt path")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=3 (repeatable)")
    p.add_argument("--num-workers", type=int, default=1, metavar="N",
                   help="training workers; N > 1 runs DDP on Ray (gloo on CPU, NCCL with --gpu)")
    p.add_argument("--gpu", action="store_true", help="train on CUDA (one GPU per worker)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from streamparse.config import ConfigError, load_config

    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as exc:
        raise CLIError(str(exc)) from None
    if args.num_workers < 1:
        raise CLIError(f"--num-workers must be >= 1, got {args.num_workers}")
    work_dir = args.work_dir or Path("work_dirs") / args.config.stem

    from streamparse.data import DatasetError
    from streamparse.pipelines.train import train
    from streamparse.training.build import TrainingError

    try:
        summary = train(cfg, work_dir, resume=args.resume, num_workers=args.num_workers, use_gpu=args.gpu,
                        progress=not args.no_progress)
    except (TrainingError, DatasetError) as exc:
        raise CLIError(str(exc)) from None
    ev = summary.get("last_eval") or {}
    print(f"trained {summary['epochs']} epochs ({summary['iterations']} iterations, {summary['seconds']:.1f}s) "
          f"in {summary['work_dir']}")
    if ev:
        print(f"last eval: AP^p_vol {ev.get('AP_p_vol')}  AP^p_50 {ev.get('AP_p_50')}  mIoU {ev.get('mIoU')}; "
              f"best AP^p_vol {summary.get('best_AP_p_vol')}")
    print(json.dumps({k: summary[k] for k in ("last_checkpoint", "best_checkpoint")}))
    return 0
