"""The training loop: one explicit function that every worker runs (nanoGPT style).

``run_training(cfg, work_dir, device=..., rank=..., world_size=...)`` builds the data, the model,
SGD and the lr schedule, optionally restores ``last_state.pt``, and trains. With
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

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from streamparse.store.outputs import finish_dir

from streamparse.training.data import AugmentedDataset, Collate, GlobalBatchSampler, TrainAugment
from streamparse.training.steps import LOSS_KEYS, LRSchedule, get_rng_state, per_image_loss, seed_everything, set_rng_state, set_train_mode

STATE_FORMAT = "streamparse-train-state-v1"
STATE_FILE = "last_state.pt"
SUMMARY_FILE = "summary.json"  # rank 0's return value of the last run
NORMS = ("frozen_bn", "bn", "syncbn")
OPTIMIZERS = ("sgd", "adamw")
CPU_AMP = ("none", "bf16")


class TrainingError(ValueError):
    """A bad training setup (data, config, resume state); the message says what to fix."""


def open_dataset(fmt: str, root: str, split: str):
    from streamparse.data import DATASETS

    if fmt not in DATASETS:
        raise TrainingError(f"data.format must be one of {', '.join(DATASETS)}, got {fmt!r}")
    if not root:
        raise TrainingError("data.root is not set (give it in the config or with --set data.root=DIR)")
    if not Path(root).is_dir():
        raise TrainingError(f"data root not found: {root}")
    return DATASETS[fmt](root, split)


def model_kwargs(cfg) -> dict:
    return {"num_classes": int(cfg.model.num_classes)}


def build_train_model(cfg) -> nn.Module:
    from streamparse.models import build_model

    return build_model(cfg.model.name, **model_kwargs(cfg))


def init_weights(model: nn.Module, source: str, cfg) -> None:
    """Load ``source`` ("default" = the shipped weights, or a checkpoint path) into ``model``
    (float32). The checkpoint must hold the same model and number of classes."""
    from streamparse import checkpoint as ck

    try:
        path = ck.resolve_checkpoint(source, cfg.model.name, cfg.model.num_classes) if source == "default" else source
        loaded, _ = ck.build_from_checkpoint(path, expect_model=cfg.model.name, expect_num_classes=cfg.model.num_classes)
    except ck.CheckpointError as exc:
        raise TrainingError(f"train.init_from: {exc}") from None
    try:
        model.load_state_dict(loaded.state_dict())
    except RuntimeError as exc:  # same name and classes, other builder kwargs
        raise TrainingError(f"train.init_from: {path} does not fit the model: {str(exc).splitlines()[0][:300]}") from None


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


# ----------------------------------------------------------------------------- state
def load_state(path: str | Path) -> dict:
    from streamparse.checkpoint import torch_load

    path = Path(path)
    if path.is_dir():
        path = path / STATE_FILE
    state = torch_load(path, "resume state", TrainingError)
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise TrainingError(f"{path} is not a streamparse training state (expected format {STATE_FORMAT!r})")
    return state


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
    from tqdm import tqdm

    from streamparse import checkpoint as ck
    from streamparse.config import save_config, to_dict
    from streamparse.models.losses import UniParserLoss

    tc, dc = cfg.train, cfg.data
    device = torch.device(device)
    work_dir = Path(work_dir)
    main = rank == 0
    if tc.norm not in NORMS:
        raise TrainingError(f"train.norm must be one of {', '.join(NORMS)}, got {tc.norm!r}")
    if tc.optimizer not in OPTIMIZERS:
        raise TrainingError(f"train.optimizer must be one of {', '.join(OPTIMIZERS)}, got {tc.optimizer!r}")
    if tc.cpu_amp not in CPU_AMP:
        raise TrainingError(f"train.cpu_amp must be one of {', '.join(CPU_AMP)}, got {tc.cpu_amp!r}")
    if tc.norm == "syncbn" and world_size > 1 and device.type != "cuda":
        raise TrainingError("train.norm=syncbn needs CUDA workers (--gpu); use frozen_bn or bn on CPU")
    t_start = time.perf_counter()

    # -- data
    train_set = open_dataset(dc.format, dc.root, dc.train_split)
    space = train_set.label_space
    class_names = list(space.names)
    if space.num_classes != cfg.model.num_classes:
        raise TrainingError(f"model.num_classes={cfg.model.num_classes} but data.format={dc.format} has {space.num_classes} classes")
    global_batch = tc.batch_size * world_size
    iters_per_epoch = GlobalBatchSampler.batches_per_epoch(len(train_set), global_batch)
    if iters_per_epoch == 0:
        raise TrainingError(f"{len(train_set)} training images < one global batch of {global_batch} images")
    val_set = None
    if main and tc.eval_interval > 0:
        try:
            val_set = open_dataset(dc.format, dc.root, dc.val_split)
        except (ValueError, OSError) as exc:
            print(f"train: no evaluation ({exc}); best.pt will not be written")

    # -- model, optimizer, schedule (identical init on every rank: same seed)
    seed_everything(tc.seed)
    model = build_train_model(cfg).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if tc.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=tc.lr_per_image * global_batch, momentum=tc.momentum, weight_decay=tc.weight_decay)
    else:
        optimizer = torch.optim.AdamW(params, lr=tc.lr_per_image * global_batch, weight_decay=tc.weight_decay)
    schedule = LRSchedule(base_lr=tc.lr_per_image * global_batch, warmup_iters=tc.warmup_iters,
                          warmup_ratio=tc.warmup_ratio, steps=tuple(tc.lr_steps), gamma=tc.lr_gamma)
    use_amp = bool(tc.amp) and device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.float16)) if use_amp else contextlib.nullcontext
    if device.type == "cpu" and tc.cpu_amp == "bf16":
        autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731 (no scaler: bf16 has fp32's range)
    loss_fn = UniParserLoss(weights=tuple(tc.loss_weights), cihp_variant=tc.cihp_variant)

    epoch, batch_in_epoch, iteration, best = 0, 0, 0, None
    if resume_state is not None:
        saved_model = (resume_state.get("config") or {}).get("model", {})
        for key in ("name", "num_classes"):
            if saved_model.get(key) != getattr(cfg.model, key):
                raise TrainingError(f"the resume state was trained with model.{key}={saved_model.get(key)!r}, "
                                    f"the config has {getattr(cfg.model, key)!r}")
        model.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        if resume_state.get("scaler"):
            scaler.load_state_dict(resume_state["scaler"])
        epoch, batch_in_epoch = int(resume_state["epoch"]), int(resume_state["batch_in_epoch"])
        iteration, best = int(resume_state["iteration"]), resume_state.get("best_metric")
        saved_batch = int(resume_state.get("global_batch", global_batch))
        if saved_batch != global_batch:  # not exact any more: keep the number of images seen this epoch
            batch_in_epoch = batch_in_epoch * saved_batch // global_batch
            if main:
                print(f"train: warning: resuming with a global batch of {global_batch} images (the state was "
                      f"saved with {saved_batch}): the lr and the data order change")
        set_rng_state(resume_state["rng"])
    elif tc.init_from:
        init_weights(model, tc.init_from, cfg)
        if main:
            print(f"train: initialised from {tc.init_from}")
    if tc.norm == "syncbn" and world_size > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    net = model
    if world_size > 1:
        net = wrap_model(model) if wrap_model is not None else nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)

    collate = Collate(num_classes=space.num_classes, grid=model.grid, stride=model.stride)
    augment = TrainAugment(short_sides=dc.short_side, max_long_side=dc.max_long_side, flip_prob=dc.flip_prob, label_space=space)
    data = AugmentedDataset(train_set, augment, seed=tc.seed)

    if main:
        work_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, work_dir / "config.yaml")
    log = MetricsLog(work_dir / "metrics.jsonl", enabled=main)
    if main:
        finish_dir(work_dir, "training")
    ckpt_meta = dict(model_name=cfg.model.name, model_kwargs=model_kwargs(cfg), class_names=class_names, config=to_dict(cfg))
    last_eval, last_losses = None, {}

    def save_state(epoch_: int, batch_: int) -> None:
        ck.atomic_save({"format": STATE_FORMAT, "epoch": epoch_, "batch_in_epoch": batch_, "iteration": iteration,
               "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
               "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if use_amp else None,
               "schedule": {"base_lr": schedule.base_lr, "warmup_iters": schedule.warmup_iters,
                            "warmup_ratio": schedule.warmup_ratio, "steps": list(schedule.steps), "gamma": schedule.gamma},
               "rng": get_rng_state(), "best_metric": best, "global_batch": global_batch, "world_size": world_size,
               "config": to_dict(cfg)}, work_dir / STATE_FILE)
        finish_dir(work_dir, "training")  # every file here is ours (README "Safety of outputs")

    in_step = False
    try:
        while epoch < tc.epochs:
            set_train_mode(net, tc.norm)
            sampler = GlobalBatchSampler(len(train_set), batch_size=tc.batch_size, world_size=world_size, rank=rank,
                                         seed=tc.seed, epoch=epoch, start_batch=batch_in_epoch,
                                         batch_key=dc.scale_per_batch)
            loader = torch.utils.data.DataLoader(data, batch_sampler=sampler, collate_fn=collate, num_workers=tc.num_workers,
                                                 pin_memory=device.type == "cuda")
            bar = tqdm(total=iters_per_epoch, initial=batch_in_epoch, desc=f"epoch {epoch + 1}/{tc.epochs}",
                       disable=not (progress and main and world_size == 1), dynamic_ncols=True, leave=True)
            t_data = time.perf_counter()
            for batch in loader:
                t_step = time.perf_counter()
                in_step = True
                lr = schedule(iteration, epoch)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                images = batch.images.to(device, non_blocking=device.type == "cuda")
                targets = [t.to(device) for t in batch.targets]
                with autocast():
                    out = net(images, centers=[t.pos_cells for t in targets], compute_parsing=False)
                losses = per_image_loss(loss_fn, out, targets)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(losses["loss"]).backward()
                scaler.unscale_(optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(params, tc.grad_clip) if tc.grad_clip > 0 else torch.zeros(())
                scaler.step(optimizer)
                scaler.update()
                iteration += 1
                batch_in_epoch += 1
                in_step = False

                bar.update(1)
                if iteration % max(tc.log_interval, 1) == 0 or batch_in_epoch == iters_per_epoch:
                    vals = torch.stack([losses[k].detach().float() for k in LOSS_KEYS] + [grad_norm.detach().float().to(device)])
                    if world_size > 1:
                        torch.distributed.all_reduce(vals)
                        vals /= world_size
                    last_losses = dict(zip(LOSS_KEYS + ("grad_norm",), (round(float(v), 6) for v in vals.cpu())))
                    if not all(math.isfinite(last_losses[k]) for k in LOSS_KEYS):  # (grad_norm may be inf under AMP)
                        raise TrainingError(f"non-finite loss at iteration {iteration}: {last_losses}")
                    bar.set_postfix(loss=f"{last_losses['loss']:.3f}", c=f"{last_losses['loss_center']:.3f}",
                                    ins=f"{last_losses['loss_aux_ins']:.3f}", cate=f"{last_losses['loss_aux_cate']:.3f}",
                                    par=f"{last_losses['loss_par']:.3f}", met=f"{last_losses['loss_metric']:.3f}", lr=f"{lr:.2e}")
                    log.write(type="train", epoch=epoch + 1, iter=iteration, lr=lr, **last_losses,
                              data_s=round(t_step - t_data, 4), step_s=round(time.perf_counter() - t_step, 4))
                    if progress and main and world_size > 1:  # no progress bar through Ray's log forwarding
                        print(f"epoch {epoch + 1}/{tc.epochs} iter {iteration} lr {lr:.2e} "
                              + " ".join(f"{k} {v:.4f}" for k, v in last_losses.items()), flush=True)
                t_data = time.perf_counter()
            bar.close()
            epoch, batch_in_epoch = epoch + 1, 0

            if main:  # evaluation and checkpoints (other ranks go on and wait at the next all-reduce)
                if val_set is not None and tc.eval_interval > 0 and (epoch % tc.eval_interval == 0 or epoch == tc.epochs):
                    t0 = time.perf_counter()
                    last_eval = evaluate_model(model, cfg, val_set, class_names, device, progress=progress and world_size == 1)
                    if last_eval is not None:
                        log.write(type="eval", epoch=epoch, iter=iteration, split=dc.val_split,
                                  seconds=round(time.perf_counter() - t0, 3), **last_eval)
                        score = last_eval.get("AP_p_vol")
                        score = -1.0 if score is None else float(score)
                        if best is None or score > best:
                            best = score
                            ck.save_checkpoint(work_dir / "best.pt", model, **ckpt_meta,
                                               extra={"epoch": epoch, "iteration": iteration, "metrics": last_eval})
                extra = {"epoch": epoch, "iteration": iteration, "metrics": last_eval}
                ck.save_checkpoint(work_dir / "last.pt", model, **ckpt_meta, extra=extra)
                if tc.checkpoint_interval > 0 and epoch % tc.checkpoint_interval == 0:
                    ck.save_checkpoint(work_dir / f"epoch_{epoch}.pt", model, **ckpt_meta, extra=extra)
                save_state(epoch, 0)
    except KeyboardInterrupt:
        if main and world_size == 1 and not in_step and iteration > 0:
            save_state(epoch, batch_in_epoch)
            print(f"\ntrain: interrupted; state saved at epoch {epoch + 1}, batch {batch_in_epoch} "
                  f"(continue with --resume auto)")
        raise
    finally:
        log.close()

    summary = {
        "work_dir": str(work_dir),
        "epochs": epoch,
        "iterations": iteration,
        "world_size": world_size,
        "global_batch": global_batch,
        "last_checkpoint": str(work_dir / "last.pt"),
        "best_checkpoint": str(work_dir / "best.pt") if main and (work_dir / "best.pt").is_file() else None,
        "best_AP_p_vol": best,
        "last_eval": last_eval,
        "last_losses": last_losses,
        "seconds": round(time.perf_counter() - t_start, 3),
    }
    if main:
        (work_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=float) + "\n")
        finish_dir(work_dir, "training")
    return summary
