"""The UniParser network (paper Fig. 2): neck -> Center Locator, IFSB, CFSB -> fusion.

``forward`` returns the same typed ``UniParserOutput`` in train and eval mode; losses live in
``losses.py``, post-processing (centres -> label maps) in ``postprocess.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .fusion import Fusion
from .heads import CategoryKernels, CenterLocator, FeatureSpaceBuilder
from .postprocess import peak_cells
from .postprocess_official import cell_top_left

KERNEL_SAMPLING = ("bilinear", "cell_top_left")


@dataclass
class UniParserOutput:
    """Network outputs for a batch of B images (padded to a common size H x W).

    Attributes:
        center_logits: (B, 1, S, S) centre logits; ``heatmap`` = sigmoid of it (H_c).
        ins_feats: (B, C, h, w) unit-norm instance embeddings F_ins, h = H / stride.
        cate_feats: (B, C, h, w) unit-norm category embeddings F_cate.
        cate_kernels: (N, C) unit-norm category kernels K_cate (N = num_classes incl. background).
        cate_maps: (B, N, h, w) category cosine-similarity maps Q_cate.
        centers: B tensors (K_i,) long: the grid cells (y * S + x) whose kernels were used.
        ins_kernels: B tensors (K_i, C): instance kernels (F_ins sampled at the centres).
        ins_maps: B tensors (K_i, h, w): instance cosine-similarity maps Q_ins.
        parsing: B tensors (K_i, N, h, w) fused instance-aware parsing Q_parsing, or None when
            not computed (``compute_parsing=False`` with the index fusion).
    """

    center_logits: torch.Tensor
    ins_feats: torch.Tensor
    cate_feats: torch.Tensor
    cate_kernels: torch.Tensor
    cate_maps: torch.Tensor
    centers: list[torch.Tensor]
    ins_kernels: list[torch.Tensor]
    ins_maps: list[torch.Tensor]
    parsing: list[torch.Tensor] | None

    @property
    def heatmap(self) -> torch.Tensor:
        return self.center_logits.sigmoid()


class UniParser(nn.Module):
    """UniParser. Constructed from built modules and plain values (house rule 1).

    Args:
        neck: module mapping images (B,3,H,W) to F_neck (B, C_neck, H/stride, W/stride), with
            attributes ``out_channels`` and ``stride``.
        center_locator, ins_builder, cate_builder: the three heads.
        cate_kernels: learned category kernels.
        fusion: the fusion module.
        num_classes: N, incl. background.
        center_thresh, center_pool, max_instances: centre selection when no centres are given.
        kernel_sampling: where a centre cell's instance kernel is read from F_ins: ``"bilinear"``
            (the cell's centre, bilinearly) or ``"cell_top_left"`` (the authors' release: the F_ins
            pixel (int(y / S * h), int(x / S * w)) of cell (y, x), h x w being F_ins' grid).

    A neck with ``grid_pad`` = p > 0 (the authors' light variant) computes the heads on a grid
    grown by p cells per side; outputs are cropped back to the H/stride grid (cells aligned with
    the image) unless ``keep_grid_pad=True``, which the authors' post-processing needs.
    """

    def __init__(
        self,
        *,
        neck: nn.Module,
        center_locator: CenterLocator,
        ins_builder: FeatureSpaceBuilder,
        cate_builder: FeatureSpaceBuilder,
        cate_kernels: CategoryKernels,
        fusion: Fusion,
        num_classes: int,
        center_thresh: float = 0.1,
        center_pool: int = 3,
        max_instances: int = 100,
        kernel_sampling: str = "bilinear",
    ):
        super().__init__()
        if kernel_sampling not in KERNEL_SAMPLING:
            raise ValueError(f"kernel_sampling must be one of {KERNEL_SAMPLING}, got {kernel_sampling!r}")
        self.neck = neck
        self.center_locator = center_locator
        self.ins_builder = ins_builder
        self.cate_builder = cate_builder
        self.cate_kernels = cate_kernels
        self.fusion = fusion
        self.num_classes = num_classes
        self.grid = center_locator.grid
        self.stride = neck.stride
        self.center_thresh = center_thresh
        self.center_pool = center_pool
        self.max_instances = max_instances
        self.size_divisor = 32
        self.kernel_sampling = kernel_sampling
        self.grid_pad = int(getattr(neck, "grid_pad", 0))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def sample_kernels(self, ins_feats: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """Instance kernels (K, C): ``ins_feats`` (C,h,w) sampled bilinearly at the centres of
        grid cells ``cells`` (K,) (cell = y * S + x), re-normalised to unit length; with
        ``kernel_sampling="cell_top_left"`` the pixel at each cell's top-left instead."""
        if self.kernel_sampling == "cell_top_left":
            ys, xs = cell_top_left(cells, self.grid, tuple(ins_feats.shape[-2:]))
            return F.normalize(ins_feats[:, ys, xs].t(), dim=1, eps=1e-6)
        u, v = self.cell_centres(cells, ins_feats.dtype)
        return self.sample_kernels_at(ins_feats, torch.stack([u * 2 - 1, v * 2 - 1], dim=-1))

    def cell_centres(self, cells: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Centres (u, v) of grid cells ``cells`` (K,) (cell = y * S + x) as fractions in [0, 1] of the
        padded image's width and height."""
        s = self.grid
        v = (torch.div(cells, s, rounding_mode="floor").to(dtype) + 0.5) / s
        return ((cells % s).to(dtype) + 0.5) / s, v

    @staticmethod
    def sample_kernels_at(ins_feats: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Instance kernels (K, C): ``ins_feats`` (C,h,w) sampled bilinearly at ``pos`` (K, 2),
        (x, y) in grid_sample's [-1, 1] frame, re-normalised to unit length."""
        if pos.shape[0] == 0:
            return ins_feats.new_zeros((0, ins_feats.shape[0]))
        grid = pos.to(ins_feats.dtype).view(1, 1, -1, 2)
        k = F.grid_sample(ins_feats.unsqueeze(0), grid, mode="bilinear", align_corners=False)  # (1,C,1,K)
        return F.normalize(k[0, :, 0].t(), dim=1, eps=1e-6)

    def forward(
        self,
        images: torch.Tensor,
        centers: list[torch.Tensor] | None = None,
        *,
        compute_parsing: bool = True,
        keep_grid_pad: bool = False,
    ) -> UniParserOutput:
        """images: (B,3,H,W) normalised, H and W multiples of 32. ``centers``: optional B tensors
        of grid cells to pick instance kernels at (training uses the ground-truth centres);
        when None, local maxima of H_c above ``center_thresh`` are used. ``keep_grid_pad``: see
        the class docstring."""
        self._check_images(images)
        return self.forward_heads(self.neck(images), centers, compute_parsing=compute_parsing, keep_grid_pad=keep_grid_pad)

    def _check_images(self, images: torch.Tensor) -> None:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B,3,H,W), got {tuple(images.shape)}")
        if images.shape[-1] % self.size_divisor or images.shape[-2] % self.size_divisor:
            raise ValueError(f"image size {tuple(images.shape[-2:])} must be a multiple of {self.size_divisor}")

    def _dense_heads(self, feat: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """F_neck (B, C_neck, h, w) -> centre logits (B,1,S,S), F_ins, F_cate (B,C,h,w), K_cate
        (N,C), Q_cate (B,N,h,w): everything that does not depend on the chosen centres. A pair
        (a split-convert neck) feeds the Center Locator and the IFSB from its first tensor and
        the CFSB from its second."""
        feat_ins, feat_cate = feat if isinstance(feat, tuple) else (feat, feat)
        ins_feats, cate_feats = self.ins_builder(feat_ins), self.cate_builder(feat_cate)
        kernels = self.cate_kernels()
        return self.center_locator(feat_ins), ins_feats, cate_feats, kernels, torch.einsum("nc,bchw->bnhw", kernels, cate_feats)

    def forward_tta(
        self,
        images: list[torch.Tensor],
        *,
        ratios: list[tuple[float, float]] | None = None,
        flip_perm: torch.Tensor | None = None,
        compute_parsing: bool = True,
    ) -> UniParserOutput:
        """Test-time augmentation (inference only): several input scales and/or a mirror pass.

        Args:
            images: one (B,3,H_s,W_s) batch per scale, the same B images resized (and padded at the
                bottom/right); the first is the reference: outputs are on its grid.
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
        if not images:
            raise ValueError("forward_tta needs at least one batch of images")
        if self.kernel_sampling != "bilinear" or self.grid_pad:
            raise ValueError("test-time augmentation needs kernel_sampling='bilinear' and no grid padding "
                             "(the authors' variants run without it)")
        for x in images:
            self._check_images(x)
        if len({x.shape[0] for x in images}) != 1:
            raise ValueError(f"every scale must hold the same B images, got {[tuple(t.shape) for t in images]}")
        ratios = list(ratios) if ratios is not None else [(1.0, 1.0)] * len(images)
        if len(ratios) != len(images):
            raise ValueError(f"{len(ratios)} ratios for {len(images)} scales")
        if flip_perm is not None and tuple(flip_perm.shape) != (self.num_classes,):
            raise ValueError(f"flip_perm must have shape ({self.num_classes},), got {tuple(flip_perm.shape)}")
        b, s = images[0].shape[0], self.grid
        flips = (False, True) if flip_perm is not None else (False,)
        perm = flip_perm.to(images[0].device) if flip_perm is not None else None
        passes = []  # (ins_feats, cate_feats, cate_maps, heat, ratio, mirrored) per pass, batch of b
        for x, ratio in zip(images, ratios):
            logits, ins, cate, kernels, maps = self._dense_heads(self.neck(torch.cat([x, x.flip(-1)]) if perm is not None else x))
            for j, mirrored in enumerate(flips):
                sl = slice(j * b, (j + 1) * b)
                passes.append((ins[sl], cate[sl], maps[sl], logits[sl].float().sigmoid(), ratio, mirrored))
        h, w = passes[0][0].shape[-2:]

        def to_ref(t: torch.Tensor, ratio: tuple[float, float], mirrored: bool, size: tuple[int, int]) -> torch.Tensor:
            """(B',C,h',w') maps of one pass -> (B',C,*size) on the reference grid."""
            if mirrored:
                t = t.flip(-1)
            if ratio == (1.0, 1.0) and tuple(t.shape[-2:]) == tuple(size):
                return t
            return F.grid_sample(t, _ref_grid(size, ratio, t), mode="bilinear", align_corners=False)

        heat = torch.stack([to_ref(p[3], p[4], p[5], (s, s)) for p in passes]).mean(0)
        cate_maps = torch.stack([
            to_ref(p[2][:, perm] if p[5] else p[2], p[4], p[5], (h, w)) for p in passes
        ]).mean(0).to(passes[0][2].dtype)
        centers = [peak_cells(heat[i, 0], self.center_thresh, self.center_pool, self.max_instances)[0] for i in range(b)]
        ins_kernels, ins_maps, parsing = [], [], []
        want_parsing = compute_parsing or self.fusion.mode != "index"
        for i, cells in enumerate(centers):
            u0, v0 = self.cell_centres(cells, heat.dtype)
            qs, ps = [], []
            for ins, cate, maps, _, ratio, mirrored in passes:
                u, v = u0 * ratio[1], v0 * ratio[0]  # the centre in this pass's padded frame, in [0, 1]
                if mirrored:
                    u = 1.0 - u
                pos = torch.stack([u * 2 - 1, v * 2 - 1], dim=-1)
                k = self.sample_kernels_at(ins[i], pos)
                if not qs:  # the reference pass
                    ins_kernels.append(k)
                q = torch.einsum("kc,chw->khw", k, ins[i])
                qs.append(to_ref(q[None], ratio, mirrored, (h, w))[0])
                if want_parsing and self.fusion.mode != "index":
                    p = self.fusion(q, maps[i], cate[i])
                    ps.append(to_ref(p[:, perm] if mirrored else p, ratio, mirrored, (h, w)))
            ins_maps.append(torch.stack(qs).mean(0))
            if want_parsing:
                if self.fusion.mode == "index":
                    parsing.append(self.fusion(ins_maps[-1], cate_maps[i], passes[0][1][i]))
                else:
                    parsing.append(torch.stack(ps).mean(0))
        return UniParserOutput(
            center_logits=torch.logit(heat, eps=1e-6),
            ins_feats=passes[0][0],
            cate_feats=passes[0][1],
            cate_kernels=kernels,
            cate_maps=cate_maps,
            centers=centers,
            ins_kernels=ins_kernels,
            ins_maps=ins_maps,
            parsing=parsing if want_parsing else None,
        )

    def forward_heads(
        self,
        feat: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
        centers: list[torch.Tensor] | None = None,
        *,
        compute_parsing: bool = True,
        keep_grid_pad: bool = False,
    ) -> UniParserOutput:
        """Everything after the neck: F_neck (B, C_neck, h, w) (or a split-convert pair) ->
        ``UniParserOutput``."""
        center_logits, ins_feats, cate_feats, kernels, cate_maps = self._dense_heads(feat)
        if centers is None:
            heat = center_logits.detach().sigmoid()
            centers = [peak_cells(heat[i, 0], self.center_thresh, self.center_pool, self.max_instances)[0] for i in range(heat.shape[0])]
        p = 0 if keep_grid_pad else self.grid_pad
        kernel_feats = ins_feats  # kernels are read on the grid the heads ran on
        if p:
            ins_feats, cate_feats, cate_maps = (t[..., p:-p, p:-p] for t in (ins_feats, cate_feats, cate_maps))
        ins_kernels, ins_maps, parsing = [], [], []
        want_parsing = compute_parsing or self.fusion.mode != "index"
        for i, cells in enumerate(centers):
            kern = self.sample_kernels(kernel_feats[i], cells.to(ins_feats.device))
            qmap = torch.einsum("kc,chw->khw", kern, ins_feats[i])
            ins_kernels.append(kern)
            ins_maps.append(qmap)
            if want_parsing:
                parsing.append(self.fusion(qmap, cate_maps[i], cate_feats[i]))
        return UniParserOutput(
            center_logits=center_logits,
            ins_feats=ins_feats,
            cate_feats=cate_feats,
            cate_kernels=kernels,
            cate_maps=cate_maps,
            centers=[c.to(ins_feats.device) for c in centers],
            ins_kernels=ins_kernels,
            ins_maps=ins_maps,
            parsing=parsing if want_parsing else None,
        )


def _ref_grid(size: tuple[int, int], ratio: tuple[float, float], like: torch.Tensor) -> torch.Tensor:
    """grid_sample grid (B,h,w,2) that reads, at each cell centre of a ``size`` reference grid, the
    same image point in a pass whose image reaches ``ratio`` (a_y, a_x) as far (padded frames,
    padding at the bottom/right)."""
    h, w = size
    ys = ((torch.arange(h, device=like.device, dtype=like.dtype) + 0.5) / h * ratio[0]) * 2 - 1
    xs = ((torch.arange(w, device=like.device, dtype=like.dtype) + 0.5) / w * ratio[1]) * 2 - 1
    g = torch.stack(torch.meshgrid(ys, xs, indexing="ij")[::-1], dim=-1)  # (h,w,2) as (x, y)
    return g.unsqueeze(0).expand(like.shape[0], -1, -1, -1)
