"""Low-score person candidates: the people the centre heatmap almost found (pure functions).

The post-processing keeps centres above ``center_thresh``. Peaks between ``candidate_thresh`` and
``center_thresh`` are parsed the same way (``parse_image``: kernels, fused maps, exclusive pixels in
score order) but kept apart: a candidate never takes a pixel from a detected person (every detected
person has a higher centre score, so the parse with the lower threshold would have given detected
people exactly these pixels too), a candidate whose kernel is a detected person's (cosine >=
``merge_cos``) is that person, and a candidate left with less than ``min_free`` of its own pixels
outside the detected people is a fragment of them. Nothing here changes the detected people's maps;
the tracker decides which candidates continue a track (``streamparse.tracking``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .postprocess import parse_image, peak_cells


@dataclass
class Candidates:
    """One image's candidates at the network input's (unpadded) resolution.

    part: (H,W) long part per candidate pixel (0 elsewhere); instance: (H,W) long, candidate k+1 (0 =
    none); scores (K,); kernels (K,C) unit instance kernels; every candidate pixel is background in
    the detected instance map."""

    part: torch.Tensor
    instance: torch.Tensor
    scores: torch.Tensor
    kernels: torch.Tensor


def candidate_cells(heat: torch.Tensor, *, low: float, high: float, pool: int, max_k: int) -> torch.Tensor:
    """Peak cells (K,) of a heatmap (S,S) with ``low < score <= high``, by descending score, at most ``max_k``."""
    if low >= high:
        return torch.zeros(0, dtype=torch.long, device=heat.device)
    cells, scores = peak_cells(heat, low, pool, 1 << 30)
    return cells[scores <= high][:max_k]


def parse_candidates(*, heat: torch.Tensor, cells: torch.Tensor, ins_kernels: torch.Tensor, ins_maps: torch.Tensor,
                     cate_maps: torch.Tensor, parsing: torch.Tensor | None, det_instance: torch.Tensor,
                     det_kernels: torch.Tensor | None, stride: int, out_size: tuple[int, int], mask_thresh: float,
                     merge_cos: float, cate_score_thresh: float, min_free: float = 0.5,
                     min_pixels: int = 16) -> Candidates:
    """Parse the candidate centres ``cells`` (K,) of one image (their ``ins_kernels`` (K,C), ``ins_maps``
    (K,h,w), ``parsing`` as in ``parse_image``) beside the detected people: ``det_instance`` (H,W) long
    (the detected instance map at ``out_size``), ``det_kernels`` (K_det, C) their kernels."""
    H, W = out_size
    dev = cate_maps.device
    if cells.numel() == 0:
        z = torch.zeros((H, W), dtype=torch.long, device=dev)
        return Candidates(z, z.clone(), heat.new_zeros((0,)), ins_kernels.new_zeros((0, ins_kernels.shape[-1])))
    p = parse_image(heat=heat, cells=cells, ins_kernels=ins_kernels, ins_maps=ins_maps, cate_maps=cate_maps,
                    parsing=parsing, stride=stride, out_size=out_size, mask_thresh=mask_thresh, merge_cos=merge_cos,
                    cate_score_thresh=cate_score_thresh)
    k = int(p.scores.numel())
    keep = torch.ones(k, dtype=torch.bool, device=dev)
    if k and det_kernels is not None and det_kernels.numel():
        keep &= (p.kernels.float() @ det_kernels.float().t()).amax(dim=1) < merge_cos
    free = det_instance == 0
    own = torch.bincount(p.instance.flatten(), minlength=k + 1)[1:]
    left = torch.bincount(p.instance[free].flatten(), minlength=k + 1)[1:]
    keep &= (left >= min_pixels) & (left.float() >= min_free * own.float())
    remap = torch.zeros(k + 1, dtype=torch.long, device=dev)
    idx = torch.nonzero(keep).flatten()
    remap[idx + 1] = torch.arange(1, idx.numel() + 1, device=dev)
    inst = torch.where(free, remap[p.instance], 0)
    return Candidates(part=torch.where(inst > 0, p.part, 0), instance=inst, scores=p.scores[idx], kernels=p.kernels[idx])
