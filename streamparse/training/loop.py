"""The training loop: one explicit function that every worker runs (nanoGPT style).

``run_training(cfg, work_dir, device=..., rank=..., world_size=...)`` builds the data, the model,
SGD and the lr schedule, optionally restores ``last_state.pt`` (those pieces: ``training/build.py``),
and trains: ``_train_epoch`` runs ``_train_step`` per batch and ``_log_step`` every ``log_interval``;
``_end_epoch`` evaluates and writes the checkpoints and the resume state. With
``world_size > 1`` the process group must already exist (Ray Train's ``TorchTrainer`` or the
actor launcher in ``distributed.py`` create it); the model is wrapped in DDP, rank 0 writes
every file. Files in ``work_dir``: ``config.yaml``, ``metrics.jsonl``, ``last.pt``, ``best.pt``,
``epoch_N.pt`` (weights-only checkpoints, ``streamparse.checkpoint`` format), ``summary.json`` and
``last_state.pt`` (resume state: weights, optimizer, scaler, schedule position, RNG states --
plain tensors/lists/numbers, loadable with ``weights_only=True``).

Loss normalisation: the loss is computed per image and averaged over the images of the local
batch; DDP averages gradients over ranks, so the gradient is the mean over the global batch
whatever the split into workers (2 workers x batch 1 == 1 worker x batch 2).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from streamparse.store.outputs import finish_dir
from streamparse.training.build import (
    STATE_FILE,
    STATE_FORMAT,
    SUMMARY_FILE,
    Optimization,
    TrainData,
    TrainingError,
    build_optimization,
    build_train_model,
    check_train_setup,
    model_kwargs,
    open_train_data,
    parallel_model,
    restore_or_init,
)
from streamparse.training.data import AugmentedDataset, Collate, GlobalBatchSampler, TrainAugment
from streamparse.training.steps import LOSS_KEYS, get_rng_state, per_image_loss, seed_everything, set_train_mode

# moved to training/build.py in 0.3.0, still importable from here
from streamparse.training.build import NORMS, init_weights, load_state, open_dataset  # noqa: E402,F401


def evaluate_model(model: nn.Module, cfg, dataset, class_names: list[str], device: torch.device,
                   progress: bool = False) -> dict | None:
    """AP^p / PCP / mIoU of ``model`` on ``dataset`` (a copy of the model runs in a Predictor).
    None when ``streamparse.evaluation.metrics.evaluate_parsing`` is not available."""
    try:
        from streamparse.evaluation.metrics import evaluate_parsing
    except ImportError:
        return None
    from streamparse.engine.factory import predictor_for_model

    predictor = predictor_for_model(model, cfg, class_names=class_names,
                                    input_size=(cfg.data.test_short_side, cfg.data.max_long_side), device=device)
    n = len(dataset) if cfg.train.eval_max_images <= 0 else min(len(dataset), cfg.train.eval_max_images)
    gts, preds = [], []
    from tqdm import tqdm

    for i in tqdm(range(n), desc="eval", disable=not progress, leave=False, dynamic_ncols=True):
        item = dataset[i]
        parsing = predictor.predict([item["image"]])[0]
        gts.append(item["persons"])
        preds.append(list(zip(parsing.person_masks(), parsing.scores.tolist())))
    res = evaluate_parsing(gts, preds, len(class_names))
    keep = ("AP_p", "AP_p_50", "AP_p_vol", "PCP_50", "mIoU", "num_images", "num_gt", "num_pred")
    return json.loads(json.dumps({k: res.get(k) for k in keep}, default=float))


class MetricsLog:
    """Appends one JSON object per line to ``metrics.jsonl`` (rank 0 only; no-op elsewhere)."""

    def __init__(self, path: Path, enabled: bool):
        self.f = open(path, "a") if enabled else None

    def write(self, **record) -> None:
        if self.f is not None:
            self.f.write(json.dumps(record, default=float) + "\n")
            self.f.flush()

    def close(self) -> None:
        if self.f is not None:
            self.f.close()


# ----------------------------------------------------------------------------- the loop
@dataclass
class TrainRun:
    """One worker's run: what it was built from and where the loop stands (``epoch``, ``batch_in_epoch``,
    ``iteration``, the best AP^p_vol so far, the last evaluation and losses; ``in_step`` while an
    optimizer step is half done, when an interrupt must not save the state)."""

    cfg: object
    work_dir: Path
    device: torch.device
    rank: int
    world_size: int
    data: TrainData
    model: nn.Module  # the module whose weights are saved (``net`` may wrap it in DDP)
    net: nn.Module
    opt: Optimization
    epoch: int = 0
    batch_in_epoch: int = 0
    iteration: int = 0
    best: float | None = None
    last_eval: dict | None = None
    last_losses: dict = field(default_factory=dict)
    in_step: bool = False
    log: MetricsLog | None = None
    ckpt_meta: dict = field(default_factory=dict)

    @property
    def main(self) -> bool:
        return self.rank == 0


def _save_state(run: TrainRun, epoch: int, batch_in_epoch: int) -> None:
    """``last_state.pt``: everything ``--resume`` needs to continue exactly from (epoch, batch_in_epoch)."""
    from streamparse import checkpoint as ck
    from streamparse.config import to_dict

    o = run.opt
    ck.atomic_save({"format": STATE_FORMAT, "epoch": epoch, "batch_in_epoch": batch_in_epoch, "iteration": run.iteration,
                    "model": {k: v.detach().cpu().clone() for k, v in run.model.state_dict().items()},
                    "optimizer": o.optimizer.state_dict(), "scaler": o.scaler.state_dict() if o.use_amp else None,
                    "schedule": {"base_lr": o.schedule.base_lr, "warmup_iters": o.schedule.warmup_iters,
                                 "warmup_ratio": o.schedule.warmup_ratio, "steps": list(o.schedule.steps),
                                 "gamma": o.schedule.gamma},
                    "rng": get_rng_state(), "best_metric": run.best, "global_batch": run.data.global_batch,
                    "world_size": run.world_size, "config": to_dict(run.cfg)}, run.work_dir / STATE_FILE)
    finish_dir(run.work_dir, "training")  # every file here is ours (README "Safety of outputs")


def _train_step(run: TrainRun, batch) -> tuple[float, dict, torch.Tensor]:
    """One optimizer step on one local batch at the schedule's lr; returns (lr, the per-image-mean
    losses, the gradient norm before clipping)."""
    tc, o, device = run.cfg.train, run.opt, run.device
    run.in_step = True
    lr = o.schedule(run.iteration, run.epoch)
    for group in o.optimizer.param_groups:
        group["lr"] = lr
    images = batch.images.to(device, non_blocking=device.type == "cuda")
    targets = [t.to(device) for t in batch.targets]
    with o.autocast():
        out = run.net(images, centers=[t.pos_cells for t in targets], compute_parsing=False)
    losses = per_image_loss(o.loss_fn, out, targets)
    o.optimizer.zero_grad(set_to_none=True)
    o.scaler.scale(losses["loss"]).backward()
    o.scaler.unscale_(o.optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(o.params, tc.grad_clip) if tc.grad_clip > 0 else torch.zeros(())
    o.scaler.step(o.optimizer)
    o.scaler.update()
    run.iteration += 1
    run.batch_in_epoch += 1
    run.in_step = False
    return lr, losses, grad_norm


def _log_step(run: TrainRun, bar, lr: float, losses: dict, grad_norm: torch.Tensor, *, data_s: float, t_step: float,
              progress: bool) -> None:
    """The losses averaged over the workers (a non-finite loss stops the run) to the progress bar,
    ``metrics.jsonl`` and, with several workers, a printed line."""
    tc, epoch, world_size = run.cfg.train, run.epoch, run.world_size
    vals = torch.stack([losses[k].detach().float() for k in LOSS_KEYS] + [grad_norm.detach().float().to(run.device)])
    if world_size > 1:
        torch.distributed.all_reduce(vals)
        vals /= world_size
    last = run.last_losses = dict(zip(LOSS_KEYS + ("grad_norm",), (round(float(v), 6) for v in vals.cpu())))
    if not all(math.isfinite(last[k]) for k in LOSS_KEYS):  # (grad_norm may be inf under AMP)
        raise TrainingError(f"non-finite loss at iteration {run.iteration}: {last}")
    bar.set_postfix(loss=f"{last['loss']:.3f}", c=f"{last['loss_center']:.3f}",
                    ins=f"{last['loss_aux_ins']:.3f}", cate=f"{last['loss_aux_cate']:.3f}",
                    par=f"{last['loss_par']:.3f}", met=f"{last['loss_metric']:.3f}", lr=f"{lr:.2e}")
    run.log.write(type="train", epoch=epoch + 1, iter=run.iteration, lr=lr, **last,
                  data_s=data_s, step_s=round(time.perf_counter() - t_step, 4))
    if progress and run.main and world_size > 1:  # no progress bar through Ray's log forwarding
        print(f"epoch {epoch + 1}/{tc.epochs} iter {run.iteration} lr {lr:.2e} "
              + " ".join(f"{k} {v:.4f}" for k, v in last.items()), flush=True)


def _train_epoch(run: TrainRun, samples, collate, progress: bool) -> None:
    """The rest of the current epoch: this worker's share of every global batch from ``batch_in_epoch``
    on (the sampler's order depends only on the seed and the epoch), logged every ``log_interval``."""
    from tqdm import tqdm

    tc, dc, device = run.cfg.train, run.cfg.data, run.device
    set_train_mode(run.net, tc.norm)
    sampler = GlobalBatchSampler(len(run.data.train_set), batch_size=tc.batch_size, world_size=run.world_size,
                                 rank=run.rank, seed=tc.seed, epoch=run.epoch, start_batch=run.batch_in_epoch,
                                 batch_key=dc.scale_per_batch)
    loader = torch.utils.data.DataLoader(samples, batch_sampler=sampler, collate_fn=collate, num_workers=tc.num_workers,
                                         pin_memory=device.type == "cuda")
    bar = tqdm(total=run.data.iters_per_epoch, initial=run.batch_in_epoch, desc=f"epoch {run.epoch + 1}/{tc.epochs}",
               disable=not (progress and run.main and run.world_size == 1), dynamic_ncols=True, leave=True)
    t_data = time.perf_counter()
    for batch in loader:
        t_step = time.perf_counter()
        lr, losses, grad_norm = _train_step(run, batch)
        bar.update(1)
        if run.iteration % max(tc.log_interval, 1) == 0 or run.batch_in_epoch == run.data.iters_per_epoch:
            _log_step(run, bar, lr, losses, grad_norm, data_s=round(t_step - t_data, 4), t_step=t_step, progress=progress)
        t_data = time.perf_counter()
    bar.close()


def _end_epoch(run: TrainRun, progress: bool) -> None:
    """Rank 0 after an epoch: evaluate when due (a better AP^p_vol writes ``best.pt``), then ``last.pt``,
    ``epoch_N.pt`` when due and the resume state. Other ranks go on and wait at the next all-reduce."""
    from streamparse import checkpoint as ck

    tc, dc, epoch, iteration = run.cfg.train, run.cfg.data, run.epoch, run.iteration
    if run.data.val_set is not None and tc.eval_interval > 0 and (epoch % tc.eval_interval == 0 or epoch == tc.epochs):
        t0 = time.perf_counter()
        run.last_eval = evaluate_model(run.model, run.cfg, run.data.val_set, run.data.class_names, run.device,
                                       progress=progress and run.world_size == 1)
        if run.last_eval is not None:
            run.log.write(type="eval", epoch=epoch, iter=iteration, split=dc.val_split,
                          seconds=round(time.perf_counter() - t0, 3), **run.last_eval)
            score = run.last_eval.get("AP_p_vol")
            score = -1.0 if score is None else float(score)
            if run.best is None or score > run.best:
                run.best = score
                ck.save_checkpoint(run.work_dir / "best.pt", run.model, **run.ckpt_meta,
                                   extra={"epoch": epoch, "iteration": iteration, "metrics": run.last_eval})
    extra = {"epoch": epoch, "iteration": iteration, "metrics": run.last_eval}
    ck.save_checkpoint(run.work_dir / "last.pt", run.model, **run.ckpt_meta, extra=extra)
    if tc.checkpoint_interval > 0 and epoch % tc.checkpoint_interval == 0:
        ck.save_checkpoint(run.work_dir / f"epoch_{epoch}.pt", run.model, **run.ckpt_meta, extra=extra)
    _save_state(run, epoch, 0)


def _open_work_dir(run: TrainRun) -> None:
    """Rank 0: the work dir with ``config.yaml``, marked as streamparse's; every rank: its metrics log
    (written on rank 0 only) and what every checkpoint carries besides the weights."""
    from streamparse.config import save_config, to_dict

    if run.main:
        run.work_dir.mkdir(parents=True, exist_ok=True)
        save_config(run.cfg, run.work_dir / "config.yaml")
    run.log = MetricsLog(run.work_dir / "metrics.jsonl", enabled=run.main)
    if run.main:
        finish_dir(run.work_dir, "training")
    run.ckpt_meta = dict(model_name=run.cfg.model.name, model_kwargs=model_kwargs(run.cfg),
                         class_names=run.data.class_names, config=to_dict(run.cfg))


def _summary(run: TrainRun, t_start: float) -> dict:
    """The run's summary (written to ``summary.json`` on rank 0)."""
    work_dir = run.work_dir
    summary = {
        "work_dir": str(work_dir),
        "epochs": run.epoch,
        "iterations": run.iteration,
        "world_size": run.world_size,
        "global_batch": run.data.global_batch,
        "last_checkpoint": str(work_dir / "last.pt"),
        "best_checkpoint": str(work_dir / "best.pt") if run.main and (work_dir / "best.pt").is_file() else None,
        "best_AP_p_vol": run.best,
        "last_eval": run.last_eval,
        "last_losses": run.last_losses,
        "seconds": round(time.perf_counter() - t_start, 3),
    }
    if run.main:
        (work_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=float) + "\n")
        finish_dir(work_dir, "training")
    return summary


