"""The pieces of one training step: the learning-rate schedule, RNG state (for exact resume), the
BatchNorm mode and the per-image loss."""

from __future__ import annotations

import random
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import nn

LOSS_KEYS = ("loss", "loss_center", "loss_aux_ins", "loss_aux_cate", "loss_par", "loss_metric")


@dataclass(frozen=True)
class LRSchedule:
    """lr(iteration, epoch) = base_lr * gamma^(#steps <= epoch) * warm-up factor.

    Linear warm-up over the first ``warmup_iters`` iterations from ``warmup_ratio * lr`` (mmdet's
    'linear' warm-up); ``steps`` are 0-based epoch indices at which the lr drops by ``gamma``
    (steps (9, 11): epochs 1-9 at base lr, 10-11 at 0.1x, 12 at 0.01x).
    """

    base_lr: float
    warmup_iters: int = 500
    warmup_ratio: float = 0.001
    steps: tuple[int, ...] = (9, 11)
    gamma: float = 0.1

    def __call__(self, iteration: int, epoch: int) -> float:
        lr = self.base_lr * self.gamma ** sum(1 for s in self.steps if epoch >= s)
        if iteration < self.warmup_iters:
            lr *= 1.0 - (1.0 - iteration / self.warmup_iters) * (1.0 - self.warmup_ratio)
        return lr


# ----------------------------------------------------------------------------- RNG and norm
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def get_rng_state() -> dict:
    """torch/CUDA/numpy/python RNG states as weights_only-loadable data."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def set_train_mode(model: nn.Module, norm: str) -> None:
    """``model.train()``; with ``frozen_bn`` every BatchNorm stays in eval mode (running statistics
    are used and never updated; its affine parameters still train)."""
    model.train()
    if norm == "frozen_bn":
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


# ----------------------------------------------------------------------------- loss
def per_image_loss(loss_fn: nn.Module, out, targets: list) -> dict[str, torch.Tensor]:
    """Mean over the batch of the per-image ``UniParserLoss`` (in float32)."""
    B = out.center_logits.shape[0]
    totals: dict[str, torch.Tensor] = {}
    for i in range(B):
        one = type(out)(**{f.name: _slice(getattr(out, f.name), f.name, i) for f in fields(out)})
        terms = loss_fn(one, [targets[i]])
        for k in LOSS_KEYS:
            totals[k] = totals[k] + terms[k] if k in totals else terms[k]
    return {k: v / B for k, v in totals.items()}


def _slice(value, name: str, i: int):
    if value is None:
        return None
    if name == "cate_kernels":  # shared by all images
        return value.float()
    if isinstance(value, list):
        return [value[i].float() if value[i].is_floating_point() else value[i]]
    return value[i : i + 1].float()


# ----------------------------------------------------------------------------- data / model
