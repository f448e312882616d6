"""The authors' UniParser checkpoints (issue 21): layout, converter, their pre- and post-processing.

Everything runs on synthetic state dicts with every key and shape of the authors' model
(cjm-sfw/Uniparser @147a8b8: configs/repparsing/*.py, mmdetection's ResNet and FPN,
mmdet/models/dense_heads/parsing_repparsing.py) and random values. The layout and the forward
pass are written out below from those files' facts, independently of streamparse's model code.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import deform_conv2d

from streamparse.cli import main
from streamparse.models import build_model

BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
SIZE = ["--set", "model.input_size=[64,96]"]  # tiny inputs: the preset's (800, 1333) costs seconds per frame on CPU


# ----------------------------------------------------------------------------- the authors' modules
def authors_modules(depth: int, light: bool, num_classes: int) -> dict[str, tuple[int, ...]]:
    """key -> shape of the authors' state dict, module by module."""
    spec: dict[str, tuple[int, ...]] = {}

    def conv(name, cin, cout, k, bias):  # nn.Conv2d
        spec[name + ".weight"] = (cout, cin, k, k)
        if bias:
            spec[name + ".bias"] = (cout,)

    def bn(name, c):  # nn.BatchNorm2d (buffers included)
        spec.update({f"{name}.weight": (c,), f"{name}.bias": (c,), f"{name}.running_mean": (c,), f"{name}.running_var": (c,),
                     f"{name}.num_batches_tracked": ()})

    def dcn(name, cin, cout):  # mmcv ModulatedDeformConv2dPack, bias=False: weight + conv_offset (3 * 3 * 3 channels)
        spec[name + ".weight"] = (cout, cin, 3, 3)
        conv(name + ".conv_offset", cin, 27, 3, True)

    def conv_module(name, cin, cout, k, gn):  # mmcv ConvModule: .conv (bias only without norm) [+ .gn]
        conv(name + ".conv", cin, cout, k, not gn)
        if gn:
            spec[name + ".gn.weight"] = (cout,)
            spec[name + ".gn.bias"] = (cout,)

    conv("backbone.conv1", 3, 64, 7, False)
    bn("backbone.bn1", 64)
    cin = 64
    for s, n in enumerate(BLOCKS[depth], 1):  # Bottleneck, expansion 4, DCNv2 conv2 in stages 2-4
        width = 64 << (s - 1)
        for b in range(n):
            p = f"backbone.layer{s}.{b}"
            conv(p + ".conv1", cin, width, 1, False)
            bn(p + ".bn1", width)
            (dcn(p + ".conv2", width, width) if s > 1 else conv(p + ".conv2", width, width, 3, False))
            bn(p + ".bn2", width)
            conv(p + ".conv3", width, 4 * width, 1, False)
            bn(p + ".bn3", 4 * width)
            if b == 0:
                conv(p + ".downsample.0", cin, 4 * width, 1, False)
                bn(p + ".downsample.1", 4 * width)
            cin = 4 * width
    for i, c in enumerate((256, 512, 1024, 2048)):  # FPN, out_channels 256, no norm
        conv_module(f"neck.lateral_convs.{i}", c, 256, 1, False)
        conv_module(f"neck.fpn_convs.{i}", 256, 256, 3, False)
    for i in range(4):  # Repparsing_Head: stacked_convs 4, in 256 (+2 coords), seg_feat 128, GN 32
        for tower in ("semantic_convs", "instance_convs", "center_convs"):
            conv_module(f"mask_head.{tower}.{i}", 258 if i == 0 else 128, 128, 3, True)
    cin, k = (256, 1) if light else (5 * 256, 3)  # enable_last_res + enable_light_convert, or all 5 levels
    conv("mask_head.dekr_convs", cin, 256, k, True)
    conv("mask_head.center_heatmap", 128, 1, 3, True)
    conv("mask_head.segment_converts", cin, 256, k, True)
    conv("mask_head.ins_coord_conv", 128, 2, 3, True)
    spec["mask_head.seg_kernels"] = (num_classes - 1, 128)
    return spec


