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

import inspect
from typing import NamedTuple

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


class _Variant(NamedTuple):
    depth: int
    light: bool
    dcn: bool | None  # None: a ``dcn`` keyword (default False); True / False: fixed (no ``dcn`` keyword)
    doc: str
    stride: int = 8  # the default of the ``stride`` keyword
    defaults: tuple[tuple[str, object], ...] = ()  # defaults of other ``_uniparser`` keywords


_TINY = (("fpn_channels", 64), ("neck_channels", 64), ("head_channels", 32), ("num_convs", 3), ("grid", 16))
_SMALL = (("fpn_channels", 128), ("neck_channels", 64), ("head_channels", 64), ("num_convs", 5), ("grid", 24))
VARIANTS: dict[str, _Variant] = {
    "uniparser_r50_fpn": _Variant(50, False, None, "UniParser, ResNet-50 + FPN."),
    "uniparser_r50_fpn_dcn": _Variant(50, False, True, "UniParser, ResNet-50 + DCNv2 (stages 2-4) + FPN, as in the authors' config."),
    "uniparser_r101_fpn": _Variant(101, False, None, "UniParser, ResNet-101 + FPN."),
    "uniparser_r101_fpn_dcn": _Variant(101, False, True, "UniParser, ResNet-101 + DCNv2 + FPN (the paper's headline model)."),
    "uniparser_r50_fpn_light": _Variant(50, True, None, "UniParser-light, ResNet-50: builders fed from one FPN stage through a 1x1 conv (128 ch)."),
    "uniparser_r18_fpn": _Variant(18, False, None, "UniParser, ResNet-18 + FPN."),
    "uniparser_r18_fpn_light": _Variant(18, True, None, "UniParser-light, ResNet-18 (the shipped default's architecture)."),
    "uniparser_tiny": _Variant(10, False, False, "A tiny variant for tests: one BasicBlock per ResNet stage, 64-ch FPN, 32-ch heads with 3\n"
                               "    convs, S = 16.", defaults=_TINY),
    "uniparser_small": _Variant(10, True, False, "A small CPU-trainable variant (the shipped synthetic-data model): one BasicBlock per ResNet\n"
                                "    stage, 128-ch FPN, light neck (64 ch), 64-ch builders with 5 convs, S = 24, stride 4.",
                                stride=4, defaults=_SMALL),
}


def _named(fn, name: str, doc: str, params: list[inspect.Parameter]):
    """``fn`` as the builder ``name``: its name, docstring and keyword-only signature, registered."""
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = doc
    fn.__signature__ = inspect.Signature(params, return_annotation=UniParser)
    globals()[name] = register_model()(fn)


def _keyword(name: str, default) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=type(default).__name__)


def _register_variant(name: str, v: _Variant) -> None:
    """Register the keyword-only builder ``name(*, num_classes=20, stride=v.stride[, dcn=False], **kw)``;
    ``kw`` goes to ``_uniparser`` over the variant's defaults."""

    def builder(*, num_classes: int = 20, stride: int = v.stride, **kw) -> UniParser:
        if v.dcn is not None and "dcn" in kw:
            raise TypeError(f"{name}() got an unexpected keyword argument 'dcn'")
        dcn = kw.pop("dcn", False) if v.dcn is None else v.dcn
        kw = {**dict(v.defaults), **kw}
        return _uniparser(depth=v.depth, num_classes=num_classes, light=v.light, dcn=dcn, stride=stride, **kw)

    params = [_keyword("num_classes", 20), _keyword("stride", v.stride)] + ([_keyword("dcn", False)] if v.dcn is None else [])
    _named(builder, name, v.doc, params + [inspect.Parameter("kw", inspect.Parameter.VAR_KEYWORD)])


for _name, _v in VARIANTS.items():
    _register_variant(_name, _v)


# ----------------------------------------------------------------------------- the authors' release
# Tensor-for-tensor matches of the models in cjm-sfw/Uniparser (configs/repparsing/*.py, head
# mmdet/models/dense_heads/parsing_repparsing.py): ResNet + DCNv2 on conv2 of every bottleneck of
# stages 2-4, FPN P2..P6 (P6 = stride-2 max-pool of P5, nearest top-down), two plain convert convs
# (split neck), 4 x (conv+GN+ReLU) towers without a final conv, centre resize with
# align_corners=True, N - 1 category kernels, kernels read at the cell's top-left pixel. Load their
# weights with `streamparse convert-official`; run them with the official pre- and post-processing.
# name: (depth, light, docstring)
_OFFICIAL = {
    "uniparser_r50_fpn_dcn_official": (50, False, "The authors' R50 model (configs/repparsing/MHP_r50_fpn_..._DCN_fusion_metrics.py)."),
    "uniparser_r50_fpn_dcn_official_light": (50, True, "The authors' light head on R50 (paper Tab. 6; no released config): P2 only, "
                                                       "1x1 converts\n    with padding 1."),
    "uniparser_r101_fpn_dcn_official": (101, False, "The authors' R101 model (configs/repparsing/MHP_r101_fpn_..._DCN_fusion_metrics.py)."),
    "uniparser_r101_fpn_dcn_official_light": (101, True, "The authors' R101 light model (MHP_r101_..._metric_light.py, 59 classes;\n"
                                                         "    CHIP_r101_..._cluster_light.py, 20 classes)."),
}
OFFICIAL_VARIANTS = tuple(_OFFICIAL)


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


def _register_official(name: str, depth: int, light: bool, doc: str) -> None:
    """Register the keyword-only builder ``name(*, num_classes=59)`` of one of the authors' models."""

    def builder(*, num_classes: int = 59) -> UniParser:
        return _uniparser_official(depth=depth, num_classes=num_classes, light=light)

    _named(builder, name, doc, [_keyword("num_classes", 59)])


for _name, (_depth, _light, _doc) in _OFFICIAL.items():
    _register_official(_name, _depth, _light, _doc)
