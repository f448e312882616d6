"""UniParser network, targets, losses and NMS-free post-processing."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from streamparse.models import UniParserOutput, build_model, list_models
from streamparse.models.losses import UniParserLoss, dice_loss
from streamparse.models.postprocess import PostprocessParams, mask_nms, merge_duplicates, parse_image, peak_cells, pick_centres
from streamparse.models.tta import forward_tta
from streamparse.models.targets import build_targets
from toy import make_toy_set

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def normalise(images: list[np.ndarray]) -> torch.Tensor:
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    return (x - MEAN) / STD


# ----------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("name", list_models())
def test_every_builder_shapes_and_unit_norm(name):
    torch.manual_seed(0)
    n_cls = 59 if "r50" in name else 20
    model = build_model(name, num_classes=n_cls).eval()
    x = torch.randn(1, 3, 64, 96)
    cells = [torch.tensor([0, model.grid + 1])]
    with torch.no_grad():
        out = model(x, centers=cells)
    s, st = model.grid, model.stride
    assert out.center_logits.shape == (1, 1, s, s)
    C = out.ins_feats.shape[1]
    assert out.ins_feats.shape == (1, C, 64 // st, 96 // st)
    assert out.cate_feats.shape == out.ins_feats.shape
    assert out.cate_kernels.shape == (n_cls, C)
    assert out.cate_maps.shape == (1, n_cls, 64 // st, 96 // st)
    assert out.ins_kernels[0].shape == (2, C) and out.ins_maps[0].shape == (2, 64 // st, 96 // st)
    assert out.parsing[0].shape == (2, n_cls, 64 // st, 96 // st)
    for t in (out.ins_feats, out.cate_feats):
        assert torch.allclose(t.norm(dim=1), torch.ones(()), atol=1e-4)
    assert torch.allclose(out.cate_kernels.norm(dim=1), torch.ones(()), atol=1e-5)
    assert torch.allclose(out.ins_kernels[0].norm(dim=1), torch.ones(()), atol=1e-5)
    assert out.cate_maps.abs().max() <= 1 + 1e-5 and out.ins_maps[0].abs().max() <= 1 + 1e-5
    assert out.parsing[0].min() >= 0 and out.parsing[0].max() <= 1
    assert out.heatmap.dtype == torch.float32


def test_registry_refuses_duplicates_and_unknown():
    from streamparse.models.registry import register_model

    with pytest.raises(ValueError, match="already registered"):
        register_model("uniparser_tiny")(lambda **kw: None)
    with pytest.raises(ValueError, match="unknown model"):
        build_model("uniparser_r7")


def test_bad_input_size_is_a_clear_error():
    model = build_model("uniparser_tiny").eval()
    with pytest.raises(ValueError, match="multiple of 32"):
        model(torch.randn(1, 3, 50, 64))
    with pytest.raises(ValueError, match=r"\(B,3,H,W\)"):
        model(torch.randn(3, 64, 64))


@pytest.mark.parametrize("stride", [4, 8])
def test_full_neck_compression_equals_concat_then_1x1(stride):
    """The neck mixes each FPN level at its own resolution and then upsamples; that must equal the
    paper's formulation (upsample every level, concatenate, 1x1 conv) up to float rounding."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    neck = build_model("uniparser_tiny", num_classes=20, stride=stride).neck.eval()
    levels = [torch.randn(2, 64, 64 // 2**i, 48 // 2**i) for i in range(4 - neck.first_level)]
    size = levels[0].shape[-2:]
    cat = torch.cat([levels[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in levels[1:]], 1)
    with torch.no_grad():
        ref = neck.compress(cat)
        got = neck.compress_levels(levels)
    assert got.shape == ref.shape == (2, neck.out_channels, *size)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


def test_coords_keep_channels_last():
    from streamparse.models.heads import with_coords

    x = torch.randn(1, 8, 5, 7).contiguous(memory_format=torch.channels_last)
    y = with_coords(x)
    assert y.shape == (1, 10, 5, 7) and y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y[:, :8], x)
    assert float(y[0, 8, 0, 0]) == -1.0 and float(y[0, 8, 0, -1]) == 1.0  # x coordinate first
    assert float(y[0, 9, 0, 0]) == -1.0 and float(y[0, 9, -1, 0]) == 1.0


def test_light_variant_is_smaller_than_full():
    full = sum(p.numel() for p in build_model("uniparser_r50_fpn").parameters())
    light = sum(p.numel() for p in build_model("uniparser_r50_fpn_light").parameters())
    assert light < full


@pytest.mark.parametrize("fusion", ["index", "convs", "multi"])
def test_gradients_reach_every_head_and_the_category_kernels(fusion):
    torch.manual_seed(0)
    model = build_model("uniparser_tiny", fusion=fusion).train()
    images, persons = make_toy_set(2, (96, 128), seed=1)
    tg = [build_targets(p, image_size=(96, 128), num_classes=20, grid=model.grid, stride=model.stride) for p in persons]
    out = model(normalise(images), centers=[t.pos_cells for t in tg], compute_parsing=(fusion != "index"))
    losses = UniParserLoss()(out, tg)
    losses["loss"].backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert dead == []
    for head in ("center_locator", "ins_builder", "cate_builder", "cate_kernels", "neck"):
        assert any(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if n.startswith(head)), head


# ----------------------------------------------------------------------------- test-time augmentation

CIHP_FLIP = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15, 14, 17, 16, 19, 18])


