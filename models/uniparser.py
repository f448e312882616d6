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
    ):
        super().__init__()
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

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def sample_kernels(self, ins_feats: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """Instance kernels (K, C): ``ins_feats`` (C,h,w) sampled bilinearly at the centres of
        grid cells ``cells`` (K,) (cell = y * S + x), re-normalised to unit length."""
        if cells.numel() == 0:
            return ins_feats.new_zeros((0, ins_feats.shape[0]))
        s = self.grid
        gy = torch.div(cells, s, rounding_mode="floor").to(ins_feats.dtype)
        gx = (cells % s).to(ins_feats.dtype)
        grid = torch.stack([(gx + 0.5) / s * 2 - 1, (gy + 0.5) / s * 2 - 1], dim=-1).view(1, 1, -1, 2)
        k = F.grid_sample(ins_feats.unsqueeze(0), grid, mode="bilinear", align_corners=False)  # (1,C,1,K)
        return F.normalize(k[0, :, 0].t(), dim=1, eps=1e-6)

    def forward(
        self,
        images: torch.Tensor,
        centers: list[torch.Tensor] | None = None,
        *,
        compute_parsing: bool = True,
    ) -> UniParserOutput:
        """images: (B,3,H,W) normalised, H and W multiples of 32. ``centers``: optional B tensors
        of grid cells to pick instance kernels at (training uses the ground-truth centres);
        when None, local maxima of H_c above ``center_thresh`` are used."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B,3,H,W), got {tuple(images.shape)}")
        if images.shape[-1] % self.size_divisor or images.shape[-2] % self.size_divisor:
            raise ValueError(f"image size {tuple(images.shape[-2:])} must be a multiple of {self.size_divisor}")
        return self.forward_heads(self.neck(images), centers, compute_parsing=compute_parsing)

    def forward_heads(
        self, feat: torch.Tensor, centers: list[torch.Tensor] | None = None, *, compute_parsing: bool = True
    ) -> UniParserOutput:
        """Everything after the neck: F_neck (B, C_neck, h, w) -> ``UniParserOutput``."""
        center_logits = self.center_locator(feat)
        ins_feats = self.ins_builder(feat)
        cate_feats = self.cate_builder(feat)
        kernels = self.cate_kernels()
        cate_maps = torch.einsum("nc,bchw->bnhw", kernels, cate_feats)
        if centers is None:
            heat = center_logits.detach().sigmoid()
            centers = [peak_cells(heat[i, 0], self.center_thresh, self.center_pool, self.max_instances)[0] for i in range(heat.shape[0])]
        ins_kernels, ins_maps, parsing = [], [], []
        want_parsing = compute_parsing or self.fusion.mode != "index"
        for i, cells in enumerate(centers):
            kern = self.sample_kernels(ins_feats[i], cells.to(ins_feats.device))
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
