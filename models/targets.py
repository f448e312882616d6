"""Ground-truth target building (pure, shared by training and evaluation).

From the per-person part-label maps of one (padded) image, build:
- the centre heatmap target on the S x S grid: the barycentre cell of every person plus the
  cells of a (sigma * box_h, sigma * box_w) rectangle around the barycentre (paper appendix 6.1);
- the positive cells and the person each belongs to (the first P positives are the P
  barycentre cells, in person order);
- per-person part labels and the semantic map at feature resolution (sampled at the centres
  of the ``stride`` x ``stride`` cells).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

IGNORE = 255


@dataclass
class ImageTargets:
    """Targets of one image (feature map h x w, grid S).

    heat: (S,S) float 0/1; pos_cells: (Q,) long; pos_person: (Q,) long; center_cells: (P,) long;
    person_labels: (P,h,w) long (IGNORE = ignore); semantic: (h,w) long (IGNORE = ignore).
    """

    heat: torch.Tensor
    pos_cells: torch.Tensor
    pos_person: torch.Tensor
    center_cells: torch.Tensor
    person_labels: torch.Tensor
    semantic: torch.Tensor

    @property
    def num_persons(self) -> int:
        return int(self.center_cells.numel())

    def to(self, device) -> "ImageTargets":
        return ImageTargets(**{k: getattr(self, k).to(device) for k in self.__dataclass_fields__})


def build_targets(
    persons: list[np.ndarray] | np.ndarray,
    *,
    image_size: tuple[int, int],
    num_classes: int,
    grid: int = 40,
    sigma: float = 0.2,
    stride: int = 8,
) -> ImageTargets:
    """Build the targets of one image.

    Args:
        persons: P part-label maps (H,W) integer (0 = background, 1..N-1 parts, 255 = ignore),
            already placed in the padded input of size ``image_size`` (smaller maps are padded
            with background at the bottom/right).
        image_size: (H, W) of the padded network input (multiples of ``stride``).
    Persons with no part pixel are dropped (as the MHP evaluation does).
    """
    H, W = image_size
    if H % stride or W % stride:
        raise ValueError(f"image_size {image_size} must be a multiple of stride {stride}")
    h, w = H // stride, W // stride
    ys = np.minimum(np.arange(h) * stride + stride // 2, H - 1)
    xs = np.minimum(np.arange(w) * stride + stride // 2, W - 1)
    labels_small: list[np.ndarray] = []
    boxes: list[tuple[float, float, float, float, float, float]] = []
    semantic = np.zeros((h, w), dtype=np.int64)
    for pm in persons:
        placed = _place_person(pm, image_size, num_classes)
        if placed is None:
            continue
        full, box = placed
        small = full[np.ix_(ys, xs)]
        labels_small.append(small)
        paint = (small > 0)
        semantic = np.where(paint, small, semantic)
        boxes.append(box)
    owner, centers = _assign_cells(boxes, image_size, grid, sigma)
    heat = np.zeros((grid, grid), dtype=np.float32)
    heat[owner >= 0] = 1.0
    center_cells, pos_cells, pos_person = _positives(owner, centers)
    person_labels = np.stack(labels_small) if labels_small else np.zeros((0, h, w), dtype=np.int64)
    # semantic ignore: pixels ignored in some person and not labelled by any
    if labels_small:
        ign = (person_labels == IGNORE).any(0) & ~((person_labels > 0) & (person_labels < num_classes)).any(0)
        semantic = np.where(ign, IGNORE, np.where(semantic == IGNORE, 0, semantic))
    return ImageTargets(
        heat=torch.from_numpy(heat),
        pos_cells=torch.from_numpy(pos_cells.astype(np.int64)),
        pos_person=torch.from_numpy(pos_person.astype(np.int64)),
        center_cells=torch.from_numpy(center_cells),
        person_labels=torch.from_numpy(person_labels.astype(np.int64)),
        semantic=torch.from_numpy(semantic.astype(np.int64)),
    )


def _place_person(pm, image_size: tuple[int, int], num_classes: int):
    """One person's (h,w) part map placed at the top left of the (H,W) input, checked: (the (H,W)
    int64 map, its box (cy, cx, box_h, box_w, area, 0) from the part pixels), or None when the person
    has no part pixel."""
    H, W = image_size
    pm = np.asarray(pm)
    if pm.ndim != 2:
        raise ValueError(f"person maps must be 2-D, got shape {pm.shape}")
    if pm.shape[0] > H or pm.shape[1] > W:
        raise ValueError(f"person map {pm.shape} larger than image_size {image_size}")
    full = np.zeros((H, W), dtype=np.int64)
    full[: pm.shape[0], : pm.shape[1]] = pm
    bad = (full >= num_classes) & (full != IGNORE)
    if bad.any():
        raise ValueError(f"label {int(full[bad].max())} >= num_classes {num_classes}")
    fg = (full > 0) & (full < num_classes)
    if not fg.any():
        return None
    yy, xx = np.nonzero(fg)
    cy, cx = float(yy.mean()), float(xx.mean())
    bh, bw = float(yy.max() - yy.min() + 1), float(xx.max() - xx.min() + 1)
    return full, (cy, cx, bh, bw, float(fg.sum()), 0.0)


def _assign_cells(boxes: list[tuple], image_size: tuple[int, int], grid: int, sigma: float) -> tuple[np.ndarray, list[int]]:
    """Which person owns each cell of the S x S grid: (owner (S,S) int64, -1 = negative; the
    barycentre cell of each person, gy * S + gx). Each person's (sigma * box_h, sigma * box_w)
    rectangle is painted biggest first, so smaller (usually nearer-the-front) people win shared
    cells; a barycentre cell always belongs to its person (a later barycentre may take it)."""
    H, W = image_size
    owner = np.full((grid, grid), -1, dtype=np.int64)
    order = sorted(range(len(boxes)), key=lambda i: -boxes[i][4])
    for i in order:
        cy, cx, bh, bw, _, _ = boxes[i]
        y0 = int(np.floor(max(cy - sigma * bh / 2, 0) / H * grid))
        y1 = int(np.floor(min(cy + sigma * bh / 2, H - 1) / H * grid))
        x0 = int(np.floor(max(cx - sigma * bw / 2, 0) / W * grid))
        x1 = int(np.floor(min(cx + sigma * bw / 2, W - 1) / W * grid))
        owner[y0 : y1 + 1, x0 : x1 + 1] = i
    centers: list[int] = []
    for i, (cy, cx, *_rest) in enumerate(boxes):
        gy, gx = min(int(cy / H * grid), grid - 1), min(int(cx / W * grid), grid - 1)
        owner[gy, gx] = i  # the barycentre cell always belongs to its person
        centers.append(gy * grid + gx)
    return owner, centers


def _positives(owner: np.ndarray, centers: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(center_cells (P,), pos_cells (Q,), pos_person (Q,)): first the P barycentre cells in person
    order, then the other positive cells with the person that owns each."""
    # a barycentre cell may have been taken by a later person's barycentre: keep the one that owns it
    center_cells = np.asarray(centers, dtype=np.int64)
    pos = np.nonzero(owner.flatten() >= 0)[0]
    pos_person = owner.flatten()[pos]
    is_center = np.isin(pos, center_cells)
    rest = pos[~is_center]
    rest_person = pos_person[~is_center]
    pos_cells = np.concatenate([center_cells, rest])
    pos_person = np.concatenate([np.arange(len(centers)), rest_person])
    return center_cells, pos_cells, pos_person
