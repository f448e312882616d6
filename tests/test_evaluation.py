"""Evaluator tests: hand-computed AP^p/PCP/mIoU cases, edge cases, a naive loop reference, the
prediction-folder format, real CIHP category maps and the `streamparse eval` command."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from streamparse.categories import CIHP
from streamparse.evaluation.metrics import (DEFAULT_THRESHOLDS, PredictionError, evaluate_parsing, fast_hist,
                                    pairwise_part_iou, read_prediction, voc_ap, write_prediction)
from streamparse.structures import FrameParsing

T = DEFAULT_THRESHOLDS
REPO = Path(__file__).resolve().parents[1]


def box(shape, y0, y1, x0, x1, label, base=None):
    out = np.zeros(shape, np.uint8) if base is None else base.copy()
    out[y0:y1, x0:x1] = label
    return out


# ---------------------------------------------------------------- hand-made scenes
# 4x4 image, n = 3. GT A = label 1 on the top-left 2x2, GT B = label 2 on the bottom-right 2x2.
S = (4, 4)
GA = box(S, 0, 2, 0, 2, 1)
GB = box(S, 2, 4, 2, 4, 2)
PB_HALF = box(S, 2, 3, 2, 4, 2)  # top row of B only (2 of its 4 pixels)
# Pair IoUs (row = GT, IoU per class 0, 1, 2; background over the whole image):
#   A vs GA      : bg 12/12 = 1, c1 4/4 = 1, c2 NaN                  -> mean 1
#   A vs PB_HALF : bg I=10, G=12, P=14 -> 10/16, c1 0/4, c2 0/2      -> mean 0.625/3 = 0.2083
#   B vs GA      : bg I=8, G=12, P=12 -> 8/16, c1 0/4, c2 0/4        -> mean 0.5/3   = 0.1667
#   B vs PB_HALF : bg 12/14 = 6/7, c1 NaN, c2 2/4                    -> mean (6/7 + 1/2)/2 = 19/28 = 0.6786
# Quirk scene: 10x10 image, one person covering 16% with 2 parts (8 px each); all-background
# prediction: bg 84/100, both parts 0 -> mean 0.84/3 = 0.28 (metrics.md example).
QG = box((10, 10), 0, 4, 0, 2, 1, base=box((10, 10), 0, 4, 2, 4, 2))
# Strict '>' scene: a 1x13 image, GT = 4 px of label 1, prediction = 1 of those px.
#   c1 IoU = 1/4, bg I=9, G=9, P=12 -> 9/12 = 3/4; mean = (3/4 + 1/4)/2 = 0.5 exactly.
EG = box((1, 13), 0, 1, 0, 4, 1)
EP = box((1, 13), 0, 1, 0, 1, 1)

CASES = [
    # (name, gts, preds, protocol, expected AP_p, expected PCP)
    # Both TP while 19/28 > t (t <= 0.6): AP 1. For t >= 0.7 the half-B prediction is an FP:
    # rec = [1/2, 1/2], prec = [1, 1/2] -> AP = 1/2 * 1 = 0.5.
    # PCP: A always 1/1; half-B's c2 IoU 0.5 > t only for t <= 0.4; unmatched B pads with 0.
    ("two_people", [[GA, GB]], [[(GA, 0.9), (PB_HALF, 0.8)]], "mhp",
     [1] * 6 + [0.5] * 3, [1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.5]),
    # A duplicate of A (score 0.85) ranks 2nd: its best GT is A (taken) -> FP, although at t = 0.1
    # B is still free and the duplicate overlaps it with 0.1667 > 0.1.
    # t <= 0.6: tp = [1,0,1] -> rec [.5,.5,1], prec [1,.5,2/3] -> envelope [1,2/3,2/3]:
    #   AP = .5*1 + .5*2/3 = 5/6.  t >= 0.7: tp = [1,0,0] -> AP = .5.
    ("duplicate_fp", [[GA, GB]], [[(GA, 0.9), (GA, 0.85), (PB_HALF, 0.8)]], "mhp",
     [5 / 6] * 6 + [0.5] * 3, [1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.5]),
    # Same ranking with the duplicate last: an FP after every TP does not change all-point AP.
    ("duplicate_last", [[GA, GB]], [[(GA, 0.9), (GA, 0.1), (PB_HALF, 0.8)]], "mhp",
     [1] * 6 + [0.5] * 3, [1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.5]),
    # An empty GT person: dropped by MHP (npos 1 -> AP 1, PCP 1) ...
    ("empty_gt_mhp", [[GA, np.zeros(S, np.uint8)]], [[(GA, 0.9)]], "mhp", [1] * 9, [1] * 9),
    # ... counted by Parsing R-CNN (npos 2: rec ends at 1/2 -> AP 0.5; PCP (1 + 0)/2).
    ("empty_gt_prcnn", [[GA, np.zeros(S, np.uint8)]], [[(GA, 0.9)]], "prcnn", [0.5] * 9, [0.5] * 9),
    # Parsing R-CNN skips score < 0.001: the perfect B prediction is ignored -> AP = PCP = 0.5.
    ("low_score_prcnn", [[GA, GB]], [[(GA, 0.9), (GB, 0.0005)]], "prcnn", [0.5] * 9, [0.5] * 9),
    ("low_score_mhp", [[GA, GB]], [[(GA, 0.9), (GB, 0.0005)]], "mhp", [1] * 9, [1] * 9),
    # Matching score exactly 0.5: TP for t <= 0.4, FP from t = 0.5 on (strict '>').
    # PCP: the part IoU 0.25 > t only for t = 0.1, 0.2.
    ("strict_gt", [[EG]], [[(EP, 0.7)]], "mhp", [1, 1, 1, 1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0, 0, 0]),
    # All-background quirk: score 0.28 -> TP at t = 0.1, 0.2; no part right -> PCP 0.
    ("all_background", [[QG]], [[(np.zeros((10, 10), np.uint8), 0.5)]], "mhp", [1, 1] + [0] * 7, [0] * 9),
    # A prediction in an image without GT is an FP (ranked first here): tp = [0, 1] -> rec [0, 1],
    # prec [0, 1/2] -> AP = 1 * 1/2.
    ("fp_in_empty_image", [[GA], []], [[(GA, 0.5)], [(GA, 0.9)]], "mhp", [0.5] * 9, [1] * 9),
    # Zero predictions in the whole set: AP 0, PCP 0 (the reference code crashes).
    ("no_predictions", [[GA, GB]], [[]], "mhp", [0] * 9, [0] * 9),
]


@pytest.mark.parametrize("name,gts,preds,protocol,ap,pcp", CASES, ids=[c[0] for c in CASES])
def test_hand_computed(name, gts, preds, protocol, ap, pcp):
    res = evaluate_parsing(gts, preds, 3, protocol=protocol)
    assert res["AP_p"] == pytest.approx(ap, abs=1e-12)
    assert res["PCP"] == pytest.approx(pcp, abs=1e-12)
    assert res["AP_p_50"] == pytest.approx(ap[4], abs=1e-12)
    assert res["PCP_50"] == pytest.approx(pcp[4], abs=1e-12)
    assert res["AP_p_vol"] == pytest.approx(sum(ap) / 9, abs=1e-12)
    json.dumps(res, allow_nan=False)


def test_pair_iou_values():
    iou = pairwise_part_iou([GA, GB], [GA, PB_HALF], 3)
    expect = np.array([[[1, 1, np.nan], [10 / 16, 0, 0]], [[8 / 16, 0, 0], [6 / 7, np.nan, 0.5]]])
    np.testing.assert_allclose(iou, expect, rtol=0, atol=1e-15)
    # vectorised pair IoU == per-pair fast_hist
    for i, g in enumerate([GA, GB]):
        for j, p in enumerate([GA, PB_HALF]):
            h = fast_hist(g, p, 3)
            with np.errstate(invalid="ignore"):
                ref = np.diag(h) / (h.sum(1) + h.sum(0) - np.diag(h))
            np.testing.assert_array_equal(iou[i, j], ref)
    q = pairwise_part_iou([QG], [np.zeros((10, 10), np.uint8)], 3)
    assert np.nanmean(q) == pytest.approx(0.28, abs=1e-12)


def test_ignore_label_255():
    # A's bottom-right pixel is 'ignore': predicting anything there changes nothing.
    g = GA.copy()
    g[1, 1] = 255
    p = GA.copy()
    p[1, 1] = 2  # label 2 only at an ignored pixel -> class 2 stays NaN
    iou = pairwise_part_iou([g], [p], 3)[0, 0]
    np.testing.assert_array_equal(iou[:2], [1.0, 1.0])
    assert np.isnan(iou[2])
    res = evaluate_parsing([[g]], [[(p, 0.5)]], 3)
    assert res["AP_p"] == [1.0] * 9 and res["PCP"] == [1.0] * 9
    assert res["mIoU"] == 1.0 and res["pixel_acc"] == 1.0  # ignored pixel not in the semantic matrix
    # a GT person made only of ignore pixels is not empty (pixel > 0) and is kept in npos
    only_ignore = np.full(S, 0, np.uint8)
    only_ignore[0, 0] = 255
    assert evaluate_parsing([[GA, only_ignore]], [[(GA, 0.9)]], 3)["num_gt"] == 2


@pytest.mark.parametrize("gt_dtype,pred_dtype", [(np.uint16, np.int64), (np.int32, np.uint64), (np.int64, np.uint16)])
def test_integer_dtypes(gt_dtype, pred_dtype):
    ref = evaluate_parsing([[GA, GB]], [[(GA, 0.9), (PB_HALF, 0.8)]], 3)
    got = evaluate_parsing([[GA.astype(gt_dtype), GB.astype(gt_dtype)]],
                           [[(GA.astype(pred_dtype), 0.9), (PB_HALF.astype(pred_dtype), 0.8)]], 3)
    assert got == ref


def test_npos_zero_gives_none():
    res = evaluate_parsing([[], [np.zeros(S, np.uint8)]], [[(GA, 0.9)], []], 3)
    assert res["num_gt"] == 0 and res["num_pred"] == 1
    assert res["AP_p"] == [None] * 9 and res["AP_p_50"] is None and res["AP_p_vol"] is None
    assert res["PCP"] == [None] * 9
    json.dumps(res, allow_nan=False)


@pytest.mark.parametrize("gts,preds,kw,match", [
    ([[GA]], [[(box(S, 0, 1, 0, 1, 3), 0.5)]], {}, "image 0, prediction 0: predicted label 3"),
    ([[GA], [GB]], [[], [(GB, 0.5), (box(S, 0, 1, 0, 1, 7), 0.4)]], {}, "image 1, prediction 1: predicted label 7"),
    ([[GA]], [[(np.zeros((4, 5), np.uint8), 0.5)]], {}, "image 0: GT and prediction maps differ in shape"),
    ([[GA]], [[(GA, float("nan"))]], {}, "score nan"),
    ([[GA]], [[(GA.astype(np.float32), 0.5)]], {}, "integer label map"),
    ([[GA]], [[], []], {}, "gts has 1 images but preds has 2"),
    ([[GA]], [[(GA, 0.5)]], {"semantic_preds": [box(S, 0, 1, 0, 1, 9)]}, "image 0, semantic prediction"),
    ([[GA]], [[(GA, 0.5)]], {"protocol": "coco"}, "protocol"),
])
def test_bad_inputs(gts, preds, kw, match):
    with pytest.raises(ValueError, match=match):
        evaluate_parsing(gts, preds, 3, **kw)


def test_semantic_miou_hand_made():
    # 2x2 image, n = 3. GT persons A = [[1,1],[0,0]], B = [[0,2],[0,0]]: B painted over A
    # -> GT semantic [[1,2],[0,0]]. Predictions p1 (0.9) = [[1,1],[0,0]], p2 (0.5) = [[0,2],[2,0]],
    # painted in ascending score (p1 on top) -> [[1,1],[2,0]].
    # Confusion (GT row, pred column): (0,0)=1, (0,2)=1, (1,1)=1, (2,1)=1.
    # IoU0 = 1/(2+1-1) = 1/2, IoU1 = 1/(1+2-1) = 1/2, IoU2 = 0/(1+1) = 0 -> mIoU 1/3.
    # pixel acc 2/4; mean acc = mean(1/2, 1/1, 0/1) = 1/2.
    a = np.array([[1, 1], [0, 0]], np.uint8)
    b = np.array([[0, 2], [0, 0]], np.uint8)
    p1, p2 = a.copy(), np.array([[0, 2], [2, 0]], np.uint8)
    res = evaluate_parsing([[a, b]], [[(p1, 0.9), (p2, 0.5)]], 3)
    assert res["per_class_IoU"] == pytest.approx([0.5, 0.5, 0.0])
    assert res["mIoU"] == pytest.approx(1 / 3) and res["pixel_acc"] == 0.5 and res["mean_acc"] == 0.5
    # a semantic map given by the caller replaces the painted persons
    res = evaluate_parsing([[a, b]], [[(p1, 0.9), (p2, 0.5)]], 3, semantic_preds=[np.array([[1, 2], [0, 0]])])
    assert res["mIoU"] == 1.0
    # Parsing R-CNN: p2 (0.2 < 0.3) not painted -> pred [[1,1],[0,0]]: (0,0)=2, (1,1)=1, (2,1)=1
    # -> IoU0 = 2/2, IoU1 = 1/2, IoU2 = 0 -> mIoU 1/2. A 2nd image without detections is left
    # out under prcnn, but counted (all-background prediction) under mhp.
    gts = [[a, b], [a]]
    preds = [[(p1, 0.9), (p2, 0.2)], []]
    pr = evaluate_parsing(gts, preds, 3, protocol="prcnn")
    assert pr["mIoU"] == pytest.approx(0.5) and pr["num_semantic_images"] == 1
    mh = evaluate_parsing(gts, preds, 3, protocol="mhp")
    # mhp: image 1 as above ([[1,1],[2,0]] vs [[1,2],[0,0]]) plus image 2, all zeros vs [[1,1],[0,0]]:
    # (0,0) = 1 + 2, (0,2) = 1, (1,1) = 1, (2,1) = 1, (1,0) = 2
    # -> IoU0 = 3/(4+5-3) = 1/2, IoU1 = 1/(3+2-1) = 1/4, IoU2 = 0 -> mIoU 1/4.
    assert mh["mIoU"] == pytest.approx(0.25) and mh["num_semantic_images"] == 2
    # semantic GT given by the caller (e.g. CIHP Category_ids)
    pr2 = evaluate_parsing(gts, preds, 3, protocol="prcnn", semantic_gts=[np.array([[1, 1], [0, 0]]), a])
    assert pr2["mIoU"] == 1.0


# ---------------------------------------------------------------- naive reference (pure python)
def _naive_pair_iou(gmap: np.ndarray, pmap: np.ndarray, n: int) -> list[float]:
    """cal_one_mean_iou, literally: confusion over pixels with 0 <= GT < n, IoU per class."""
    hist = [[0] * n for _ in range(n)]
    for grow, prow in zip(gmap.tolist(), pmap.tolist()):
        for g, p in zip(grow, prow):
            if 0 <= g < n:
                hist[g][p] += 1
    out = []
    for c in range(n):
        inter, gsum, psum = hist[c][c], sum(hist[c]), sum(hist[r][c] for r in range(n))
        union = gsum + psum - inter
        out.append(inter / union if union else math.nan)
    return out


def _numpy_pair_iou(gmap, pmap, n):
    h = fast_hist(gmap, pmap, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return list(np.diag(h) / (h.sum(1) + h.sum(0) - np.diag(h)))


def naive_ap_pcp(gts, preds, n, protocol="mhp", thresholds=T, pair_iou=_naive_pair_iou):
    """metrics.md steps 1-6 and PCP, transcribed with loops. Returns (AP list, PCP list)."""
    # 1. GT records
    recs = [[g for g in persons if protocol == "prcnn" or (np.asarray(g) > 0).any()] for persons in gts]
    npos = sum(len(r) for r in recs)
    # 2. ranking: python's sort is stable, like argsort(kind="stable")
    flat = [(i, j, float(s)) for i, ps in enumerate(preds) for j, (_, s) in enumerate(ps)]
    ranked = sorted(flat, key=lambda r: -r[2])
    # 3-4. best GT of every prediction (independent of the threshold)
    best = []
    for i, j, s in ranked:
        ovmax, jmax, ious_max = -math.inf, -1, None
        for k, g in enumerate(recs[i]):
            ious = pair_iou(g, preds[i][j][0], n)
            vals = [x for x in ious if not math.isnan(x)]
            m = sum(vals) / len(vals) if vals else math.nan
            if m > ovmax:
                ovmax, jmax, ious_max = m, k, ious
        best.append((ovmax, jmax, ious_max))
    aps, pcps = [], []
    for t in thresholds:
        taken = [[False] * len(r) for r in recs]
        tp, fp, pcp_vals = [], [], []
        for (i, j, s), (ovmax, jmax, ious) in zip(ranked, best):
            if protocol == "prcnn" and s < 0.001:
                continue
            if ovmax > t and not taken[i][jmax]:  # 5. assignment
                taken[i][jmax] = True
                tp.append(1.0)
                fp.append(0.0)
                labels = {v for v in np.unique(recs[i][jmax]).tolist() if 0 < v < n}
                pcp_n = sum(1 for x in ious[1:] if x > t)
                pcp_vals.append(pcp_n / len(labels) if labels else 0.0)
            else:
                tp.append(0.0)
                fp.append(1.0)
        # 6. AP: cumulative counts, all-point interpolated voc_ap
        rec, prec, ctp, cfp = [], [], 0.0, 0.0
        for a, b in zip(tp, fp):
            ctp, cfp = ctp + a, cfp + b
            rec.append(ctp / npos if npos else math.nan)
            prec.append(ctp / max(ctp + cfp, np.finfo(np.float64).eps))
        mrec, mpre = [0.0] + rec + [1.0], [0.0] + prec + [0.0]
        for k in range(len(mpre) - 1, 0, -1):
            mpre[k - 1] = max(mpre[k - 1], mpre[k])
        aps.append(sum((mrec[k + 1] - mrec[k]) * mpre[k + 1] for k in range(len(mrec) - 1) if mrec[k + 1] != mrec[k])
                   if npos else None)
        pcps.append(sum(pcp_vals + [0.0] * (npos - len(pcp_vals))) / npos if npos else None)
    return aps, pcps


def _random_case(rng: np.random.Generator, n: int = 5):
    h, w = int(rng.integers(3, 8)), int(rng.integers(3, 8))
    gts, preds = [], []
    score_pool = [0.9, 0.5, 0.5, 0.3, 0.0005]
    for _ in range(int(rng.integers(1, 4))):
        persons = []
        for _ in range(int(rng.integers(0, 4))):
            g = np.zeros((h, w), np.uint8)
            if rng.random() > 0.15:  # some people are empty
                y0, x0 = rng.integers(0, h), rng.integers(0, w)
                y1, x1 = rng.integers(y0 + 1, h + 1), rng.integers(x0 + 1, w + 1)
                g[y0:y1, x0:x1] = rng.integers(1, n, size=(y1 - y0, x1 - x0))
                if rng.random() < 0.3:
                    g[rng.integers(0, h), rng.integers(0, w)] = 255
            persons.append(g)
        ps = []
        for _ in range(int(rng.integers(0, 5))):
            if persons and rng.random() < 0.6:  # a noisy copy of a GT person
                p = persons[int(rng.integers(len(persons)))].copy()
                p[p == 255] = 0
                noise = rng.random((h, w)) < 0.2
                p[noise] = rng.integers(0, n, size=int(noise.sum()))
            else:
                p = np.where(rng.random((h, w)) < 0.4, rng.integers(0, n, size=(h, w)), 0).astype(np.uint8)
            s = score_pool[int(rng.integers(len(score_pool)))] if rng.random() < 0.5 else float(rng.random())
            ps.append((p, s))
        gts.append(persons)
        preds.append(ps)
    return gts, preds


@pytest.mark.parametrize("seed", range(50))
def test_matches_naive_reference(seed):
    rng = np.random.default_rng(seed)
    gts, preds = _random_case(rng)
    for protocol in ("mhp", "prcnn"):
        ap, pcp = naive_ap_pcp(gts, preds, 5, protocol)
        res = evaluate_parsing(gts, preds, 5, protocol=protocol)
        for got, ref in ((res["AP_p"], ap), (res["PCP"], pcp)):
            for g, r in zip(got, ref):
                assert (g is None and r is None) or abs(g - r) <= 1e-12, (protocol, got, ref)


def test_voc_ap_definition():
    # (1/npos) * sum over TP ranks of max_{j>=k} prec_j: tp = [1,0,1,0,1], npos = 4
    tp = np.array([1, 0, 1, 0, 1.0])
    ctp, cfp = np.cumsum(tp), np.cumsum(1 - tp)
    prec = ctp / (ctp + cfp)
    expected = (1 + 2 / 3 + 3 / 5) / 4
    assert voc_ap(ctp / 4, prec) == pytest.approx(expected, abs=1e-15)


# ---------------------------------------------------------------- prediction folder
def _parsing(persons: list[np.ndarray], scores) -> FrameParsing:
    part = np.zeros(persons[0].shape, np.uint8)
    inst = np.zeros(persons[0].shape, np.uint16)
    for k, p in enumerate(persons):
        part[p > 0] = p[p > 0]
        inst[p > 0] = k + 1
    return FrameParsing(part=part, instance=inst, scores=np.asarray(scores, np.float32))


def test_prediction_round_trip(tmp_path):
    fp = _parsing([GA, GB], [0.9, 0.123456789])
    write_prediction(tmp_path, "img1", fp)
    back = read_prediction(tmp_path, "img1")
    np.testing.assert_array_equal(back.part, fp.part)
    np.testing.assert_array_equal(back.instance, fp.instance)
    np.testing.assert_array_equal(back.scores, fp.scores)  # float32 exact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img1_instance.png", "img1_part.png", "img1_scores.txt"]
    import cv2

    assert cv2.imread(str(tmp_path / "img1_instance.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint8


def test_prediction_round_trip_16bit(tmp_path):
    import cv2

    rng = np.random.default_rng(0)
    k = 300  # > 255 people -> 16-bit instance PNG
    inst = (np.arange(20 * 30).reshape(20, 30) % k + 1).astype(np.uint16)
    part = rng.integers(0, 20, size=(20, 30)).astype(np.uint8)
    scores = rng.random(k).astype(np.float32)
    fp = FrameParsing(part=part, instance=inst, scores=scores)
    write_prediction(tmp_path, "many", fp)
    assert cv2.imread(str(tmp_path / "many_instance.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    back = read_prediction(tmp_path, "many", expected_shape=(20, 30))
    np.testing.assert_array_equal(back.instance, inst)
    np.testing.assert_array_equal(back.part, part)
    np.testing.assert_array_equal(back.scores, scores)
    assert back.instance.dtype == np.uint16 and back.num_instances == k


def test_prediction_empty_person_dropped(tmp_path):
    # person 2 has no pixel: not representable, dropped and person 3 renumbered 2
    inst = np.zeros(S, np.uint16)
    inst[0, 0], inst[3, 3] = 1, 3
    fp = FrameParsing(part=(inst > 0).astype(np.uint8), instance=inst, scores=np.array([0.9, 0.8, 0.7], np.float32))
    write_prediction(tmp_path, "x", fp)
    back = read_prediction(tmp_path, "x")
    assert back.scores.tolist() == pytest.approx([0.9, 0.7]) and back.instance[3, 3] == 2


def test_prediction_errors(tmp_path):
    import cv2

    write_prediction(tmp_path, "a", _parsing([GA, GB], [0.9, 0.8]))
    with pytest.raises(PredictionError, match=r"b_part\.png: missing prediction file"):
        read_prediction(tmp_path, "b")
    with pytest.raises(PredictionError, match=r"a_part\.png: size 4x4 does not match the image 5x4"):
        read_prediction(tmp_path, "a", expected_shape=(4, 5))
    (tmp_path / "a_scores.txt").write_text("0.9\n")
    with pytest.raises(PredictionError, match=r"a_scores\.txt: 1 scores but a_instance\.png has person ids up to 2"):
        read_prediction(tmp_path, "a")
    (tmp_path / "a_scores.txt").write_text("0.9\nabc\n")
    with pytest.raises(PredictionError, match=r"a_scores\.txt: unreadable scores"):
        read_prediction(tmp_path, "a")
    (tmp_path / "a_scores.txt").write_text("0.9\n0.8\n")
    cv2.imwrite(str(tmp_path / "a_instance.png"), np.zeros((4, 6), np.uint8))
    with pytest.raises(PredictionError, match=r"a_instance\.png: size 6x4 does not match a_part\.png 4x4"):
        read_prediction(tmp_path, "a")
    (tmp_path / "a_part.png").write_bytes(b"not a png")
    with pytest.raises(PredictionError, match=r"a_part\.png: unreadable PNG"):
        read_prediction(tmp_path, "a")


# ---------------------------------------------------------------- real CIHP category maps
def _real_persons(real_data: Path):
    """Per image: (label map, person maps) with persons = connected components (area >= 1000) of
    ``labels > 0 & edges == 0`` (the approximation described in the data README)."""
    import cv2
    from PIL import Image

    folder = real_data / "cihp_pgn_samples"
    if not (folder / "labels").is_dir():
        pytest.skip(f"CIHP samples absent: {folder}")
    out = []
    for lab_path in sorted((folder / "labels").glob("*.png")):
        lab = np.asarray(Image.open(lab_path))
        edge = np.asarray(Image.open(folder / "edges" / lab_path.name))
        fg = ((lab > 0) & (edge == 0)).astype(np.uint8)
        num, cc, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=4)
        persons = [np.where(cc == c, lab, 0).astype(np.uint8) for c in range(1, num) if stats[c, 4] >= 1000]
        out.append((lab, persons))
    return out


@pytest.fixture(scope="module")
def cihp_real(request):
    real_data = request.getfixturevalue("real_data")
    return _real_persons(real_data)


def _perfect(cihp_real, fn=lambda p: p):
    # scores decreasing over the whole set, so the ranking is unambiguous
    gts, preds, s = [], [], 1.0
    for _, persons in cihp_real:
        gts.append(persons)
        ps = []
        for p in persons:
            ps.append((fn(p), s))
            s -= 0.01
        preds.append(ps)
    return gts, preds


def _erode(p):
    import cv2

    out = np.zeros_like(p)
    for c in np.unique(p[p > 0]):
        m = cv2.erode((p == c).astype(np.uint8), np.ones((5, 5), np.uint8))
        out[m > 0] = c
    return out


def test_real_perfect(cihp_real):
    gts, preds = _perfect(cihp_real)
    assert sum(len(g) for g in gts) == 17  # 2 + 7 + 3 + 3 + 2 components
    res = evaluate_parsing(gts, preds, 20)
    assert res["AP_p"] == [1.0] * 9 and res["PCP"] == [1.0] * 9
    assert res["mIoU"] == 1.0 and res["pixel_acc"] == 1.0 and res["num_gt"] == 17
    # the real Category_ids maps as semantic GT and prediction (prcnn option)
    labels = [lab for lab, _ in cihp_real]
    res = evaluate_parsing(gts, preds, 20, protocol="prcnn", semantic_gts=labels, semantic_preds=labels)
    assert res["mIoU"] == 1.0 and res["AP_p_vol"] == 1.0


def test_real_drop_one_person(cihp_real):
    # 16 of 17 people predicted perfectly, precision 1 at every rank: voc_ap = sum of recall steps
    # 16 * (1/17) * 1, and the last step (16/17 -> 1) has envelope 0 -> AP = 16/17 at every t.
    # PCP: 16 people at 1, one padded 0 -> 16/17.
    gts, preds = _perfect(cihp_real)
    preds[1] = preds[1][1:]
    res = evaluate_parsing(gts, preds, 20)
    assert res["AP_p"] == pytest.approx([16 / 17] * 9, abs=1e-12)
    assert res["PCP"] == pytest.approx([16 / 17] * 9, abs=1e-12)
    assert res["mIoU"] < 1.0


@pytest.mark.parametrize("perturb", ["erode", "shift", "swap_lr", "duplicate_first"])
def test_real_perturbed_lower(cihp_real, perturb):
    base = evaluate_parsing(*_perfect(cihp_real), 20)
    flip = CIHP.flip_lut()
    fns = {"erode": _erode, "shift": lambda p: np.roll(p, 6, axis=1), "swap_lr": lambda p: flip[p]}
    gts, preds = _perfect(cihp_real, fns.get(perturb, lambda p: p))
    if perturb == "duplicate_first":  # a copy of person 0 ranked first -> its original is an FP
        preds[0] = [(preds[0][0][0], 2.0)] + preds[0]
    res = evaluate_parsing(gts, preds, 20)
    assert res["AP_p_vol"] < base["AP_p_vol"]
    if perturb != "duplicate_first":
        assert res["mIoU"] < base["mIoU"] and sum(res["PCP"]) < sum(base["PCP"])
    else:
        # ranks: dup TP, original FP, 16 TPs: AP = 1/17 + 16/17 * (17/18 envelope) at every t
        # (prec after the FP: (k)/(k+1) for k = 2..17, envelope = max to the right = 17/18)
        assert res["AP_p"] == pytest.approx([1 / 17 + 16 / 17 * 17 / 18] * 9, abs=1e-12)
        assert res["mIoU"] == 1.0


def test_real_matches_reference(cihp_real):
    # mixed perturbations and scores with ties, checked against the loop reference (numpy hist)
    rng = np.random.default_rng(7)
    flip = CIHP.flip_lut()
    gts, preds = [], []
    for _, persons in cihp_real:
        gts.append(persons)
        ps = []
        for p in persons:
            choice = rng.integers(4)
            q = [p, _erode(p), np.roll(p, 15, axis=0), flip[p]][choice]
            ps.append((q, float(rng.choice([0.9, 0.7, 0.7, 0.2]))))
        if persons:
            ps.append((persons[0], 0.7))  # duplicate with a tied score
        preds.append(ps)
    res = evaluate_parsing(gts, preds, 20)
    ap, pcp = naive_ap_pcp(gts, preds, 20, pair_iou=_numpy_pair_iou)
    assert res["AP_p"] == pytest.approx(ap, abs=1e-12) and res["PCP"] == pytest.approx(pcp, abs=1e-12)


# ---------------------------------------------------------------- CLI
def _write_cihp(root: Path, images: dict[str, list[np.ndarray]]) -> None:
    """CIHP layout: Images/<id>.jpg, Category_ids/<id>.png, Human_ids/<id>.png, val_id.txt."""
    from PIL import Image

    for sub in ("Images", "Category_ids", "Human_ids", "Instance_ids"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for image_id, persons in images.items():
        cat = np.zeros(persons[0].shape, np.uint8)
        hum = np.zeros(persons[0].shape, np.uint8)
        for k, p in enumerate(persons):
            cat[p > 0] = p[p > 0]
            hum[p > 0] = k + 1
        Image.fromarray(np.full(cat.shape + (3,), 128, np.uint8)).save(root / "Images" / f"{image_id}.jpg")
        Image.fromarray(cat).save(root / "Category_ids" / f"{image_id}.png")
        Image.fromarray(hum).save(root / "Human_ids" / f"{image_id}.png")
    (root / "val_id.txt").write_text("\n".join(images) + "\n")


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "streamparse.cli", "eval", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture()
def cli_set(tmp_path):
    # 8x10 images (80 px).
    # a: person 1 = label 1 (rows 0-3) + label 2 (rows 4-7) in cols 0-1; person 2 = label 5, cols 6-7.
    #    prediction: person 1 exactly (score 0.9); person 2 missed.
    # b: person = label 13, rows 2-5, cols 2-5. Predictions: exact (0.8) and a false positive of
    #    label 2 on rows 0-1, cols 8-9 (0.95). FP vs b: bg 60/80 = 3/4, c2 0, c13 0 -> 0.25.
    sh = (8, 10)
    p1 = box(sh, 4, 8, 0, 2, 2, base=box(sh, 0, 4, 0, 2, 1))
    p2 = box(sh, 0, 8, 6, 8, 5)
    b1 = box(sh, 2, 6, 2, 6, 13)
    fpos = box(sh, 0, 2, 8, 10, 2)
    data = tmp_path / "data"
    _write_cihp(data, {"a": [p1, p2], "b": [b1]})
    pred = tmp_path / "pred"
    write_prediction(pred, "a", _parsing([p1], [0.9]))
    write_prediction(pred, "b", _parsing([b1, fpos], [0.8, 0.95]))
    return tmp_path, data, pred


def test_cli_pred_dir(cli_set):
    tmp, data, pred = cli_set
    out = tmp / "out" / "m.json"
    r = _cli("--data", str(data), "--pred-dir", str(pred), "--json", str(out), cwd=tmp)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    for key in ("AP_p", "AP_p_50", "AP_p_vol", "PCP", "PCP_50", "mIoU", "per_class_IoU", "mean_acc", "pixel_acc",
                "num_gt", "num_pred", "num_images"):
        assert key in res
    assert (res["num_gt"], res["num_pred"], res["num_images"]) == (3, 3, 2)
    # Ranking FP (0.95, b), a1 (0.9), b1 (0.8); npos 3.
    # t = 0.1, 0.2: the FP takes b (0.25 > t), a1 TP, b1 FP: rec [1/3, 2/3, 2/3], prec [1, 1, 2/3]
    #   -> AP 2/3; PCP (0 [FP's c13 IoU 0] + 1 + 0 pad)/3 = 1/3.
    # t >= 0.3: FP, TP, TP: rec [0, 1/3, 2/3], prec [0, 1/2, 2/3] -> envelope 2/3 -> AP 4/9;
    #   PCP (1 + 1 + 0)/3 = 2/3.
    assert res["AP_p"] == pytest.approx([2 / 3] * 2 + [4 / 9] * 7, abs=1e-12)
    assert res["PCP"] == pytest.approx([1 / 3] * 2 + [2 / 3] * 7, abs=1e-12)
    assert res["AP_p_50"] == pytest.approx(4 / 9) and res["AP_p_vol"] == pytest.approx(40 / 81)
    # Semantic (mhp: the part PNG is the semantic prediction), 160 px:
    # (0,0) = 48 + 60, (0,2) = 4, (1,1) = 8, (2,2) = 8, (5,0) = 16, (13,13) = 16.
    # IoU0 = 108/(112+124-108) = 27/32, IoU1 = 1, IoU2 = 8/12, IoU5 = 0, IoU13 = 1 -> mean 337/480.
    assert res["mIoU"] == pytest.approx(337 / 480)
    assert res["pixel_acc"] == pytest.approx(140 / 160)
    assert res["mean_acc"] == pytest.approx((27 / 28 + 3) / 5)
    assert res["per_class_IoU"][3] is None and res["per_class_IoU"][5] == 0.0
    assert "AP^p" in r.stdout


def test_cli_errors(cli_set):
    tmp, data, pred = cli_set
    cases = [
        (["--data", str(tmp / "nope"), "--pred-dir", str(pred)], "dataset folder not found"),
        (["--data", str(data), "--pred-dir", str(tmp / "nope")], "prediction folder not found"),
        (["--data", str(data)], "nothing to evaluate"),
        (["--data", str(data), "--split", "test", "--pred-dir", str(pred)], "test_id.txt"),
    ]
    (pred / "b_scores.txt").unlink()
    cases.append((["--data", str(data), "--pred-dir", str(pred)], "b_scores.txt: missing prediction file"))
    for args, msg in cases:
        r = _cli(*args, cwd=tmp)
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("streamparse eval: error:") and msg in lines[0], r.stderr
