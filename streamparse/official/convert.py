"""Convert the authors' UniParser checkpoints (mmdetection 2.x / mmcv 1.x ``.pth``) to streamparse.

The authors' files (cjm-sfw/Uniparser, configs ``configs/repparsing/*.py``) hold ``{"meta": {...},
"state_dict": {...}, "optimizer": {...}}``; ``meta["config"]`` is the training config as Python
source. ``convert_official`` loads one with ``torch.load(weights_only=True)``, checks every tensor
against the layout of the authors' model (``authors_shapes``: 405 tensors for R50, 745 for R101,
45 of them ``mask_head.*``), renames them to the matching ``*_official`` variant (the two unused
``mask_head.ins_coord_conv`` tensors are dropped), loads them strictly and writes a streamparse
checkpoint whose stored config is the official inference preset (input size (800, 1333), the
authors' pre- and post-processing, their thresholds).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from streamparse.official.mmdet_config import FPN_CHANNELS, HEAD_CHANNELS, MetaConfig, read_meta_config

DEPTH_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
INPUT_SIZE = (800, 1333)  # (short, long): their test pipeline's img_scale=(1333, 800)
# ctr_score of the released test_cfgs, by (depth, light, num_classes); cate_score_thr: 0.3 MHPv2, 0.275 CIHP
RELEASED_CTR_SCORE = {(50, False, 59): 0.2, (101, False, 59): 0.1, (101, True, 59): 0.3, (101, True, 20): 0.1}
DEFAULT_CTR_SCORE = 0.1  # the paper's theta_ctr
DEFAULT_MASK_THR = 0.5
UNUSED_PREFIXES = ("mask_head.ins_coord_conv.",)  # built by their head, never used in forward
DATASET_CLASSES = {"mhpv2": 59, "cihp": 20}


class ConvertError(ValueError):
    """A file that cannot be converted; the message is one line for the user."""


def variant_name(depth: int, light: bool) -> str:
    return f"uniparser_r{depth}_fpn_dcn_official" + ("_light" if light else "")


def parse_variant(name: str) -> tuple[int, bool]:
    m = re.fullmatch(r"uniparser_r(50|101)_fpn_dcn_official(_light)?", name)
    if not m:
        names = ", ".join(variant_name(d, light) for d in DEPTH_BLOCKS for light in (False, True))
        raise ConvertError(f"unknown variant {name!r}; choose auto, {names}")
    return int(m[1]), bool(m[2])


# ----------------------------------------------------------------------------- the authors' layout
def authors_shapes(depth: int, light: bool, num_classes: int) -> dict[str, tuple[int, ...]]:
    """Every tensor of the authors' model (their ``state_dict`` key -> shape): mmdetection ResNet
    (DCNv2 ``conv2`` + ``conv2.conv_offset`` in stages 2-4, BN with ``num_batches_tracked``), FPN
    ``lateral_convs`` / ``fpn_convs`` (ConvModule ``.conv``), and ``Repparsing_Head``."""
    out: dict[str, tuple[int, ...]] = {}

    def bn(prefix: str, c: int) -> None:
        for k in ("weight", "bias", "running_mean", "running_var"):
            out[f"{prefix}.{k}"] = (c,)
        out[f"{prefix}.num_batches_tracked"] = ()

    out["backbone.conv1.weight"] = (64, 3, 7, 7)
    bn("backbone.bn1", 64)
    inplanes = 64
    for stage, n in enumerate(DEPTH_BLOCKS[depth], start=1):
        planes = 64 * 2 ** (stage - 1)
        for b in range(n):
            p = f"backbone.layer{stage}.{b}"
            out[f"{p}.conv1.weight"] = (planes, inplanes if b == 0 else planes * 4, 1, 1)
            bn(f"{p}.bn1", planes)
            out[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            if stage >= 2:  # DCNv2: offsets (18) + modulation (9) from a 3x3 conv with bias
                out[f"{p}.conv2.conv_offset.weight"] = (27, planes, 3, 3)
                out[f"{p}.conv2.conv_offset.bias"] = (27,)
            bn(f"{p}.bn2", planes)
            out[f"{p}.conv3.weight"] = (planes * 4, planes, 1, 1)
            bn(f"{p}.bn3", planes * 4)
            if b == 0:
                out[f"{p}.downsample.0.weight"] = (planes * 4, inplanes, 1, 1)
                bn(f"{p}.downsample.1", planes * 4)
        inplanes = planes * 4
    for i, c in enumerate((256, 512, 1024, 2048)):
        out[f"neck.lateral_convs.{i}.conv.weight"] = (FPN_CHANNELS, c, 1, 1)
        out[f"neck.lateral_convs.{i}.conv.bias"] = (FPN_CHANNELS,)
        out[f"neck.fpn_convs.{i}.conv.weight"] = (FPN_CHANNELS, FPN_CHANNELS, 3, 3)
        out[f"neck.fpn_convs.{i}.conv.bias"] = (FPN_CHANNELS,)
    k, cin = (1, FPN_CHANNELS) if light else (3, 5 * FPN_CHANNELS)
    for conv in ("dekr_convs", "segment_converts"):
        out[f"mask_head.{conv}.weight"] = (FPN_CHANNELS, cin, k, k)
        out[f"mask_head.{conv}.bias"] = (FPN_CHANNELS,)
    for tower in ("center_convs", "semantic_convs", "instance_convs"):
        for i in range(4):
            out[f"mask_head.{tower}.{i}.conv.weight"] = (HEAD_CHANNELS, FPN_CHANNELS + 2 if i == 0 else HEAD_CHANNELS, 3, 3)
            out[f"mask_head.{tower}.{i}.gn.weight"] = (HEAD_CHANNELS,)
            out[f"mask_head.{tower}.{i}.gn.bias"] = (HEAD_CHANNELS,)
    out["mask_head.center_heatmap.weight"] = (1, HEAD_CHANNELS, 3, 3)
    out["mask_head.center_heatmap.bias"] = (1,)
    out["mask_head.ins_coord_conv.weight"] = (2, HEAD_CHANNELS, 3, 3)
    out["mask_head.ins_coord_conv.bias"] = (2,)
    out["mask_head.seg_kernels"] = (num_classes - 1, HEAD_CHANNELS)
    return out


_TOWERS = {"center_convs": "center_locator", "instance_convs": "ins_builder", "semantic_convs": "cate_builder"}
_HEAD = {"dekr_convs": "neck.convert_ins", "segment_converts": "neck.convert_cate", "center_heatmap": "center_locator.out"}
_DCN = {"weight": "conv.weight", "conv_offset.weight": "offset.weight", "conv_offset.bias": "offset.bias"}


def streamparse_key(key: str) -> str | None:
    """The ``*_official`` variant's name for one of the authors' keys (None: unused, dropped)."""
    if key.startswith(UNUSED_PREFIXES):
        return None
    if key.startswith("backbone."):
        rest = key[len("backbone."):]
        if rest.startswith("conv1."):
            return "neck.stem.0." + rest[len("conv1."):]
        if rest.startswith("bn1."):
            return "neck.stem.1." + rest[len("bn1."):]
        m = re.fullmatch(r"(layer[234]\.\d+\.conv2)\.(weight|conv_offset\.weight|conv_offset\.bias)", rest)
        if m:  # DCNv2 conv2 -> ModulatedDeformConv(conv = DeformConv2d, offset = Conv2d)
            return f"neck.{m[1]}.{_DCN[m[2]]}"
        return "neck." + rest
    m = re.fullmatch(r"neck\.(lateral|fpn)_convs\.(\d+)\.conv\.(weight|bias)", key)
    if m:
        return f"neck.fpn.{'inner' if m[1] == 'lateral' else 'layer'}_blocks.{m[2]}.0.{m[3]}"
    m = re.fullmatch(r"mask_head\.(center_convs|instance_convs|semantic_convs)\.(\d+)\.(conv|gn)\.(weight|bias)", key)
    if m:  # conv_stack: [conv, GN, ReLU] per layer
        return f"{_TOWERS[m[1]]}.tower.{3 * int(m[2]) + (m[3] == 'gn')}.{m[4]}"
    m = re.fullmatch(r"mask_head\.(dekr_convs|segment_converts|center_heatmap)\.(weight|bias)", key)
    if m:
        return f"{_HEAD[m[1]]}.{m[2]}"
    if key == "mask_head.seg_kernels":
        return "cate_kernels.weight"
    raise ConvertError(f"no streamparse name for tensor {key!r}")


# ----------------------------------------------------------------------------- loading
def _numpy_meta_globals() -> list:
    """numpy scalars and dtypes, which mmcv's meta may hold (e.g. an EvalHook's ``best_score``)."""
    import numpy as np

    core = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    return [core.scalar, (core.scalar, "numpy.core.multiarray.scalar"), np.dtype,
            *{type(np.dtype(c)) for c in ("f8", "f4", "i8", "i4", "b1")}]


def load_mmdet_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(state_dict without a ``module.`` prefix, meta) of an mmdetection checkpoint, loaded with
    ``weights_only=True``; ``ConvertError`` for anything else."""
    path = Path(path)
    if not path.is_file():
        raise ConvertError(f"input not found: {path}")
    try:
        with torch.serialization.safe_globals(_numpy_meta_globals()):
            ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line
        text = str(exc)
        m = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if m:
            raise ConvertError(f"{path} holds Python objects that weights-only loading refuses ({m[1]}); "
                               "not a plain mmdetection checkpoint") from None
        first = text.strip().splitlines()[0][:160] if text.strip() else type(exc).__name__
        raise ConvertError(f"cannot read {path}: truncated or not a PyTorch checkpoint ({first})") from None
    if isinstance(ck, dict) and isinstance(ck.get("format"), str) and ck["format"].startswith("streamparse"):
        raise ConvertError(f"{path} is already a streamparse checkpoint")
    if isinstance(ck, dict) and isinstance(ck.get("state_dict"), dict):
        sd, meta = ck["state_dict"], ck.get("meta") if isinstance(ck.get("meta"), dict) else {}
    elif isinstance(ck, dict) and ck and all(isinstance(v, torch.Tensor) for v in ck.values()) and any(
            str(k).removeprefix("module.").startswith("backbone.") for k in ck):
        sd, meta = ck, {}  # a bare mmdetection state dict (backbone.*, neck.*, heads)
    else:
        what = f"a dict with keys {sorted(map(str, ck))[:5]}" if isinstance(ck, dict) else type(ck).__name__
        raise ConvertError(f"{path} is not an mmdetection checkpoint (expected a dict with 'state_dict', found {what})")
    if not sd or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise ConvertError(f"{path} is not an mmdetection checkpoint (its state_dict is not a mapping of names to tensors)")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return dict(sd), meta