def synthetic_weights(spec: dict[str, tuple[int, ...]], seed: int = 0, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """Random values of a sane scale: convs ~ N(0, 1/fan_in), BN/GN near identity, DCN offsets
    small but non-zero, category kernels positive (their cosines with the non-negative features
    are then large enough for people and parts to appear)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in spec.items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(7, dtype=torch.long)
            continue
        r = torch.randn(shape, generator=g)
        if key.endswith("running_var"):
            v = torch.rand(shape, generator=g) + 0.5
        elif key.endswith("seg_kernels"):
            v = r.abs()
        elif ".conv_offset." in key:
            v = r * (0.02 if key.endswith("weight") else 0.5)
        elif key.endswith(".weight") and len(shape) == 4:
            v = r / math.sqrt(shape[1] * shape[2] * shape[3])
        elif key.endswith(".weight"):  # BN / GN scale
            v = 1 + 0.1 * r
        else:  # biases, running means
            v = 0.1 * r
        out[key] = v.to(dtype)
    return out


def mmcv_meta(depth: int, light: bool, num_classes: int, ctr_score: float = 0.2, head: str = "Repparsing_Head") -> dict:
    """A realistic mmcv 1.x checkpoint meta: versions, the config as Python source, CLASSES, epoch, iter."""
    config = f"""nums_gpu = 2
batch_size_per_card = 4
model = dict(
    type='SingleStageInsParsingDetector',
    backbone=dict(
        type='ResNet', depth={depth}, num_stages=4, out_indices=(0, 1, 2, 3), frozen_stages=1,
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet{depth}'), style='pytorch',
        dcn=dict(type='DCNv2', deformable_groups=1, fallback_on_stride=False),
        stage_with_dcn=(False, True, True, True)),
    neck=dict(type='FPN', in_channels=[256, 512, 1024, 2048], out_channels=256, start_level=0, num_outs=5),
    mask_head=dict(
        type='{head}', num_classes={num_classes}, in_channels=256, stacked_convs=4, seg_feat_channels=128,
        strides=[32], scale_ranges=((1, 2048)), sigma=0.2, num_grid=40, ins_out_channels=256,
        enable_center=True, enable_kernel=False, enable_fusion=False, enable_fusion_multi=True,
        enable_last_res={light}, enable_light_convert={light},
        loss_ins=dict(type='DiceLoss', use_sigmoid=True, loss_weight=3.0)),
    train_cfg=dict(),
    test_cfg=dict(nms_pre=500, ctr_score={ctr_score}, score_thr=0.1, cate_score_thr=0.3, mask_thr=0.5, max_per_img=100))
data_root = '/root/data/LV-MHP-v2/'
data = dict(samples_per_gpu=batch_size_per_card, train=dict(ann_file=data_root + 'train/parsing_annos/'))
optimizer = dict(type='SGD', lr=0.000625 * data['samples_per_gpu'] * nums_gpu, momentum=0.9)
"""
    return {"mmcv_version": "1.7.0", "mmdet_version": "2.25.0", "config": config, "time": "Mon Jan  1 00:00:00 2024",
            "CLASSES": tuple(f"class{i}" for i in range(num_classes - 1)), "epoch": 36, "iter": 123456,
            "seed": 12345, "exp_name": "MHP_r50.py", "hook_msgs": {"last_ckpt": "/work_dirs/epoch_36.pth"}}


def save_authors(path: Path, sd: dict, meta: dict | None = None, prefix: str = "module.") -> Path:
    torch.save({"meta": meta or {}, "state_dict": {prefix + k: v for k, v in sd.items()},
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.01, "momentum": 0.9, "params": [0, 1]}]}}, path)
    return path


# ----------------------------------------------------------------------------- their forward, re-derived
def authors_forward(sd: dict, x: torch.Tensor, depth: int, light: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(centre logits (B,1,40,40), instance features, semantic features) with plain torch ops."""
    def bn(t, p):
        return F.batch_norm(t, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"], False, 0.0, 1e-5)

    t = F.max_pool2d(F.relu(bn(F.conv2d(x, sd["backbone.conv1.weight"], stride=2, padding=3), "backbone.bn1")), 3, 2, 1)
    cs = []
    for s, n in enumerate(BLOCKS[depth], 1):
        for b in range(n):
            p, stride = f"backbone.layer{s}.{b}", 2 if (b == 0 and s > 1) else 1
            o = F.relu(bn(F.conv2d(t, sd[p + ".conv1.weight"]), p + ".bn1"))
            if s > 1:  # DCNv2: offsets = first 18 channels of conv_offset, mask = sigmoid of the last 9
                om = F.conv2d(o, sd[p + ".conv2.conv_offset.weight"], sd[p + ".conv2.conv_offset.bias"], stride=stride, padding=1)
                o1, o2, m = om.chunk(3, dim=1)
                o = deform_conv2d(o, torch.cat([o1, o2], 1), sd[p + ".conv2.weight"], stride=stride, padding=1, mask=m.sigmoid())
            else:
                o = F.conv2d(o, sd[p + ".conv2.weight"], stride=stride, padding=1)
            o = bn(F.conv2d(F.relu(bn(o, p + ".bn2")), sd[p + ".conv3.weight"]), p + ".bn3")
            idt = bn(F.conv2d(t, sd[p + ".downsample.0.weight"], stride=stride), p + ".downsample.1") if b == 0 else t
            t = F.relu(o + idt)
        cs.append(t)
    lat = [F.conv2d(c, sd[f"neck.lateral_convs.{i}.conv.weight"], sd[f"neck.lateral_convs.{i}.conv.bias"]) for i, c in enumerate(cs)]
    for i in range(3, 0, -1):
        lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=lat[i - 1].shape[-2:], mode="nearest")
    outs = [F.conv2d(v, sd[f"neck.fpn_convs.{i}.conv.weight"], sd[f"neck.fpn_convs.{i}.conv.bias"], padding=1) for i, v in enumerate(lat)]
    outs.append(F.max_pool2d(outs[-1], 1, stride=2))  # P6
    p2 = outs[0]
    mixed = torch.cat([p2] + [F.interpolate(o, size=p2.shape[-2:], mode="bilinear", align_corners=True) for o in outs[1:]], 1)
    inp = mixed[:, :256] if light else mixed
    ins_in = F.conv2d(inp, sd["mask_head.dekr_convs.weight"], sd["mask_head.dekr_convs.bias"], padding=1)
    sem_in = F.conv2d(inp, sd["mask_head.segment_converts.weight"], sd["mask_head.segment_converts.bias"], padding=1)

    def with_coords(f):
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, f.shape[-2]), torch.linspace(-1, 1, f.shape[-1]), indexing="ij")
        return torch.cat([f, xx.expand(f.shape[0], 1, -1, -1), yy.expand(f.shape[0], 1, -1, -1)], 1)

    def tower(f, name):
        for i in range(4):
            f = F.conv2d(f, sd[f"mask_head.{name}.{i}.conv.weight"], padding=1)
            f = F.relu(F.group_norm(f, 32, sd[f"mask_head.{name}.{i}.gn.weight"], sd[f"mask_head.{name}.{i}.gn.bias"], 1e-5))
        return f

    c = F.interpolate(with_coords(ins_in), size=40, mode="bilinear", align_corners=True)  # coords first, then resized
    centre = F.conv2d(tower(c, "center_convs"), sd["mask_head.center_heatmap.weight"], sd["mask_head.center_heatmap.bias"], padding=1)
    return centre, tower(with_coords(ins_in), "instance_convs"), tower(with_coords(sem_in), "semantic_convs")


