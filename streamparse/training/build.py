"""What a training run is built from (``streamparse.training.loop.run_training`` calls these in order):
the checks of the ``train.*`` choices, the data, the model and its first weights, the optimizer with
its lr schedule and AMP, the resume state (or ``train.init_from``) and the DDP wrapper."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, NamedTuple

import torch
from torch import nn

from streamparse.training.data import GlobalBatchSampler
from streamparse.training.steps import LRSchedule, set_rng_state

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


def load_state(path: str | Path) -> dict:
    from streamparse.checkpoint import torch_load

    path = Path(path)
    if path.is_dir():
        path = path / STATE_FILE
    state = torch_load(path, "resume state", TrainingError)
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise TrainingError(f"{path} is not a streamparse training state (expected format {STATE_FORMAT!r})")
    return state


class TrainData(NamedTuple):
    """The data of a run: the training set (and the validation set on rank 0 when evaluating), its
    label space and how it splits into global batches."""

    train_set: object
    val_set: object | None
    space: object
    class_names: list
    global_batch: int
    iters_per_epoch: int


class Optimization(NamedTuple):
    """What one optimizer step uses: the trainable parameters, the optimizer, the lr schedule, the AMP
    gradient scaler (enabled on CUDA with ``train.amp``), the autocast context factory and the loss."""

    params: list
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    scaler: torch.amp.GradScaler
    use_amp: bool
    autocast: Callable
    loss_fn: nn.Module


def check_train_setup(tc, device: torch.device, world_size: int) -> None:
    """Refuse the ``train.*`` choices that are not known, or not possible on ``device``."""
    if tc.norm not in NORMS:
        raise TrainingError(f"train.norm must be one of {', '.join(NORMS)}, got {tc.norm!r}")
    if tc.optimizer not in OPTIMIZERS:
        raise TrainingError(f"train.optimizer must be one of {', '.join(OPTIMIZERS)}, got {tc.optimizer!r}")
    if tc.cpu_amp not in CPU_AMP:
        raise TrainingError(f"train.cpu_amp must be one of {', '.join(CPU_AMP)}, got {tc.cpu_amp!r}")
    if tc.norm == "syncbn" and world_size > 1 and device.type != "cuda":
        raise TrainingError("train.norm=syncbn needs CUDA workers (--gpu); use frozen_bn or bn on CPU")


def open_train_data(cfg, *, main: bool, world_size: int) -> TrainData:
    """The training set (checked against ``model.num_classes`` and the global batch) and, on rank 0 when
    ``train.eval_interval`` > 0, the validation set (None, with a note, when it cannot be opened)."""
    tc, dc = cfg.train, cfg.data
    train_set = open_dataset(dc.format, dc.root, dc.train_split)
    space = train_set.label_space
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
    return TrainData(train_set, val_set, space, list(space.names), global_batch, iters_per_epoch)


def build_optimization(tc, model: nn.Module, global_batch: int, device: torch.device) -> Optimization:
    """SGD or AdamW at ``lr_per_image * global_batch``, its warm-up/step schedule, the gradient scaler,
    autocast (float16 on CUDA with ``train.amp``, bfloat16 on the CPU with ``train.cpu_amp=bf16``,
    else none) and the UniParser loss."""
    from streamparse.models.losses import UniParserLoss

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
    return Optimization(params, optimizer, schedule, scaler, use_amp, autocast, loss_fn)


def restore_or_init(cfg, model: nn.Module, opt: Optimization, resume_state: dict | None, global_batch: int,
             main: bool) -> tuple[int, int, int, float | None]:
    """Continue from ``resume_state`` (weights, optimizer, scaler, RNG states; same model) or start from
    ``train.init_from``; returns where the loop stands: (epoch, batch_in_epoch, iteration, best)."""
    if resume_state is None:
        if cfg.train.init_from:
            init_weights(model, cfg.train.init_from, cfg)
            if main:
                print(f"train: initialised from {cfg.train.init_from}")
        return 0, 0, 0, None
    saved_model = (resume_state.get("config") or {}).get("model", {})
    for key in ("name", "num_classes"):
        if saved_model.get(key) != getattr(cfg.model, key):
            raise TrainingError(f"the resume state was trained with model.{key}={saved_model.get(key)!r}, "
                                f"the config has {getattr(cfg.model, key)!r}")
    model.load_state_dict(resume_state["model"])
    opt.optimizer.load_state_dict(resume_state["optimizer"])
    if resume_state.get("scaler"):
        opt.scaler.load_state_dict(resume_state["scaler"])
    epoch, batch_in_epoch = int(resume_state["epoch"]), int(resume_state["batch_in_epoch"])
    iteration, best = int(resume_state["iteration"]), resume_state.get("best_metric")
    saved_batch = int(resume_state.get("global_batch", global_batch))
    if saved_batch != global_batch:  # not exact any more: keep the number of images seen this epoch
        batch_in_epoch = batch_in_epoch * saved_batch // global_batch
        if main:
            print(f"train: warning: resuming with a global batch of {global_batch} images (the state was "
                  f"saved with {saved_batch}): the lr and the data order change")
    set_rng_state(resume_state["rng"])
    return epoch, batch_in_epoch, iteration, best


def parallel_model(model: nn.Module, norm: str, device: torch.device, world_size: int,
              wrap_model: Callable[[nn.Module], nn.Module] | None) -> tuple[nn.Module, nn.Module]:
    """(model, net): with several workers, SyncBatchNorm (``train.norm=syncbn``) and the DDP wrapper
    (``wrap_model``, e.g. Ray Train's, or DistributedDataParallel); one worker trains ``model`` itself."""
    if norm == "syncbn" and world_size > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    net = model
    if world_size > 1:
        net = wrap_model(model) if wrap_model is not None else nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)
    return model, net
