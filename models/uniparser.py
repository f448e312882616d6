"""The UniParser network (paper Fig. 2): neck -> Center Locator, IFSB, CFSB -> fusion.

``forward`` returns the same typed ``UniParserOutput`` in train and eval mode; losses live in
``losses.py``, post-processing (centres -> label maps) in ``postprocess.py``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .fusion import Fusion
from .heads import CategoryKernels, CenterLocator, FeatureSpaceBuilder
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
        centers: B tensors (K_i,) long: the grid cells (y * S + x) whose kernels were used; None
            for the dense heads alone (no centres given).
        ins_kernels: B tensors (K_i, C): instance kernels (F_ins sampled at the centres), or None.
        ins_maps: B tensors (K_i, h, w): instance cosine-similarity maps Q_ins, or None.
        parsing: B tensors (K_i, N, h, w) fused instance-aware parsing Q_parsing, or None when
            not computed (no centres, or ``compute_parsing=False`` with the index fusion).
        kernel_feats: (B, C, h', w') F_ins on the grid the heads ran on, where kernels are read, when
            it differs from ``ins_feats`` (a neck with grid padding: the authors' light variant); else None.
    """

    center_logits: torch.Tensor
    ins_feats: torch.Tensor
    cate_feats: torch.Tensor
    cate_kernels: torch.Tensor
    cate_maps: torch.Tensor
    centers: list[torch.Tensor] | None = None
    ins_kernels: list[torch.Tensor] | None = None
    ins_maps: list[torch.Tensor] | None = None
    parsing: list[torch.Tensor] | None = None
    kernel_feats: torch.Tensor | None = None

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
        kernel_sampling: where a centre cell's instance kernel is read from F_ins: ``"bilinear"``
            (the cell's centre, bilinearly) or ``"cell_top_left"`` (the authors' release: the F_ins
            pixel (int(y / S * h), int(x / S * w)) of cell (y, x), h x w being F_ins' grid).

    Centre selection and decoding are not part of the module: ``models.postprocess``
    (``pick_centres``, ``parse_image``, driven by ``PostprocessParams``), ``models.postprocess_official``
    and ``models.tta``. A neck with ``grid_pad`` = p > 0 (the authors' light variant) computes the heads
    on a grid grown by p cells per side; outputs are cropped back to the H/stride grid (cells aligned
    with the image) unless ``keep_grid_pad=True``, which the authors' post-processing needs; kernels are
    always read on the grid the heads ran on.
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
        """images: (B,3,H,W) normalised, H and W multiples of 32 -> the dense heads; with ``centers``
        (B tensors of grid cells: the ground-truth centres in training, ``pick_centres`` at inference)
        also each person's kernel, Q_ins and (``compute_parsing``) Q_parsing (``instances``).
        ``keep_grid_pad``: see the class docstring."""
        self.check_images(images)
        return self.forward_heads(self.neck(images), centers, compute_parsing=compute_parsing, keep_grid_pad=keep_grid_pad)

    def check_images(self, images: torch.Tensor) -> None:
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

    def forward_heads(
        self, feat: torch.Tensor | tuple[torch.Tensor, torch.Tensor], centers: list[torch.Tensor] | None = None, *,
        compute_parsing: bool = True, keep_grid_pad: bool = False,
    ) -> UniParserOutput:
        """Everything after the neck: F_neck (B, C_neck, h, w) (or a split-convert pair) ->
        ``UniParserOutput`` (dense heads, plus the per-person outputs when ``centers`` are given)."""
        center_logits, ins_feats, cate_feats, kernels, cate_maps = self._dense_heads(feat)
        p = 0 if keep_grid_pad else self.grid_pad
        kernel_feats = None
        if p:  # kernels are read on the grid the heads ran on; the maps are cropped to the image's cells
            kernel_feats = ins_feats
            ins_feats, cate_feats, cate_maps = (t[..., p:-p, p:-p] for t in (ins_feats, cate_feats, cate_maps))
        out = UniParserOutput(center_logits=center_logits, ins_feats=ins_feats, cate_feats=cate_feats,
                              cate_kernels=kernels, cate_maps=cate_maps, kernel_feats=kernel_feats)
        return out if centers is None else self.instances(out, centers, compute_parsing=compute_parsing)

    def instances(self, out: UniParserOutput, centers: list[torch.Tensor], *, compute_parsing: bool = True) -> UniParserOutput:
        """The per-person outputs at ``centers`` (B tensors (K_i,) of grid cells) added to the dense
        heads ``out``: kernels (K_i, C), Q_ins (K_i, h, w), Q_parsing (K_i, N, h, w) or None."""
        ins_kernels, ins_maps, parsing = [], [], []
        want_parsing = compute_parsing or self.fusion.mode != "index"
        kfeats = out.kernel_feats if out.kernel_feats is not None else out.ins_feats
        for i, cells in enumerate(centers):
            kern = self.sample_kernels(kfeats[i], cells.to(out.ins_feats.device))
            qmap = torch.einsum("kc,chw->khw", kern, out.ins_feats[i])
            ins_kernels.append(kern)
            ins_maps.append(qmap)
            if want_parsing:
                parsing.append(self.fusion(qmap, out.cate_maps[i], out.cate_feats[i]))
        return dataclasses.replace(out, centers=[c.to(out.ins_feats.device) for c in centers], ins_kernels=ins_kernels,
                                   ins_maps=ins_maps, parsing=parsing if want_parsing else None)