def authors_inference(centre, instance, sem_conf, valid_hw, out_hw, ctr_score=0.1, mask_thr=0.5, cate_thr=0.3, grid=40):
    """Their get_parsing_single for one image, densely: every category of the whole image upsampled.
    centre (1,1,S,S) logits, instance (C,h,w), sem_conf (M,h,w) -> (label maps, scores), lowest score first."""
    heat = centre.sigmoid()
    heat = heat * (F.max_pool2d(heat, 2, stride=1, padding=1)[:, :, :-1, :-1] == heat)  # points_nms, kernel 2
    heat = (heat * (F.max_pool2d(heat, 5, stride=1, padding=2) == heat))[0, 0]
    inds = heat > ctr_score
    scores, order = torch.sort(heat[inds])
    fh, fw = instance.shape[-2:]
    ys, xs = torch.where(inds)
    ys, xs = ((ys / grid) * fh).int(), ((xs / grid) * fw).int()
    kern = instance.permute(1, 2, 0).reshape(-1, instance.shape[0])[(ys * fw + xs)[order].long()]
    ins_conf = F.conv2d(F.normalize(instance, dim=0)[None], F.normalize(kern, dim=1)[:, :, None, None])[0]
    (h, w), (H, W) = valid_hw, out_hw
    maps = []
    for m in ins_conf > mask_thr:
        pars = (m * sem_conf).float()
        sc = (pars * (pars > mask_thr)).sum((1, 2)) / ((pars > 0.1).sum((1, 2)) + 1e-5)
        pars[sc <= cate_thr] = 0
        up = F.interpolate(pars[None], size=(4 * fh, 4 * fw), mode="bilinear")[:, :, :h, :w]
        if h * w > H * W:
            up = F.interpolate(up, size=(H, W), mode="bilinear")
        lab = (up.argmax(1) + 1) * (up > mask_thr).sum(1).bool()
        if h * w < H * W:
            lab = F.interpolate(lab[None].float(), size=(H, W), mode="nearest")[0].int()
        maps.append(lab[0].to(torch.uint8))
    return maps, scores


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def r50(tmp_path_factory):
    """The authors' R50 model (59 classes) in their file format, and its conversion."""
    d = tmp_path_factory.mktemp("r50")
    sd = synthetic_weights(authors_modules(50, False, 59), seed=0)
    src = save_authors(d / "r50.pth", sd, mmcv_meta(50, False, 59))
    assert main(["convert-official", str(src), str(d / "r50.pt")]) == 0
    return {"sd": sd, "src": src, "out": d / "r50.pt", "dir": d}


@pytest.fixture(scope="module")
def r50_light(tmp_path_factory, r50):
    """The light head on the same backbone, as a bare state dict without meta (thresholds: defaults)."""
    d = tmp_path_factory.mktemp("r50l")
    sd = dict(r50["sd"])
    spec = authors_modules(50, True, 59)
    fresh = synthetic_weights(spec, seed=1)
    for k in ("mask_head.dekr_convs.weight", "mask_head.segment_converts.weight"):
        sd[k] = fresh[k]
    assert set(sd) == set(spec)
    src = d / "r50l.pth"
    torch.save(sd, src)
    assert main(["convert-official", str(src), str(d / "r50l.pt"), "--variant", "uniparser_r50_fpn_dcn_official_light"]) == 0
    return {"sd": sd, "src": src, "out": d / "r50l.pt", "dir": d}


def image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------- layout and counts
@pytest.mark.parametrize("depth,n_tensors", [(50, 405), (101, 745)])
def test_authors_layout_counts_and_the_converters_spec(depth, n_tensors):
    from streamparse.official.convert import authors_shapes

    for light in (False, True):
        for n in (59, 20):
            spec = authors_modules(depth, light, n)
            assert len(spec) == n_tensors and sum(k.startswith("mask_head.") for k in spec) == 45
            assert authors_shapes(depth, light, n) == spec  # the converter's table = this written-out one


