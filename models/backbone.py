"""ResNet (+ optional DCNv2) + FPN + neck compression into one feature map F_neck.

Full neck (paper Sec. 3.1): every FPN level is resized (bilinear) to the finest used level,
concatenated and compressed by a 1x1 conv (+GN+ReLU) into F_neck.
Light neck (paper Tab. 1 note / Sec. 4.2): the builders are fed from one FPN stage through a
single 1x1 conv with fewer channels (no concatenation of all levels).
Split convert (``convert="split"``, the authors' release): FPN P2..P6 (P6 = stride-2 max-pool of
P5), levels resized to P2 (bilinear, align_corners=True) and concatenated, then two separate plain
3x3 convs with bias and no norm, one feeding the Center Locator and the IFSB, one the CFSB; light:
P2 alone through two 1x1 convs with padding 1, whose output grid is (H/4 + 2) x (W/4 + 2).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from ._vision import torchvision  # (before any torchvision module: see there)
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet  # noqa: E402
from torchvision.ops import DeformConv2d, FeaturePyramidNetwork  # noqa: E402
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool  # noqa: E402

CONVERTS = ("compress", "split")


class ModulatedDeformConv(nn.Module):
    """DCNv2 (offsets + modulation mask predicted by a zero-initialised 3x3 conv) around
    torchvision's ``DeformConv2d``; a drop-in for a 3x3 ``nn.Conv2d``."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        k = conv.kernel_size[0]
        self.conv = DeformConv2d(
            conv.in_channels,
            conv.out_channels,
            kernel_size=k,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
        )
        with torch.no_grad():
            self.conv.weight.copy_(conv.weight)
        self.offset = nn.Conv2d(conv.in_channels, 3 * k * k, k, stride=conv.stride, padding=conv.padding, dilation=conv.dilation)
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)
        self.kk = k * k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        om = self.offset(x)
        offset, mask = om[:, : 2 * self.kk], om[:, 2 * self.kk :].sigmoid()
        return self.conv(x, offset, mask)


def _add_dcn(resnet: ResNet, stages: tuple[int, ...]) -> None:
    for s in stages:  # stage 2..4 = layer2..layer4
        layer = getattr(resnet, f"layer{s}")
        for block in layer:
            name = "conv2" if isinstance(block, Bottleneck) else "conv2"
            setattr(block, name, ModulatedDeformConv(getattr(block, name)))


def _resnet(depth: int) -> ResNet:
    if depth == 18:
        return torchvision.models.resnet18(weights=None)
    if depth == 34:
        return torchvision.models.resnet34(weights=None)
    if depth == 50:
        return torchvision.models.resnet50(weights=None)
    if depth == 101:
        return torchvision.models.resnet101(weights=None)
    if depth == 10:  # tiny test backbone: one BasicBlock per stage
        return ResNet(BasicBlock, [1, 1, 1, 1])
    raise ValueError(f"unsupported ResNet depth {depth} (choose 10, 18, 34, 50, 101)")


