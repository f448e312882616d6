"""Registered UniParser variants (keyword-only builders, ``weights=None`` always).

Defaults follow the paper / the authors' config (S = 40, 128-channel builders with 5 convs,
sigma = 0.2, index fusion) except where noted:
- ``stride`` of F_neck defaults to 8 (the authors' mask features are at stride 4). At stride 4
  the two 5-conv builders cost more than the whole R50-FPN on CPU; stride 8 keeps heads +
  post-processing within the ~35 % budget. ``stride=4`` gives the paper's layout.
- DCNv2 (authors: stages 2-4) is off by default (it is slow on CPU); the ``*_dcn`` variants
  turn it on.
"""

from __future__ import annotations

from .backbone import ResNetFPNNeck
from .fusion import Fusion
from .heads import CategoryKernels, CenterLocator, FeatureSpaceBuilder
from .registry import register_model
from .uniparser import UniParser


def _uniparser(
    *,
    depth: int,
    num_classes: int,
    light: bool,
    dcn: bool,
    stride: int,
    fpn_channels: int = 256,
    neck_channels: int | None = None,
    head_channels: int = 128,
    num_convs: int = 5,
    grid: int = 40,
    fusion: str = "index",
    frozen_stages: int = 0,
) -> UniParser:
    if num_classes < 2:
        raise ValueError(f"num_classes must include background and at least one part, got {num_classes}")
    neck_channels = neck_channels or (128 if light else 256)
    neck = ResNetFPNNeck(
        depth=depth,
        fpn_channels=fpn_channels,
        neck_channels=neck_channels,
        stride=stride,
        light=light,
        dcn_stages=(2, 3, 4) if dcn else (),
        frozen_stages=frozen_stages,
    )
    return UniParser(
        neck=neck,
        center_locator=CenterLocator(in_channels=neck_channels, channels=head_channels, num_convs=num_convs, grid=grid),
        ins_builder=FeatureSpaceBuilder(in_channels=neck_channels, channels=head_channels, num_convs=num_convs),
        cate_builder=FeatureSpaceBuilder(in_channels=neck_channels, channels=head_channels, num_convs=num_convs),
        cate_kernels=CategoryKernels(num_classes=num_classes, channels=head_channels),
        fusion=Fusion(mode=fusion, channels=head_channels, num_classes=num_classes),
        num_classes=num_classes,
    )


@register_model()
def uniparser_r50_fpn(*, num_classes: int = 20, stride: int = 8, dcn: bool = False, **kw) -> UniParser:
    """UniParser, ResNet-50 + FPN."""
    return _uniparser(depth=50, num_classes=num_classes, light=False, dcn=dcn, stride=stride, **kw)


@register_model()
def uniparser_r50_fpn_dcn(*, num_classes: int = 20, stride: int = 8, **kw) -> UniParser:
    """UniParser, ResNet-50 + DCNv2 (stages 2-4) + FPN, as in the authors' config."""
    return _uniparser(depth=50, num_classes=num_classes, light=False, dcn=True, stride=stride, **kw)


@register_model()
def uniparser_r101_fpn(*, num_classes: int = 20, stride: int = 8, dcn: bool = False, **kw) -> UniParser:
    """UniParser, ResNet-101 + FPN."""
    return _uniparser(depth=101, num_classes=num_classes, light=False, dcn=dcn, stride=stride, **kw)


@register_model()
def uniparser_r101_fpn_dcn(*, num_classes: int = 20, stride: int = 8, **kw) -> UniParser:
    """UniParser, ResNet-101 + DCNv2 + FPN (the paper's headline model)."""
    return _uniparser(depth=101, num_classes=num_classes, light=False, dcn=True, stride=stride, **kw)


@register_model()
def uniparser_r50_fpn_light(*, num_classes: int = 20, stride: int = 8, dcn: bool = False, **kw) -> UniParser:
    """UniParser-light, ResNet-50: builders fed from one FPN stage through a 1x1 conv (128 ch)."""
    return _uniparser(depth=50, num_classes=num_classes, light=True, dcn=dcn, stride=stride, **kw)


@register_model()
def uniparser_r18_fpn(*, num_classes: int = 20, stride: int = 8, dcn: bool = False, **kw) -> UniParser:
    """UniParser, ResNet-18 + FPN."""
    return _uniparser(depth=18, num_classes=num_classes, light=False, dcn=dcn, stride=stride, **kw)


@register_model()
def uniparser_r18_fpn_light(*, num_classes: int = 20, stride: int = 8, dcn: bool = False, **kw) -> UniParser:
    """UniParser-light, ResNet-18 (the shipped default's architecture)."""
    return _uniparser(depth=18, num_classes=num_classes, light=True, dcn=dcn, stride=stride, **kw)