def _architecture_check(sd: dict[str, torch.Tensor], path: Path, mc: MetaConfig | None) -> None:
    if mc is not None and mc.head_type not in (None, "Repparsing_Head"):
        raise ConvertError(f"{path} holds another architecture (meta config mask_head type {mc.head_type!r}), "
                           "not UniParser's Repparsing_Head")
    if "mask_head.dekr_convs.weight" in sd and "mask_head.seg_kernels" in sd:
        return
    heads = sorted({".".join(k.split(".")[:2]) for k in sd if not k.startswith(("backbone.", "neck."))})
    if any(k.startswith(("mask_head.kernel_convs", "mask_head.cate_convs", "mask_feat_head.")) for k in sd):
        kind = "a SOLO/SOLOv2 model"
    elif any(k.startswith(("bbox_head.", "rpn_head.", "roi_head.")) for k in sd):
        kind = "a detector"
    else:
        kind = "another model"
    raise ConvertError(f"{path} holds another architecture ({kind}: {', '.join(heads[:4]) or 'no head tensors'}), "
                       "not UniParser's Repparsing_Head (no mask_head.dekr_convs / mask_head.seg_kernels)")


def detect_variant(sd: dict[str, torch.Tensor]) -> tuple[int, bool, int]:
    """(depth, light, num_classes) from the tensors alone."""
    blocks = {int(m[1]) for k in sd if (m := re.match(r"backbone\.layer3\.(\d+)\.", k))}
    n3 = max(blocks) + 1 if blocks else 0
    depth = next((d for d, b in DEPTH_BLOCKS.items() if b[2] == n3), None)
    if depth is None:
        raise ConvertError(f"unsupported backbone: {n3} blocks in stage 3 (ResNet-50 has 6, ResNet-101 23)")
    w = sd["mask_head.dekr_convs.weight"]
    if tuple(w.shape) == (FPN_CHANNELS, FPN_CHANNELS, 1, 1):
        light = True
    elif tuple(w.shape) == (FPN_CHANNELS, 5 * FPN_CHANNELS, 3, 3):
        light = False
    else:
        raise ConvertError(f"unsupported head: mask_head.dekr_convs.weight has shape {tuple(w.shape)} "
                           f"(full: (256, 1280, 3, 3), light: (256, 256, 1, 1))")
    k = sd["mask_head.seg_kernels"]
    if k.ndim != 2 or k.shape[0] < 1:
        raise ConvertError(f"mask_head.seg_kernels has shape {tuple(k.shape)}, expected (num_classes - 1, 128)")
    return depth, light, int(k.shape[0]) + 1


