"""The authors' inference, as pure functions over one image's network outputs (``protocol="official"``).

What the released code (cjm-sfw/Uniparser, ``Repparsing_Head.get_parsing_single``) does, step by step:

1. centres: H_c = sigmoid(centre logits) (S x S); a 2x2 "points NMS" (a cell survives if no cell
   above, left or above-left of it is larger), then a 5x5 max-pool peak test; every surviving cell
   above ``ctr_score`` is a person (no cap, no NMS);
2. the person's instance kernel is the F_ins pixel at the top-left of its cell,
   (int(y / S * h), int(x / S * w)) on F_ins' h x w grid (float32 arithmetic, truncation);
3. instance mask = cosine(kernel, F_ins) > ``mask_thr``, binary, at feature resolution;
4. per-person parsing P[c] = mask * Q_cate[c] for the N - 1 part categories (no background kernel);
   a category is kept for the person if its "maskness" -- the sum of P[c] where P[c] > ``mask_thr``
   over the number of pixels where P[c] > 0.1 (+1e-5) -- exceeds ``cate_score_thr``; the others are
   zeroed;
5. P is upsampled x4 (bilinear, align_corners=False), cropped to the resized image (h, w), and
   brought to the original image (H, W): bilinear on P when h * w > H * W, else nearest on the
   labels; label = argmax_c P + 1 where some P[c] > ``mask_thr``, else 0;
6. people overlap: every person keeps its own full map (no pixel assignment, no NMS).

The per-person maps (``OfficialParsing.predictions()``) are what the evaluator scores; their
semantic map for the mIoU (``semantic_map``) is the argmax of every category map of the whole
image, resized the same way, 0 where none is above ``mask_thr`` (no people involved). The
pipeline's exclusive label maps come from ``overlap_label_maps``: where people overlap, the highest
centre score wins.

Cost: step 5 runs only over the kept categories of each person and the bounding box of its mask
(+1 cell: bilinear weights beyond it read zeros), which gives the same maps as upsampling every
category of the whole image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "OfficialParams", "OfficialParsing", "official_centres", "cell_top_left", "instance_masks", "category_filter",
    "person_label_maps", "semantic_map", "parse_official", "overlap_label_maps",
]


@dataclass(frozen=True)
class OfficialParams:
    """Thresholds of the authors' ``test_cfg``.

    ctr_score: centre threshold (their configs: 0.1 R101 MHPv2 and CIHP light, 0.2 R50, 0.3 R101 light MHPv2).
    mask_thr: cosine threshold of the instance masks and of the final labels (0.5).
    cate_score_thr: per-person category filter (0.3 MHPv2, 0.275 CIHP).
    upsample: factor from the mask-feature grid to the input (their ``featmap_size * 4``).
    """

    ctr_score: float = 0.1
    mask_thr: float = 0.5
    cate_score_thr: float = 0.3
    upsample: int = 4

    def __post_init__(self) -> None:
        if not 0.0 <= self.ctr_score < 1.0:
            raise ValueError(f"ctr_score must be in [0, 1), got {self.ctr_score}")
        if not 0.0 <= self.mask_thr < 1.0:
            raise ValueError(f"mask_thr must be in [0, 1), got {self.mask_thr}")
        if not self.cate_score_thr >= 0.0:
            raise ValueError(f"cate_score_thr must be >= 0, got {self.cate_score_thr}")
        if int(self.upsample) != self.upsample or self.upsample < 1:
            raise ValueError(f"upsample must be a positive integer, got {self.upsample}")


def official_centres(center_logits: torch.Tensor, ctr_score: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre logits (S, S) -> (cells (K,) long, y * S + x; scores (K,) float32), highest score
    first (ties in row-major cell order)."""
    if center_logits.ndim != 2:
        raise ValueError(f"center_logits must be (S,S), got {tuple(center_logits.shape)}")
    heat = center_logits.detach().float().sigmoid()[None, None]
    # 2x2 points NMS: the window of a cell is the cell and its neighbours above / left / above-left
    hmax = F.max_pool2d(heat, 2, stride=1, padding=1)[..., :-1, :-1]
    heat = heat * (hmax == heat)
    heat = heat * (F.max_pool2d(heat, 5, stride=1, padding=2) == heat)
    flat = heat.flatten()
    cells = torch.nonzero(flat > ctr_score).flatten()
    scores = flat[cells]
    order = torch.argsort(scores, descending=True, stable=True)
    return cells[order], scores[order]


