"""Center Locator and the two Feature Space Builders (paper Sec. 3.2-3.3, appendix 6.1)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def coord_features(x: torch.Tensor) -> torch.Tensor:
    """Relative coordinates (B, 2, H, W) in [-1, 1] (x then y) matching ``x``'s grid."""
    b, _, h, w = x.shape
    ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype)
    xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx, yy]).unsqueeze(0).expand(b, -1, -1, -1)


def with_coords(x: torch.Tensor) -> torch.Tensor:
    """(B,C,H,W) -> (B,C+2,H,W): ``x`` with relative coordinates appended, in ``x``'s memory
    format (a channels_last input stays channels_last: the next conv avoids a layout conversion)."""
    c = coord_features(x)
    if x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last):
        c = c.contiguous(memory_format=torch.channels_last)  # cat of two channels_last tensors stays channels_last
    return torch.cat([x, c], dim=1)


def conv_stack(in_ch: int, ch: int, num_convs: int, groups: int = 32) -> nn.Sequential:
    """``num_convs`` x (conv3x3 -> GN -> ReLU)."""
    layers: list[nn.Module] = []
    for i in range(num_convs):
        layers += [
            nn.Conv2d(in_ch if i == 0 else ch, ch, 3, padding=1, bias=False),
            nn.GroupNorm(min(groups, ch), ch),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


class CenterLocator(nn.Module):
    """F_neck (B,C,H,W) -> centre logits (B,1,S,S); sigmoid gives the barycentre heatmap H_c.

    F_neck is resized (bilinear) to S x S, relative coordinates are concatenated, then
    ``num_convs - 1`` conv3x3+GN+ReLU and a final conv3x3 to one channel (5 convs in total).
    ``align_corners`` is the resize's flag (the authors' release: True; appending the coordinates
    before or after an align_corners=True resize is the same, a linear ramp stays linear).
    """

    def __init__(self, *, in_channels: int, channels: int = 128, num_convs: int = 5, grid: int = 40, prior: float = 0.01,
                 align_corners: bool = False):
        super().__init__()
        self.grid = grid
        self.align_corners = bool(align_corners)
        self.tower = conv_stack(in_channels + 2, channels, num_convs - 1)
        self.out = nn.Conv2d(channels, 1, 3, padding=1)
        nn.init.normal_(self.out.weight, std=0.01)
        nn.init.constant_(self.out.bias, -math.log((1 - prior) / prior))

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(feat, size=(self.grid, self.grid), mode="bilinear", align_corners=self.align_corners)
        return self.out(self.tower(with_coords(x)))


class FeatureSpaceBuilder(nn.Module):
    """F_neck (B,C_in,H,W) -> unit-norm pixel embeddings (B, channels, H, W) (IFSB / CFSB).

    ``num_convs`` conv3x3 layers (GN+ReLU after all but the last), relative coordinates
    concatenated to the input when ``coords``; L2-normalised along channels.
    ``final_conv=False`` (the authors' release): all ``num_convs`` layers are conv+GN+ReLU and
    there is no plain last conv, so the embeddings are non-negative before normalisation.
    """

    def __init__(self, *, in_channels: int, channels: int = 128, num_convs: int = 5, coords: bool = True,
                 final_conv: bool = True):
        super().__init__()
        self.coords = coords
        self.tower = conv_stack(in_channels + (2 if coords else 0), channels, num_convs - 1 if final_conv else num_convs)
        self.out = nn.Conv2d(channels, channels, 3, padding=1) if final_conv else None

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        x = self.tower(with_coords(feat) if self.coords else feat)
        return F.normalize(self.out(x) if self.out is not None else x, dim=1, eps=1e-6)


class CategoryKernels(nn.Module):
    """Learned category kernels K_cate (N_cate, C), init N(0, 0.01), used L2-normalised.

    ``background=False`` (the authors' release): only the N_cate - 1 part kernels are learned
    (``weight`` is (N_cate - 1, C)); row 0 of the output is the fixed unit vector -1/sqrt(C) (1, ..., 1),
    whose cosine with the non-negative embeddings of ``FeatureSpaceBuilder(final_conv=False)`` is
    <= 0 everywhere: after the ReLU of the fusion the background channel is 0.
    """

    def __init__(self, *, num_classes: int, channels: int, background: bool = True):
        super().__init__()
        self.background = bool(background)
        self.weight = nn.Parameter(torch.randn(num_classes if background else num_classes - 1, channels) * 0.01)

    def forward(self) -> torch.Tensor:
        k = F.normalize(self.weight, dim=1, eps=1e-6)
        if self.background:
            return k
        bg = k.new_full((1, k.shape[1]), -1.0 / math.sqrt(k.shape[1]))
        return torch.cat([bg, k])
