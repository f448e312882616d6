"""Trainer tests on tiny synthetic CIHP-layout data (uniparser_tiny, 96x96, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from streamparse.cli import main
from streamparse.config import load_config
from streamparse.training import Collate, GlobalBatchSampler, LRSchedule
from streamparse.training.distributed import ray_train_available

SIZE = (96, 96)
CFG = Path(__file__).resolve().parents[1] / "configs" / "train_synth_cihp_tiny.yaml"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The machine's 2 cores are shared: oversubscribed oneDNN threads are ~20x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _write_set(root: Path, n_train: int, n_val: int) -> Path:
    try:
        from streamparse.data.synth import generate_dataset
    except ImportError:
        generate_dataset = None
    if generate_dataset is not None:
        generate_dataset(root, "cihp", n_train, 0, size=SIZE, split="train", min_people=1, max_people=3)
        if n_val:
            generate_dataset(root, "cihp", n_val, 1, size=SIZE, split="val", min_people=1, max_people=3)
        return root
    from toy import make_toy_set  # fallback: drawn people written in the CIHP layout
    from PIL import Image

    for split, n, seed in (("train", n_train, 0), ("val", n_val, 1)):
        images, persons = make_toy_set(n, SIZE, seed=seed)
        ids = []
        for i, (img, ps) in enumerate(zip(images, persons)):
            iid = f"{split}_{i:06d}"
            cat, hum = np.zeros(SIZE, np.uint8), np.zeros(SIZE, np.uint8)
            for k, p in enumerate(ps):
                cat[p > 0], hum[p > 0] = p[p > 0], k + 1
            for sub, arr in (("Images", img), ("Category_ids", cat), ("Human_ids", hum)):
                (root / sub).mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr).save(root / sub / f"{iid}.{'jpg' if sub == 'Images' else 'png'}", quality=95)
            ids.append(iid)
        (root / f"{split}_id.txt").write_text("".join(i + "\n" for i in ids))
    return root


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return _write_set(tmp_path_factory.mktemp("synth8"), 8, 4)


def _sets(root: Path, **kw) -> list[str]:
    base = {"data.root": str(root), "data.short_side": "[64,96]", "data.max_long_side": 128, "data.test_short_side": 96,
            "train.batch_size": 2, "train.epochs": 2, "train.lr_per_image": 6.25e-4, "train.warmup_iters": 500,
            "train.log_interval": 2, "train.eval_interval": 1, "train.checkpoint_interval": 1, "train.norm": "frozen_bn"}
    base.update(kw)
    return [f"{k}={v}" for k, v in base.items()]


def _train_cli(work: Path, sets: list[str], *extra: str) -> int:
    args = ["train", str(CFG), "--work-dir", str(work), "--no-progress"]
    for s in sets:
        args += ["--set", s]
    return main(args + list(extra))


def _weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) if a[k].numel() else 0.0 for k in a)


@pytest.fixture(scope="module")
def straight_run(data_root, tmp_path_factory) -> Path:
    """2 epochs in one go (8 images, batch 2: 8 iterations), eval after each epoch."""
    work = tmp_path_factory.mktemp("straight")
    assert _train_cli(work, _sets(data_root)) == 0
    return work


# ----------------------------------------------------------------------------- schedule / data
@pytest.mark.parametrize(
    "iteration, epoch, expected",
    [
        (0, 0, 0.005 * 0.001),                       # warm-up start: warmup_ratio * lr
        (250, 0, 0.005 * (1 - 0.5 * (1 - 0.001))),  # linear ramp
        (499, 0, 0.005 * (1 - (1 / 500) * 0.999)),
        (500, 0, 0.005),                             # warm-up done
        (9000, 8, 0.005),                            # 1x: epochs 1-9 at the base lr
        (9000, 9, 0.0005),                           # first step (epoch index 9 = 10th epoch)
        (9000, 10, 0.0005),
        (9000, 11, 0.00005),                         # second step
        (100, 9, 0.0005 * (1 - 0.8 * 0.999)),       # warm-up multiplies the stepped lr
    ],
)
def test_lr_schedule_1x(iteration, epoch, expected):
    sched = LRSchedule(base_lr=6.25e-4 * 8, warmup_iters=500, warmup_ratio=0.001, steps=(9, 11))
    assert sched(iteration, epoch) == pytest.approx(expected, rel=1e-12)


def test_lr_schedule_3x():
    sched = LRSchedule(base_lr=0.01, warmup_iters=500, steps=(27, 33))
    assert [sched(10**5, e) for e in (26, 27, 32, 33, 35)] == pytest.approx([0.01, 0.001, 0.001, 1e-4, 1e-4])


def test_global_batch_sampler_shards_and_resumes():
    one = list(GlobalBatchSampler(9, batch_size=4, world_size=1, seed=3, epoch=2))
    two = [list(GlobalBatchSampler(9, batch_size=2, world_size=2, rank=r, seed=3, epoch=2)) for r in (0, 1)]
    assert len(one) == 2 and all(len(b) == 4 for b in one)  # 9 // 4: the partial batch is dropped
    assert [two[0][b] + two[1][b] for b in range(2)] == one  # rank shares make up the global batch
    assert list(GlobalBatchSampler(9, batch_size=4, seed=3, epoch=2, start_batch=1)) == one[1:]
    assert list(GlobalBatchSampler(9, batch_size=4, seed=3, epoch=3)) != one  # a new order every epoch


def test_collate_pads_to_32_and_builds_targets():
    rng = np.random.default_rng(0)
    items = [{"image_id": "a", "image": rng.integers(0, 255, (70, 90, 3), dtype=np.uint8), "persons": [np.full((70, 90), 2, np.uint8)]},
             {"image_id": "b", "image": rng.integers(0, 255, (40, 100, 3), dtype=np.uint8), "persons": []}]
    batch = Collate(num_classes=20, grid=16, stride=8)(items)
    assert batch.images.shape == (2, 3, 96, 128) and batch.sizes == [(70, 90), (40, 100)]
    assert batch.targets[0].semantic.shape == (12, 16) and batch.targets[0].num_persons == 1
    assert batch.targets[1].num_persons == 0
    assert float(batch.images[1, :, 40:].abs().max()) == 0.0  # padding is zero after normalisation


def test_scale_per_batch_gives_one_short_side_per_global_batch(data_root):
    """data.scale_per_batch: the sampler's keys carry the global batch number and every image of a
    batch gets the same short side (drawn per batch); everything else is the per-image augmentation."""
    from streamparse.categories import get_label_space
    from streamparse.data import DATASETS
    from streamparse.training import AugmentedDataset, TrainAugment

    sides = (64, 72, 80, 88, 96)
    augment = TrainAugment(short_sides=sides, max_long_side=200, flip_prob=0.5, label_space=get_label_space("cihp"))
    data = AugmentedDataset(DATASETS["cihp"](str(data_root), "train"), augment, seed=5)
    seen = set()
    for epoch in range(3):
        batches = list(GlobalBatchSampler(8, batch_size=2, seed=5, epoch=epoch, batch_key=True))
        assert [len(k) for b in batches for k in b] == [3] * 8 and [b[0][2] for b in batches] == [0, 1, 2, 3]
        for batch in batches:
            items = [data[k] for k in batch]
            shapes = {it["image"].shape for it in items}
            assert len(shapes) == 1, shapes
            side = min(next(iter(shapes))[:2])
            seen.add(side)
            for k, it in zip(batch, items):  # = the per-image augmentation with the scale fixed
                ref = augment(data.dataset[k[0]], np.random.default_rng([5, k[1], k[0]]), short_side=side)
                assert np.array_equal(ref["image"], it["image"])
                assert all(np.array_equal(a, b) for a, b in zip(ref["persons"], it["persons"]))
    assert len(seen) >= 3, seen
    plain = list(GlobalBatchSampler(8, batch_size=2, seed=5, epoch=0))
    assert [[k[:2] for k in b] for b in GlobalBatchSampler(8, batch_size=2, seed=5, epoch=0, batch_key=True)] == plain
    with pytest.raises(ValueError, match="short_side 100 is not one of"):
        augment(data.dataset[0], np.random.default_rng(0), short_side=100)


# ----------------------------------------------------------------------------- smoke run
def test_smoke_train_outputs(straight_run, data_root):
    from streamparse.checkpoint import build_from_checkpoint
    from streamparse.engine.factory import build_predictor_from_checkpoint

    for name in ("last.pt", "best.pt", "epoch_1.pt", "epoch_2.pt", "last_state.pt"):
        obj = torch.load(straight_run / name, map_location="cpu", weights_only=True)  # plain data only
        assert isinstance(obj, dict)
    model, meta = build_from_checkpoint(straight_run / "last.pt")
    assert meta["model_name"] == "uniparser_tiny" and len(meta["class_names"]) == 20
    assert meta["config"]["train"]["epochs"] == 2 and meta["extra"]["epoch"] == 2
    assert _max_diff(_weights(straight_run / "epoch_2.pt"), _weights(straight_run / "last.pt")) == 0
    assert _max_diff(_weights(straight_run / "epoch_1.pt"), _weights(straight_run / "last.pt")) > 0
    pred = build_predictor_from_checkpoint(str(straight_run / "best.pt"), device="cpu")
    out = pred.predict([np.zeros((96, 96, 3), np.uint8)])
    assert out[0].part.shape == (96, 96)

    cfg = load_config(straight_run / "config.yaml")
    assert cfg.train.epochs == 2 and cfg.data.root == str(data_root.resolve()) and cfg.data.short_side == (64, 96)

    lines = [json.loads(line) for line in (straight_run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in lines if r["type"] == "train"]
    evals = [r for r in lines if r["type"] == "eval"]
    assert [r["iter"] for r in train] == [2, 4, 6, 8] and [r["epoch"] for r in evals] == [1, 2]
    for r in train:
        assert {"loss", "loss_center", "loss_aux_ins", "loss_aux_cate", "loss_par", "loss_metric", "lr", "grad_norm"} <= r.keys()
        assert np.isfinite(r["loss"])
        # lr = 6.25e-4 x 2 images, linear warm-up from 0.001x over 500 iterations (iter = steps done)
        assert r["lr"] == pytest.approx(LRSchedule(base_lr=6.25e-4 * 2)(r["iter"] - 1, r["epoch"] - 1))
    for r in evals:
        assert {"AP_p_vol", "AP_p_50", "mIoU"} <= r.keys() and r["num_images"] == 4
    state = torch.load(straight_run / "last_state.pt", weights_only=True)
    assert (state["epoch"], state["iteration"], state["batch_in_epoch"]) == (2, 8, 0)
    assert state["best_metric"] == max(-1.0 if r["AP_p_vol"] is None else r["AP_p_vol"] for r in evals)


# ----------------------------------------------------------------------------- exact resume
def test_resume_continues_exactly(straight_run, data_root, tmp_path):
    work = tmp_path / "resumed"
    assert _train_cli(work, _sets(data_root, **{"train.epochs": 1})) == 0
    assert not (work / "epoch_2.pt").exists()
    # a second run without --resume refuses to overwrite the first
    assert _train_cli(work, _sets(data_root)) == 2
    assert _train_cli(work, _sets(data_root), "--resume", "auto") == 0
    diff = _max_diff(_weights(straight_run / "last.pt"), _weights(work / "last.pt"))
    assert diff <= 1e-6, diff
    a = torch.load(straight_run / "last_state.pt", weights_only=True)
    b = torch.load(work / "last_state.pt", weights_only=True)
    assert (a["epoch"], a["iteration"]) == (b["epoch"], b["iteration"])
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert float((sa["momentum_buffer"] - sb["momentum_buffer"]).abs().max()) <= 1e-6
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    lines = [json.loads(x) for x in (work / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in lines if r["type"] == "train"] == [2, 4, 6, 8]  # appended across runs


def test_interrupt_mid_epoch_then_resume_exactly(straight_run, data_root, tmp_path, monkeypatch):
    """Ctrl-C while fetching batch 2 of epoch 2 saves the state after 5 steps; --resume auto
    skips the batches already done and ends with the uninterrupted run's weights."""
    from streamparse.training import data as tdata

    calls = {"n": 0}
    collate = tdata.Collate.__call__

    def interrupting(self, items):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return collate(self, items)

    monkeypatch.setattr(tdata.Collate, "__call__", interrupting)
    work = tmp_path / "interrupted"
    assert _train_cli(work, _sets(data_root)) == 130
    state = torch.load(work / "last_state.pt", weights_only=True)
    assert (state["epoch"], state["batch_in_epoch"], state["iteration"]) == (1, 1, 5)
    monkeypatch.setattr(tdata.Collate, "__call__", collate)
    assert _train_cli(work, _sets(data_root), "--resume", "auto") == 0
    assert _max_diff(_weights(straight_run / "last.pt"), _weights(work / "last.pt")) <= 1e-6


