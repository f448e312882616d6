"""Mask-based tracking metrics (HOTA, IDF1, MOTA, ID switches, fragmentations) with TrackEval.

Ground truth: a ``streamparse synth --videos`` GT folder: ``<video>.json`` (``track_ids`` per frame,
persistent identities) and the per-frame person maps in the CIHP (``Human_ids``) or MHPv2
(``parsing_annos``) layout. Predictions: a schema-v2 store's ``instance`` label maps and
``inst_track`` (detections with track 0 are not reported). Per frame, GT and predicted masks are
compared by IoU (one joint histogram of the two label maps); TrackEval's HOTA, CLEAR and Identity
metrics run on those similarities (CLEAR / Identity match at IoU >= 0.5, HOTA averages alpha
0.05..0.95), per video, and combined over videos the way TrackEval combines sequences.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np

SUMMARY = ("HOTA", "DetA", "AssA", "IDF1", "MOTA", "IDSW", "Frag", "IDTP", "IDFP", "IDFN", "CLR_TP", "CLR_FP", "CLR_FN")


class TrackEvalError(ValueError):
    """GT and store that cannot be compared; one line naming the problem."""


def _metrics():
    with contextlib.redirect_stdout(io.StringIO()):  # trackeval prints optional-dataset import errors
        from trackeval.metrics import CLEAR, HOTA, Identity
    return HOTA(), CLEAR({"THRESHOLD": 0.5, "PRINT_CONFIG": False}), Identity({"THRESHOLD": 0.5, "PRINT_CONFIG": False})


def load_gt_info(gt_dir: str | Path, video: str) -> dict:
    path = Path(gt_dir) / f"{video}.json"
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TrackEvalError(f"{path}: cannot read the GT json ({exc})") from None
    ids = info.get("track_ids")
    if not isinstance(ids, list) or not ids or any(not isinstance(x, list) for x in ids):
        raise TrackEvalError(f"{path}: GT without identities (no per-frame track_ids)")
    if len(ids) != len(info.get("num_people", ids)) or any(len(a) != n for a, n in zip(ids, info.get("num_people", map(len, ids)))):
        raise TrackEvalError(f"{path}: track_ids do not match num_people")
    return info


def gt_videos(gt_dir: str | Path) -> list[str]:
    d = Path(gt_dir)
    if not d.is_dir():
        raise TrackEvalError(f"GT folder not found: {d}")
    return sorted(p.stem for p in d.glob("*.json"))


def gt_label_map(gt_dir: Path, video: str, t: int, fmt: str, shape: tuple[int, int]) -> np.ndarray:
    """uint8 (H,W): 0 background, k = the frame's person k (1-based, the order of track_ids[t])."""
    from streamparse.data.cihp import read_label_png

    image_id = f"{video}_{t:06d}"
    if fmt == "cihp":
        return read_label_png(gt_dir / "Human_ids" / f"{image_id}.png")
    lab = np.zeros(shape, np.uint8)
    files = sorted((gt_dir / "parsing_annos").glob(f"{image_id}_*.png"))
    for k, f in enumerate(files, 1):
        lab[read_label_png(f) > 0] = k
    return lab