@register_model()
def uniparser_tiny(*, num_classes: int = 20, stride: int = 8, **kw) -> UniParser:
    """A tiny variant for tests: one BasicBlock per ResNet stage, 64-ch FPN, 32-ch heads with 3
    convs, S = 16."""
    kw.setdefault("fpn_channels", 64)
    kw.setdefault("neck_channels", 64)
    kw.setdefault("head_channels", 32)
    kw.setdefault("num_convs", 3)
    kw.setdefault("grid", 16)
    return _uniparser(depth=10, num_classes=num_classes, light=False, dcn=False, stride=stride, **kw)


@register_model()
def uniparser_small(*, num_classes: int = 20, stride: int = 4, **kw) -> UniParser:
    """A small CPU-trainable variant (the shipped synthetic-data model): one BasicBlock per ResNet
    stage, 128-ch FPN, light neck (64 ch), 64-ch builders with 5 convs, S = 24, stride 4."""
    kw.setdefault("fpn_channels", 128)
    kw.setdefault("neck_channels", 64)
    kw.setdefault("head_channels", 64)
    kw.setdefault("num_convs", 5)
    kw.setdefault("grid", 24)
    return _uniparser(depth=10, num_classes=num_classes, light=True, dcn=False, stride=stride, **kw)


# ----------------------------------------------------------------------------- the authors' release
# Tensor-for-tensor matches of the models in cjm-sfw/Uniparser (configs/repparsing/*.py, head
# mmdet/models/dense_heads/parsing_repparsing.py): ResNet + DCNv2 on conv2 of every bottleneck of
# stages 2-4, FPN P2..P6 (P6 = stride-2 max-pool of P5, nearest top-down), two plain convert convs
# (split neck), 4 x (conv+GN+ReLU) towers without a final conv, centre resize with
# align_corners=True, N - 1 category kernels, kernels read at the cell's top-left pixel. Load their
# weights with `streamparse convert-official`; run them with the official pre- and post-processing.
OFFICIAL_VARIANTS = (
    "uniparser_r50_fpn_dcn_official",
    "uniparser_r50_fpn_dcn_official_light",
    "uniparser_r101_fpn_dcn_official",
    "uniparser_r101_fpn_dcn_official_light",
)


def _uniparser_official(*, depth: int, num_classes: int, light: bool, grid: int = 40) -> UniParser:
    if num_classes < 2:
        raise ValueError(f"num_classes must include background and at least one part, got {num_classes}")
    neck = ResNetFPNNeck(depth=depth, fpn_channels=256, neck_channels=256, stride=4, light=light, dcn_stages=(2, 3, 4),
                         frozen_stages=1, extra_p6=True, convert="split")
    return UniParser(
        neck=neck,
        center_locator=CenterLocator(in_channels=256, channels=128, num_convs=5, grid=grid, align_corners=True),
        ins_builder=FeatureSpaceBuilder(in_channels=256, channels=128, num_convs=4, final_conv=False),
        cate_builder=FeatureSpaceBuilder(in_channels=256, channels=128, num_convs=4, final_conv=False),
        cate_kernels=CategoryKernels(num_classes=num_classes, channels=128, background=False),
        fusion=Fusion(mode="index", channels=128, num_classes=num_classes),
        num_classes=num_classes,
        kernel_sampling="cell_top_left",
    )


@register_model()
def uniparser_r50_fpn_dcn_official(*, num_classes: int = 59) -> UniParser:
    """The authors' R50 model (configs/repparsing/MHP_r50_fpn_..._DCN_fusion_metrics.py)."""
    return _uniparser_official(depth=50, num_classes=num_classes, light=False)


@register_model()
def uniparser_r50_fpn_dcn_official_light(*, num_classes: int = 59) -> UniParser:
    """The authors' light head on R50 (paper Tab. 6; no released config): P2 only, 1x1 converts
    with padding 1."""
    return _uniparser_official(depth=50, num_classes=num_classes, light=True)


@register_model()
def uniparser_r101_fpn_dcn_official(*, num_classes: int = 59) -> UniParser:
    """The authors' R101 model (configs/repparsing/MHP_r101_fpn_..._DCN_fusion_metrics.py)."""
    return _uniparser_official(depth=101, num_classes=num_classes, light=False)


@register_model()
def uniparser_r101_fpn_dcn_official_light(*, num_classes: int = 59) -> UniParser:
    """The authors' R101 light model (MHP_r101_..._metric_light.py, 59 classes;
    CHIP_r101_..._cluster_light.py, 20 classes)."""
    return _uniparser_official(depth=101, num_classes=num_classes, light=True)
