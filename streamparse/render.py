"""Overlays for people to look at (off the hot path)."""

from __future__ import annotations

import numpy as np


def overlay(image: np.ndarray, part: np.ndarray, instance: np.ndarray, palette: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend part colours over ``image`` (uint8 HxWx3 RGB) and draw person outlines.

    part uint8 (H,W), instance uint16 (H,W), palette uint8 (C,3). Returns uint8 HxWx3."""
    if image.shape[:2] != part.shape or part.shape != instance.shape:
        raise ValueError(f"image {image.shape[:2]}, part {part.shape} and instance {instance.shape} must match")
    pal = np.asarray(palette, dtype=np.uint8)
    if part.max(initial=0) >= len(pal):
        raise ValueError(f"part label {int(part.max())} has no palette colour (palette has {len(pal)})")
    out = image.astype(np.float32)
    fg = part > 0
    out[fg] = (1 - alpha) * out[fg] + alpha * pal[part[fg]].astype(np.float32)
    edge = np.zeros(part.shape, bool)
    edge[:-1] |= instance[:-1] != instance[1:]
    edge[:, :-1] |= instance[:, :-1] != instance[:, 1:]
    out[edge] = 255
    return out.clip(0, 255).astype(np.uint8)
