"""Joint image + per-person label augmentations for dataset items.

Transforms are callables ``item -> item`` on ``dict(image=uint8[H, W, 3], persons=list[uint8[H, W]], ...)``;
other keys pass through unchanged. ``Compose`` chains them.
"""

from __future__ import annotations

from typing import Callable, Sequence

import cv2
import numpy as np

from streamparse.categories import LabelSpace
from streamparse.data.imagerule import resize_image, target_size


def _rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def flip_lut256(label_space: LabelSpace) -> np.ndarray:
    """uint8[256] LUT swapping the label space's left/right classes; other values (incl. 255) map to themselves."""
    lut = np.arange(256, dtype=np.uint8)
    lut[: label_space.num_classes] = label_space.flip_lut()
    return lut


def hflip(image: np.ndarray, persons: Sequence[np.ndarray], label_space: LabelSpace) -> tuple[np.ndarray, list[np.ndarray]]:
    """Mirror ``image`` (uint8[H, W, C]) and each label map (uint8[H, W]), swapping left/right labels."""
    if image.ndim not in (2, 3):
        raise ValueError(f"image must be [H, W] or [H, W, C], got shape {image.shape}")
    lut = flip_lut256(label_space)
    out = []
    for p in persons:
        if p.shape != image.shape[:2] or p.dtype != np.uint8:
            raise ValueError(f"person label map must be uint8{list(image.shape[:2])}, got {p.dtype}{list(p.shape)}")
        out.append(lut[p[:, ::-1]])
    return np.ascontiguousarray(image[:, ::-1]), out


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Callable[[dict], dict]]):
        self.transforms = list(transforms)

    def __call__(self, item: dict) -> dict:
        for t in self.transforms:
            item = t(item)
        return item


class RandomFlip:
    """Horizontal flip with probability ``p`` (left/right labels swapped)."""

    def __init__(self, p: float = 0.5, label_space: LabelSpace | None = None, rng: np.random.Generator | int | None = None):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        if label_space is None:
            raise ValueError("RandomFlip needs the label_space (its flip pairs)")
        self.p, self.label_space, self.rng = p, label_space, _rng(rng)

    def __call__(self, item: dict) -> dict:
        if self.rng.random() >= self.p:
            return item
        image, persons = hflip(item["image"], item["persons"], self.label_space)
        return {**item, "image": image, "persons": persons}


class ResizeShortSide:
    """Resize so the short side is a random choice of ``short_sides``, the long side at most ``max_long``.

    The size rule and the image interpolation are inference's (``streamparse.engine.preprocess``: bilinear,
    antialiased when shrinking); labels: nearest. Persons that vanish when downscaled are dropped.
    """

    def __init__(self, short_sides: int | Sequence[int], max_long: int | None = None,
                 rng: np.random.Generator | int | None = None):
        self.short_sides = (short_sides,) if isinstance(short_sides, int) else tuple(short_sides)
        if not self.short_sides or min(self.short_sides) < 1:
            raise ValueError(f"short_sides must be positive, got {short_sides}")
        if max_long is not None and max_long < 1:
            raise ValueError(f"max_long must be positive, got {max_long}")
        self.max_long, self.rng = max_long, _rng(rng)

    def __call__(self, item: dict) -> dict:
        image = item["image"]
        h, w = image.shape[:2]
        short = self.short_sides[int(self.rng.integers(len(self.short_sides)))]
        nh, nw, _ = target_size(h, w, short, self.max_long if self.max_long is not None else 1 << 30)
        if (nh, nw) == (h, w):
            return item
        image = resize_image(image, (nh, nw))
        persons = [cv2.resize(p, (nw, nh), interpolation=cv2.INTER_NEAREST) for p in item["persons"]]
        return {**item, "image": image, "persons": [p for p in persons if p.any()]}
