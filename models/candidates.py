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

import dataclasses
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


def candidate_outputs(model, out, heat: torch.Tensor, params):
    """The per-person outputs (``UniParser.instances``) at each image's candidate centres (``candidate_cells``
    with ``params``: a ``PostprocessParams``), or None when candidates are off (``candidate_thresh >=
    center_thresh`` or no ``max_candidates``)."""
    p = params
    if p.candidate_thresh >= p.center_thresh or p.max_candidates < 1:
        return None
    cells = [candidate_cells(heat[i, 0], low=p.candidate_thresh, high=p.center_thresh, pool=p.center_pool,
                             max_k=p.max_candidates) for i in range(heat.shape[0])]
    if not any(c.numel() for c in cells):
        return dataclasses.replace(out, centers=cells)
    return model.instances(out, cells, compute_parsing=False)


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
    if cells.numel():  # cheap first: on the feature grid, before any pixel is parsed
        pick = _plausible(ins_kernels, ins_maps, cate_maps, det_instance, det_kernels, stride, out_size, mask_thresh,
                          merge_cos, min_free, min_pixels)
        cells, ins_kernels, ins_maps = cells[pick], ins_kernels[pick], ins_maps[pick]
        parsing = None if parsing is None else parsing[pick]
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


def _plausible(ins_kernels, ins_maps, cate_maps, det_instance, det_kernels, stride: int, out_size, mask_thresh: float,
               merge_cos: float, min_free: float, min_pixels: int) -> torch.Tensor:
    """(K,) bool: the candidates worth parsing, judged on the feature grid: a kernel that is no detected
    person's, and a mask (fused score above ``mask_thresh``, before pixels are shared out) that keeps
    ``min_free`` of itself and ``min_pixels`` off the detected people. Most candidates end here, so
    their parse costs nothing."""
    H, W = out_size
    hc, wc = min(cate_maps.shape[-2], -(-H // stride)), min(cate_maps.shape[-1], -(-W // stride))
    keep = torch.ones(ins_kernels.shape[0], dtype=torch.bool, device=ins_kernels.device)
    if det_kernels is not None and det_kernels.numel():
        keep &= (ins_kernels.float() @ det_kernels.float().t()).amax(dim=1) < merge_cos
    cm_max = cate_maps[1:, :hc, :wc].float().clamp(min=0).amax(dim=0)
    own = ins_maps[:, :hc, :wc].float().clamp(min=0) * cm_max > mask_thresh  # (K, hc, wc)
    free = det_instance[stride // 2 :: stride, stride // 2 :: stride][:hc, :wc] == 0
    free = torch.nn.functional.pad(free, (0, wc - free.shape[1], 0, hc - free.shape[0]), value=True)
    n_own = own.flatten(1).sum(dim=1).float()
    n_free = (own & free).flatten(1).sum(dim=1).float()
    return keep & (n_free * stride * stride >= min_pixels) & (n_free >= min_free * n_own)
