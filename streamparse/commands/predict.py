"""`streamparse predict`: run UniParser on one image (or one frame of a video) and print what it found."""

from __future__ import annotations

from pathlib import Path

HELP = "parse one image or one video frame and print the people and parts found"

IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def add_arguments(p) -> None:
    p.add_argument("input", help="image file, or video file (see --frame)")
    p.add_argument("--frame", type=int, default=0, help="frame index when INPUT is a video (default 0)")
    p.add_argument("--config", help="a YAML config file, or an installed preset by name (quality, pipeline_gpu, ...)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, e.g. model.input_size=[512,512]")
    p.add_argument("--checkpoint", help="checkpoint path ('none' = random init; default: the shipped weights)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda")
    p.add_argument("--overlay", metavar="PNG", help="write a colour overlay of the parsing here")
    p.add_argument("--json", metavar="FILE", help="write the result as JSON")


def read_input(path: Path, frame: int):
    import numpy as np

    from streamparse.cli import CLIError

    if not path.exists():
        raise CLIError(f"input not found: {path}")
    if path.suffix.lower() in IMAGE_EXT:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                return np.asarray(im.convert("RGB"))
        except (UnidentifiedImageError, OSError) as exc:
            raise CLIError(f"cannot read image {path}: {exc}") from None
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise CLIError(f"{path} has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for i, f in enumerate(container.decode(stream)):
                if i == frame:
                    return f.to_ndarray(format="rgb24")
    except av.error.FFmpegError as exc:
        raise CLIError(f"cannot decode {path}: {exc}") from None
    raise CLIError(f"{path} has fewer than {frame + 1} frames")


def run(args) -> int:
    import time

    import numpy as np

    from streamparse.checkpoint import CheckpointError
    from streamparse.cli import CLIError
    from streamparse.commands.common import load_run_config
    from streamparse.engine.factory import build_predictor

    cfg = load_run_config(args, ())
    from streamparse.store.outputs import OutputError, prepare_output, write_json

    if args.overlay and Path(args.overlay).suffix.lower() != ".png":
        raise CLIError(f"--overlay must name a .png file, got {args.overlay}")
    for out in (args.overlay, args.json):  # side files: new, or written by streamparse before
        if out:
            try:
                prepare_output(out, mode="overwrite", kind="file", remove=False)
            except OutputError as exc:
                raise CLIError(str(exc)) from None
    image = read_input(Path(args.input), args.frame)
    try:
        pred = build_predictor(cfg, checkpoint=args.checkpoint, device=args.device)
    except (CheckpointError, ValueError) as exc:
        raise CLIError(str(exc)) from None
    if pred.preprocess.mode != "official":  # (the official resize would make this warm-up full-size)
        pred.predict(image[None, :64, :64].copy())  # warm-up
    t0 = time.perf_counter()
    result = pred.predict(image[None])[0]
    ms = (time.perf_counter() - t0) * 1000
    names = pred.class_names
    ck = pred.checkpoint_path or "random init (no checkpoint)"
    print(f"{args.input}: {image.shape[1]}x{image.shape[0]}, model {pred.model_name} [{ck}] on {pred.device}, {ms:.0f} ms")
    print(f"{result.num_instances} people found")
    people = []
    for k in range(result.num_instances):
        areas = result.part_areas[k]
        parts = [(names[c], int(areas[c])) for c in np.argsort(-areas) if areas[c] > 0 and c > 0]
        x0, y0, x1, y1 = (int(v) for v in result.bboxes[k])
        print(f"  person {k + 1}: score {result.scores[k]:.2f}, box ({x0},{y0})-({x1},{y1}), {int(result.areas[k])} px, parts: "
              + ", ".join(f"{n} {a}" for n, a in parts[:6]))
        people.append({"id": k + 1, "score": float(result.scores[k]), "bbox": [x0, y0, x1, y1], "area": int(result.areas[k]),
                       "parts": dict(parts)})
    if args.overlay:
        from PIL import Image, PngImagePlugin

        from streamparse.store.outputs import generator_mark
        from streamparse.results.overlay import overlay

        info = PngImagePlugin.PngInfo()
        info.add_text("Software", generator_mark())
        Image.fromarray(overlay(image, result.part, result.instance, pred.palette)).save(args.overlay, format="PNG", pnginfo=info)
        print(f"overlay written to {args.overlay}")
    if args.json:
        write_json(args.json, {"input": str(args.input), "model": pred.info(), "ms": ms, "people": people})
    return 0