@pytest.mark.parametrize("name,depth,light", [
    ("uniparser_r50_fpn_dcn_official", 50, False), ("uniparser_r50_fpn_dcn_official_light", 50, True),
    ("uniparser_r101_fpn_dcn_official", 101, False), ("uniparser_r101_fpn_dcn_official_light", 101, True),
])
def test_parameter_counts_equal_the_authors_model(name, depth, light):
    spec = authors_modules(depth, light, 59)
    params = {k: math.prod(s) for k, s in spec.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    unused = sum(v for k, v in params.items() if "ins_coord_conv" in k)
    model = build_model(name, num_classes=59)
    ours = sum(p.numel() for p in model.parameters())
    assert unused == 2 * 128 * 9 + 2 and ours == sum(params.values()) - unused
    assert len(model.state_dict()) == len(spec) - 2  # the two unused ins_coord_conv tensors
    frozen = sum(v for k, v in params.items() if k.startswith(("backbone.conv1", "backbone.bn1", "backbone.layer1.")))
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == ours - frozen  # frozen_stages=1
    expected_m = {(50, False): 35.855, (50, True): 30.088, (101, False): 55.905, (101, True): 50.138}[(depth, light)]
    assert sum(params.values()) / 1e6 == pytest.approx(expected_m, abs=5e-4)


def test_light_variant_runs_on_the_padded_grid():
    """The light convert (1x1 with padding 1) grows the grid to (H/4 + 2) x (W/4 + 2); outputs are
    cropped back to H/4 x W/4 unless keep_grid_pad."""
    torch.manual_seed(0)
    model = build_model("uniparser_r50_fpn_dcn_official_light", num_classes=20).eval()
    x = torch.randn(1, 3, 64, 96)
    cells = [torch.tensor([0, 41, 1599])]
    with torch.no_grad():
        padded = model(x, cells, keep_grid_pad=True)
        plain = model(x, cells)
    assert padded.ins_feats.shape == (1, 128, 18, 26) and padded.cate_maps.shape == (1, 20, 18, 26)
    assert plain.ins_feats.shape == (1, 128, 16, 24) and plain.ins_maps[0].shape == (3, 16, 24)
    torch.testing.assert_close(plain.ins_feats, padded.ins_feats[..., 1:-1, 1:-1])
    torch.testing.assert_close(plain.ins_maps[0], padded.ins_maps[0][:, 1:-1, 1:-1])
    # kernels come from the padded grid's top-left pixel of each cell: cell 1599 = (39, 39) -> (17, 25)
    torch.testing.assert_close(padded.ins_kernels[0][2], padded.ins_feats[0, :, 17, 25])
    assert model.neck.grid_pad == 1 and build_model("uniparser_r50_fpn_dcn_official").neck.grid_pad == 0


# ----------------------------------------------------------------------------- against the re-derivation
@pytest.mark.parametrize("which", ["r50", "r50_light"])
@pytest.mark.parametrize("hw", [(90, 130), (40, 60)])  # the image shrinks (labels nearest-resized) / grows (maps bilinear)
def test_converted_model_equals_the_rederived_authors_model(which, hw, request):
    from streamparse.checkpoint import build_from_checkpoint
    from streamparse.models.postprocess_official import OfficialParams, parse_official
    from streamparse.official.preprocess import official_preprocess

    fx = request.getfixturevalue(which)
    light = which.endswith("light")
    model, meta = build_from_checkpoint(fx["out"])  # strict load of the converted file
    model.eval()
    frames = image(*hw, seed=3)[None]
    x, valid = official_preprocess(frames, (64, 96))
    x = torch.from_numpy(x)
    with torch.no_grad():
        out = model(x, [torch.zeros(0, dtype=torch.long)], compute_parsing=False, keep_grid_pad=True)
        centre, instance, semantic = authors_forward(fx["sd"], x, 50, light)
    grid_hw = (18, 26) if light else (16, 24)
    assert out.ins_feats.shape[-2:] == grid_hw == instance.shape[-2:]
    torch.testing.assert_close(out.center_logits, centre, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(out.ins_feats, F.normalize(instance, dim=1), atol=2e-5, rtol=1e-4)
    sem_conf = F.conv2d(F.normalize(semantic, dim=1), F.normalize(fx["sd"]["mask_head.seg_kernels"], dim=1)[:, :, None, None])
    torch.testing.assert_close(out.cate_maps[:, 1:], sem_conf, atol=2e-5, rtol=1e-4)
    assert float(out.cate_maps[:, 0].max()) <= 1e-6  # the fixed background row scores <= 0

    # post-processing on the same dense maps: the same people, scores and label maps
    params = OfficialParams(ctr_score=0.0, mask_thr=0.5, cate_score_thr=0.3)
    ours = parse_official(center_logits=out.center_logits[0, 0], ins_feats=out.ins_feats[0], cate_maps=out.cate_maps[0, 1:],
                          grid=40, valid_hw=valid, out_hw=hw, params=params)
    maps, scores = authors_inference(out.center_logits, out.ins_feats[0], out.cate_maps[0, 1:], valid, hw, ctr_score=0.0)
    assert len(maps) == ours.labels.shape[0] >= 5 and len(set(scores.tolist())) == len(maps)
    torch.testing.assert_close(ours.scores, scores.flip(0))
    theirs = torch.stack(maps[::-1])
    assert ours.labels.shape == (len(maps), *hw) and ours.labels.dtype == torch.uint8
    assert int((ours.labels > 0).sum()) > 0.05 * ours.labels.numel()  # people with parts, not empty maps
    diff = int((ours.labels != theirs).sum())
    assert diff <= 1e-4 * theirs.numel(), f"{diff} of {theirs.numel()} labels differ"


def test_label_maps_of_the_crop_equal_upsampling_everything():
    """person_label_maps works on each person's kept categories and mask box only; that must give
    the dense result (every category of the whole image upsampled) for both resize branches."""
    from streamparse.models.postprocess_official import category_filter, person_label_maps

    g = torch.Generator().manual_seed(5)
    for (fh, fw), valid, out_hw in [((16, 24), (64, 92), (90, 130)), ((18, 26), (64, 96), (40, 60)),
                                     ((16, 24), (61, 96), (61, 96)), ((10, 14), (37, 50), (25, 33))]:
        masks = torch.zeros(4, fh, fw, dtype=torch.bool)
        masks[0, 2:7, 3:9] = True
        masks[1, 0:fh // 2, fw - 5 :] = True  # touches the top and right edges
        masks[2] = torch.rand(fh, fw, generator=g) > 0.6
        cm = torch.rand(7, fh, fw, generator=g) * 1.1 - 0.1
        allowed = category_filter(masks, cm, 0.5, 0.3)
        allowed[0, 0] = False
        got = person_label_maps(masks, cm, allowed, valid_hw=valid, out_hw=out_hw)
        h, w = valid
        H, W = out_hw
        for k in range(4):
            p = (masks[k] * cm) * allowed[k][:, None, None]
            up = F.interpolate(p[None], size=(4 * fh, 4 * fw), mode="bilinear")[:, :, :h, :w]
            if h * w > H * W:
                up = F.interpolate(up, size=(H, W), mode="bilinear")
            lab = (up.argmax(1) + 1) * (up > 0.5).any(1)
            if h * w < H * W:
                lab = F.interpolate(lab[None].float(), size=(H, W), mode="nearest")[0]
            assert int((got[k] != lab[0].to(torch.uint8)).sum()) == 0, (fh, fw, valid, out_hw, k)
        assert int(got[3].sum()) == 0  # an empty mask is an empty map (the person is still listed)


def test_semantic_map_equals_one_argmax_over_every_category():
    from streamparse.models.postprocess_official import semantic_map

    g = torch.Generator().manual_seed(8)
    for (fh, fw), valid, out_hw in [((16, 24), (64, 92), (90, 130)), ((16, 24), (64, 96), (40, 60)), ((16, 24), (64, 96), (64, 96))]:
        cm = torch.rand(19, fh, fw, generator=g)
        cm[3] = cm[5]  # an exact tie: the lower category wins, as in one argmax
        h, w = valid
        up = F.interpolate(cm[None], size=(4 * fh, 4 * fw), mode="bilinear")[:, :, :h, :w]
        if h * w > out_hw[0] * out_hw[1]:
            up = F.interpolate(up, size=out_hw, mode="bilinear")
        ref = (up.argmax(1) + 1) * (up > 0.5).any(1)
        if h * w < out_hw[0] * out_hw[1]:
            ref = F.interpolate(ref[None].float(), size=out_hw, mode="nearest")[0]
        got = semantic_map(cm, valid_hw=valid, out_hw=out_hw, chunk=4)
        assert torch.equal(got, ref[0].to(torch.uint8)) and not bool((got == 6).any())


# ----------------------------------------------------------------------------- post-processing pieces
def test_centres_points_nms_then_5x5_peaks_no_cap():
    from streamparse.models.postprocess_official import official_centres

    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    z = torch.full((40, 40), -20.0)
    z[10, 10] = z[10, 11] = logit(0.8)  # a flat pair: the 2x2 test keeps both, the 5x5 test too
    z[20, 20], z[21, 21] = logit(0.6), logit(0.7)  # diagonal neighbours: the lower-right one wins
    z[30, 5], z[30, 8] = logit(0.5), logit(0.9)  # 3 apart: outside each other's 5x5 window, both kept
    cells, scores = official_centres(z, 0.1)
    got = {(int(c) // 40, int(c) % 40): round(float(s), 4) for c, s in zip(cells, scores)}
    assert got == {(10, 10): 0.8, (10, 11): 0.8, (21, 21): 0.7, (30, 5): 0.5, (30, 8): 0.9}
    assert scores.tolist() == sorted(scores.tolist(), reverse=True)
    z2 = torch.full((40, 40), -20.0)
    z2[::3, ::3] = 0.0  # 14 x 14 isolated peaks, 3 cells apart
    assert official_centres(z2, 0.1)[0].numel() == 196  # no cap at 100


def test_kernel_pixel_uses_the_releases_float32_truncation():
    from streamparse.models.postprocess_official import cell_top_left

    ys, xs = cell_top_left(torch.tensor([21 * 40 + 0, 39 * 40 + 39, 20 * 40 + 10]), 40, (200, 26))
    # 21 / 40 * 200 is 105 exactly but 104.99999 in float32 (their arithmetic): row 104
    assert ys.tolist() == [104, 195, 100] and xs.tolist() == [0, 25, 6]


def test_overlaps_go_to_the_highest_centre_score():
    from streamparse.models.postprocess_official import overlap_label_maps

    labels = torch.zeros(3, 4, 6, dtype=torch.uint8)
    labels[0, 0:3, 0:4] = 2  # score 0.5
    labels[1, 1:4, 2:6] = 5  # score 0.9: wins the overlap
    labels[2, 1:3, 2:4] = 7  # score 0.3, entirely under the others: dropped from the label maps
    part, inst, kept = overlap_label_maps(labels, torch.tensor([0.5, 0.9, 0.3]))
    assert kept.tolist() == [1, 0]
    assert inst[1, 2].item() == 1 and part[1, 2].item() == 5  # overlap -> the 0.9 person (id 1)
    assert inst[0, 0].item() == 2 and part[0, 0].item() == 2 and inst[3, 0].item() == 0
    assert part.dtype == torch.uint8 and int((inst == 1).sum()) == 12 and int((inst == 2).sum()) == 8


def test_official_preprocessing():
    import cv2

    from streamparse.official.preprocess import official_preprocess, official_resize_shape

    assert official_resize_shape(1080, 1920) == (750, 1333)
    assert official_resize_shape(480, 640) == (800, 1067)
    assert official_resize_shape(800, 1333) == (800, 1333) and official_resize_shape(1920, 1080) == (1333, 750)
    frames = np.stack([image(90, 130, 1), image(90, 130, 2)])
    x, (h, w) = official_preprocess(frames, (64, 96))
    assert (h, w) == (64, 92) and x.shape == (2, 3, 64, 96) and x.dtype == np.float32
    assert not x[:, :, :, w:].any()  # zeros bottom/right
    ref = cv2.resize(frames[1], (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float64)
    ref = (ref - [123.675, 116.28, 103.53]) / [58.395, 57.12, 57.375]  # RGB order
    np.testing.assert_allclose(x[1, :, :h, :w], ref.transpose(2, 0, 1), atol=1e-5)


# ----------------------------------------------------------------------------- the converter
def test_conversion_summary_and_stored_preset(r50, capsys, tmp_path):
    from streamparse.plan import checkpoint_preset_overrides
    from streamparse.checkpoint import load_checkpoint

    assert main(["convert-official", str(r50["src"]), str(tmp_path / "again.pt"), "--dataset", "mhpv2"]) == 0
    text = capsys.readouterr().out
    for line in ("variant: uniparser_r50_fpn_dcn_official", "classes: 59 (mhpv2)", "tensors: 403 of 405 converted",
                 "mask_head.ins_coord_conv.weight", "parameters: 35.85 M",
                 "thresholds (meta config): ctr_score 0.2, mask_thr 0.5, cate_score_thr 0.3"):
        assert line in text, text
    ck = load_checkpoint(r50["out"])
    assert ck["model_name"] == "uniparser_r50_fpn_dcn_official" and len(ck["class_names"]) == 59
    assert ck["class_names"][3] == "face"
    m = ck["config"]["model"]
    assert ck["config"]["inference_preset"] == "official"
    assert (m["input_size"], m["preprocess"], m["protocol"], m["center_thresh"]) == ([800, 1333], "official", "official", 0.2)
    assert ck["extra"]["converted_from"]["epoch"] == 36
    sd = ck["state_dict"]  # spot checks of the renaming
    torch.testing.assert_close(sd["neck.layer3.0.conv2.offset.weight"], r50["sd"]["backbone.layer3.0.conv2.conv_offset.weight"])
    torch.testing.assert_close(sd["neck.fpn.inner_blocks.2.0.bias"], r50["sd"]["neck.lateral_convs.2.conv.bias"])
    torch.testing.assert_close(sd["cate_builder.tower.10.weight"], r50["sd"]["mask_head.semantic_convs.3.gn.weight"])
    assert "model.name=\"uniparser_r50_fpn_dcn_official\"" in checkpoint_preset_overrides(str(r50["out"]))
    assert checkpoint_preset_overrides("none") == [] and checkpoint_preset_overrides(None) == []


def test_light_bare_state_dict_uses_the_released_thresholds(r50_light):
    from streamparse.checkpoint import load_checkpoint

    ck = load_checkpoint(r50_light["out"])
    assert ck["model_name"] == "uniparser_r50_fpn_dcn_official_light"
    m = ck["config"]["model"]
    assert (m["center_thresh"], m["cate_score_thresh"]) == (0.1, 0.3)  # no meta: paper theta_ctr, MHPv2 filter
    assert ck["extra"]["converted_from"]["thresholds_from"] == "defaults"


def test_predict_runs_a_converted_checkpoint(r50, tmp_path, capsys):
    from PIL import Image

    Image.fromarray(image(90, 130, 4)).save(tmp_path / "img.png")
    out = tmp_path / "p.json"
    rc = main(["predict", str(tmp_path / "img.png"), "--checkpoint", str(r50["out"]), "--device", "cpu", *SIZE,
               "--set", "model.center_thresh=0.0", "--json", str(out)])
    assert rc == 0, capsys.readouterr().err
    res = json.loads(out.read_text())
    assert res["model"]["model_name"] == "uniparser_r50_fpn_dcn_official"
    assert (res["model"]["preprocess"], res["model"]["protocol"], res["model"]["input_size"]) == ("official", "official", [64, 96])
    assert len(res["people"]) >= 1 and all(p["parts"] for p in res["people"])
    assert "uniparser_r50_fpn_dcn_official" in capsys.readouterr().out


def test_per_person_maps_score_with_the_evaluator_and_label_maps_follow_the_overlap_rule(r50):
    from streamparse.config import load_config
    from streamparse.plan import checkpoint_preset_overrides
    from streamparse.evaluation.metrics import ParsingEvaluator
    from streamparse.models.postprocess_official import overlap_label_maps
    from streamparse.engine.factory import build_predictor

    cfg = load_config(None, checkpoint_preset_overrides(str(r50["out"])) + ["model.input_size=[64,96]", "model.center_thresh=0.0"])
    pred = build_predictor(cfg, checkpoint=str(r50["out"]), device="cpu")
    frames = image(90, 130, 6)[None]
    op = pred.predict_official(frames)[0]
    fp = pred.predict(frames)[0]
    preds = op.predictions()
    assert len(preds) >= 2 and preds[0][0].shape == (90, 130) and preds[0][0].dtype == np.uint8
    gt = next(m for m, _ in preds if m.any())
    ev = ParsingEvaluator(59)
    ev.add([gt], preds)  # one person's map as GT: it matches itself
    assert ev.compute()["AP_p"][-1] > 0
    part, inst, kept = overlap_label_maps(op.labels, op.scores)
    np.testing.assert_array_equal(fp.part, part.numpy())
    np.testing.assert_array_equal(fp.instance, inst.numpy().astype(np.uint16))
    np.testing.assert_allclose(fp.scores, op.scores[kept].numpy())
    with pytest.raises(ValueError, match="test-time augmentation"):
        build_predictor(load_config(None, checkpoint_preset_overrides(str(r50["out"])) + ["model.test_flip=true"]),
                              checkpoint=str(r50["out"]), device="cpu")


def test_eval_scores_the_overlapping_per_person_maps(r50, tmp_path, capsys):
    from streamparse.data.synth import generate_dataset

    generate_dataset(tmp_path / "d", "mhpv2", 2, seed=3, size=(64, 96), split="val", min_people=1, max_people=3)
    (tmp_path / "empty.yaml").write_text("{}\n")
    out = tmp_path / "m.json"
    rc = main(["eval", str(tmp_path / "empty.yaml"), str(r50["out"]), "--data", str(tmp_path / "d"), "--format", "mhpv2",
               "--device", "cpu", "--json", str(out), *SIZE, "--set", "model.center_thresh=0.0"])
    assert rc == 0, capsys.readouterr().err
    m = json.loads(out.read_text())
    assert m["num_images"] == 2 and m["num_pred"] >= 10 and m["mIoU"] is not None  # every centre is a prediction


def test_bench_model_accepts_the_official_variants():
    from streamparse.bench.model import bench_uniparser

    r = bench_uniparser("uniparser_r50_fpn_dcn_official_light", (64, 90), 1, num_classes=59, people=(3,))
    assert r["params_M"] == pytest.approx(30.086, abs=1e-3) and r["total_ms@3"] > 0


# ----------------------------------------------------------------------------- errors, one line each
def run_cli(capsys, *argv) -> tuple[int, str]:
    rc = main(["convert-official", *map(str, argv)])
    err = capsys.readouterr().err.strip()
    return rc, err


def test_error_not_an_mmdet_checkpoint_truncated_and_another_architecture(r50, tmp_path, capsys):
    out = tmp_path / "o.pt"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 2048)}, tmp_path / "tv.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    data = Path(r50["src"]).read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 3])
    (tmp_path / "text.pth").write_text("not a checkpoint\n")
    solo = {"backbone.conv1.weight": torch.zeros(64, 3, 7, 7), "mask_head.kernel_convs.0.conv.weight": torch.zeros(512, 258, 3, 3),
            "mask_head.cate_convs.0.conv.weight": torch.zeros(512, 256, 3, 3),
            "mask_feat_head.convs_all_levels.0.conv0.conv.weight": torch.zeros(128, 256, 3, 3)}
    save_authors(tmp_path / "solo.pth", solo, {"mmcv_version": "1.7.0"})
    save_authors(tmp_path / "solo_meta.pth", {k: v for k, v in r50["sd"].items()}, mmcv_meta(50, False, 59, head="SOLOv2Head"), prefix="")
    cases = [
        ("tv.pth", "is not an mmdetection checkpoint"),
        ("list.pth", "is not an mmdetection checkpoint (expected a dict with 'state_dict', found list)"),
        ("cut.pth", "truncated or not a PyTorch checkpoint"),
        ("text.pth", "truncated or not a PyTorch checkpoint"),
        ("solo.pth", "holds another architecture (a SOLO/SOLOv2 model: mask_feat_head.convs_all_levels, mask_head.cate_convs"),
        ("solo_meta.pth", "holds another architecture (meta config mask_head type 'SOLOv2Head')"),
    ]
    for name, msg in cases:
        rc, err = run_cli(capsys, tmp_path / name, out)
        assert rc == 2 and msg in err and len(err.splitlines()) == 1, (name, err)
    rc, err = run_cli(capsys, tmp_path / "missing.pth", out)
    assert rc == 2 and "input not found" in err
    rc, err = run_cli(capsys, r50["out"], out)
    assert rc == 2 and "is already a streamparse checkpoint" in err
    assert not out.exists()


def test_error_missing_unexpected_and_misshapen_tensors(r50, tmp_path, capsys):
    half = {k: v.half() if v.is_floating_point() else v for k, v in r50["sd"].items()}  # smaller files, same layout
    broken = dict(half)
    del broken["backbone.layer2.1.conv2.conv_offset.bias"]
    broken["mask_head.extra_convs.0.weight"] = torch.zeros(3)
    save_authors(tmp_path / "keys.pth", broken, mmcv_meta(50, False, 59))
    bad = dict(half)
    bad["mask_head.center_convs.0.conv.weight"] = torch.zeros(128, 256, 3, 3)
    save_authors(tmp_path / "shape.pth", bad)
    save_authors(tmp_path / "ok16.pth", half, mmcv_meta(101, False, 59))
    out = tmp_path / "o.pt"
    rc, err = run_cli(capsys, tmp_path / "keys.pth", out)
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert "1 missing: backbone.layer2.1.conv2.conv_offset.bias; 1 unexpected: mask_head.extra_convs.0.weight" in err
    rc, err = run_cli(capsys, tmp_path / "shape.pth", out)
    assert rc == 2 and "mask_head.center_convs.0.conv.weight (128, 256, 3, 3) (expected (128, 258, 3, 3))" in err
    rc, err = run_cli(capsys, tmp_path / "ok16.pth", out)
    assert rc == 2 and "meta config and tensors disagree (depth 101 vs 50)" in err
    save_authors(tmp_path / "ok16.pth", half)
    rc, err = run_cli(capsys, tmp_path / "ok16.pth", out, "--variant", "uniparser_r101_fpn_dcn_official")
    assert rc == 2 and "tensors do not match uniparser_r101_fpn_dcn_official (59 classes): 340 missing: backbone.layer3.6." in err
    rc, err = run_cli(capsys, tmp_path / "ok16.pth", out, "--dataset", "cihp")
    assert rc == 2 and "--dataset cihp has 20 classes, the checkpoint 59" in err
    assert not out.exists()
    assert run_cli(capsys, tmp_path / "ok16.pth", out)[0] == 0  # fp16 weights convert (to float32)
    assert torch.load(out, weights_only=True)["state_dict"]["cate_kernels.weight"].dtype == torch.float32


def test_output_is_never_written_over_foreign_files(r50, tmp_path, capsys):
    out = tmp_path / "precious.pt"
    out.write_text("someone else's file\n")
    rc, err = run_cli(capsys, r50["src"], out)
    assert rc == 2 and "exists and it is a file that streamparse did not write" in err  # the one output rule (issue 16)
    rc, err = run_cli(capsys, r50["src"], out, "--overwrite")
    assert rc == 2 and "refusing to overwrite" in err and "streamparse did not write" in err
    assert out.read_text() == "someone else's file\n"
    rc, err = run_cli(capsys, r50["src"], tmp_path, "--overwrite")
    assert rc == 2 and "is a directory" in err
    mine = tmp_path / "mine.pt"
    mine.write_bytes(Path(r50["out"]).read_bytes())
    assert run_cli(capsys, r50["src"], mine, "--overwrite")[0] == 0


def test_meta_with_numpy_scalars_loads_and_nothing_else_is_allowed(r50, tmp_path, capsys):
    import argparse
    import collections

    meta = mmcv_meta(50, False, 59)
    meta["hook_msgs"]["best_score"] = np.float64(0.49)  # an EvalHook(save_best) value
    sd = collections.OrderedDict((k, v.half() if v.is_floating_point() else v) for k, v in r50["sd"].items())
    sd._metadata = collections.OrderedDict({"": {"version": 1}})  # mmcv's weights_to_cpu keeps it
    save_authors(tmp_path / "np.pth", sd, meta, prefix="")
    assert run_cli(capsys, tmp_path / "np.pth", tmp_path / "np.pt")[0] == 0
    meta["hook_msgs"]["args"] = argparse.Namespace(seed=0)  # a class that weights-only loading refuses
    save_authors(tmp_path / "obj.pth", {"backbone.conv1.weight": torch.zeros(1)}, meta)
    rc, err = run_cli(capsys, tmp_path / "obj.pth", tmp_path / "obj.pt")
    assert rc == 2 and "weights-only loading refuses (argparse.Namespace)" in err and len(err.splitlines()) == 1


# ----------------------------------------------------------------------------- streamparse run
@pytest.mark.ray
def test_run_a_video_with_a_converted_checkpoint(r50, tmp_path, capsys):
    import ray
    import zarr

    from videos import make_video

    env = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    for k, v in env.items():
        os.environ.setdefault(k, v)
    video = make_video(tmp_path / "clip.mp4", n=3, h=90, w=130)
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=512 * 2**20, _temp_dir="/tmp/sp-ray-official",
                 log_to_driver=False)
    try:
        rc = main(["run", str(video), "--out", str(tmp_path / "out.zarr"), "--checkpoint", str(r50["out"]), "--device", "cpu",
                   "--workers", "1", "--batch-size", "2", "--max-frames", "2", "--no-progress", *SIZE,
                   "--set", "model.center_thresh=0.0", "--set", "pipeline.torch_threads=1"])
    finally:
        if started:
            ray.shutdown()
    assert rc == 0, capsys.readouterr().err
    root = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")
    assert root.attrs["model_name"] == "uniparser_r50_fpn_dcn_official"
    assert root.attrs["config"]["model"]["protocol"] == "official" and len(root.attrs["class_names"]) == 59
    g = root["clip"]
    assert g["part"].shape == (2, 90, 130) and int(g["part"][:].max()) > 0
