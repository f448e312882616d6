"""`streamparse synth`: write deterministic synthetic multi-human parsing images and videos."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from streamparse.cli import CLIError

HELP = "Generate deterministic synthetic multi-human parsing data (CIHP or MHPv2 layout) and videos."


def _size(text: str) -> tuple[int, int]:
    """'WIDTHxHEIGHT' -> (H, W)."""
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 256x256, got {text!r}") from None
    return h, w


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out_dir", type=Path, help="output folder (dataset layout; videos under videos/ and videos_gt/)")
    p.add_argument("--format", choices=("cihp", "mhpv2"), default="cihp", help="label space and file layout")
    p.add_argument("--num-images", type=int, default=100, help="number of still images (default 100)")
    p.add_argument("--split", default="train", help="split name: train or val (default train)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed -> identical files")
    p.add_argument("--size", type=_size, default=(256, 256), metavar="WxH", help="image size WIDTHxHEIGHT (default 256x256)")
    p.add_argument("--min-people", type=int, default=1)
    p.add_argument("--max-people", type=int, default=8)
    p.add_argument("--videos", type=int, default=0, help="number of H.264 videos with per-frame GT (default 0)")
    p.add_argument("--video-frames", type=int, default=50, help="frames per video (default 50)")
    p.add_argument("--fps", type=float, default=10.0, help="video frame rate (default 10)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace OUT_DIR if it is a streamparse synthetic dataset (default: add to it)")
    p.add_argument("--scenario", choices=("default", "tracking"), default="default",
                   help="videos: 'tracking' = persistent identities with crossings, a pillar occluder, re-entries, "
                        "look-alikes and scale changes (--min/--max-people count identities); default: today's videos")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from streamparse.data.synth import generate_dataset, generate_video

    h, w = args.size
    if args.num_images < 0 or args.videos < 0 or args.video_frames < 1:
        raise CLIError("--num-images and --videos must be >= 0, --video-frames >= 1")
    if args.videos and (h % 2 or w % 2):
        raise CLIError(f"video size must be even (yuv420p), got {w}x{h}")
    from streamparse.store.outputs import OutputError, finish_dir, prepare_output

    try:  # OUT_DIR: absent, empty, or a synthetic dataset streamparse wrote (a second split adds to it)
        prepare_output(args.out_dir, mode="overwrite" if args.overwrite else "update", kind="dir")
    except OutputError as exc:
        raise CLIError(str(exc)) from None
    progress = not args.no_progress
    try:
        t0 = time.perf_counter()
        if args.num_images:
            generate_dataset(args.out_dir, args.format, args.num_images, args.seed, size=(h, w), split=args.split,
                             min_people=args.min_people, max_people=args.max_people, progress=progress)
            dt = time.perf_counter() - t0
            print(f"wrote {args.num_images} {args.format} images ({w}x{h}) to {args.out_dir} "
                  f"in {dt:.1f}s ({args.num_images / max(dt, 1e-9):.1f} img/s)")
        for k in range(args.videos):
            path = args.out_dir / "videos" / f"video_{k:03d}.mp4"
            path.parent.mkdir(parents=True, exist_ok=True)
            info = generate_video(path, args.out_dir / "videos_gt", args.video_frames, (args.seed, k), size=(h, w),
                                  fps=args.fps, format=args.format, min_people=args.min_people,
                                  max_people=args.max_people, progress=progress, scenario=args.scenario)
            print(f"wrote {path} ({args.video_frames} frames, {max(info['num_people'])} people at most)")
    except (ValueError, OSError) as exc:
        raise CLIError(str(exc)) from None
    finally:
        if args.out_dir.is_dir():
            finish_dir(args.out_dir, "synthetic-dataset")
    return 0
