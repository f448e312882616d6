"""The shipped default weights: size, safe loading, fit with the default config, and that they
actually parse synthetic people (fresh seed, not seen in training)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from streamparse.checkpoint import DEFAULT_WEIGHTS, load_checkpoint
from streamparse.config import ModelConfig, load_config

# the config of the recipe's last stage: the shipped file's training config and input size
RECIPE = Path(__file__).parents[1] / "configs" / "shipped_weights" / "stage10.yaml"
QUALITY = Path(__file__).parents[1] / "configs" / "quality.yaml"


def test_shipped_weights_fit_the_default_config():
    assert DEFAULT_WEIGHTS.is_file(), DEFAULT_WEIGHTS
    assert DEFAULT_WEIGHTS.stat().st_size <= 25 * 2**20
    ck = load_checkpoint(DEFAULT_WEIGHTS)  # weights_only=True inside
    cfg = load_config()
    assert ck["model_name"] == cfg.model.name and len(ck["class_names"]) == cfg.model.num_classes
    assert all(v.dtype == torch.float16 for v in ck["state_dict"].values() if v.is_floating_point())
    assert "metrics" in ck.get("extra", {})  # the README's numbers travel with the file


def test_shipped_weights_parse_fresh_synthetic_people(tmp_path):
    from streamparse.data.synth import generate_dataset

    generate_dataset(tmp_path / "d", "cihp", 24, seed=12345, size=(256, 256), split="val", min_people=1, max_people=4)
    out = tmp_path / "m.json"

    def evaluate(*extra):
        r = subprocess.run([sys.executable, "-m", "streamparse", "eval", str(RECIPE), str(DEFAULT_WEIGHTS),
                            "--data", str(tmp_path / "d"), "--format", "cihp", "--json", str(out), *extra],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        return json.loads(out.read_text())

    m = evaluate()
    # these 24 images at the recipe's 512-px input and category filter (0.275): AP^p@0.1 0.98, @0.3
    # 0.94, AP^p_50 0.655, AP^p_vol 0.553, mIoU 0.725 (stage 10, fp16 shipped file = fp32 last.pt). Stage 9
    # there: 0.98, 0.94, 0.652, 0.557, 0.729 (stage 10 is chosen on the 100-image monitoring val, not on
    # these 24; the recipe check below tells the two files apart); stage 8: 0.98, 0.94, 0.71, 0.56, 0.716
    # (with its filter 0.15: 0.70, 0.54, 0.706);
    # stage 7 at 512 px: 0.98, 0.94, 0.56, 0.53, 0.70; stage 3 at 256 px: 0.78 (@0.3), 0.14, 0.36,
    # 0.51; random weights: ~0. On 200 fresh images (seed 7): 0.94, 0.82, 0.58, 0.52, 0.715.
    assert m["AP_p"][0] >= 0.93 and m["AP_p"][2] >= 0.9 and m["AP_p_50"] >= 0.65, m
    assert m["AP_p_vol"] >= 0.54 and m["mIoU"] >= 0.72, m
    # and at the pipeline's CPU default (256 px, category filter 0.15): 0.77 (@0.3), 0.3925 (AP^p_vol),
    # 0.595 (mIoU); stage 9: 0.75, 0.396, 0.58; stage 8: 0.805, 0.405, 0.585; stage 7: 0.80, 0.38,
    # 0.57; stage 6 alone (trained at 384-512 px only): 0.68, 0.35, 0.55
    pipeline_default = ModelConfig()
    m = evaluate("--set", f"model.input_size={list(pipeline_default.input_size)}",
                 "--set", f"model.cate_score_thresh={pipeline_default.cate_score_thresh}")
    assert m["AP_p"][2] >= 0.75 and m["AP_p_vol"] >= 0.39 and m["mIoU"] >= 0.575, m


@pytest.mark.slow  # ~40 s: two passes of the shipped weights over 24 images at 512 px
def test_flip_tta_helps_the_shipped_weights_and_needs_the_left_right_swap(tmp_path):
    """model.test_flip on 24 fresh images at the recipe's input size: better than one pass, and
    averaging the mirror pass without swapping left and right classes would be worse."""
    import numpy as np

    from streamparse.data import DATASETS
    from streamparse.data.synth import generate_dataset
    from streamparse.evaluation.metrics import evaluate_parsing
    from streamparse.engine.factory import build_predictor

    generate_dataset(tmp_path / "d", "cihp", 24, seed=12345, size=(256, 256), split="val", min_people=1, max_people=4)
    ds = DATASETS["cihp"](tmp_path / "d", "val")
    items = [ds[i] for i in range(len(ds))]
    pred = build_predictor(load_config(RECIPE, ["model.test_flip=true"]), checkpoint=str(DEFAULT_WEIGHTS), device="cpu")
    swap = pred.flip_perm

    def run(perm):
        pred.flip_perm = perm
        preds = []
        for it in items:
            p = pred.predict([it["image"]])[0]
            preds.append(list(zip(p.person_masks(), p.scores.tolist())))
        return evaluate_parsing([it["persons"] for it in items], preds, 20)

    plain, flip, wrong = run(None), run(swap), run(torch.arange(20))
    print({k: [round(m[k], 4) for m in (plain, flip, wrong)] for k in ("AP_p_50", "AP_p_vol", "mIoU")})
    assert flip["mIoU"] > plain["mIoU"] and flip["AP_p_vol"] > plain["AP_p_vol"], (plain, flip)
    assert wrong["mIoU"] < flip["mIoU"] - 0.02, (flip, wrong)
    assert np.isfinite(flip["AP_p_50"])


def test_resolve_checkpoint():
    import pytest

    from streamparse.checkpoint import CheckpointError, resolve_checkpoint

    cfg = load_config()
    name, n = cfg.model.name, cfg.model.num_classes
    assert resolve_checkpoint(None, name, n) == str(DEFAULT_WEIGHTS)
    assert resolve_checkpoint("default", name, n) == str(DEFAULT_WEIGHTS)
    assert resolve_checkpoint("none", name, n) is None
    assert resolve_checkpoint("/x/y.pt", name, n) == "/x/y.pt"
    assert resolve_checkpoint(None, "uniparser_tiny", n) is None  # shipped weights do not fit: random init
    with pytest.raises(CheckpointError, match="shipped weights hold"):
        resolve_checkpoint("default", name, 59)


def test_eval_set_overrides_the_config(tmp_path):
    """`streamparse eval CONFIG CHECKPOINT --set key=value` changes the model's settings; a bad key
    or --set without a CONFIG is a one-line error."""
    from streamparse.data.synth import generate_dataset

    generate_dataset(tmp_path / "d", "cihp", 6, seed=4321, size=(256, 256), split="val", min_people=2, max_people=4)
    cfg = str(Path(__file__).parents[1] / "configs" / "shipped_weights" / "stage01.yaml")

    def ev(*extra):
        out = tmp_path / f"m{len(extra)}.json"
        r = subprocess.run([sys.executable, "-m", "streamparse", "eval", *extra[:1], str(DEFAULT_WEIGHTS), "--data", str(tmp_path / "d"),
                            "--json", str(out), *extra[1:]], capture_output=True, text=True, timeout=300)
        return r, (json.loads(out.read_text()) if r.returncode == 0 else None)

    r, base = ev(cfg)
    assert r.returncode == 0, r.stderr[-2000:]
    r, strict = ev(cfg, "--set", "model.center_thresh=0.999")
    assert r.returncode == 0, r.stderr[-2000:]
    assert base["num_pred"] >= 6 and strict["num_pred"] < base["num_pred"], (base["num_pred"], strict["num_pred"])
    r, _ = ev(cfg, "--set", "model.bogus=1")
    assert r.returncode == 2 and "unknown config key model.bogus" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = subprocess.run([sys.executable, "-m", "streamparse", "eval", str(DEFAULT_WEIGHTS), "--data", str(tmp_path / "d"),
                        "--set", "model.mask_thresh=0.4"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "--set needs the model as CONFIG CHECKPOINT" in r.stderr, r.stderr


def test_every_shipped_config_loads_and_the_recipe_matches_the_weights():
    import pytest

    configs = sorted((Path(__file__).parents[1] / "configs").rglob("*.yaml"))
    assert len(configs) >= 4
    for path in configs:
        load_config(path)  # unknown keys or bad values raise ConfigError naming them
    recipe = load_config(RECIPE)
    stored = load_checkpoint(DEFAULT_WEIGHTS)["config"]
    assert stored["model"]["name"] == recipe.model.name and stored["model"]["num_classes"] == recipe.model.num_classes
    assert stored["model"]["input_size"] == list(recipe.model.input_size) == [512, 896]
    for key in ("epochs", "lr_steps", "optimizer", "batch_size", "seed", "cpu_amp"):
        assert stored["train"][key] == pytest.approx(list(getattr(recipe.train, key)) if key == "lr_steps" else getattr(recipe.train, key)), key
    assert stored["train"]["lr_per_image"] == pytest.approx(recipe.train.lr_per_image)
    assert stored["data"]["short_side"] == list(recipe.data.short_side) and stored["data"]["scale_per_batch"]


def test_the_quality_preset_is_the_one_the_checkpoint_stores():
    """The shipped weights' inference preset is named in one place (configs/quality.yaml) and equals what
    their checkpoint stores (and what build_predictor_from_checkpoint runs)."""
    from streamparse.engine.factory import build_predictor_from_checkpoint

    preset = load_config(QUALITY).model
    stored = load_checkpoint(DEFAULT_WEIGHTS)["config"]["model"]
    assert stored["input_size"] == list(preset.input_size) == [512, 896]
    assert stored["cate_score_thresh"] == preset.cate_score_thresh == 0.275
    pred = build_predictor_from_checkpoint(str(DEFAULT_WEIGHTS), device="cpu")
    assert pred.input_size == tuple(preset.input_size) and pred.params.cate_score_thresh == preset.cate_score_thresh