def cell_top_left(cells: torch.Tensor, grid: int, feat_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(ys, xs) long: the pixel of an h x w feature grid at the top-left of each S x S grid cell
    (cell = y * S + x), int(y / S * h) and int(x / S * w) in float32 as in the release."""
    h, w = int(feat_hw[0]), int(feat_hw[1])
    cells = cells.long()
    ys = torch.div(cells, grid, rounding_mode="floor")
    xs = cells % grid
    # int64 / int gives float32, times the size in float32, truncated: the release's arithmetic
    return ((ys / grid) * h).int().long(), ((xs / grid) * w).int().long()


def instance_masks(ins_feats: torch.Tensor, cells: torch.Tensor, grid: int, mask_thr: float) -> torch.Tensor:
    """ins_feats (C, h, w) (any norm), cells (K,) -> (K, h, w) bool: cosine of every pixel with
    the pixel at its cell's top-left > ``mask_thr``."""
    if ins_feats.ndim != 3:
        raise ValueError(f"ins_feats must be (C,h,w), got {tuple(ins_feats.shape)}")
    f = F.normalize(ins_feats.float(), dim=0)
    ys, xs = cell_top_left(cells.to(f.device), grid, tuple(f.shape[-2:]))
    kernels = f[:, ys, xs].t()  # (K, C); columns of a normalised map are unit already
    return torch.einsum("kc,chw->khw", kernels, f) > mask_thr


def category_filter(masks: torch.Tensor, cate_maps: torch.Tensor, mask_thr: float, cate_score_thr: float) -> torch.Tensor:
    """masks (K, h, w) bool, cate_maps (M, h, w) part-category cosine maps -> (K, M) bool: the
    categories whose maskness inside each person's mask exceeds ``cate_score_thr`` and that reach
    ``mask_thr`` somewhere there (a category that does not can never win a pixel)."""
    inside = masks.flatten(1).float()  # (K, hw)
    c = cate_maps.float().flatten(1).t()  # (hw, M)
    strong_c = c > mask_thr
    strong = inside @ (c * strong_c)  # sum of P over P > mask_thr (P = mask * Q_cate, mask_thr >= 0)
    count = inside @ (c > 0.1).float()
    reach = (inside @ strong_c.float()) > 0
    return (strong / (count + 1e-5) > cate_score_thr) & reach


def _bilinear_taps(out_n: int, in_n: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source rows (i0, i1) and weights (l0, l1) of a bilinear resize in_n -> out_n
    (align_corners=False, no antialias), with PyTorch's float32 index arithmetic."""
    scale = torch.tensor(in_n, dtype=torch.float32) / torch.tensor(out_n, dtype=torch.float32)
    src = (scale * (torch.arange(out_n, dtype=torch.float32) + 0.5) - 0.5).clamp(min=0)
    i0 = src.floor().long().clamp(max=in_n - 1)
    l1 = (src - i0.float()).clamp(0, 1)
    i1 = i0 + (i0 < in_n - 1).long()
    return i0.to(device), i1.to(device), (1 - l1).to(device), l1.to(device)


def _labels(vals: torch.Tensor, cats: torch.Tensor, thr: float) -> torch.Tensor:
    """(C, a, b) maps of categories ``cats`` -> (a, b) uint8 labels: best category + 1 where any
    is above ``thr``, else 0."""
    mx = vals.amax(dim=0)
    am = vals.argmax(dim=0)  # the first maximum, as the release's argmax
    return torch.where(mx > thr, cats[am] + 1, 0).to(torch.uint8)


def person_label_maps(
    masks: torch.Tensor,
    cate_maps: torch.Tensor,
    allowed: torch.Tensor,
    *,
    valid_hw: tuple[int, int],
    out_hw: tuple[int, int],
    mask_thr: float = 0.5,
    upsample: int = 4,
) -> torch.Tensor:
    """Per-person label maps (K, H, W) uint8 (0 = background, c + 1 = part category c of
    ``cate_maps``): step 5 of the module docstring.

    masks (K, h, w) bool; cate_maps (M, h, w); allowed (K, M) bool (``category_filter``);
    valid_hw: (h_img, w_img) of the resized image inside the padded input (<= upsample * (h, w));
    out_hw: (H, W) of the original image."""
    k, fh, fw = masks.shape
    if cate_maps.shape[-2:] != masks.shape[-2:] or allowed.shape != (k, cate_maps.shape[0]):
        raise ValueError(f"masks {tuple(masks.shape)}, cate_maps {tuple(cate_maps.shape)} and allowed "
                         f"{tuple(allowed.shape)} do not fit")
    h, w = int(valid_hw[0]), int(valid_hw[1])
    H, W = int(out_hw[0]), int(out_hw[1])
    s = int(upsample)
    if not (0 < h <= s * fh and 0 < w <= s * fw):
        raise ValueError(f"valid size {(h, w)} exceeds the x{s} feature grid {(s * fh, s * fw)}")
    dev = cate_maps.device
    down = h * w > H * W  # the release resizes P bilinearly when the image shrinks, else the labels (nearest)
    out = torch.zeros((k, H, W) if down else (k, h, w), dtype=torch.uint8, device=dev)
    if down:
        ty, tx = _bilinear_taps(H, h, dev), _bilinear_taps(W, w, dev)
    cm = cate_maps.float()
    for i in range(k):
        cats = torch.nonzero(allowed[i]).flatten()
        m = masks[i]
        if cats.numel() == 0 or not bool(m.any()):
            continue
        rows = torch.nonzero(m.any(dim=1)).flatten()
        cols = torch.nonzero(m.any(dim=0)).flatten()
        r0, r1 = max(int(rows[0]) - 1, 0), min(int(rows[-1]) + 1, fh - 1)
        c0, c1 = max(int(cols[0]) - 1, 0), min(int(cols[-1]) + 1, fw - 1)
        p = cm[cats, r0 : r1 + 1, c0 : c1 + 1] * m[r0 : r1 + 1, c0 : c1 + 1]
        up = F.interpolate(p[None], size=(s * (r1 - r0 + 1), s * (c1 - c0 + 1)), mode="bilinear", align_corners=False)[0]
        y0, x0 = s * r0, s * c0  # the crop's place in the x s map, then cut to the resized image
        y1, x1 = min(s * (r1 + 1), h), min(s * (c1 + 1), w)
        if y1 <= y0 or x1 <= x0:
            continue
        up = up[:, : y1 - y0, : x1 - x0]
        if not down:
            out[i, y0:y1, x0:x1] = _labels(up, cats, mask_thr)
            continue
        # bilinear (h, w) -> (H, W) over the output rows / columns that read the crop; the crop is
        # zero-padded by one row / column so that taps just outside it read 0 as in the full map
        up = F.pad(up, (1, 1, 1, 1))
        sel = []
        for (i0, i1, l0, l1), a, b in ((ty, y0, y1), (tx, x0, x1)):
            idx = torch.nonzero((i1 >= a) & (i0 <= b - 1)).flatten()
            if idx.numel() == 0:
                break
            o0, o1 = int(idx[0]), int(idx[-1]) + 1
            sel.append((o0, o1, i0[o0:o1] - a + 1, i1[o0:o1] - a + 1, l0[o0:o1], l1[o0:o1]))
        if len(sel) < 2:
            continue
        (oy0, oy1, yi0, yi1, yl0, yl1), (ox0, ox1, xi0, xi1, xl0, xl1) = sel
        v = up[:, yi0] * yl0[None, :, None] + up[:, yi1] * yl1[None, :, None]
        v = v[:, :, xi0] * xl0 + v[:, :, xi1] * xl1
        out[i, oy0:oy1, ox0:ox1] = _labels(v, cats, mask_thr)
    if not down and (h, w) != (H, W):
        out = F.interpolate(out[None], size=(H, W), mode="nearest")[0]
    return out


def semantic_map(cate_maps: torch.Tensor, *, valid_hw: tuple[int, int], out_hw: tuple[int, int], mask_thr: float = 0.5,
                 upsample: int = 4, chunk: int = 8) -> torch.Tensor:
    """The release's semantic prediction (H, W) uint8: every part-category map (M, h, w) upsampled,
    cropped and resized as in ``person_label_maps``; best category + 1 where one is above
    ``mask_thr``. Categories go ``chunk`` at a time (the running first maximum is the argmax)."""
    m, fh, fw = cate_maps.shape
    h, w = int(valid_hw[0]), int(valid_hw[1])
    H, W = int(out_hw[0]), int(out_hw[1])
    down = h * w > H * W
    best = arg = None
    for c0 in range(0, m, chunk):
        up = F.interpolate(cate_maps[None, c0 : c0 + chunk].float(), size=(upsample * fh, upsample * fw), mode="bilinear",
                           align_corners=False)[:, :, :h, :w]
        if down:
            up = F.interpolate(up, size=(H, W), mode="bilinear", align_corners=False)
        v = up[0].amax(dim=0)
        a = up[0].argmax(dim=0) + c0
        if best is None:
            best, arg = v, a
        else:
            better = v > best  # strict: ties keep the earlier category, as one argmax over all would
            best, arg = torch.where(better, v, best), torch.where(better, a, arg)
    lab = torch.where(best > mask_thr, arg + 1, 0).to(torch.uint8)
    if not down and (h, w) != (H, W):
        lab = F.interpolate(lab[None, None], size=(H, W), mode="nearest")[0, 0]
    return lab


@dataclass
class OfficialParsing:
    """One image under the authors' protocol.

    labels: (K, H, W) uint8 per-person part maps at the original image size (people overlap);
    scores: (K,) float32 centre scores, highest first; cells: (K,) centre cells (y * S + x);
    semantic: (H, W) uint8 semantic map (``semantic_map``), when asked for."""

    labels: torch.Tensor
    scores: torch.Tensor
    cells: torch.Tensor
    semantic: torch.Tensor | None = None

    def predictions(self) -> list[tuple[np.ndarray, float]]:
        """(part map uint8[H, W], score) per person, for ``streamparse.evaluation.metrics``."""
        labels = self.labels.cpu().numpy()
        return [(labels[i], float(s)) for i, s in enumerate(self.scores.tolist())]


def parse_official(
    *,
    center_logits: torch.Tensor,
    ins_feats: torch.Tensor,
    cate_maps: torch.Tensor,
    grid: int,
    valid_hw: tuple[int, int],
    out_hw: tuple[int, int],
    params: OfficialParams = OfficialParams(),
    cells: torch.Tensor | None = None,
    semantic: bool = False,
) -> OfficialParsing:
    """The authors' inference for one image.

    Args:
        center_logits: (S, S) centre logits; ins_feats: (C, h, w) F_ins on the grid the heads ran
            on (the light variant's padded one: ``UniParser(..., keep_grid_pad=True)``);
        cate_maps: (N - 1, h, w) part-category cosine maps (Q_cate without the background row);
        grid: S; valid_hw: resized image size (h_img, w_img) inside the padded input;
        out_hw: original image size (H, W); params: thresholds;
        cells: centre cells to use instead of the centre rule (benchmarks); scores are then read
            from the sigmoid of ``center_logits``.
        semantic: also compute the semantic map (for the mIoU).
    """
    if center_logits.shape != (grid, grid):
        raise ValueError(f"center_logits must be ({grid},{grid}), got {tuple(center_logits.shape)}")
    if cate_maps.ndim != 3 or cate_maps.shape[-2:] != ins_feats.shape[-2:]:
        raise ValueError(f"cate_maps {tuple(cate_maps.shape)} must be (N-1, h, w) on F_ins' grid {tuple(ins_feats.shape[-2:])}")
    if cells is None:
        cells, scores = official_centres(center_logits, params.ctr_score)
    else:
        cells = cells.long().to(center_logits.device)
        scores = center_logits.detach().float().sigmoid().flatten()[cells]
    masks = instance_masks(ins_feats, cells, grid, params.mask_thr)
    allowed = category_filter(masks, cate_maps, params.mask_thr, params.cate_score_thr)
    labels = person_label_maps(masks, cate_maps, allowed, valid_hw=valid_hw, out_hw=out_hw, mask_thr=params.mask_thr,
                               upsample=params.upsample)
    sem = None
    if semantic:
        sem = semantic_map(cate_maps, valid_hw=valid_hw, out_hw=out_hw, mask_thr=params.mask_thr, upsample=params.upsample)
    return OfficialParsing(labels=labels, scores=scores.float(), cells=cells, semantic=sem)


def overlap_label_maps(labels: torch.Tensor, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Overlapping per-person maps (K, H, W) -> exclusive (part (H, W) uint8, instance (H, W) long,
    kept (K',) long): a pixel labelled by several people goes to the one with the highest centre
    score (ties: the earlier one); instance ids 1..K' follow descending score; people left with no
    pixel are dropped (``kept`` indexes ``labels`` / ``scores``)."""
    k, H, W = labels.shape
    dev = labels.device
    if k == 0:
        return (torch.zeros((H, W), dtype=torch.uint8, device=dev), torch.zeros((H, W), dtype=torch.long, device=dev),
                torch.zeros(0, dtype=torch.long, device=dev))
    order = torch.argsort(scores, descending=True, stable=True)
    lab = labels[order]
    fg = lab > 0
    first = fg.to(torch.uint8).argmax(dim=0)  # the first person (highest score) labelling the pixel
    on = fg.any(dim=0)
    part = torch.where(on, lab.gather(0, first[None])[0], 0).to(torch.uint8)
    who = torch.where(on, first + 1, 0)
    won = torch.bincount(who.flatten(), minlength=k + 1)[1:] > 0
    remap = torch.zeros(k + 1, dtype=torch.long, device=dev)
    remap[1:][won] = torch.arange(1, int(won.sum()) + 1, device=dev)
    return part, remap[who], order[won]