def run_training(
    cfg,
    work_dir: str | Path,
    *,
    resume_state: dict | None = None,
    device: torch.device | str = "cpu",
    rank: int = 0,
    world_size: int = 1,
    wrap_model: Callable[[nn.Module], nn.Module] | None = None,
    progress: bool = True,
) -> dict:
    """Train per ``cfg`` (a ``streamparse.config.Config``); returns a summary dict (rank 0's is
    complete; other ranks return the same keys without eval results)."""
    tc, dc = cfg.train, cfg.data
    device = torch.device(device)
    check_train_setup(tc, device, world_size)
    t_start = time.perf_counter()
    data = open_train_data(cfg, main=rank == 0, world_size=world_size)

    seed_everything(tc.seed)  # identical init on every rank: same seed
    model = build_train_model(cfg).to(device)
    opt = build_optimization(tc, model, data.global_batch, device)
    epoch, batch_in_epoch, iteration, best = restore_or_init(cfg, model, opt, resume_state, data.global_batch, main=rank == 0)
    model, net = parallel_model(model, tc.norm, device, world_size, wrap_model)
    run = TrainRun(cfg, Path(work_dir), device, rank, world_size, data, model, net, opt,
                   epoch=epoch, batch_in_epoch=batch_in_epoch, iteration=iteration, best=best)

    collate = Collate(num_classes=data.space.num_classes, grid=model.grid, stride=model.stride)
    augment = TrainAugment(short_sides=dc.short_side, max_long_side=dc.max_long_side, flip_prob=dc.flip_prob,
                           label_space=data.space)
    samples = AugmentedDataset(data.train_set, augment, seed=tc.seed)
    _open_work_dir(run)
    try:
        while run.epoch < tc.epochs:
            _train_epoch(run, samples, collate, progress)
            run.epoch, run.batch_in_epoch = run.epoch + 1, 0
            if run.main:  # evaluation and checkpoints
                _end_epoch(run, progress)
    except KeyboardInterrupt:
        if run.main and world_size == 1 and not run.in_step and run.iteration > 0:
            _save_state(run, run.epoch, run.batch_in_epoch)
            print(f"\ntrain: interrupted; state saved at epoch {run.epoch + 1}, batch {run.batch_in_epoch} "
                  f"(continue with --resume auto)")
        raise
    finally:
        run.log.close()
    return _summary(run, t_start)