TTA_PARAMS = PostprocessParams(center_thresh=0.0)  # random weights: every local maximum is a centre


def _tta_model(fusion: str = "index"):
    torch.manual_seed(0)
    return build_model("uniparser_tiny", fusion=fusion).eval()


def plain(model, x):
    """The plain forward with centres picked by the post-processing (no augmentation)."""
    out = model(x)
    return model.instances(out, pick_centres(out.heatmap, TTA_PARAMS))


def tta(model, images, **kw):
    return forward_tta(model, images, TTA_PARAMS, **kw)


def test_tta_of_one_plain_pass_is_the_plain_forward():
    model = _tta_model()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        ref = plain(model, x)
        for out in (tta(model, [x]), tta(model, [x, x], ratios=[(1.0, 1.0), (1.0, 1.0)])):
            assert torch.allclose(out.heatmap, ref.heatmap, atol=1e-5)
            assert torch.allclose(out.cate_maps, ref.cate_maps, atol=1e-5)
            for a, b in zip(out.centers, ref.centers):
                assert torch.equal(a, b) and a.numel() > 0
            for a, b in zip(out.ins_maps, ref.ins_maps):
                assert torch.allclose(a, b, atol=1e-5)
            for a, b in zip(out.ins_kernels, ref.ins_kernels):
                assert torch.allclose(a, b, atol=1e-5)
            for a, b in zip(out.parsing, ref.parsing):
                assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("fusion", ["index", "convs"])
