"""Per-person statistics of label maps: area, box, part areas and mean part colours, vectorised.

One pass of ``np.bincount`` over a batch of frames (no Python loop per person or per frame), so the
writer can fill the schema-v2 per-instance arrays and readers can derive part areas from the maps of
a schema-v1 store. Instance ids of a frame are 1..K (0 = background), as in the store.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class InstanceStats:
    """Rows in frame order, then instance id order (frame b's rows are ``offset[b]:offset[b+1]``).

    frame (N,) int64 position of the row's frame in the batch; inst_id (N,) uint16; area (N,) int64;
    bbox (N,4) int32 x0, y0, x1, y1 (x1/y1 exclusive); part_area (N,C) int32; part_rgb (N,C,3) uint8
    (mean colour of each part of the person, 0 where absent; zeros without an image); offset (B+1,) int64.
    """

    frame: np.ndarray
    inst_id: np.ndarray
    area: np.ndarray
    bbox: np.ndarray
    part_area: np.ndarray
    part_rgb: np.ndarray
    offset: np.ndarray


def instance_stats(part: np.ndarray, instance: np.ndarray, num_classes: int, images: np.ndarray | None = None,
                   counts: np.ndarray | None = None) -> InstanceStats:
    """Statistics of every person in a batch of label maps.

    part uint8 (B,H,W), instance uint16 (B,H,W) with ids 1..K_b per frame, images uint8 (B,H,W,3) RGB
    or None. ``counts`` (B,) int: the number of people of each frame (default: the frame's largest
    id); a person with no pixel gets area 0 and an empty box (0, 0, 0, 0).
    """
    part = np.asarray(part)
    instance = np.asarray(instance)
    if part.ndim == 2:
        part, instance = part[None], instance[None]
        images = None if images is None else np.asarray(images)[None]
    if part.shape != instance.shape or part.ndim != 3:
        raise ValueError(f"part {part.shape} and instance {instance.shape} must both be (B,H,W)")
    if part.dtype != np.uint8 or instance.dtype != np.uint16:
        raise ValueError(f"part must be uint8 and instance uint16, got {part.dtype} and {instance.dtype}")
    if images is not None and (images.shape[:3] != part.shape or images.shape[3:] != (3,) or images.dtype != np.uint8):
        raise ValueError(f"images must be uint8 {(*part.shape, 3)}, got {images.dtype} {images.shape}")
    B, H, W = part.shape
    C = int(num_classes)
    if part.size and int(part.max()) >= C:
        raise ValueError(f"part label {int(part.max())} >= num_classes {C}")
    kmax = instance.reshape(B, -1).max(axis=1).astype(np.int64) if part.size else np.zeros(B, np.int64)
    k = kmax if counts is None else np.asarray(counts, np.int64)
    if (k < kmax).any():
        raise ValueError("an instance id exceeds the frame's person count")
    offset = np.concatenate([[0], np.cumsum(k)]).astype(np.int64)
    n = int(offset[-1])
    # only the people's pixels are counted: their row is offset[b] + id - 1 (per-bin sums keep the pixel
    # order, so every sum is what a pass over all pixels gives)
    flat = instance.reshape(-1)
    idx = np.flatnonzero(flat)  # every foreground pixel, in pixel order
    fb, fp = np.divmod(idx, H * W)  # its frame and pixel
    r = offset[fb] - 1 + flat[idx]
    key = r * C + part.reshape(-1)[idx]
    pa = np.bincount(key, minlength=n * C).reshape(n, C)
    area = pa.sum(axis=1).astype(np.int64)
    bbox = _boxes(r, fp // W, fp % W, n, H, W) if n else np.zeros((0, 4), np.int32)
    rgb = np.zeros((n, C, 3), np.uint8)
    if images is not None and n:
        px = images.reshape(-1, 3)[idx]
        with np.errstate(invalid="ignore", divide="ignore"):
            for ch in range(3):
                s = np.bincount(key, weights=px[:, ch], minlength=n * C).reshape(n, C)
                rgb[..., ch] = np.where(pa > 0, np.round(s / np.maximum(pa, 1)), 0).astype(np.uint8)
    frame = np.repeat(np.arange(B, dtype=np.int64), k)
    inst_id = (np.arange(n, dtype=np.int64) - offset[frame] + 1).astype(np.uint16)
    return InstanceStats(frame=frame, inst_id=inst_id, area=area, bbox=bbox, part_area=pa.astype(np.int32),
                         part_rgb=rgb, offset=offset)


def _boxes(r: np.ndarray, ys: np.ndarray, xs: np.ndarray, n: int, H: int, W: int) -> np.ndarray:
    """(n,4) int32 boxes x0, y0, x1, y1 (exclusive) of rows ``r`` from their pixels' ys, xs; (0,0,0,0) for a
    row without pixels. Occupancy of each row's columns and lines, then the first and last occupied."""
    bbox = np.zeros((n, 4), np.int32)
    cols = np.bincount(r * W + xs, minlength=n * W).reshape(n, W) > 0
    lines = np.bincount(r * H + ys, minlength=n * H).reshape(n, H) > 0
    has = cols.any(axis=1)
    bbox[:, 0] = np.where(has, cols.argmax(axis=1), 0)
    bbox[:, 2] = np.where(has, W - cols[:, ::-1].argmax(axis=1), 0)
    bbox[:, 1] = np.where(has, lines.argmax(axis=1), 0)
    bbox[:, 3] = np.where(has, H - lines[:, ::-1].argmax(axis=1), 0)
    return bbox


def instance_features(frames: np.ndarray, part: np.ndarray, instance: np.ndarray, inst_offset: np.ndarray,
                      num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """The appearance half of ``instance_stats`` for a batch with a known instance table: per person,
    pixels int32 (N,C) and mean RGB uint8 (N,C,3) of each part (0 where absent). ``inst_offset`` (B+1,)
    gives frame b's people as rows inst_offset[b]:inst_offset[b+1] (ids 1..K_b)."""
    off = np.asarray(inst_offset)
    b = np.asarray(part).shape[0]
    if off.shape != (b + 1,) or not np.issubdtype(off.dtype, np.integer) or (b and off[0] != 0) or np.any(np.diff(off) < 0):
        raise ValueError(f"inst_offset must be non-decreasing int64 (B+1,) = ({b + 1},) from 0, got {off.dtype}{list(off.shape)}")
    try:
        st = instance_stats(part, instance, num_classes, frames, counts=np.diff(off))
    except ValueError as exc:
        if "exceeds" in str(exc):
            raise ValueError("instance holds a person id above the frame's instance count in inst_offset") from None
        raise
    return st.part_area, st.part_rgb