def _first(items: list[str], n: int = 4) -> str:
    return ", ".join(items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")


def check_layout(sd: dict[str, torch.Tensor], depth: int, light: bool, num_classes: int) -> None:
    """``ConvertError`` naming the first missing / unexpected / wrongly shaped tensors."""
    want = authors_shapes(depth, light, num_classes)
    name = variant_name(depth, light)
    missing = [k for k in want if k not in sd]
    unexpected = sorted(k for k in sd if k not in want)
    if missing or unexpected:
        parts = ([f"{len(missing)} missing: {_first(missing)}"] if missing else []) + (
            [f"{len(unexpected)} unexpected: {_first(unexpected)}"] if unexpected else [])
        raise ConvertError(f"tensors do not match {name} ({num_classes} classes): " + "; ".join(parts))
    bad = [f"{k} {tuple(sd[k].shape)} (expected {want[k]})" for k in want if tuple(sd[k].shape) != want[k]]
    if bad:
        raise ConvertError(f"tensors do not match {name} ({num_classes} classes): {len(bad)} with wrong shapes: {_first(bad, 3)}")
    odd = [k for k, v in sd.items() if not (v.is_floating_point() or k.endswith("num_batches_tracked"))]
    if odd:
        raise ConvertError(f"non-floating weights: {_first(odd)}")


# ----------------------------------------------------------------------------- output and preset
def prepare_checkpoint_output(path: str | Path, overwrite: bool) -> Path:
    """The output rule of every writing command (``streamparse.store.outputs.prepare_output``): OUT must be new,
    or, with ``overwrite``, a streamparse checkpoint; anything else is refused in one line."""
    from streamparse.store.outputs import OutputError, prepare_output

    try:
        prepare_output(path, mode="overwrite" if overwrite else "create", kind="file", remove=False)
    except OutputError as exc:
        raise ConvertError(str(exc)) from None
    return Path(path)


def official_preset(name: str, num_classes: int, label_space: str, ctr_score: float, mask_thr: float,
                    cate_score_thr: float) -> dict[str, Any]:
    """The stored config of a converted checkpoint: the ``model`` section (``ModelConfig`` keys)
    that runs it the authors' way, marked as a preset that fixes the model section."""
    return {
        "inference_preset": "official",
        "model": {"name": name, "num_classes": num_classes, "label_space": label_space, "input_size": list(INPUT_SIZE),
                  "center_thresh": float(ctr_score), "mask_thresh": float(mask_thr),
                  "cate_score_thresh": float(cate_score_thr), "preprocess": "official", "protocol": "official",
                  "test_flip": False, "test_scales": [1.0]},
    }


def convert_official(src: str | Path, dst: str | Path, *, variant: str = "auto", dataset: str | None = None,
                     overwrite: bool = False) -> dict[str, Any]:
    """Convert ``src`` (the authors' ``.pth``) into the streamparse checkpoint ``dst``; returns a
    summary (variant, classes, tensors, parameters, thresholds and their origin, output sha256)."""
    from streamparse.categories import get_label_space
    from streamparse.checkpoint import save_checkpoint, sha256_file
    from streamparse.models import build_model

    src, dst = Path(src), Path(dst)
    prepare_checkpoint_output(dst, overwrite)
    sd, meta = load_mmdet_checkpoint(src)
    cfg_text = meta.get("config") if isinstance(meta.get("config"), str) else None
    mc = read_meta_config(cfg_text) if cfg_text else None
    _architecture_check(sd, src, mc)
    if mc is not None and mc.problems:
        raise ConvertError(f"{src}: its meta config uses settings the official variants do not implement: {_first(mc.problems, 3)}")
    depth, light, n = detect_variant(sd)
    if mc is not None:
        said = {"depth": mc.depth, "light head": mc.light, "num_classes": mc.num_classes}
        found = {"depth": depth, "light head": light, "num_classes": n}
        diff = [f"{k} {said[k]} vs {found[k]}" for k in said if said[k] is not None and said[k] != found[k]]
        if diff:
            raise ConvertError(f"{src}: meta config and tensors disagree ({', '.join(diff)})")
    if variant != "auto":  # the tensors must then fit the requested variant
        depth, light = parse_variant(variant)
    check_layout(sd, depth, light, n)
    if dataset is not None:
        if dataset not in DATASET_CLASSES:
            raise ConvertError(f"unknown dataset {dataset!r}; choose {', '.join(DATASET_CLASSES)}")
        if DATASET_CLASSES[dataset] != n:
            raise ConvertError(f"--dataset {dataset} has {DATASET_CLASSES[dataset]} classes, the checkpoint {n}")
    else:
        dataset = next((d for d, c in DATASET_CLASSES.items() if c == n), None)
    if dataset is not None:
        class_names, label_space = list(get_label_space(dataset).names), dataset
    else:
        class_names, label_space = ["background"] + [f"part{i}" for i in range(1, n)], "custom"

    tc = mc.test_cfg if mc is not None else {}
    thresholds = {
        "ctr_score": float(tc.get("ctr_score", RELEASED_CTR_SCORE.get((depth, light, n), DEFAULT_CTR_SCORE))),
        "mask_thr": float(tc.get("mask_thr", DEFAULT_MASK_THR)),
        "cate_score_thr": float(tc.get("cate_score_thr", 0.275 if n == 20 else 0.3)),
    }
    origin = "meta config" if tc else ("released config for this variant" if (depth, light, n) in RELEASED_CTR_SCORE else "defaults")

    name = variant_name(depth, light)
    ours = {}
    for k, v in sd.items():
        key = streamparse_key(k)
        if key is not None:
            ours[key] = v.float() if v.is_floating_point() else v
    model = build_model(name, num_classes=n)
    try:
        model.load_state_dict(ours, strict=True)
    except RuntimeError as exc:  # the layout check passed, so this is a bug in the key map
        raise ConvertError(f"internal error mapping the tensors onto {name}: {str(exc).splitlines()[0][:200]}") from None
    extra = {"converted_from": {"file": src.name, "sha256": sha256_file(src),
                                "mmcv_version": str(meta.get("mmcv_version", "")) or None,
                                "epoch": meta.get("epoch") if isinstance(meta.get("epoch"), int) else None,
                                "thresholds_from": origin}}
    save_checkpoint(dst, model, model_name=name, model_kwargs={"num_classes": n}, class_names=class_names,
                    config=official_preset(name, n, label_space, **thresholds), extra=extra)
    return {
        "variant": name, "num_classes": n, "dataset": label_space, "tensors": len(sd), "converted": len(ours),
        "dropped": sorted(k for k in sd if streamparse_key(k) is None), "parameters": sum(p.numel() for p in model.parameters()),
        "thresholds": thresholds, "thresholds_from": origin, "config_in_meta": mc is not None,
        "out": str(dst), "sha256": sha256_file(dst), "bytes": dst.stat().st_size,
    }
