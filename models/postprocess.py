"""NMS-free post-processing: centre heatmap + similarity maps -> label maps (pure functions).

Duplicates are avoided without box or mask NMS, the way the method allows:
1. only local maxima of H_c (a ``pool`` x ``pool`` max-pool window, as in the authors' release)
   above ``center_thresh`` become centres;
2. centres whose instance kernels are near-identical in cosine space (>= ``merge_cos``) are one
   person: the lower-scored one is dropped (kernels of one person converge to one point of the
   cosine space, kernels of different people are pushed apart by L_metric);
3. every pixel belongs to at most one person: the highest-scored one (centre score) whose fused
   score there exceeds ``mask_thresh``, so a weak extra centre never takes pixels from a
   confident person.
``mask_nms`` exists only to show (in tests and benchmarks) that a mask NMS afterwards changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class PostprocessParams:
    """Thresholds of the post-processing (the config's ``model`` section maps onto these, in
    ``streamparse.plan``). Defaults are the paper's / the authors' release where they say."""

    center_thresh: float = 0.1  # theta_ctr: centre heatmap peaks above this are people
    center_pool: int = 3  # local-maximum window on H_c (odd; 1 = off)
    max_instances: int = 100  # people per image at most (highest centre scores)
    mask_thresh: float = 0.5  # theta_mask on the fused score
    merge_cos: float = 0.95  # centres whose kernels have cosine >= this are one person (> 1 = off)
    cate_score_thresh: float = 0.0  # per-person category filter (authors' cate_score_thr; 0 = off)
    # low-score candidates (``models.candidates``): peaks in (candidate_thresh, center_thresh], kept
    # apart from the people for the tracker's second stage; candidate_thresh >= center_thresh: none
    candidate_thresh: float = 1.0
    max_candidates: int = 16

    def __post_init__(self) -> None:
        if self.max_candidates < 0:
            raise ValueError(f"max_candidates must be >= 0, got {self.max_candidates}")
        if self.center_pool < 1 or self.center_pool % 2 == 0:
            raise ValueError(f"center_pool must be an odd window >= 1, got {self.center_pool}")
        if self.max_instances < 1:
            raise ValueError(f"max_instances must be >= 1, got {self.max_instances}")


def pick_centres(heat: torch.Tensor, params: PostprocessParams) -> list[torch.Tensor]:
    """Centre cells of a batch: heat (B,1,S,S) probabilities -> B tensors (K_i,) long (y * S + x),
    local maxima above ``params.center_thresh``, by descending score, at most ``max_instances``."""
    return [peak_cells(heat[i, 0], params.center_thresh, params.center_pool, params.max_instances)[0]
            for i in range(heat.shape[0])]


def peak_cells(heat: torch.Tensor, thresh: float, pool: int = 3, max_k: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """Local maxima of a heatmap (S,S) above ``thresh``.

    Returns (cells (K,) long, y * S + x, sorted by score desc; scores (K,)). ``pool`` <= 1 keeps
    every cell above the threshold."""
    if heat.ndim != 2:
        raise ValueError(f"heat must be (S,S), got {tuple(heat.shape)}")
    h = heat
    if pool > 1:
        if pool % 2 == 0:
            raise ValueError(f"pool must be odd, got {pool}")
        pooled = F.max_pool2d(h[None, None], pool, stride=1, padding=pool // 2)[0, 0]
        keep = (h >= pooled) & (h > thresh)
    else:
        keep = h > thresh
    flat = h.flatten()
    cells = torch.nonzero(keep.flatten(), as_tuple=False).flatten()
    scores = flat[cells]
    order = torch.argsort(scores, descending=True, stable=True)[:max_k]
    return cells[order], scores[order]


def merge_duplicates(kernels: torch.Tensor, scores: torch.Tensor, cos_thresh: float) -> torch.Tensor:
    """Greedy merge in score order: a centre whose kernel has cosine >= ``cos_thresh`` with an
    already kept (higher-scored) centre is the same person. kernels (K,C) unit-norm, scores (K,).
    Returns the kept indices (K',) in descending score order."""
    k = kernels.shape[0]
    order = torch.argsort(scores, descending=True, stable=True)
    if k <= 1 or cos_thresh > 1.0:
        return order
    sim = kernels[order] @ kernels[order].t()
    kept: list[int] = []
    for i in range(k):
        if not kept or bool((sim[i, kept] < cos_thresh).all()):
            kept.append(i)
    return order[torch.as_tensor(kept, dtype=torch.long, device=order.device)]


def mask_nms(masks: torch.Tensor, scores: torch.Tensor, iou_thresh: float = 0.5) -> torch.Tensor:
    """Greedy mask NMS (for verification only). masks (K,H,W) bool, scores (K,) -> kept indices."""
    k = masks.shape[0]
    order = torch.argsort(scores, descending=True, stable=True)
    if k == 0:
        return order
    flat = masks[order].flatten(1).float()
    inter = flat @ flat.t()
    area = flat.sum(1)
    iou = inter / (area[:, None] + area[None, :] - inter).clamp(min=1)
    kept: list[int] = []
    for i in range(k):
        if all(float(iou[i, j]) <= iou_thresh for j in kept):
            kept.append(i)
    return order[torch.as_tensor(kept, dtype=torch.long)]


def _maskness(p: torch.Tensor, mask_thresh: float) -> torch.Tensor:
    """(k, N, h, w) fused maps -> (k, N) maskness: sum of P over P > mask_thresh / #(P > 0.1)."""
    strong = (p * (p > mask_thresh)).sum(dim=(-2, -1))
    return strong / ((p > 0.1).sum(dim=(-2, -1)) + 1e-5)


def _category_filter(q: torch.Tensor, cm_pos: torch.Tensor, mask_thresh: float, thresh: float) -> torch.Tensor:
    """Index fusion: q (k,h,w) = relu(Q_ins), cm_pos (N,h,w) = relu(Q_cate) -> (k, N) bool, the
    categories whose maskness inside the person's mask, M = [q_k > mask_thresh] * cm_c (as in the
    authors' release), exceeds ``thresh``. The mask is binary, so both sums of ``_maskness``
    factorise into (k, hw) @ (hw, N) products: no (k, N, h, w) tensor is formed."""
    inside = (q > mask_thresh).flatten(1).to(cm_pos.dtype)  # (k, hw)
    c = cm_pos.flatten(1).t()  # (hw, N)
    strong = inside @ (c * (c > mask_thresh))
    count = inside @ (c > 0.1).to(c.dtype)
    return strong / (count + 1e-5) > thresh


def _quad_corners(x: torch.Tensor) -> torch.Tensor:
    """(M, h, w) -> (Q, 4, M), Q = (h+1)(w+1): the 4 cells (top-left, top-right, bottom-left,
    bottom-right; edge cells replicated) around each bilinear block of an upsampled map."""
    p = F.pad(x[None], (1, 1, 1, 1), mode="replicate")[0]
    c = torch.stack([p[:, :-1, :-1], p[:, :-1, 1:], p[:, 1:, :-1], p[:, 1:, 1:]])  # (4, M, h+1, w+1)
    return c.flatten(2).permute(2, 0, 1)


def _interp_blocks(c: torch.Tensor, s: int) -> torch.Tensor:
    """Corner values c (m, 4, M) -> (m, s, s, M): the bilinear values (align_corners=False, integer
    scale s) of the s x s output pixels between the 4 cells (columns mixed per row, then rows)."""
    t = (torch.arange(s, device=c.device, dtype=c.dtype) + 0.5) / s
    l1 = t[None, :, None]
    top = torch.addcmul(c[:, None, 0], c[:, None, 1] - c[:, None, 0], l1)  # (m, s_x, M)
    bot = torch.addcmul(c[:, None, 2], c[:, None, 3] - c[:, None, 2], l1)
    return torch.addcmul(top[:, None], (bot - top)[:, None], l1[..., None])  # (m, s_y, s_x, M)


def _assign_blocks(
    fused: torch.Tensor, cm: torch.Tensor, allowed: torch.Tensor | None, thresh: float, s: int,
    out_hw: tuple[int, int], max_elems: int = 1 << 23,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pixel assignment on the bilinear upsampling (x s, even s) of a crop of feature cells,
    without upsampling every map.

    fused (k,h,w): people's fused scores in descending centre-score order; cm (N,h,w): category
    maps; allowed (k,N) bool or None. Returns (winner, fg, label), each (H,W) = ``out_hw``: the
    first person whose upsampled score exceeds ``thresh``, whether there is one, and the winner's
    best allowed category (0..N-1). Same result as upsampling everything with ``F.interpolate``
    (up to float rounding at exact ties): an output pixel is a convex combination of the 4 cells
    around its s x s block, so a block whose first person above ``thresh`` at any corner is above
    it at all 4 corners belongs to that person, a block with no corner above is background, and
    a block whose 4 corners agree on the best allowed category has that label. Only the other
    (boundary) blocks are interpolated pixel by pixel."""
    k, h, w = fused.shape
    n = cm.shape[0]
    H, W = out_hw
    if allowed is not None and bool(allowed.all()):
        allowed = None
    hq, wq = h + 1, w + 1
    dev = fused.device
    fc = _quad_corners(fused)  # (Q, 4, k)
    above = fc > thresh
    any4 = above.any(dim=1)  # (Q, k)
    has = any4.any(dim=1)
    first = any4.to(torch.uint8).argmax(dim=1)  # first candidate per block
    full = has & above.gather(2, first[:, None, None].expand(-1, 4, 1))[:, :, 0].all(dim=1)
    Q = fc.shape[0]
    win = first[:, None, None].expand(Q, s, s).clone()
    fg = full[:, None, None].expand(Q, s, s).clone()
    lab = torch.zeros((Q, s, s), dtype=torch.long, device=dev)
    step = max(1, max_elems // (s * s * max(k, n)))
    part_idx = torch.nonzero(has & ~full).flatten()
    for i in range(0, part_idx.numel(), step):
        qi = part_idx[i : i + step]
        over = (_interp_blocks(fc[qi], s) > thresh).to(torch.uint8)  # (m, s, s, k)
        wv = over.argmax(dim=-1)
        win[qi] = wv
        fg[qi] = over.gather(-1, wv[..., None])[..., 0].bool()
    cc = _quad_corners(cm)  # (Q, 4, N)
    full_idx = torch.nonzero(full).flatten()
    c = cc[full_idx]
    if allowed is not None:
        c = c.masked_fill(~allowed[first[full_idx]][:, None, :], float("-inf"))
    a = c.argmax(dim=-1)  # (nf, 4): best allowed category at each corner
    uni = (a == a[:, :1]).all(dim=1)
    lab[full_idx[uni]] = a[uni, 0][:, None, None]
    # blocks labelled pixel by pixel: one winner per block (full) or per pixel (partial)
    for redo, per_pixel in ((full_idx[~uni], False), (part_idx, True)):
        for i in range(0, redo.numel(), step):
            qi = redo[i : i + step]
            v = _interp_blocks(cc[qi], s)  # (m, s, s, N)
            if allowed is not None:
                keep = allowed[win[qi]] if per_pixel else allowed[first[qi]][:, None, None, :]
                v = v.masked_fill(~keep, float("-inf"))
            lab[qi] = v.argmax(dim=-1)

    def image(x: torch.Tensor) -> torch.Tensor:  # (Q, s, s) blocks -> (H, W); block (0,0) starts at -s/2
        return x.view(hq, wq, s, s).permute(0, 2, 1, 3).reshape(hq * s, wq * s)[s // 2 : s // 2 + H, s // 2 : s // 2 + W]

    return image(win), image(fg), image(lab)


@dataclass
class ImageParsing:
    """Label maps of one image at the network input's (unpadded) resolution.

    part: (H,W) long category per pixel (0 = background); instance: (H,W) long (0 = background,
    1..K in descending score order); scores: (K,); raw_masks: (K,H,W) bool per-person masks
    before pixels are assigned to people (for verification); cells: (K,) grid cells of the centres;
    kernels: (K,C) the kept people's unit instance kernels (row k = person k+1; the tracker's
    embedding)."""

    part: torch.Tensor
    instance: torch.Tensor
    scores: torch.Tensor
    raw_masks: torch.Tensor | None
    cells: torch.Tensor
    kernels: torch.Tensor | None = None


def parse_image(
    *,
    heat: torch.Tensor,
    cells: torch.Tensor,
    ins_kernels: torch.Tensor,
    ins_maps: torch.Tensor,
    cate_maps: torch.Tensor,
    parsing: torch.Tensor | None,
    stride: int,
    out_size: tuple[int, int],
    mask_thresh: float = 0.5,
    merge_cos: float = 0.95,
    cate_score_thresh: float = 0.0,
    keep_raw: bool = False,
    dense: bool = False,
) -> ImageParsing:
    """Turn one image's outputs into label maps.

    Args:
        heat: (S,S) centre heatmap H_c; cells: (K,) centre cells; ins_kernels: (K,C);
        ins_maps: (K,h,w) Q_ins; cate_maps: (N,h,w) Q_cate; parsing: (K,N,h,w) fused maps for
        the conv fusions, None for the index fusion (computed here in factorised form:
        max_c relu(q_k) * relu(Q_c) = relu(q_k) * max_c relu(Q_c)).
        stride: feature stride; out_size: (H,W) of the unpadded network input.
        cate_score_thresh: per-person category filter of the authors' release (``cate_score_thr``):
            a category c is kept for person k only if its "maskness" inside the person's mask at
            feature resolution -- over M = [Q_ins,k > mask_thresh] * Q_cate,c, the sum of M where
            M > mask_thresh divided by the number of pixels where M > 0.1 -- exceeds this
            (conv fusions: over P[k,c]). Filtered categories take part neither in the person's
            fused score nor in its pixels' labels. 0 keeps every category.
        keep_raw: also return every person's mask before pixels are assigned (dense path).
        dense: upsample every map over the crop (the reference the default block path is tested
            against; always used for odd strides, the conv fusions and ``keep_raw``).
    """
    H, W = out_size
    dev = cate_maps.device
    scores_all = heat.flatten()[cells] if cells.numel() else heat.new_zeros((0,))
    keep = merge_duplicates(ins_kernels, scores_all, merge_cos)
    cells, scores = cells[keep], scores_all[keep]
    h, w = cate_maps.shape[-2:]
    hc, wc = min(h, -(-H // stride)), min(w, -(-W // stride))  # feature cells covering the image
    k = int(keep.numel())
    fused_low, p, cm, allowed = _fuse(keep, ins_maps, cate_maps, parsing, hc, wc, mask_thresh, cate_score_thresh)
    score_maps = fused_low.new_zeros((k, H, W)) if keep_raw else None  # (only for raw_masks)
    instance = torch.zeros((H, W), dtype=torch.long, device=dev)
    part = torch.zeros((H, W), dtype=torch.long, device=dev)
    alive = torch.zeros(0, dtype=torch.long, device=dev)  # people that won pixels, in score order
    # Bilinear upsampling is a convex combination of the 4 nearest cells, so a pixel can exceed
    # mask_thresh only next to a cell that does: upsample just the bounding box of those cells
    # (+1 cell margin). Exact, and much cheaper when people cover a small part of the frame.
    hot = (fused_low > mask_thresh).any(dim=0) if k else torch.zeros((hc, wc), dtype=torch.bool, device=dev)
    if bool(hot.any()):
        crop = _crop(hot, stride, hc, wc, H, W)
        (r0, r1, c0, c1), (Y0, X0, Y1, X1) = crop
        if p is None and not dense and not keep_raw and stride % 2 == 0:
            w_, fg, lab = _assign_blocks(fused_low[:, r0 : r1 + 1, c0 : c1 + 1], cm[:, r0 : r1 + 1, c0 : c1 + 1],
                                         allowed, mask_thresh, stride, (Y1 - Y0, X1 - X0))
            lab = lab + 1
        else:
            w_, fg, lab = _assign_dense(fused_low, p, cm, allowed, crop, stride, mask_thresh, score_maps)
        alive = _write_labels(instance, part, w_, fg, lab, k, (Y0, X0, Y1, X1))
    raw = score_maps > mask_thresh if score_maps is not None else None
    return ImageParsing(
        part=part,
        instance=instance,
        scores=scores[alive],
        raw_masks=raw[alive] if keep_raw else None,
        cells=cells[alive],
        kernels=ins_kernels[keep][alive],
    )


def _fuse(keep: torch.Tensor, ins_maps: torch.Tensor, cate_maps: torch.Tensor, parsing: torch.Tensor | None, hc: int, wc: int,
          mask_thresh: float, cate_score_thresh: float):
    """Each kept person's fused score at feature resolution, (k, hc, wc), with what labelling needs:
    (fused_low, p (k, N-1, hc, wc) for the conv fusions else None, cm (N-1, hc, wc) for the index fusion
    else None, allowed (k, N-1) bool categories kept per person, or None for all)."""
    k = int(keep.numel())
    allowed = None
    if parsing is None:  # index fusion, factorised
        # fused score max_c P[k,c] = relu(q_k) * max_c relu(Q_c), formed at feature resolution and
        # then upsampled (upsampling the two factors first would shrink masks: 0.5 * 0.5 < 0.5)
        cm = cate_maps[1:, :hc, :wc].float()
        q = ins_maps[keep][:, :hc, :wc].float().clamp(min=0)
        cm_pos = cm.clamp(min=0)
        cm_max = cm_pos.amax(dim=0)
        if cate_score_thresh > 0 and k:
            allowed = _category_filter(q, cm_pos, mask_thresh, cate_score_thresh)
            # best kept category per person (cm_pos >= 0, so none kept gives 0)
            fused_low = torch.stack([
                qi * (cm_max if bool(a.all()) else (cm_pos * a[:, None, None]).amax(dim=0)) for qi, a in zip(q, allowed)
            ])
        else:
            fused_low = q * cm_max
        return fused_low, None, cm, allowed
    p = parsing[keep][:, 1:, :hc, :wc].float()
    if cate_score_thresh > 0 and k:
        allowed = _maskness(p, mask_thresh) > cate_score_thresh
        p = p * allowed[:, :, None, None]
    fused_low = p.amax(dim=1) if k else p.new_zeros((0, hc, wc))
    return fused_low, p, None, allowed


def _crop(hot: torch.Tensor, stride: int, hc: int, wc: int, H: int, W: int):
    """The cells around those above the threshold (+1 cell margin), and the pixels they cover:
    ((r0, r1, c0, c1) inclusive cells, (Y0, X0, Y1, X1) pixels, end exclusive)."""
    rows = torch.nonzero(hot.any(dim=1)).flatten()
    cols = torch.nonzero(hot.any(dim=0)).flatten()
    r0, r1 = max(int(rows[0]) - 1, 0), min(int(rows[-1]) + 1, hc - 1)
    c0, c1 = max(int(cols[0]) - 1, 0), min(int(cols[-1]) + 1, wc - 1)
    return (r0, r1, c0, c1), (r0 * stride, c0 * stride, min((r1 + 1) * stride, H), min((c1 + 1) * stride, W))


def _assign_dense(fused_low, p, cm, allowed, crop, stride: int, mask_thresh: float, score_maps):
    """Every map upsampled over the crop: (winner index (h,w), foreground (h,w), label (h,w) from 1)."""
    (r0, r1, c0, c1), (Y0, X0, Y1, X1) = crop
    k = fused_low.shape[0]

    def up(x: torch.Tensor) -> torch.Tensor:  # (M, crop cells) -> (M, crop pixels)
        # channels_last: the reductions over M below then read contiguous memory (2x faster on
        # CPU than reducing over the outer dim; identical values)
        x = x[None].contiguous(memory_format=torch.channels_last)
        y = F.interpolate(x, scale_factor=stride, mode="bilinear", align_corners=False)[0]
        return y[:, : Y1 - Y0, : X1 - X0]

    sm = up(fused_low[:, r0 : r1 + 1, c0 : c1 + 1])
    if score_maps is not None:
        score_maps[:, Y0:Y1, X0:X1] = sm
    # each pixel goes to the highest-scored person (people are in descending centre-score
    # order) whose fused score there exceeds mask_thresh: a weak extra centre cannot take
    # pixels from a confident person (argmax returns the first maximal index)
    over = (sm > mask_thresh).to(torch.uint8)
    w_ = over.argmax(dim=0)
    fg = over.gather(0, w_.unsqueeze(0))[0].bool()  # the first maximum is 1 iff any person is above
    if p is None:
        ucm = up(cm[:, r0 : r1 + 1, c0 : c1 + 1])
        lab0 = ucm.argmax(dim=0)
        if allowed is not None:
            # pixels whose best category is filtered out for their person: best allowed one
            bad = fg & ~allowed[w_, lab0]
            if bool(bad.any()):
                sub = ucm[:, bad].masked_fill(~allowed[w_[bad]].t(), float("-inf"))
                lab0 = lab0.masked_scatter(bad, sub.argmax(dim=0))
        return w_, fg, lab0 + 1
    # label of the winning person's own fused maps
    pc = p[:, :, r0 : r1 + 1, c0 : c1 + 1]
    lab = up(pc.flatten(0, 1)).reshape(k, pc.shape[1], Y1 - Y0, X1 - X0).argmax(dim=1) + 1
    return w_, fg, lab.gather(0, w_.unsqueeze(0))[0]


def _write_labels(instance, part, w_, fg, lab, k: int, box) -> torch.Tensor:
    """Write the crop's labels; people that won no pixel are dropped and the rest renumbered 1..K in score
    order (outside the crop no pixel is foreground). Returns the kept people's indices."""
    Y0, X0, Y1, X1 = box
    dev = instance.device
    w1 = torch.where(fg, w_ + 1, 0)  # person index + 1, 0 = background
    alive = torch.nonzero(torch.bincount(w1.flatten(), minlength=k + 1)[1:] > 0).flatten()
    remap = torch.zeros(k + 1, dtype=torch.long, device=dev)
    remap[alive + 1] = torch.arange(1, alive.numel() + 1, device=dev)
    instance[Y0:Y1, X0:X1] = remap[w1]
    part[Y0:Y1, X0:X1] = torch.where(fg, lab, 0)
    return alive