def _pairwise_iou(gt: np.ndarray, pred: np.ndarray, n_gt: int, pred_ids: np.ndarray) -> np.ndarray:
    """(n_gt, len(pred_ids)) IoU of GT person k+1 with predicted person pred_ids[j]."""
    npred = int(max(pred.max(initial=0), pred_ids.max(initial=0))) + 1
    joint = np.bincount(gt.ravel().astype(np.int64) * npred + pred.ravel(), minlength=(n_gt + 1) * npred)
    joint = joint[: (n_gt + 1) * npred].reshape(n_gt + 1, npred)
    inter = joint[1:, pred_ids].astype(np.float64)
    a_gt = joint[1:].sum(axis=1).astype(np.float64)
    a_pr = joint[:, pred_ids].sum(axis=0).astype(np.float64)
    union = a_gt[:, None] + a_pr[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def sequence_data(gt_ids: list[list[int]], pred_ids: list[np.ndarray], sims: list[np.ndarray]) -> dict:
    """TrackEval's per-sequence dict from per-frame GT ids, tracker ids (any positive ints) and IoUs."""
    gmap = {g: i for i, g in enumerate(sorted({g for fr in gt_ids for g in fr}))}
    tmap = {p: i for i, p in enumerate(sorted({int(p) for fr in pred_ids for p in fr}))}
    return {
        "num_timesteps": len(gt_ids),
        "num_gt_ids": len(gmap), "num_tracker_ids": len(tmap),
        "num_gt_dets": sum(len(f) for f in gt_ids), "num_tracker_dets": sum(len(f) for f in pred_ids),
        "gt_ids": [np.array([gmap[g] for g in f], dtype=int) for f in gt_ids],
        "tracker_ids": [np.array([tmap[int(p)] for p in f], dtype=int) for f in pred_ids],
        "similarity_scores": [np.asarray(s, dtype=float).reshape(len(g), len(p)) for s, g, p in zip(sims, gt_ids, pred_ids)],
    }


def score_sequence(data: dict) -> dict:
    hota, clear, ident = _metrics()
    return {"hota": hota.eval_sequence(data), "clear": clear.eval_sequence(data), "identity": ident.eval_sequence(data)}


def summarize(res: dict) -> dict:
    h, c, i = res["hota"], res["clear"], res["identity"]
    out = {"HOTA": float(np.mean(h["HOTA"])), "DetA": float(np.mean(h["DetA"])), "AssA": float(np.mean(h["AssA"])),
           "IDF1": float(i["IDF1"]), "MOTA": float(c["MOTA"])}
    for k in ("IDSW", "Frag", "CLR_TP", "CLR_FP", "CLR_FN"):
        out[k] = int(c[k])
    for k in ("IDTP", "IDFP", "IDFN"):
        out[k] = int(i[k])
    return out


def combine(per_seq: dict[str, dict]) -> dict:
    hota, clear, ident = _metrics()
    return {"hota": hota.combine_sequences({k: v["hota"] for k, v in per_seq.items()}),
            "clear": clear.combine_sequences({k: v["clear"] for k, v in per_seq.items()}),
            "identity": ident.combine_sequences({k: v["identity"] for k, v in per_seq.items()})}


def load_gt(gt_dir: str | Path, video: str) -> tuple[dict, list[np.ndarray]]:
    """The GT json and every frame's GT person map (uint8 (H,W), see ``gt_label_map``)."""
    info = load_gt_info(gt_dir, video)
    H, W = info["size"]
    return info, [gt_label_map(Path(gt_dir), video, t, info.get("format", "cihp"), (H, W)) for t in range(len(info["track_ids"]))]


ORIGIN_NAMES = ("detected", "recovered", "interpolated")


def new_row_stats() -> dict:
    """Counters of ``video_data``'s ``rows``: GT person-frames, those found (IoU >= 0.5) by the detected rows
    and by all rows, and per origin the rows and the rows that match a GT person."""
    return {"gt": 0, "found_detected": 0, "found_all": 0, **{f"{k}_{o}": 0 for o in ORIGIN_NAMES for k in ("rows", "true")}}


def video_data(gt_dir: str | Path, video: str, instance_maps, inst_offset: np.ndarray, inst_id: np.ndarray,
               inst_track: np.ndarray, gt: tuple[dict, list[np.ndarray]] | None = None,
               inst_origin: np.ndarray | None = None, rows: dict | None = None) -> dict:
    """TrackEval data for one video: ``instance_maps`` indexable (T,H,W) uint16 (a zarr array works),
    ``inst_offset`` (T+1,), ``inst_id`` / ``inst_track`` (N,); ``gt`` = ``load_gt(gt_dir, video)`` when
    already loaded. With ``rows`` (``new_row_stats()``) every row, tracked or not, is also counted against
    the GT there, by its ``inst_origin`` (N,) (default: all detected). GT/prediction mismatches raise
    ``TrackEvalError``."""
    gt_dir = Path(gt_dir)
    info = load_gt_info(gt_dir, video) if gt is None else gt[0]
    T, (H, W) = len(info["track_ids"]), info["size"]
    if len(inst_offset) - 1 != T:
        raise TrackEvalError(f"GT of another video: {video} has {T} GT frames, the store {len(inst_offset) - 1}")
    shape = tuple(instance_maps.shape[1:])
    if shape != (H, W):
        raise TrackEvalError(f"GT of another video: {video} GT is {W}x{H}, the store {shape[1]}x{shape[0]}")
    gt_ids, pred_ids, sims = [], [], []
    for c0 in range(0, T, 64):
        maps = np.asarray(instance_maps[c0 : min(T, c0 + 64)])
        for j, pred in enumerate(maps):
            t = c0 + j
            ids_t = info["track_ids"][t]
            gmap = gt[1][t] if gt is not None else gt_label_map(gt_dir, video, t, info.get("format", "cihp"), (H, W))
            a, b = int(inst_offset[t]), int(inst_offset[t + 1])
            keep = inst_track[a:b] > 0
            iou = _pairwise_iou(gmap, pred, len(ids_t), inst_id[a:b].astype(np.int64))
            gt_ids.append(list(ids_t))
            pred_ids.append(inst_track[a:b][keep].astype(np.int64))
            sims.append(iou[:, keep])
            if rows is not None:
                _count_rows(rows, iou >= 0.5, np.zeros(b - a, np.uint8) if inst_origin is None else inst_origin[a:b])
    return sequence_data(gt_ids, pred_ids, sims)


def _count_rows(rows: dict, hit: np.ndarray, origin: np.ndarray) -> None:
    """Add one frame to ``rows`` (``new_row_stats``): hit (GT people, rows) bool at IoU >= 0.5."""
    rows["gt"] += hit.shape[0]
    for o, name in enumerate(ORIGIN_NAMES):
        sel = origin == o
        rows[f"rows_{name}"] += int(sel.sum())
        rows[f"true_{name}"] += int(hit[:, sel].any(axis=0).sum())
    rows["found_detected"] += int(hit[:, origin == 0].any(axis=1).sum())
    rows["found_all"] += int(hit.any(axis=1).sum())


def row_summary(rows: dict) -> dict:
    """Precision and recall (IoU >= 0.5) of the detected rows and of all rows (what a tracker added too)."""
    n_det, n_all = rows["rows_detected"], sum(rows[f"rows_{o}"] for o in ORIGIN_NAMES)
    t_det, t_all = rows["true_detected"], sum(rows[f"true_{o}"] for o in ORIGIN_NAMES)
    g = max(rows["gt"], 1)
    return {"precision_detected": t_det / max(n_det, 1), "recall_detected": rows["found_detected"] / g,
            "precision_all": t_all / max(n_all, 1), "recall_all": rows["found_all"] / g,
            **{f"rows_{o}": rows[f"rows_{o}"] for o in ORIGIN_NAMES}, **{f"true_{o}": rows[f"true_{o}"] for o in ORIGIN_NAMES}}


def evaluate_store(gt_dir: str | Path, store: str | Path, source: str | None = None,
                   track_override: dict[str, np.ndarray] | None = None) -> dict:
    """{"videos": {video: summary}, "overall": summary} for the store's sources that have GT.

    Sources are paired with GT videos by name (source id == video name); with ``source`` (or a store
    of one source and a GT folder of one video) that pairing is used. ``track_override``: per source,
    an inst_track to score instead of the stored one (the comparison in ``bench track``)."""
    from streamparse.tracking.store import committed, open_store, source_ids

    root = open_store(store)
    sids = source_ids(root)
    videos = gt_videos(gt_dir)
    if not videos:
        raise TrackEvalError(f"no GT videos (<video>.json) in {gt_dir}")
    if source is not None:
        if source not in sids:
            raise TrackEvalError(f"source {source!r} not in {store} (sources: {', '.join(sids)})")
        sids = [source]
    pairs = [(s, s) for s in sids if s in videos]
    if not pairs and len(sids) == 1 and len(videos) == 1:
        pairs = [(sids[0], videos[0])]
    if not pairs:
        raise TrackEvalError(f"no source of {store} has GT in {gt_dir} (sources: {', '.join(sids)}; GT videos: {', '.join(videos[:5])})")
    per_seq, out, rows = {}, {}, new_row_stats()
    for sid, video in pairs:
        g = root[sid]
        t, n = committed(g)
        off = np.append(g["inst_offset"][:t], n).astype(np.int64)
        track = track_override[sid] if track_override and sid in track_override else g["inst_track"][:n]
        origin = g["inst_origin"][:n] if "inst_origin" in g else None
        data = video_data(gt_dir, video, _Committed(g["instance"], t), off, g["inst_id"][:n], track, inst_origin=origin,
                          rows=rows)
        per_seq[video] = score_sequence(data)
        out[video] = summarize(per_seq[video])
    return {"videos": out, "overall": summarize(combine(per_seq)), "rows": row_summary(rows)}


class _Committed:
    """A (T,H,W) view of a zarr array limited to the committed frames."""

    def __init__(self, arr, t: int):
        self.arr, self.shape = arr, (t, *arr.shape[1:])

    def __getitem__(self, sl):
        return self.arr[sl]
