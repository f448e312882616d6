"""Test-time augmentation (inference only): several input scales and/or a mirror pass, merged on the
reference grid before the unchanged post-processing."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from .postprocess import PostprocessParams, pick_centres
from .uniparser import UniParser, UniParserOutput


class _Pass(NamedTuple):
    """One pass of a batch of B images (one scale, direct or mirrored), as the model saw it."""

    ins: torch.Tensor  # (B,C,h',w') instance features
    cate: torch.Tensor  # (B,C,h',w') category features
    maps: torch.Tensor  # (B,N,h',w') Q_cate
    heat: torch.Tensor  # (B,1,S',S') H_c as probabilities
    ratio: tuple[float, float]  # (a_y, a_x): how far the image reaches over the reference's
    mirrored: bool


def forward_tta(
    model: UniParser,
    images: list[torch.Tensor],
    params: PostprocessParams,
    *,
    ratios: list[tuple[float, float]] | None = None,
    flip_perm: torch.Tensor | None = None,
    compute_parsing: bool = True,
) -> UniParserOutput:
    """Run ``model`` on several scales (and mirrored) and merge the passes.

    Args:
        images: one (B,3,H_s,W_s) batch per scale, the same B images resized (and padded at the
            bottom/right); the first is the reference: outputs are on its grid.
        params: centre selection (``center_thresh``, ``center_pool``, ``max_instances``).
        ratios: per scale, (a_y, a_x) = how far, as a fraction of the padded extent, the image
            reaches at this scale over that at the reference: (n_s / p_s) / (n_0 / p_0) for
            valid size n and padded size p, per axis; 1 where the padding ratio matches. None:
            all ones.
        flip_perm: (N,) long left/right class permutation (``perm[c]`` = the class c becomes in
            a mirror image); given, every scale also runs mirrored.

    Every pass's H_c (as probabilities), Q_cate (mirror passes: flipped back, left/right
    channels swapped) and, per person, Q_ins are resampled onto the reference grid and
    averaged. Centres are the peaks of the averaged H_c; each pass picks the person's kernel
    at the centre's position in its own frame (mirrored in a mirror pass). Instance kernels and
    feature maps in the output are the reference pass's. Conv fusions fuse per pass and
    average Q_parsing."""
    ratios = _check_inputs(model, images, ratios, flip_perm)
    perm = flip_perm.to(images[0].device) if flip_perm is not None else None
    passes, kernels = _run_passes(model, images, ratios, perm)
    s = model.grid
    h, w = passes[0].ins.shape[-2:]
    heat = torch.stack([_to_ref(p.heat, p.ratio, p.mirrored, (s, s)) for p in passes]).mean(0)
    cate_maps = torch.stack([
        _to_ref(p.maps[:, perm] if p.mirrored else p.maps, p.ratio, p.mirrored, (h, w)) for p in passes
    ]).mean(0).to(passes[0].maps.dtype)
    centers = pick_centres(heat, params)
    ins_kernels, ins_maps, parsing = [], [], []
    want_parsing = compute_parsing or model.fusion.mode != "index"
    for i, cells in enumerate(centers):
        kernel, ins_map, person_parsing = _merge_people(model, passes, i, cells, heat.dtype, (h, w), perm,
                                                        cate_maps[i], want_parsing)
        ins_kernels.append(kernel)
        ins_maps.append(ins_map)
        if want_parsing:
            parsing.append(person_parsing)
    return UniParserOutput(
        center_logits=torch.logit(heat, eps=1e-6),
        ins_feats=passes[0].ins,
        cate_feats=passes[0].cate,
        cate_kernels=kernels,
        cate_maps=cate_maps,
        centers=centers,
        ins_kernels=ins_kernels,
        ins_maps=ins_maps,
        parsing=parsing if want_parsing else None,
    )


def _check_inputs(model: UniParser, images: list[torch.Tensor], ratios: list[tuple[float, float]] | None,
                  flip_perm: torch.Tensor | None) -> list[tuple[float, float]]:
    """``ValueError`` for what ``forward_tta`` cannot merge; returns the ratios (all ones when None)."""
    if not images:
        raise ValueError("forward_tta needs at least one batch of images")
    if model.kernel_sampling != "bilinear" or model.grid_pad:
        raise ValueError("test-time augmentation needs kernel_sampling='bilinear' and no grid padding "
                         "(the authors' variants run without it)")
    for x in images:
        model.check_images(x)
    if len({x.shape[0] for x in images}) != 1:
        raise ValueError(f"every scale must hold the same B images, got {[tuple(t.shape) for t in images]}")
    ratios = list(ratios) if ratios is not None else [(1.0, 1.0)] * len(images)
    if len(ratios) != len(images):
        raise ValueError(f"{len(ratios)} ratios for {len(images)} scales")
    if flip_perm is not None and tuple(flip_perm.shape) != (model.num_classes,):
        raise ValueError(f"flip_perm must have shape ({model.num_classes},), got {tuple(flip_perm.shape)}")
    return ratios


def _run_passes(model: UniParser, images: list[torch.Tensor], ratios: list[tuple[float, float]],
                perm: torch.Tensor | None) -> tuple[list[_Pass], torch.Tensor]:
    """The dense forward of every scale (with ``perm``: the B images and their mirror images in one
    batch); returns the passes, direct then mirrored per scale, and the last forward's category kernels."""
    b = images[0].shape[0]
    flips = (False, True) if perm is not None else (False,)
    passes, kernels = [], None
    for x, ratio in zip(images, ratios):
        dense = model(torch.cat([x, x.flip(-1)]) if perm is not None else x)
        kernels = dense.cate_kernels
        for j, mirrored in enumerate(flips):
            sl = slice(j * b, (j + 1) * b)
            passes.append(_Pass(dense.ins_feats[sl], dense.cate_feats[sl], dense.cate_maps[sl],
                                dense.center_logits[sl].float().sigmoid(), ratio, mirrored))
    return passes, kernels