class ResNetFPNNeck(nn.Module):
    """Image (B,3,H,W) -> F_neck (B, neck_channels, H/stride, W/stride).

    Args:
        depth: ResNet depth (10 = tiny test net, 18, 34, 50, 101); always ``weights=None``.
        fpn_channels: FPN output channels.
        neck_channels: channels of F_neck.
        stride: output stride of F_neck (4 = the paper's mask-feature stride, 8 = cheaper).
        light: light neck (one FPN level through a 1x1 conv instead of concat + compression).
        dcn_stages: ResNet stages (2..4) whose 3x3 convs become DCNv2.
        frozen_stages: stem + this many stages frozen (authors: 1) -- only sets requires_grad.
        extra_p6: the FPN also outputs P6 = max_pool2d(P5, 1, stride 2) (mmdetection's FPN with
            ``num_outs=5``; no parameters).
        convert: ``"compress"`` (concat + 1x1 + GN + ReLU, or the light 1x1) -> one F_neck tensor;
            ``"split"`` (the authors') -> a pair (F for the Center Locator and the IFSB, F for
            the CFSB) from two plain convs (3x3 over the concatenated levels; light: 1x1 with
            padding 1 over the first level, which grows the grid by ``grid_pad`` = 1 cell per side).
    """

    def __init__(
        self,
        *,
        depth: int = 50,
        fpn_channels: int = 256,
        neck_channels: int = 256,
        stride: int = 8,
        light: bool = False,
        dcn_stages: tuple[int, ...] = (),
        frozen_stages: int = 0,
        norm_groups: int = 32,
        extra_p6: bool = False,
        convert: str = "compress",
    ):
        super().__init__()
        if stride not in (4, 8, 16):
            raise ValueError(f"stride must be 4, 8 or 16, got {stride}")
        if convert not in CONVERTS:
            raise ValueError(f"convert must be one of {CONVERTS}, got {convert!r}")
        resnet = _resnet(depth)
        if dcn_stages:
            _add_dcn(resnet, tuple(dcn_stages))
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4
        expansion = 4 if isinstance(resnet.layer1[0], Bottleneck) else 1
        in_list = [64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion]
        self.stride = stride
        self.light = light
        self.first_level = {4: 0, 8: 1, 16: 2}[stride]
        self.convert = convert
        self.grid_pad = 0  # cells added on each side of the H/stride grid (the light split convert: 1)
        # only the FPN levels at or coarser than the output stride are built (P2 is skipped at stride 8)
        if extra_p6:
            self.fpn = FeaturePyramidNetwork(in_list[self.first_level :], fpn_channels, extra_blocks=LastLevelMaxPool())
        else:
            self.fpn = FeaturePyramidNetwork(in_list[self.first_level :], fpn_channels)
        n_levels = 4 - self.first_level + int(extra_p6)
        in_ch = fpn_channels if light else fpn_channels * n_levels
        if convert == "split":
            k = 1 if light else 3
            self.convert_ins = nn.Conv2d(in_ch, neck_channels, k, padding=1)
            self.convert_cate = nn.Conv2d(in_ch, neck_channels, k, padding=1)
            self.grid_pad = 1 if light else 0
        else:
            g = min(norm_groups, neck_channels)
            self.compress = nn.Sequential(
                nn.Conv2d(in_ch, neck_channels, 1, bias=False), nn.GroupNorm(g, neck_channels), nn.ReLU(inplace=True)
            )
        self.out_channels = neck_channels
        for i, m in enumerate([self.stem, self.layer1, self.layer2, self.layer3, self.layer4]):
            if i <= frozen_stages and frozen_stages > 0:
                for p in m.parameters():
                    p.requires_grad_(False)

    def backbone_fpn(self, x: torch.Tensor) -> list[torch.Tensor]:
        """FPN levels from the output stride up to P5 (stride 32; P6 with ``extra_p6``), each
        (B, fpn_channels, H/s, W/s)."""
        c2 = self.layer1(self.stem(x))
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        cs = [("c2", c2), ("c3", c3), ("c4", c4), ("c5", c5)][self.first_level :]
        return list(self.fpn(OrderedDict(cs)).values())

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return self.compress_levels(self.backbone_fpn(x))

    def compress_levels(self, levels: list[torch.Tensor]) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """FPN levels -> F_neck (the full neck's concat + 1x1, or the light neck's 1x1); with
        ``convert="split"`` the pair (F for the centres and instances, F for the categories)."""
        if self.convert == "split":
            if self.light:
                x = levels[0]
            else:
                size = levels[0].shape[-2:]
                up = [F.interpolate(f, size=size, mode="bilinear", align_corners=True) for f in levels[1:]]
                x = torch.cat([levels[0], *up], dim=1)
            return self.convert_ins(x), self.convert_cate(x)
        if self.light:
            return self.compress(levels[0])
        # 1x1 conv of the concatenated, upsampled levels == sum over levels of the upsampled 1x1
        # conv of each level (bilinear resizing is linear per channel and commutes with a per-pixel
        # channel mix): the coarse levels are mixed at their own resolution, 2.3x fewer MACs
        conv, rest = self.compress[0], self.compress[1:]
        size = levels[0].shape[-2:]
        ws = conv.weight.split([f.shape[1] for f in levels], dim=1)
        y = F.conv2d(levels[0], ws[0])
        for f, w in zip(levels[1:], ws[1:]):
            y = y + F.interpolate(F.conv2d(f, w), size=size, mode="bilinear", align_corners=False)
        return rest(y)
