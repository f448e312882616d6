"""Fusion of instance similarity maps with category similarity maps (paper Sec. 3.4, Tab. 4d).

All variants map (q_ins (K,H,W), Q_cate (N,H,W), F_cate (C,H,W)) of one image to the
instance-aware parsing Q_parsing (K, N, H, W) with values in [0, 1].
- ``index`` (default, best in the paper): element-wise indexing of the category maps by the
  instance maps, P[k, c] = relu(q_ins[k]) * relu(Q_cate[c]). Its per-pixel argmax over c does
  not depend on k, which post-processing exploits.
- ``convs``: [q_ins[k], F_cate] -> conv3x3 stack -> N logits -> sigmoid.
- ``multi``: q_ins[k] * F_cate -> conv3x3 stack -> N logits -> sigmoid.
"""

from __future__ import annotations

import torch
from torch import nn

from .heads import conv_stack

FUSIONS = ("index", "convs", "multi")


class Fusion(nn.Module):
    def __init__(self, *, mode: str = "index", channels: int = 128, num_classes: int = 20, num_convs: int = 2):
        super().__init__()
        if mode not in FUSIONS:
            raise ValueError(f"fusion mode must be one of {FUSIONS}, got {mode!r}")
        self.mode = mode
        if mode != "index":
            in_ch = channels + 1 if mode == "convs" else channels
            self.tower = conv_stack(in_ch, channels, num_convs)
            self.out = nn.Conv2d(channels, num_classes, 1)

    def forward(self, ins_maps: torch.Tensor, cate_maps: torch.Tensor, cate_feats: torch.Tensor) -> torch.Tensor:
        """ins_maps (K,H,W), cate_maps (N,H,W), cate_feats (C,H,W) -> (K,N,H,W) in [0,1]."""
        k = ins_maps.shape[0]
        if self.mode == "index":
            return ins_maps.clamp(min=0).unsqueeze(1) * cate_maps.clamp(min=0).unsqueeze(0)
        if k == 0:
            return ins_maps.new_zeros((0, cate_maps.shape[0], *ins_maps.shape[-2:]))
        feats = cate_feats.unsqueeze(0).expand(k, -1, -1, -1)
        if self.mode == "convs":
            x = torch.cat([ins_maps.unsqueeze(1), feats], dim=1)
        else:
            x = ins_maps.unsqueeze(1) * feats
        return self.out(self.tower(x)).sigmoid()
