"""Per-person appearance features of parsed frames (schema v2): part areas and mean part colours.

A pure numpy function (one ``bincount`` per quantity over the whole batch), called by the predictor
side on the frames it parsed; the tracker compares people by these "part-colour signatures"
(red upper-clothes, blue pants, black hair) over the parts both show.
"""

from __future__ import annotations

import numpy as np


def instance_features(frames: np.ndarray, part: np.ndarray, instance: np.ndarray, inst_offset: np.ndarray,
                      num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels and mean RGB of each part of each person.

    Args:
        frames: uint8 (B,H,W,3) RGB frames the label maps were computed on.
        part: uint8 (B,H,W) part category per pixel (0 = background).
        instance: uint16 (B,H,W) person per pixel (0 = background, 1..K_b in frame b).
        inst_offset: int64 (B+1,) CSR offsets: frame b's people are rows inst_offset[b]:inst_offset[b+1],
            row inst_offset[b] + k - 1 being the person with value k in ``instance[b]``.
        num_classes: C, incl. background (part values must be < C).

    Returns:
        inst_part_area int32 (N,C): pixels of each part inside each person (column 0 = unlabelled
        pixels of the person, normally 0); inst_part_rgb uint8 (N,C,3): rounded mean colour of each
        part of each person, 0 where the part is absent. N = inst_offset[-1].
    """
    frames, part, instance = np.asarray(frames), np.asarray(part), np.asarray(instance)
    off = np.asarray(inst_offset)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (B,H,W,3), got {frames.dtype}{list(frames.shape)}")
    b, h, w = frames.shape[:3]
    if part.dtype != np.uint8 or part.shape != (b, h, w):
        raise ValueError(f"part must be uint8 {[b, h, w]}, got {part.dtype}{list(part.shape)}")
    if instance.dtype != np.uint16 or instance.shape != (b, h, w):
        raise ValueError(f"instance must be uint16 {[b, h, w]}, got {instance.dtype}{list(instance.shape)}")
    if off.shape != (b + 1,) or not np.issubdtype(off.dtype, np.integer) or (b and off[0] != 0) or np.any(np.diff(off) < 0):
        raise ValueError(f"inst_offset must be non-decreasing int64 (B+1,) = ({b + 1},) from 0, got {off.dtype}{list(off.shape)}")
    c = int(num_classes)
    if c < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    n = int(off[-1]) if b else 0
    if n == 0:
        return np.zeros((0, c), np.int32), np.zeros((0, c, 3), np.uint8)
    counts = np.diff(off)
    inst = instance.reshape(b, -1)
    if int(inst.max(initial=0)) > int(counts.max(initial=0)) and np.any(inst.max(axis=1) > counts):
        raise ValueError("instance holds a person id above the frame's instance count in inst_offset")
    if int(part.max(initial=0)) >= c:
        raise ValueError(f"part holds class {int(part.max())} >= num_classes {c}")
    fg = inst.ravel() > 0
    row = (np.repeat(off[:-1], h * w) + inst.ravel().astype(np.int64) - 1)[fg]  # person row of each fg pixel
    key = row * c + part.reshape(-1)[fg]
    m = n * c
    area = np.bincount(key, minlength=m)
    rgb = frames.reshape(-1, 3)[fg]
    sums = np.stack([np.bincount(key, weights=rgb[:, j], minlength=m) for j in range(3)], axis=1)
    mean = np.zeros((m, 3), np.uint8)
    has = area > 0
    mean[has] = np.clip(np.rint(sums[has] / area[has, None]), 0, 255).astype(np.uint8)
    return area.reshape(n, c).astype(np.int32), mean.reshape(n, c, 3)
