"""Training data: seeded augmentation, a global-batch sampler shared by all workers, collation.

Determinism does not depend on process state: the augmentation of image ``i`` in epoch ``e``
draws from ``np.random.default_rng([seed, e, i])`` and the image order of epoch ``e`` is a
permutation drawn from ``default_rng([seed, e])``. So the data stream is the same with any
number of dataloader workers, and a resumed run (epoch, batch) sees exactly what an
uninterrupted run would have seen.

Distributed: every rank draws the same permutation and cuts it into *global* batches of
``batch_size * world_size`` images; rank ``r`` takes images ``[r*b, (r+1)*b)`` of each global
batch. One step with 2 workers x batch 1 thus sees the same images as 1 worker x batch 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from streamparse.categories import LabelSpace
from streamparse.data.transforms import RandomFlip, ResizeShortSide
from streamparse.engine.preprocess import SIZE_DIVISOR, normalize_image

class TrainAugment:
    """Scale jitter of the short side (one of ``short_sides``, long side <= ``max_long_side``)
    then a horizontal flip with probability ``flip_prob`` that swaps left/right labels.

    ``__call__(item, rng)`` maps a dataset item ``dict(image uint8[H,W,3], persons [uint8[H,W]])``
    to an augmented item; ``rng`` is the per-sample generator.
    """

    def __init__(self, *, short_sides: Sequence[int], max_long_side: int, flip_prob: float, label_space: LabelSpace):
        if not short_sides:
            raise ValueError("short_sides must hold at least one size")
        self.short_sides = tuple(int(s) for s in short_sides)
        self.max_long_side = int(max_long_side)
        self.flip_prob = float(flip_prob)
        self.label_space = label_space

    def __call__(self, item: dict, rng: np.random.Generator, short_side: int | None = None) -> dict:
        """``short_side`` (one of ``short_sides``) fixes the scale, e.g. one scale per batch."""
        if short_side is not None and short_side not in self.short_sides:
            raise ValueError(f"short_side {short_side} is not one of {self.short_sides}")
        sides = self.short_sides if short_side is None else (short_side,)
        item = ResizeShortSide(sides, self.max_long_side, rng=rng)(item)
        if self.flip_prob > 0:
            item = RandomFlip(self.flip_prob, self.label_space, rng=rng)(item)
        return item


class AugmentedDataset(torch.utils.data.Dataset):
    """Wraps a dataset reader; indexed by ``(index, epoch)`` or ``(index, epoch, batch)`` keys from
    ``GlobalBatchSampler``. With a batch number, the scale is drawn once per global batch (every image of
    the batch gets the same short side: no padding to the batch's largest scale)."""

    def __init__(self, dataset, augment: TrainAugment | None, *, seed: int):
        self.dataset = dataset
        self.augment = augment
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, ...]) -> dict:
        index, epoch = key[0], key[1]
        item = self.dataset[index]
        if self.augment is not None:
            side = None
            if len(key) > 2:
                sides = self.augment.short_sides
                side = sides[int(np.random.default_rng([self.seed, epoch, key[2], 1]).integers(len(sides)))]
            item = self.augment(item, np.random.default_rng([self.seed, epoch, index]), short_side=side)
        return item


class GlobalBatchSampler(torch.utils.data.Sampler):
    """Yields this rank's share of each global batch of one epoch, as ``(index, epoch)`` keys
    (``(index, epoch, batch)`` with ``batch_key=True``: the global batch number, for a per-batch scale).

    The incomplete last global batch is dropped (every rank runs the same number of steps).
    ``start_batch`` skips the first batches (mid-epoch resume).
    """

    def __init__(self, num_items: int, *, batch_size: int, world_size: int = 1, rank: int = 0, seed: int = 0,
                 epoch: int = 0, start_batch: int = 0, batch_key: bool = False):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.num_items, self.batch_size, self.world_size, self.rank = num_items, batch_size, world_size, rank
        self.seed, self.epoch, self.start_batch = int(seed), int(epoch), int(start_batch)
        self.batch_key = bool(batch_key)

    @staticmethod
    def batches_per_epoch(num_items: int, global_batch: int) -> int:
        return num_items // global_batch

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch(self.num_items, self.batch_size * self.world_size) - self.start_batch)

    def __iter__(self):
        g = self.batch_size * self.world_size
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_items)
        for b in range(self.start_batch, self.batches_per_epoch(self.num_items, g)):
            part = order[b * g + self.rank * self.batch_size : b * g + (self.rank + 1) * self.batch_size]
            yield [(int(i), self.epoch, b) if self.batch_key else (int(i), self.epoch) for i in part]


@dataclass
class Batch:
    """A collated batch. images (B,3,H,W) float32 normalised, H/W multiples of ``size_divisor``;
    targets: B ``ImageTargets``; image_ids: B str; sizes: B (h, w) before padding."""

    images: torch.Tensor
    targets: list
    image_ids: list[str]
    sizes: list[tuple[int, int]]

    def pin_memory(self) -> "Batch":  # called by DataLoader(pin_memory=True) (CUDA only)
        self.images = self.images.pin_memory()
        return self


class Collate:
    """Pads images (bottom/right, zeros after normalisation) to a common size that is a multiple
    of ``size_divisor`` and builds the targets of every image at that padded size."""

    def __init__(self, *, num_classes: int, grid: int, stride: int, sigma: float = 0.2, size_divisor: int = SIZE_DIVISOR):
        self.num_classes, self.grid, self.stride, self.sigma = num_classes, grid, stride, sigma
        self.size_divisor = size_divisor

    def __call__(self, items: list[dict]) -> Batch:
        from streamparse.models.targets import build_targets

        if not items:
            raise ValueError("empty batch")
        d = self.size_divisor
        H = -(-max(it["image"].shape[0] for it in items) // d) * d
        W = -(-max(it["image"].shape[1] for it in items) // d) * d
        images = torch.zeros((len(items), 3, H, W), dtype=torch.float32)
        targets, ids, sizes = [], [], []
        for i, it in enumerate(items):
            img = it["image"]
            if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                raise ValueError(f"{it.get('image_id')}: image must be uint8[H, W, 3], got {img.dtype}{list(img.shape)}")
            h, w = img.shape[:2]
            images[i, :, :h, :w] = normalize_image(img)
            targets.append(build_targets(it["persons"], image_size=(H, W), num_classes=self.num_classes, grid=self.grid,
                                         sigma=self.sigma, stride=self.stride))
            ids.append(str(it.get("image_id", i)))
            sizes.append((h, w))
        return Batch(images=images, targets=targets, image_ids=ids, sizes=sizes)