# ----------------------------------------------------------------------------- init_from (fine-tuning)
def test_init_from_starts_at_the_given_weights(straight_run, data_root, tmp_path, capsys):
    """train.init_from loads a checkpoint's weights (fresh optimizer): at a vanishing lr the result
    stays at those weights, far from a from-scratch start; a checkpoint of another model is refused."""
    ref = _weights(straight_run / "last.pt")
    sets = _sets(data_root, **{"train.epochs": 1, "train.lr_per_image": 1e-12, "train.eval_interval": 0})
    work = tmp_path / "ft"
    assert _train_cli(work, sets + [f"train.init_from={straight_run / 'last.pt'}"]) == 0
    assert _max_diff(ref, _weights(work / "last.pt")) <= 1e-6
    scratch = tmp_path / "scratch"
    assert _train_cli(scratch, sets) == 0
    assert _max_diff(ref, _weights(scratch / "last.pt")) > 1e-3
    capsys.readouterr()
    assert _train_cli(tmp_path / "bad", sets + ["train.init_from=default"]) == 2  # shipped weights: uniparser_small
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "init_from" in err[0] and "uniparser_small" in err[0], err
    assert _train_cli(tmp_path / "bad2", sets + [f"train.init_from={tmp_path / 'nowhere.pt'}"]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


# ----------------------------------------------------------------------------- CLI errors
def test_bad_set_key_is_one_line(tmp_path, capsys):
    assert _train_cli(tmp_path / "w", ["train.bogus_key=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown config key train.bogus_key" in err[0]


def test_missing_data_root_is_one_line(tmp_path, capsys):
    assert _train_cli(tmp_path / "w", [f"data.root={tmp_path / 'nowhere'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data root not found" in err[0]


def test_bad_norm_is_one_line(data_root, tmp_path, capsys):
    assert _train_cli(tmp_path / "w", _sets(data_root, **{"train.norm": "groupnorm"})) == 2
    assert "train.norm must be one of" in capsys.readouterr().err


def test_cpu_bf16_autocast(data_root, tmp_path, capsys):
    """train.cpu_amp=bf16 runs the forward pass under bf16 autocast on the CPU (conv outputs are
    bf16, the losses fp32) and trains to finite weights; the default keeps fp32; bad values are refused."""
    seen: dict[str, set] = {}

    def record(module, args, output):
        if isinstance(module, torch.nn.Conv2d) and module.training:
            seen.setdefault(mode, set()).add(output.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        for mode in ("bf16", "none"):
            sets = _sets(data_root, **{"train.epochs": 1, "train.eval_interval": 0, "train.cpu_amp": mode,
                                       "train.warmup_iters": 1, "train.lr_per_image": 1e-4})
            assert _train_cli(tmp_path / mode, sets) == 0
    finally:
        handle.remove()
    assert seen == {"bf16": {torch.bfloat16}, "none": {torch.float32}}, seen
    w = _weights(tmp_path / "bf16" / "last.pt")
    assert all(torch.isfinite(v).all() for v in w.values() if v.is_floating_point())
    assert 0 < _max_diff(w, _weights(tmp_path / "none" / "last.pt")) < 0.05
    capsys.readouterr()
    assert _train_cli(tmp_path / "bad", _sets(data_root, **{"train.cpu_amp": "fp16"})) == 2
    assert "train.cpu_amp must be one of none, bf16" in capsys.readouterr().err


# ----------------------------------------------------------------------------- DDP equivalence
@pytest.mark.ray
@pytest.mark.parametrize("launcher", ["actors", pytest.param("torch_trainer", marks=pytest.mark.slow)])
def test_two_workers_batch1_equal_one_worker_batch2(launcher, tmp_path_factory):
    """One SGD step: 2 Ray workers x batch 1 (DDP, gloo) == 1 process x batch 2.

    BatchNorm is frozen (``train.norm=frozen_bn``): per-worker batch statistics of one image
    would differ from those of two. The loss is a per-image mean, DDP averages gradients."""
    if launcher == "torch_trainer" and not ray_train_available()[0]:
        pytest.skip(f"ray.train unavailable: {ray_train_available()[1]}")
    from streamparse.pipelines.train import train

    root = _write_set(tmp_path_factory.mktemp("synth2"), 2, 0)
    sets = _sets(root, **{"data.short_side": "[96]", "train.epochs": 1, "train.eval_interval": 0,
                          "train.warmup_iters": 0, "train.lr_per_image": 0.02, "train.log_interval": 1})
    work = tmp_path_factory.mktemp("ddp")
    one = train(load_config(CFG, sets + ["train.batch_size=2"]), work / "one", num_workers=1, progress=False)
    two = train(load_config(CFG, sets + ["train.batch_size=1"]), work / "two", num_workers=2, progress=False,
                launcher=launcher)
    assert one["iterations"] == two["iterations"] == 1 and two["world_size"] == 2 and two["global_batch"] == 2
    init = load_config(CFG, sets)
    torch.manual_seed(init.train.seed)
    from streamparse.training.loop import build_train_model

    w0 = {k: v.detach() for k, v in build_train_model(init).state_dict().items()}
    w1, w2 = _weights(work / "one" / "last.pt"), _weights(work / "two" / "last.pt")
    assert _max_diff(w0, w1) > 1e-3  # the step moved the weights
    assert _max_diff(w1, w2) <= 1e-5, _max_diff(w1, w2)
    assert two["last_losses"]["loss"] == pytest.approx(one["last_losses"]["loss"], rel=1e-5)
