"""Multi-human parsing metrics (AP^p, AP^p_vol, PCP, semantic mIoU) and the prediction-folder format.

Pure numpy; the definitions are those of ``docs/metrics.md`` (MHP v2 official / UniParser by
default, Parsing R-CNN as ``protocol="prcnn"``):

* per (GT person, prediction) pair of an image, an n x n confusion matrix over the pixels whose GT
  label is in [0, n) (labels >= n, e.g. 255, and < 0 are ignored), IoU_c = I/(G + P - I) for every
  class *including background*, matching score = ``nanmean`` of that vector;
* all predictions of the set ranked by score, highest first, with ``np.argsort(-score,
  kind="stable")``: **ties keep input order** (image by image, person by person within an image).
  The reference code uses numpy's default unstable sort, whose tie order is implementation-defined;
* greedy VOC assignment per threshold t (strict ``>``; each t has its own taken flags; the best GT
  is the first argmax of the matching score, NaN never wins; a duplicate of a taken GT is an FP);
* AP = all-point interpolated ``voc_ap``; PCP = mean over the npos GT people of (parts of the
  matched GT with part IoU > t) / (parts of the GT), 0 for unmatched people;
* semantic mIoU from one data-set-level confusion matrix, background included.

Painted semantic predictions use a stable ascending sort of the scores (equal scores: the later
person is on top). An image with neither GT people nor predictions has no known size and adds
nothing to the semantic matrix. ``num_pred`` counts the ranked predictions (prcnn: score >= 0.001).

Undefined values (NaN: npos = 0, or an empty semantic confusion matrix) are reported as ``None``
so the result is strict JSON. With zero predictions in the whole set (and npos > 0), AP and PCP
are 0, where the reference implementations crash.

Memory: ``ParsingEvaluator.add`` reduces each image at once to one row per prediction (best GT,
its matching score and per-class IoU vector), so a data set is evaluated in streaming fashion.
"""

from __future__ import annotations

import math
import warnings
from typing import Iterable, Sequence

import numpy as np


DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(i / 10 for i in range(1, 10))
PROTOCOLS = ("mhp", "prcnn")
PRCNN_SCORE_THRESH = 0.001  # Parsing R-CNN PRCNN.SCORE_THRESH: lower scores are neither TP nor FP
PRCNN_SEMSEG_SCORE_THRESH = 0.3  # Parsing R-CNN PRCNN.SEMSEG_SCORE_THRESH (CIHP value)

__all__ = [
    "DEFAULT_THRESHOLDS", "PROTOCOLS", "ParsingEvaluator", "evaluate_parsing", "fast_hist", "voc_ap",
    "pairwise_part_iou", "paint_persons", "PredictionError", "write_prediction", "read_prediction",
]


