"""`streamparse eval`: AP^p / PCP / mIoU of a model (CONFIG CHECKPOINT) or of a prediction folder.

Prediction folders hold, per image id, ``<id>_part.png``, ``<id>_instance.png`` and
``<id>_scores.txt`` (``streamparse.evaluation.metrics.write_prediction``). GT comes from a CIHP or MHPv2
dataset on disk. Metric definitions: ``docs/metrics.md`` (``--protocol mhp`` = MHP v2 / UniParser).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from streamparse.cli import CLIError

HELP = "evaluate multi-human parsing (AP^p, PCP, mIoU) of a model or of a prediction folder"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="*", metavar="MODEL",
                   help="the model to run, as CONFIG CHECKPOINT (or CHECKPOINT alone); omit with --pred-dir")
    p.add_argument("--data", type=Path, required=True, help="dataset root folder (GT)")
    p.add_argument("--format", choices=("cihp", "mhpv2"), default="cihp", help="dataset layout and label space")
    p.add_argument("--split", default="val", help="split to evaluate (default val)")
    p.add_argument("--pred-dir", type=Path, metavar="PRED", help="score the predictions in this folder (no model)")
    p.add_argument("--save-preds", type=Path, metavar="PRED", help="model mode: also write the predictions here")
    p.add_argument("--protocol", choices=("mhp", "prcnn"), default="mhp",
                   help="mhp = MHP v2 official / UniParser (default); prcnn = Parsing R-CNN")
    p.add_argument("--device", default=None, help="model mode: auto | cpu | cuda")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the metrics as JSON")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="model mode with CONFIG CHECKPOINT: config override, e.g. model.mask_thresh=0.4 or "
                        "model.runtime=openvino (repeatable)")


def _open_dataset(args):
    from streamparse.data import DATASETS, DatasetError

    if not args.data.is_dir():
        raise CLIError(f"dataset folder not found: {args.data}")
    try:
        return DATASETS[args.format](args.data, args.split)
    except DatasetError as exc:
        raise CLIError(str(exc)) from None


def _load_predictor(model: list[str], device: str | None, overrides: list[str] | None = None):
    from streamparse.engine.factory import build_predictor, build_predictor_from_checkpoint

    ckpt = model[-1]
    if not Path(ckpt).is_file():
        raise CLIError(f"checkpoint not found: {ckpt}")
    try:
        if len(model) == 2:
            from streamparse.plan import checkpoint_preset_overrides
            from streamparse.config import ConfigError, load_config

            try:  # a checkpoint's stored inference preset goes before --set
                cfg = load_config(model[0], checkpoint_preset_overrides(ckpt) + list(overrides or []))
            except ConfigError as exc:
                raise CLIError(str(exc)) from None
            return build_predictor(cfg, checkpoint=ckpt, device=device)
        return build_predictor_from_checkpoint(ckpt, device=device or "auto")
    except CLIError:
        raise
    except (ValueError, OSError, KeyError) as exc:
        raise CLIError(f"cannot load model from {ckpt}: {exc}") from None


def _format_table(res: dict) -> str:
    def pct(x):
        return "   n/a" if x is None else f"{100 * x:6.2f}"

    rt = res.get("runtime")
    lines = [f"protocol {res['protocol']}: {res['num_images']} images, {res['num_gt']} GT people, "
             f"{res['num_pred']} predictions" + (f"; runtime {rt['runtime']} {rt['precision']}" if rt else "")]
    lines.append("  t      " + " ".join(f"{t:6.2f}" for t in res["thresholds"]))
    lines.append("  AP^p   " + " ".join(pct(a) for a in res["AP_p"]))
    lines.append("  PCP    " + " ".join(pct(a) for a in res["PCP"]))
    lines.append(f"AP^p_50 {pct(res['AP_p_50'])}  AP^p_vol {pct(res['AP_p_vol'])}  PCP_50 {pct(res['PCP_50'])}  "
                 f"mIoU {pct(res['mIoU'])}  pixel acc {pct(res['pixel_acc'])}  mean acc {pct(res['mean_acc'])}")
    return "\n".join(lines)


def _check_args(args: argparse.Namespace) -> None:
    """One line (``CLIError``) for arguments that do not go together."""
    if args.pred_dir is not None and args.model:
        raise CLIError("give either CONFIG CHECKPOINT or --pred-dir, not both")
    if args.pred_dir is None and not args.model:
        raise CLIError("nothing to evaluate: give CONFIG CHECKPOINT or --pred-dir PRED")
    if len(args.model) > 2:
        raise CLIError(f"expected CONFIG CHECKPOINT, got {len(args.model)} positional arguments")
    if args.save_preds is not None and args.pred_dir is not None:
        raise CLIError("--save-preds needs a model (CONFIG CHECKPOINT), not --pred-dir")
    if args.overrides and len(args.model) != 2:
        raise CLIError("--set needs the model as CONFIG CHECKPOINT")
    if args.pred_dir is not None and not args.pred_dir.is_dir():
        raise CLIError(f"prediction folder not found: {args.pred_dir}")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from streamparse.data import DatasetError
    from streamparse.evaluation.metrics import ParsingEvaluator, PredictionError, read_prediction, write_prediction

    _check_args(args)
    from streamparse.store.outputs import OutputError, finish_dir, prepare_output, write_json

    try:  # outputs: a predictions folder (new, empty or ours) and a JSON file (new or ours)
        if args.save_preds is not None:
            prepare_output(args.save_preds, mode="update", kind="dir")
        if args.json is not None:
            prepare_output(args.json, mode="overwrite", kind="file", remove=False)
    except OutputError as exc:
        raise CLIError(str(exc)) from None
    dataset = _open_dataset(args)
    predictor = _load_predictor(args.model, args.device, args.overrides) if args.model else None
    n = dataset.label_space.num_classes
    ev = ParsingEvaluator(n, protocol=args.protocol)
    count = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    t0 = time.perf_counter()
    try:
        for i in range(count):
            official = None  # the authors' protocol: OfficialParsing of the image
            if predictor is None:
                image_id, persons = dataset.load_gt(i)
                shape = persons[0].shape if persons else None
                parsing = read_prediction(args.pred_dir, image_id, expected_shape=shape)
            else:
                item = dataset[i]
                image_id, persons = item["image_id"], item["persons"]
                if predictor.protocol.name == "official":  # the authors' overlapping maps
                    official = predictor.predict_official(np.asarray(item["image"])[None], semantic=args.protocol == "mhp")[0]
                    parsing = predictor.official_frame_parsing(official)
                else:
                    parsing = predictor.predict([item["image"]])[0]
                if args.save_preds is not None:
                    write_prediction(args.save_preds, image_id, parsing)
            if int(parsing.part.max(initial=0)) >= n:
                raise CLIError(f"{image_id}: predicted label {int(parsing.part.max())} >= num_classes {n} ({args.format})")
            preds = list(zip(parsing.person_masks(), parsing.scores.tolist()))
            # mhp (UniParser): the per-image part map is the semantic prediction, for every image
            sem = parsing.part if args.protocol == "mhp" else None
            if official is not None:  # per-person maps as they are (people overlap); their semantic map
                preds = official.predictions()
                sem = official.semantic.cpu().numpy() if official.semantic is not None else None
            try:
                ev.add(persons, preds, semantic_pred=sem)
            except ValueError as exc:
                raise CLIError(f"{image_id}: {exc}") from None
    except (DatasetError, PredictionError) as exc:
        raise CLIError(str(exc)) from None
    finally:
        if args.save_preds is not None and Path(args.save_preds).is_dir():
            finish_dir(args.save_preds, "predictions")
    res = ev.compute()
    if predictor is not None:
        res["runtime"] = predictor.info()["runtime"]
    res.update({"data": str(args.data), "format": args.format, "split": args.split,
                "pred_dir": None if args.pred_dir is None else str(args.pred_dir),
                "model": list(args.model) or None, "seconds": round(time.perf_counter() - t0, 3)})
    print(_format_table(res))
    if args.json is not None:
        try:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            write_json(args.json, res)
        except OSError as exc:
            raise CLIError(f"cannot write {args.json}: {exc.strerror or exc}") from None
    return 0