def _merge_people(model: UniParser, passes: list[_Pass], i: int, cells: torch.Tensor, dtype: torch.dtype,
                  size: tuple[int, int], perm: torch.Tensor | None, cate_map: torch.Tensor,
                  want_parsing: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The people of image ``i`` at the grid ``cells``: each pass samples their kernels at the centres
    in its own frame; returns (the reference pass's kernels (K,C), Q_ins (K,h,w) averaged over the
    passes, Q_parsing (K,N,h,w) or None): an index fusion fuses the averaged maps once, a conv fusion
    fuses per pass and averages."""
    u0, v0 = model.cell_centres(cells, dtype)
    qs, ps, kernel = [], [], None
    for p in passes:
        u, v = u0 * p.ratio[1], v0 * p.ratio[0]  # the centre in this pass's padded frame, in [0, 1]
        if p.mirrored:
            u = 1.0 - u
        pos = torch.stack([u * 2 - 1, v * 2 - 1], dim=-1)
        k = model.sample_kernels_at(p.ins[i], pos)
        if not qs:  # the reference pass
            kernel = k
        q = torch.einsum("kc,chw->khw", k, p.ins[i])
        qs.append(_to_ref(q[None], p.ratio, p.mirrored, size)[0])
        if want_parsing and model.fusion.mode != "index":
            fused = model.fusion(q, p.maps[i], p.cate[i])
            ps.append(_to_ref(fused[:, perm] if p.mirrored else fused, p.ratio, p.mirrored, size))
    ins_map = torch.stack(qs).mean(0)
    if not want_parsing:
        return kernel, ins_map, None
    if model.fusion.mode == "index":
        return kernel, ins_map, model.fusion(ins_map, cate_map, passes[0].cate[i])
    return kernel, ins_map, torch.stack(ps).mean(0)


def _to_ref(t: torch.Tensor, ratio: tuple[float, float], mirrored: bool, size: tuple[int, int]) -> torch.Tensor:
    """(B',C,h',w') maps of one pass -> (B',C,*size) on the reference grid."""
    if mirrored:
        t = t.flip(-1)
    if ratio == (1.0, 1.0) and tuple(t.shape[-2:]) == tuple(size):
        return t
    return F.grid_sample(t, _ref_grid(size, ratio, t), mode="bilinear", align_corners=False)


def _ref_grid(size: tuple[int, int], ratio: tuple[float, float], like: torch.Tensor) -> torch.Tensor:
    """grid_sample grid (B,h,w,2) that reads, at each cell centre of a ``size`` reference grid, the
    same image point in a pass whose image reaches ``ratio`` (a_y, a_x) as far (padded frames,
    padding at the bottom/right)."""
    h, w = size
    ys = ((torch.arange(h, device=like.device, dtype=like.dtype) + 0.5) / h * ratio[0]) * 2 - 1
    xs = ((torch.arange(w, device=like.device, dtype=like.dtype) + 0.5) / w * ratio[1]) * 2 - 1
    g = torch.stack(torch.meshgrid(ys, xs, indexing="ij")[::-1], dim=-1)  # (h,w,2) as (x, y)
    return g.unsqueeze(0).expand(like.shape[0], -1, -1, -1)