def test_flip_tta_averages_the_mirror_pass_with_left_right_swapped(fusion):
    model = _tta_model(fusion)
    x = torch.randn(1, 3, 64, 96)
    s = model.grid
    with torch.no_grad():
        a, m = plain(model, x), plain(model, x.flip(-1))
        out = tta(model, [x], flip_perm=CIHP_FLIP)
        mirrored = tta(model, [x.flip(-1)], flip_perm=CIHP_FLIP)
    # the mirror pass's "right arm" (15) is the direct pass's left arm (14), and so on
    assert torch.allclose(out.cate_maps[0, 14], 0.5 * (a.cate_maps[0, 14] + m.cate_maps[0, 15].flip(-1)), atol=1e-5)
    assert torch.allclose(out.cate_maps[0, 2], 0.5 * (a.cate_maps[0, 2] + m.cate_maps[0, 2].flip(-1)), atol=1e-5)
    assert torch.allclose(out.heatmap, 0.5 * (a.heatmap + m.heatmap.flip(-1)), atol=1e-5)
    # the averaged result is the same for an image and its mirror image
    assert torch.allclose(out.cate_maps, mirrored.cate_maps.flip(-1)[:, CIHP_FLIP], atol=1e-5)
    assert torch.allclose(out.heatmap, mirrored.heatmap.flip(-1), atol=1e-5)
    cells, mcells = out.centers[0], mirrored.centers[0]
    assert cells.numel() > 0
    back = (mcells // s) * s + (s - 1 - mcells % s)
    order = [int(torch.nonzero(back == c)[0, 0]) for c in cells]  # the same people, maybe in another order of ties
    assert torch.allclose(out.ins_maps[0], mirrored.ins_maps[0][order].flip(-1), atol=1e-4)
    assert torch.allclose(out.parsing[0], mirrored.parsing[0][order].flip(-1)[:, CIHP_FLIP], atol=1e-4)


def test_tta_resamples_each_scale_onto_the_reference_grid():
    from streamparse.models.tta import _ref_grid

    # a pass whose image fills 3/4 of its padded width: its map holds the image x-fraction
    # (cell centre / 0.75); read onto a 10-wide reference grid (no padding) it is the reference's own
    w2, a = 16, 0.75
    t = ((torch.arange(w2) + 0.5) / w2 / a).view(1, 1, 1, w2).expand(1, 1, 4, w2).contiguous()
    r = torch.nn.functional.grid_sample(t, _ref_grid((4, 10), (1.0, a), t), mode="bilinear", align_corners=False)
    want = ((torch.arange(10) + 0.5) / 10).view(1, 1, 1, 10).expand(1, 1, 4, 10)
    assert torch.allclose(r[..., 1:-1], want[..., 1:-1], atol=1e-5)  # bilinear is exact away from the border
    # and end to end: the same image at a second scale, resized, runs through and is averaged
    model = _tta_model()
    x = torch.randn(1, 3, 64, 96)
    x2 = torch.nn.functional.pad(torch.nn.functional.interpolate(x, size=(48, 72), mode="bilinear"), (0, 24, 0, 16))
    with torch.no_grad():
        out = tta(model, [x, x2], ratios=[(1.0, 1.0), (48 / 64, 72 / 96)], flip_perm=CIHP_FLIP)
    st = model.stride
    assert out.cate_maps.shape == (1, 20, 64 // st, 96 // st) and out.heatmap.shape == (1, 1, model.grid, model.grid)
    assert len(out.ins_maps[0]) == len(out.centers[0]) > 0
    assert out.ins_maps[0].shape[-2:] == (64 // st, 96 // st)
    with pytest.raises(ValueError, match="same B"):
        tta(model, [x, torch.cat([x2, x2])])
    with pytest.raises(ValueError, match="ratios"):
        tta(model, [x, x2], ratios=[(1.0, 1.0)])
    with pytest.raises(ValueError, match="flip_perm"):
        tta(model, [x], flip_perm=CIHP_FLIP[:5])


def test_predictor_tta_settings_and_mirror_consistency():
    from streamparse.config import load_config
    from streamparse.engine.factory import build_predictor

    # random weights: averaged passes are weak, so a low theta_mask keeps people
    tiny = ["model.name=uniparser_tiny", "model.input_size=[64,96]", "model.center_thresh=0.0", "model.mask_thresh=0.05",
            "model.max_instances=4", "model.merge_cos=1.01"]
    with pytest.raises(ValueError, match="test_scales"):
        build_predictor(load_config(overrides=tiny + ["model.test_scales=[0.75,1.25]"]), checkpoint="none")
    with pytest.raises(ValueError, match="test_flip"):
        build_predictor(load_config(overrides=tiny + ["model.test_flip=true", "model.num_classes=7",
                                                            "model.label_space=none"]), checkpoint="none")
    pred = build_predictor(load_config(overrides=tiny + ["model.test_flip=true", "model.test_scales=[1.0,0.75]"]),
                                 checkpoint="none", device="cpu")
    assert pred.test_scales == (1.0, 0.75) and pred.flip_perm[14] == 15
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
    out = pred.predict(frames)
    assert out[0].part.shape == (64, 64) and sum(o.num_instances for o in out) > 0
    # with flip (one scale, no padding), a mirror image's parts are the mirrored parts, left and right swapped
    pred = build_predictor(load_config(overrides=tiny + ["model.test_flip=true"]), checkpoint="none", device="cpu")
    a, m = pred.predict(frames[1:])[0], pred.predict(np.ascontiguousarray(frames[1:, :, ::-1]))[0]
    assert a.num_instances > 0
    lut = pred.flip_perm.numpy()
    assert np.mean(lut[m.part[:, ::-1]] != a.part) < 0.01
    assert np.mean((m.instance[:, ::-1] > 0) != (a.instance > 0)) < 0.01


# ----------------------------------------------------------------------------- targets


def test_targets_barycentre_and_positive_rectangle():
    H, W, S = 64, 64, 16
    p = np.zeros((H, W), np.uint8)
    p[8:48, 16:32] = 5  # box 40 x 16, barycentre (27.5, 23.5)
    t = build_targets([p], image_size=(H, W), num_classes=20, grid=S, sigma=0.2, stride=8)
    cy, cx = 27.5, 23.5
    assert int(t.center_cells[0]) == int(cy / H * S) * S + int(cx / W * S)
    # rectangle of 0.2*40 = 8 px high, 0.2*16 = 3.2 px wide around the barycentre
    ys = range(int((cy - 4) / H * S), int((cy + 4) / H * S) + 1)
    xs = range(int((cx - 1.6) / W * S), int((cx + 1.6) / W * S) + 1)
    expect = {y * S + x for y in ys for x in xs}
    assert set(t.pos_cells.tolist()) == expect
    assert float(t.heat.sum()) == len(expect)
    assert int(t.pos_cells[0]) == int(t.center_cells[0])
    assert t.person_labels.shape == (1, 8, 8)
    assert t.person_labels[0, 3, 2] == 5 and t.person_labels[0, 0, 0] == 0


def test_targets_drop_empty_person_and_reject_bad_labels():
    p = np.zeros((32, 32), np.uint8)
    q = p.copy()
    q[4:20, 4:20] = 3
    t = build_targets([p, q], image_size=(32, 32), num_classes=20, grid=8, stride=8)
    assert t.num_persons == 1
    bad = q.copy()
    bad[0, 0] = 40
    with pytest.raises(ValueError, match="num_classes"):
        build_targets([bad], image_size=(32, 32), num_classes=20, grid=8, stride=8)
    ign = q.copy()
    ign[16:32, 24:32] = 255  # ignore pixels are allowed (outside the person)
    t2 = build_targets([ign], image_size=(32, 32), num_classes=20, grid=8, stride=8)
    assert (t2.semantic == 255).any()


# ----------------------------------------------------------------------------- losses


def test_dice_known_values():
    p = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    t = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    assert dice_loss(p, p, eps=0).item() == pytest.approx(0.0)
    assert dice_loss(p, t, eps=0).item() == pytest.approx(1 - 2 * 1 / 3)
    assert dice_loss(p, torch.zeros_like(p), eps=0).item() == pytest.approx(1.0)


def _perfect_output(tg, n_cls: int, h: int, w: int, S: int) -> UniParserOutput:
    """Hand-made outputs that equal the targets exactly."""
    C = n_cls + 8
    eye = torch.eye(C)
    kernels = eye[:n_cls]
    t = tg[0]
    sem = t.semantic
    cate_feats = eye[sem.clamp(max=n_cls - 1)].permute(2, 0, 1)[None]  # one-hot features
    cate_maps = torch.einsum("nc,bchw->bnhw", kernels, cate_feats)
    person_fg = ((t.person_labels > 0) & (t.person_labels != 255)).float()
    ins_maps = person_fg[t.pos_person]
    ins_kernels = eye[n_cls : n_cls + len(t.pos_cells)]
    ins_kernels = torch.stack([eye[n_cls + int(p)] for p in t.pos_person])
    logits = torch.where(t.heat > 0, 30.0, -30.0)[None, None]
    return UniParserOutput(
        center_logits=logits, ins_feats=cate_feats, cate_feats=cate_feats, cate_kernels=kernels, cate_maps=cate_maps,
        centers=[t.pos_cells], ins_kernels=[ins_kernels], ins_maps=[ins_maps], parsing=None,
    )


def test_losses_vanish_on_a_perfect_prediction():
    p1 = np.zeros((64, 64), np.uint8)
    p1[8:40, 8:24] = 5
    p1[40:60, 8:24] = 9
    p2 = np.zeros((64, 64), np.uint8)
    p2[8:60, 40:56] = 2
    tg = [build_targets([p1, p2], image_size=(64, 64), num_classes=20, grid=16, stride=8)]
    out = _perfect_output(tg, 20, 8, 8, 16)
    # metric loss of the instance kernels: only one kernel per person enters (the barycentres)
    losses = UniParserLoss(weights=(1, 3, 3, 1))(out, tg)
    for key in ("loss_center", "loss_aux_ins", "loss_aux_cate", "loss_par", "loss_metric"):
        assert losses[key].item() == pytest.approx(0.0, abs=2e-3), key


def test_metric_loss_known_value():
    lossf = UniParserLoss()
    k = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), dim=1)
    # A = [[1,1,0],[1,1,0],[0,0,1]]: |A - I| sums to 2
    assert lossf._metric(k).item() == pytest.approx(2.0)
    assert UniParserLoss(metric_margin=0.5)._metric(k).item() == pytest.approx(1.0)


def test_negative_category_term_and_cihp_variant():
    p1 = np.zeros((64, 64), np.uint8)
    p1[8:40, 8:24] = 5
    tg = [build_targets([p1], image_size=(64, 64), num_classes=20, grid=16, stride=8)]
    out = _perfect_output(tg, 20, 8, 8, 16)
    base = UniParserLoss()(out, tg)["loss_aux_cate"].item()
    # an absent category lighting up costs the L1 term, and nothing in the CIHP variant
    out.cate_maps = out.cate_maps.clone()
    out.cate_maps[0, 7] = 0.5
    assert UniParserLoss()(out, tg)["loss_aux_cate"].item() == pytest.approx(base + 0.5 / 20, abs=1e-5)
    assert UniParserLoss(cihp_variant=True)(out, tg)["loss_aux_cate"].item() == pytest.approx(0.0, abs=2e-3)


# ----------------------------------------------------------------------------- post-processing


def test_peaks_two_people_two_instances_adjacent_cells_one():
    heat = torch.zeros(10, 10)
    heat[2, 2], heat[2, 3] = 0.9, 0.8  # one person: adjacent cells
    heat[7, 7] = 0.6  # another person
    heat[5, 0] = 0.05  # below theta_ctr
    cells, scores = peak_cells(heat, 0.1, pool=3)
    assert cells.tolist() == [22, 77]
    assert scores.tolist() == pytest.approx([0.9, 0.6])
    # without the max-pool, kernel merging still makes one person of the adjacent cells
    cells, scores = peak_cells(heat, 0.1, pool=1)
    assert cells.tolist() == [22, 23, 77]
    k = torch.nn.functional.normalize(torch.tensor([[1.0, 0.02], [1.0, 0.0], [0.0, 1.0]]), dim=1)
    assert merge_duplicates(k, scores, 0.95).tolist() == [0, 2]
    assert merge_duplicates(k, scores, 1.01).tolist() == [0, 1, 2]


def test_parse_image_hand_made_maps():
    S, h, w = 4, 4, 4
    heat = torch.zeros(S, S)
    heat[0, 0], heat[3, 3] = 0.9, 0.7
    cells = torch.tensor([0, 15])
    ins = torch.zeros(2, h, w)
    ins[0, :, :2] = 1.0  # person 1: left half
    ins[1, :, 2:] = 1.0  # person 2: right half
    cate = torch.zeros(3, h, w)
    cate[0] = 1.0
    cate[0, :2, :] = 0.0
    cate[1, :2, :] = 1.0  # category 1 on the top rows, background below
    kern = torch.eye(2)
    r = parse_image(heat=heat, cells=cells, ins_kernels=kern, ins_maps=ins, cate_maps=cate, parsing=None,
                    stride=1, out_size=(4, 4), mask_thresh=0.5, merge_cos=0.95)
    assert r.instance.tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert r.part.tolist() == [[1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert r.scores.tolist() == pytest.approx([0.9, 0.7])
    # a duplicate centre of person 1 (same kernel) yields no extra person
    r2 = parse_image(heat=heat, cells=torch.tensor([0, 1, 15]), ins_kernels=torch.stack([kern[0], kern[0], kern[1]]),
                     ins_maps=torch.stack([ins[0], ins[0], ins[1]]), cate_maps=cate, parsing=None,
                     stride=1, out_size=(4, 4))
    assert int(r2.instance.max()) == 2


def test_pixels_go_to_the_highest_scored_person_above_threshold():
    heat = torch.zeros(4, 4)
    heat[0, 0], heat[3, 3] = 0.9, 0.3
    cate = torch.zeros(2, 4, 4)
    cate[1] = 1.0  # one part everywhere
    ins = torch.zeros(2, 4, 4)
    ins[0, :, :3] = 0.7  # confident person: columns 0-2
    ins[1, :, 1:] = 0.95  # weak extra centre: stronger fused score on columns 1-3
    r = parse_image(heat=heat, cells=torch.tensor([0, 15]), ins_kernels=torch.eye(2), ins_maps=ins, cate_maps=cate,
                    parsing=None, stride=1, out_size=(4, 4), mask_thresh=0.5)
    # the overlap (columns 1-2) stays with the higher-scored person; column 3 is only the other's
    assert r.instance.tolist() == [[1, 1, 1, 2]] * 4
    assert r.scores.tolist() == pytest.approx([0.9, 0.3])


def test_category_filter_drops_weak_categories_of_a_person():
    from streamparse.models.postprocess import _category_filter, _maskness

    heat = torch.zeros(4, 4)
    heat[1, 1] = 0.9
    ins = torch.zeros(1, 8, 8)
    ins[0, 1:7, 1:7] = 0.9  # one person
    cate = torch.zeros(3, 8, 8)
    cate[1, 1:7, 1:7] = 0.8  # a solid part over the person
    cate[2, 1:7, 1:7] = 0.3  # a faint second part over all of it ...
    cate[2, 3, 3] = 0.95  # ... beating the first at one pixel
    kw = dict(heat=heat, cells=torch.tensor([5]), ins_kernels=torch.eye(1), ins_maps=ins, cate_maps=cate,
              parsing=None, stride=1, out_size=(8, 8), mask_thresh=0.5)
    off = parse_image(**kw, cate_score_thresh=0.0)
    on = parse_image(**kw, cate_score_thresh=0.15)
    assert int(off.part[3, 3]) == 2 and int((off.part == 2).sum()) == 1
    # maskness of part 2 = 0.95 / 36 pixels > 0.1 = 0.026 -> dropped; its pixel takes part 1
    assert int((on.part == 2).sum()) == 0 and int(on.part[3, 3]) == 1
    assert torch.equal(on.instance, off.instance) and int((on.part == 1).sum()) == 36
    # a person whose only category is filtered out vanishes
    weak = cate.clone()
    weak[1] = 0.0
    gone = parse_image(**{**kw, "cate_maps": weak}, cate_score_thresh=0.15)
    assert int(gone.instance.max()) == 0 and gone.scores.numel() == 0
    # the factorised filter equals the maskness of the (k, N, h, w) maps it avoids forming
    g = torch.Generator().manual_seed(0)
    q, cm = torch.rand(5, 9, 11, generator=g), torch.rand(7, 9, 11, generator=g)
    direct = _maskness((q > 0.5).float()[:, None] * cm[None], 0.5)
    for t in (0.1, 0.3, 0.5):
        assert torch.equal(_category_filter(q, cm, 0.5, t), direct > t)


def test_block_assignment_equals_upsampling_every_map():
    """The default block path of parse_image gives the label maps of the dense reference (every
    map upsampled with F.interpolate), on smooth and on noisy random maps, strides 4 and 8,
    0-20 people, with and without the category filter."""
    tot = mism = 0
    for trial in range(30):
        g = torch.Generator().manual_seed(trial)
        s, k = (4, 8)[trial % 2], (0, 1, 3, 7, 20)[trial % 5]
        h, w = 10 + trial % 7, 13 + trial % 5
        H, W = h * s - (trial % 3) * 3, w * s - trial % 4

        def rnd(*shape):
            x = torch.rand(*shape, generator=g) * 2 - 1
            if trial % 3:
                x = torch.nn.functional.avg_pool2d(x[None], 3, 1, 1)[0] * 3
            return x.clamp(-1, 1)

        kw = dict(heat=torch.rand(10, 10, generator=g), cells=torch.randperm(100, generator=g)[:k],
                  ins_kernels=torch.nn.functional.normalize(torch.randn(k, 8, generator=g), dim=1),
                  ins_maps=rnd(k, h, w) if k else torch.zeros(0, h, w), cate_maps=rnd(6, h, w), parsing=None,
                  stride=s, out_size=(H, W), merge_cos=1.01)
        for thr in (0.0, 0.5):
            for cst in (0.0, 0.15):
                a = parse_image(**kw, mask_thresh=thr, cate_score_thresh=cst)
                b = parse_image(**kw, mask_thresh=thr, cate_score_thresh=cst, dense=True)
                assert a.part.shape == b.part.shape == (H, W)
                assert torch.equal(a.scores, b.scores) and torch.equal(a.cells, b.cells)
                tot += H * W
                mism += int((a.part != b.part).sum()) + int((a.instance != b.instance).sum())
    assert tot > 100_000
    assert mism <= tot * 1e-5, (mism, tot)  # the two differ at most by float rounding at exact ties


def test_mask_nms_removes_duplicates():
    m = torch.zeros(3, 4, 4, dtype=torch.bool)
    m[0, :2] = True
    m[1, :2] = True
    m[2, 2:] = True
    assert sorted(mask_nms(m, torch.tensor([0.9, 0.8, 0.7])).tolist()) == [0, 2]


# ----------------------------------------------------------------------------- learning


@pytest.fixture(scope="module")
def trained_tiny():
    """The tiny model trained <= ~90 s on 4 generated images with 2-3 drawn people."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    size = (160, 192)
    images, persons = make_toy_set(4, size, seed=0)
    model = build_model("uniparser_tiny", num_classes=20, stride=4)
    x = normalise(images)
    tg = [build_targets(p, image_size=size, num_classes=20, grid=model.grid, stride=model.stride) for p in persons]
    lossf = UniParserLoss()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    t0, it = time.time(), 0
    model.train()
    while time.time() - t0 < 85 and it < 600:
        out = model(x, centers=[t.pos_cells for t in tg], compute_parsing=False)
        loss = lossf(out, tg)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        it += 1
    torch.set_num_threads(threads)
    return model.eval(), images, persons, x


def _parse_all(model, x, size, keep_raw=False):
    with torch.no_grad():
        out = model(x)
        out = model.instances(out, pick_centres(out.heatmap, PostprocessParams()), compute_parsing=False)
    return [
        parse_image(heat=out.heatmap[i, 0], cells=out.centers[i], ins_kernels=out.ins_kernels[i], ins_maps=out.ins_maps[i],
                    cate_maps=out.cate_maps[i], parsing=None, stride=model.stride, out_size=size, keep_raw=keep_raw)
        for i in range(x.shape[0])
    ]


@pytest.mark.slow  # trains the tiny model for ~90 s on 2 cores
def test_tiny_model_learns_toy_people(trained_tiny):
    model, images, persons, x = trained_tiny
    results = _parse_all(model, x, (160, 192))
    ious = []
    for r, ps in zip(results, persons):
        gt = np.zeros((160, 192), np.int64)
        for p in ps:
            gt[p > 0] = p[p > 0]
        pr = r.part.numpy()
        ious += [((pr == c) & (gt == c)).sum() / ((pr == c) | (gt == c)).sum() for c in np.unique(gt) if c > 0]
        assert int(r.instance.max()) == len(ps) == len(r.scores), "wrong number of people"
        # each predicted person overlaps exactly one GT person
        inst = r.instance.numpy()
        for k in range(1, len(ps) + 1):
            owners = [((inst == k) & (p > 0)).sum() for p in ps]
            assert max(owners) > 0.8 * (inst == k).sum()
    assert float(np.mean(ious)) >= 0.8


@pytest.mark.slow  # trains the tiny model for ~90 s on 2 cores
def test_mask_nms_afterwards_changes_nothing(trained_tiny):
    model, images, persons, x = trained_tiny
    for r in _parse_all(model, x, (160, 192), keep_raw=True):
        keep = mask_nms(r.raw_masks, r.scores, iou_thresh=0.5)
        assert sorted(keep.tolist()) == list(range(len(r.scores)))