# ----------------------------------------------------------------------------------- primitives
def fast_hist(gt: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """int64[n, n] confusion matrix (row = GT label, column = prediction) over pixels with 0 <= GT < n.

    ``pred`` must already be checked to lie in [0, n)."""
    n = num_classes
    gt = np.asarray(gt).ravel()
    pred = np.asarray(pred).ravel()
    keep = (gt >= 0) & (gt < n)
    return np.bincount(n * gt[keep].astype(np.int64) + pred[keep], minlength=n * n).reshape(n, n)


def _iou_from_parts(diag: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return diag / (rows + cols - diag)


def voc_ap(rec: np.ndarray, prec: np.ndarray) -> float:
    """All-point interpolated AP (VOC2010+, ``use_07_metric=False``) of float64[N] recall/precision."""
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # precision envelope from the right
    i = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def pairwise_part_iou(gt_maps: Sequence[np.ndarray], pred_maps: Sequence[np.ndarray], num_classes: int) -> np.ndarray:
    """float64[M, K, n] per-class IoU of every (GT person m, prediction k) pair of one image.

    Equal to ``I/(G+P-I)`` of ``fast_hist(gt_maps[m], pred_maps[k], n)`` (NaN where a class is in
    neither map). Cost O(K*H*W + M*K*|fg(GT)|): the background row comes from whole-image counts.
    Inputs: HxW integer maps, predictions already checked to lie in [0, n).
    """
    gt_fg = [_foreground(g) for g in gt_maps]
    return _pairwise(gt_fg, [np.asarray(p).ravel() for p in pred_maps], num_classes)


def _foreground(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(flat indices of GT != 0, their labels as int64): parts, ignore pixels and negatives."""
    g = np.asarray(g).ravel()
    fg = np.flatnonzero(g)
    return fg, g[fg].astype(np.int64)


def _pairwise(gt_fg: list[tuple[np.ndarray, np.ndarray]], preds_flat: list[np.ndarray], n: int) -> np.ndarray:
    m, k = len(gt_fg), len(preds_flat)
    out = np.full((m, k, n), np.nan)
    if m == 0 or k == 0:
        return out
    preds = np.stack(preds_flat)  # (K, HW)
    offs = (np.arange(k, dtype=np.int64) * n)[:, None]
    counts_all = np.stack([np.bincount(p, minlength=n) for p in preds_flat])  # (K, n)
    eye = np.arange(n)
    for i, (fg, g_fg) in enumerate(gt_fg):
        p_fg = preds[:, fg].astype(np.int64)  # (K, |fg|)
        valid = (g_fg > 0) & (g_fg < n)
        codes = (offs + g_fg[valid]) * n + p_fg[:, valid]
        hist = np.bincount(codes.ravel(), minlength=k * n * n).reshape(k, n, n)
        # GT-background row: every pixel minus the GT != 0 ones
        hist[:, 0, :] = counts_all - np.bincount((p_fg + offs).ravel(), minlength=k * n).reshape(k, n)
        out[i] = _iou_from_parts(hist[:, eye, eye], hist.sum(axis=2), hist.sum(axis=1))
    return out


def paint_persons(maps: Sequence[np.ndarray], order: Iterable[int] | None = None, shape: tuple[int, int] | None = None) -> np.ndarray:
    """int64[H, W] map: ``maps[i]`` painted in ``order`` (default: list order), later ones on top,
    only pixels > 0 painting."""
    if not maps:
        if shape is None:
            raise ValueError("paint_persons: no maps and no shape")
        return np.zeros(shape, dtype=np.int64)
    out = np.zeros(np.asarray(maps[0]).shape, dtype=np.int64)
    for i in range(len(maps)) if order is None else order:
        mp = np.asarray(maps[i])
        on = mp > 0
        out[on] = mp[on]
    return out


def _nan_to_none(x: float) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


def _as_label_map(arr, what: str) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim != 2:
        raise ValueError(f"{what}: expected an HxW label map, got shape {a.shape}")
    if a.dtype == bool:
        a = a.astype(np.uint8)
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{what}: expected an integer label map, got dtype {a.dtype}")
    return a


def _check_pred_labels(p: np.ndarray, n: int, what: str) -> np.ndarray:
    """``p`` as uint8 (int32 if n > 256) after checking that every label is in [0, n)."""
    if p.size:
        hi, lo = int(p.max()), int(p.min())
        if hi >= n or lo < 0:
            raise ValueError(f"{what}: predicted label {hi if hi >= n else lo} outside [0, {n}) (num_classes={n})")
    return p.astype(np.uint8 if n <= 256 else np.int32, copy=False)


def _checked_image(n: int, where: str, gt_persons, preds, semantic_pred, semantic_gt):
    """One image's inputs as label maps, checked (``ValueError`` naming ``where``): (GT maps, predicted
    maps, their scores, semantic prediction, semantic GT, the common (H, W) or None)."""
    gts = [_as_label_map(g, f"{where}, GT person {i}") for i, g in enumerate(gt_persons)]
    pmaps, scores = [], []
    for j, item in enumerate(preds):
        try:
            pm, sc = item
        except (TypeError, ValueError):
            raise ValueError(f"{where}, prediction {j}: expected a (part map, score) pair") from None
        pm = _as_label_map(pm, f"{where}, prediction {j}")
        pm = _check_pred_labels(pm, n, f"{where}, prediction {j}")
        sc = float(sc)
        if not math.isfinite(sc):
            raise ValueError(f"{where}, prediction {j}: score {sc} is not finite")
        pmaps.append(pm)
        scores.append(sc)
    shapes = {a.shape for a in gts + pmaps}
    if semantic_pred is not None:
        semantic_pred = _as_label_map(semantic_pred, f"{where}, semantic prediction")
        semantic_pred = _check_pred_labels(semantic_pred, n, f"{where}, semantic prediction")
        shapes.add(semantic_pred.shape)
    if semantic_gt is not None:
        semantic_gt = _as_label_map(semantic_gt, f"{where}, semantic GT")
        shapes.add(semantic_gt.shape)
    if len(shapes) > 1:
        raise ValueError(f"{where}: GT and prediction maps differ in shape: {sorted(shapes)}")
    return gts, pmaps, scores, semantic_pred, semantic_gt, (shapes.pop() if shapes else None)


# ----------------------------------------------------------------------------------- evaluator
class ParsingEvaluator:
    """Streaming AP^p / PCP / semantic-mIoU evaluator.

    Args:
        num_classes: n, background included (20 CIHP, 59 MHP v2).
        protocol: "mhp" (MHP v2 official = UniParser: empty GT people dropped, no score threshold,
            semantic GT = painted annotations, every image in the mIoU) or "prcnn" (Parsing R-CNN:
            empty GT people counted, scores < ``score_thresh`` skipped, semantic prediction =
            people with score >= ``semseg_score_thresh`` painted, images without predictions left
            out of the mIoU).
        thresholds: matching-score thresholds t (strict ``>``).
        semantic: also accumulate the semantic confusion matrix.
        score_thresh, semseg_score_thresh: override the protocol's values (None = protocol default).
    """

    def __init__(self, num_classes: int, *, protocol: str = "mhp", thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                 semantic: bool = True, score_thresh: float | None = None, semseg_score_thresh: float | None = None):
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.num_classes = n = int(num_classes)
        self.protocol = protocol
        self.thresholds = tuple(float(t) for t in thresholds)
        if not self.thresholds:
            raise ValueError("thresholds must not be empty")
        self.semantic = semantic
        prcnn = protocol == "prcnn"
        self.score_thresh = score_thresh if score_thresh is not None else (PRCNN_SCORE_THRESH if prcnn else None)
        self.semseg_score_thresh = (semseg_score_thresh if semseg_score_thresh is not None
                                    else (PRCNN_SEMSEG_SCORE_THRESH if prcnn else None))
        self.num_images = 0
        self.num_semantic_images = 0
        self.npos = 0
        self._scores: list[np.ndarray] = []  # float64[K] per image
        self._best_gt: list[np.ndarray] = []  # int64[K] global GT id, -1 = no GT won
        self._ovmax: list[np.ndarray] = []  # float64[K] best matching score (-inf = none)
        self._best_iou: list[np.ndarray] = []  # float64[K, n] per-class IoU with the best GT
        self._pcp_d: list[int] = []  # per kept GT: distinct labels 0 < l < n
        self.hist = np.zeros((n, n), dtype=np.int64)

    # ------------------------------------------------------------------ accumulation
    def add(self, gt_persons: Sequence[np.ndarray], preds: Sequence[tuple[np.ndarray, float]], *,
            semantic_pred: np.ndarray | None = None, semantic_gt: np.ndarray | None = None) -> None:
        """Add one image.

        Args:
            gt_persons: per-person GT part maps, HxW integer (0 = background, >= n or < 0 = ignore).
            preds: (part map HxW integer in [0, n), score) per predicted person.
            semantic_pred: HxW semantic prediction; given, it is scored for mIoU instead of the painted persons (either protocol).
            semantic_gt: HxW semantic GT (replaces the painted annotations).
        Raises ValueError (naming the image index) on bad shapes, dtypes, labels or scores.
        """
        where = f"image {self.num_images}"
        gts, pmaps, scores, semantic_pred, semantic_gt, shape = _checked_image(
            self.num_classes, where, gt_persons, preds, semantic_pred, semantic_gt)
        gt_fg = [_foreground(g) for g in gts]
        nonempty = [bool((lab > 0).any()) for _, lab in gt_fg]
        self._add_people(gt_fg, nonempty, pmaps, scores)
        if self.semantic and shape is not None:
            self._add_semantic(gt_fg, nonempty, pmaps, scores, semantic_pred, semantic_gt, shape)
        self.num_images += 1

    def _add_people(self, gt_fg: list, nonempty: list[bool], pmaps: list[np.ndarray], scores: list[float]) -> None:
        """AP^p / PCP records: the GT people kept (MHP drops those with no pixel > 0), and per
        prediction its score, the GT it matches best (by mean part IoU) and that match's IoUs."""
        n = self.num_classes
        kept = [f for f, ok in zip(gt_fg, nonempty) if ok or self.protocol == "prcnn"]
        for _, lab in kept:
            self._pcp_d.append(int(np.count_nonzero(np.bincount(lab[(lab > 0) & (lab < n)], minlength=n))))
        ious = _pairwise(kept, [p.ravel() for p in pmaps], n)  # (M, K, n)
        k = len(pmaps)
        if k:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pairs (fully ignored image)
                mean = np.nanmean(ious, axis=2)  # (M, K)
            mean = np.where(np.isnan(mean), -np.inf, mean)
            if len(kept):
                best = np.argmax(mean, axis=0)  # first maximum, as the reference's strict '>'
                ov = mean[best, np.arange(k)]
                best_iou = ious[best, np.arange(k)]
                best_gt = np.where(np.isfinite(ov), best + self.npos, -1)
            else:
                ov = np.full(k, -np.inf)
                best_iou = np.full((k, n), np.nan)
                best_gt = np.full(k, -1)
            self._scores.append(np.asarray(scores, dtype=np.float64))
            self._best_gt.append(best_gt.astype(np.int64))
            self._ovmax.append(ov.astype(np.float64))
            self._best_iou.append(best_iou)
        self.npos += len(kept)

    def _add_semantic(self, gt_fg: list, nonempty: list[bool], pmaps: list[np.ndarray], scores: list[float],
                      semantic_pred: np.ndarray | None, semantic_gt: np.ndarray | None, shape: tuple[int, int]) -> None:
        """The image's semantic confusion matrix; a missing prediction is the people painted by score
        (highest on top), a missing GT the annotations painted in order."""
        if self.protocol == "prcnn" and semantic_pred is None and not pmaps:
            return  # Parsing R-CNN writes no PNG for an image without detections
        if semantic_pred is None:
            order = np.argsort(np.asarray(scores, dtype=np.float64), kind="stable")  # highest on top
            if self.semseg_score_thresh is not None:
                order = [o for o in order if scores[o] >= self.semseg_score_thresh]
            semantic_pred = paint_persons(pmaps, order, shape)
        if semantic_gt is None:  # annotations in order, later over earlier, pixels > 0
            semantic_gt = np.zeros(shape[0] * shape[1], dtype=np.int64)
            for (fg, lab), ok in zip(gt_fg, nonempty):
                if ok:
                    on = lab > 0
                    semantic_gt[fg[on]] = lab[on]
        self.hist += fast_hist(semantic_gt, semantic_pred, self.num_classes)
        self.num_semantic_images += 1

    # ------------------------------------------------------------------ results
    def compute(self) -> dict:
        """The metrics as a JSON-serializable dict (fractions in [0, 1]; None = undefined)."""
        n, ts = self.num_classes, self.thresholds
        npos = self.npos
        scores = np.concatenate(self._scores) if self._scores else np.zeros(0)
        order = np.argsort(-scores, kind="stable")  # ties: input order (image, then person)
        nd = order.size
        ov = np.concatenate(self._ovmax)[order] if nd else np.zeros(0)
        gid = np.concatenate(self._best_gt)[order] if nd else np.zeros(0, np.int64)
        biou = np.concatenate(self._best_iou)[order] if nd else np.zeros((0, n))
        active = scores[order] >= self.score_thresh if self.score_thresh is not None else np.ones(nd, bool)
        pcp_d = np.asarray(self._pcp_d, dtype=np.int64)
        eps = np.finfo(np.float64).eps
        aps, pcps, ntp = [], [], []
        for t in ts:
            hit = np.flatnonzero(active & (ov > t))
            _, first = np.unique(gid[hit], return_index=True)  # first ranked hit of each GT takes it
            tp_rows = np.sort(hit[first])
            tp = np.zeros(nd)
            tp[tp_rows] = 1.0
            fp = (active & (tp == 0)).astype(np.float64)
            tpc, fpc = np.cumsum(tp), np.cumsum(fp)
            with np.errstate(divide="ignore", invalid="ignore"):
                rec = tpc / float(npos)
                prec = tpc / np.maximum(tpc + fpc, eps)
            aps.append(voc_ap(rec, prec) if npos else math.nan)
            d = pcp_d[gid[tp_rows]] if tp_rows.size else np.zeros(0, np.int64)
            pn = np.sum(biou[tp_rows, 1:] > t, axis=1).astype(np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                vals = np.where(d > 0, pn / np.maximum(d, 1), 0.0)
            pcps.append(float(np.mean(np.concatenate([vals, np.zeros(npos - vals.size)]))) if npos else math.nan)
            ntp.append(int(tp_rows.size))

        def at(values: list[float], t: float) -> float | None:
            return _nan_to_none(values[ts.index(t)]) if t in ts else None

        out = {
            "protocol": self.protocol,
            "num_classes": n,
            "thresholds": list(ts),
            "AP_p": [_nan_to_none(a) for a in aps],
            "AP_p_50": at(aps, 0.5),
            "AP_p_vol": _nan_to_none(np.mean(aps)),
            "PCP": [_nan_to_none(p) for p in pcps],
            "PCP_50": at(pcps, 0.5),
            "num_tp": ntp,
            "num_gt": int(npos),
            "num_pred": int(active.sum()),
            "num_images": int(self.num_images),
        }
        out.update(self._semantic_results())
        return out

    def _semantic_results(self) -> dict:
        if not self.semantic:
            return {"mIoU": None, "per_class_IoU": None, "mean_acc": None, "pixel_acc": None, "num_semantic_images": 0}
        h = self.hist
        diag = np.diag(h)
        iou = _iou_from_parts(diag, h.sum(1), h.sum(0))
        with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            miou = np.nanmean(iou) if iou.size else math.nan
            mean_acc = np.nanmean(diag / h.sum(1))
            pixel_acc = diag.sum() / h.sum() if h.sum() else math.nan
        return {
            "mIoU": _nan_to_none(miou),
            "per_class_IoU": [_nan_to_none(x) for x in iou],
            "mean_acc": _nan_to_none(mean_acc),
            "pixel_acc": _nan_to_none(pixel_acc),
            "num_semantic_images": int(self.num_semantic_images),
        }


def evaluate_parsing(gts: Sequence[Sequence[np.ndarray]], preds: Sequence[Sequence[tuple[np.ndarray, float]]],
                     num_classes: int, protocol: str = "mhp", thresholds: Sequence[float] = DEFAULT_THRESHOLDS, *,
                     semantic: bool = True, semantic_preds: Sequence[np.ndarray] | None = None,
                     semantic_gts: Sequence[np.ndarray] | None = None, score_thresh: float | None = None,
                     semseg_score_thresh: float | None = None) -> dict:
    """Evaluate a whole set at once (see ``ParsingEvaluator`` for the arguments).

    Args:
        gts: per image, a list of HxW GT part maps, one per person (0 = background, >= n ignored).
        preds: per image, a list of (HxW part map, score) per predicted person.
        semantic_preds / semantic_gts: optional per-image HxW semantic maps (None = painted persons).
    Returns a dict with ``AP_p`` (list, one per threshold), ``AP_p_50``, ``AP_p_vol``, ``PCP``,
    ``PCP_50``, ``mIoU``, ``per_class_IoU``, ``mean_acc``, ``pixel_acc``, ``num_gt``, ``num_pred``,
    ``num_images``, ``num_tp`` ...; undefined values are None.
    """
    if len(gts) != len(preds):
        raise ValueError(f"gts has {len(gts)} images but preds has {len(preds)}")
    for name, extra in (("semantic_preds", semantic_preds), ("semantic_gts", semantic_gts)):
        if extra is not None and len(extra) != len(gts):
            raise ValueError(f"{name} has {len(extra)} images but gts has {len(gts)}")
    ev = ParsingEvaluator(num_classes, protocol=protocol, thresholds=thresholds, semantic=semantic,
                          score_thresh=score_thresh, semseg_score_thresh=semseg_score_thresh)
    for i in range(len(gts)):
        ev.add(gts[i], preds[i], semantic_pred=None if semantic_preds is None else semantic_preds[i],
               semantic_gt=None if semantic_gts is None else semantic_gts[i])
    return ev.compute()


# pred-dir IO lives in streamparse.evaluation.predictions (re-exported here for the evaluator's users)
from streamparse.evaluation.predictions import PredictionError, read_prediction, write_prediction  # noqa: E402,F401
