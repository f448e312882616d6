"""`streamparse bench track`: association methods compared on the same stored detections (and
candidates): the online tracker and its ablations, the offline one (``streamparse track``), ByteTrack,
single-cue baselines and the oracle; the detections come from ``streamparse.bench.track_data``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from streamparse.bench.track_data import PRESETS, prepare_bench, write_v2_store  # noqa: F401 (the bench's API)


# ---------------------------------------------------------------------------------- the comparison
def methods(base: dict | None = None) -> dict[str, tuple[str, dict | None]]:
    """Method name -> (mode, Tracker kwargs over ``base``, the full tracker's): mode "online" (the causal
    tracker of ``run``), "offline" (``streamparse track``), "bytetrack" (``trackers``) or "oracle". The
    single-cue baselines (a), (c) use the gates that served each best on the tuning videos (seed 7,
    512-px detections): (a) IoU >= 0.1, (c) cost <= 0.2 (cosine >= 0.6), no re-identification; like
    ByteTrack they see the detections only (no candidates)."""
    b = dict(base or {})
    off = {"recover_iou": 0.0}
    on = {
        "a_iou_only": {**b, **off, "w_emb": 0.0, "w_emb_reid": 0.0, "w_col": 0.0, "reid_cost": 0.0, "iou_gate": 0.1, "max_cost": 0.9},
        "c_embedding_only": {**b, **off, "w_iou": 0.0, "w_col": 0.0, "w_emb": 1.0, "w_emb_reid": 1.0, "max_cost": 0.2, "reid_cost": 0.0},
        "d_full": b,
        "full_no_recovery": {**b, **off},
        "full_no_bridging": {**b, "iou_max_gap": 1},
        "full_no_iou": {**b, "w_iou": 0.0},
        "full_with_embedding": {**b, "w_emb": 0.5},
        "full_no_colour": {**b, "w_col": 0.0},
        "full_static_iou": {**b, "iou_mode": "static"},
        "full_no_reid": {**b, "reid_cost": 0.0},
    }
    offline = {"e_offline": b, "offline_with_backward": {**b, "offline_backward": True},
               "offline_with_interpolation": {**b, "interp_frames": 5}, "offline_no_min_frames": {**b, "offline_min_frames": 0}}
    return {"b_bytetrack": ("bytetrack", None), **{k: ("online", v) for k, v in on.items()},
            **{k: ("offline", v) for k, v in offline.items()}, ORACLE: ("oracle", None)}


# the package's defaults but the two score thresholds, lowered to 0.3 (best of a small grid on the tuning videos)
BYTETRACK_DEFAULTS = {"lost_track_buffer": 30, "track_activation_threshold": 0.3, "minimum_consecutive_frames": 2,
                      "minimum_iou_threshold": 0.1, "high_conf_det_threshold": 0.3}


def bytetrack(tables: dict, fps: float, **params) -> np.ndarray:
    """ByteTrack (roboflow ``trackers``) on the stored boxes and scores -> inst_track (N,) uint32 (0 = none)."""
    import warnings

    import supervision as sv
    from trackers import ByteTrackTracker

    bt = ByteTrackTracker(frame_rate=fps, **{**BYTETRACK_DEFAULTS, **params})
    off, out = tables["inst_offset"], np.zeros(len(tables["inst_id"]), np.uint32)
    for f in range(len(off) - 1):
        a, b = int(off[f]), int(off[f + 1])
        det = sv.Detections(xyxy=tables["inst_bbox"][a:b].astype(np.float64).reshape(-1, 4),
                            confidence=tables["inst_score"][a:b].astype(np.float64), data={"row": np.arange(a, b)})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = bt.update(det)
        if len(res) == 0:
            continue
        tid = np.asarray(res.tracker_id)
        rows = np.asarray(res.data["row"])
        out[rows[tid >= 0]] = tid[tid >= 0] + 1
    return out


def _run(frames: list[dict], kwargs: dict, clock=time.perf_counter) -> tuple[np.ndarray, float]:
    from streamparse.tracking.tracker import Tracker

    tr = Tracker(**kwargs)
    t0 = clock()
    out = [tr.update(**fr) for fr in frames]
    dt = clock() - t0
    return (np.concatenate(out).astype(np.uint32) if out else np.zeros(0, np.uint32)), dt


def gt_frames(gt_dir: str | Path, video: str, num_classes: int = 20) -> tuple[list[dict], dict, list[np.ndarray]]:
    """The GT as detections (upper bound): GT person maps as ``instance``, part-colour signatures from
    the rendered frames and GT parts, no embedding, score 1. Returns (frames, tables, GT maps)."""
    from streamparse.data.cihp import read_image, read_label_png
    from streamparse.labelstats import instance_features
    from streamparse.evaluation.tracks import load_gt

    info, maps = load_gt(gt_dir, video)
    gt_dir = Path(gt_dir)
    frames, ids_all, offs = [], [], [0]
    for t, lab in enumerate(maps):
        image_id = f"{video}_{t:06d}"
        img = read_image(gt_dir / "Images" / f"{image_id}.jpg")
        part = read_label_png(gt_dir / "Category_ids" / f"{image_id}.png")
        inst = lab.astype(np.uint16)
        k = len(info["track_ids"][t])
        pa, rgb = instance_features(img[None], part[None], inst[None], np.array([0, k]), num_classes)
        from streamparse.structures import instance_boxes_areas

        bbox, area = instance_boxes_areas(inst, k)
        frames.append({"instance": inst, "inst_id": np.arange(1, k + 1, dtype=np.uint16), "inst_score": np.ones(k, np.float32),
                       "inst_bbox": bbox, "inst_area": area, "inst_embedding": np.zeros((k, 0), np.float16),
                       "inst_part_area": pa, "inst_part_rgb": rgb, "frame_index": t, "time": t / float(info["fps"]),
                       "segment": 0})
        ids_all.append(np.arange(1, k + 1))
        offs.append(offs[-1] + k)
    tables = {"inst_offset": np.array(offs, np.int64), "inst_id": np.concatenate(ids_all).astype(np.uint16) if ids_all else np.zeros(0, np.uint16)}
    return frames, tables, maps


def timing_frames(n_people: int = 10, num_frames: int = 200, size: tuple[int, int] = (720, 1280), dim: int = 64,
                  num_classes: int = 20, seed: int = 0) -> list[dict]:
    """``n_people`` boxes walking back and forth over a (H,W) label map, with embeddings and colours:
    the input for the ms/frame figure. Every 4th frame one person is not detected but is a low-score
    candidate (the tracker's second stage runs)."""
    rng = np.random.default_rng(seed)
    H, W = size
    x = rng.uniform(0, W, n_people)
    v = rng.uniform(-0.01, 0.01, n_people) * W
    hgt = rng.uniform(0.3, 0.7, n_people) * H
    y = rng.uniform(0, H * 0.3, n_people)
    emb = rng.standard_normal((n_people, dim))
    col = rng.integers(0, 256, (n_people, num_classes, 3))
    out = []
    for t in range(num_frames):
        inst = np.zeros((H, W), np.uint16)
        order = np.argsort(hgt)
        boxes = np.zeros((n_people, 4), np.int32)
        for k in order:
            w = int(hgt[k] * 0.3)
            x0 = int(np.clip(x[k] + v[k] * t, 0, W - w))
            x[k] = x[k] if 0 < x[k] + v[k] * t < W - w else x[k] - 2 * v[k] * t
            y0 = int(y[k])
            inst[y0 : y0 + int(hgt[k]), x0 : x0 + w] = k + 1
            boxes[k] = (x0, y0, x0 + w, y0 + int(hgt[k]))
        area = np.bincount(inst.ravel(), minlength=n_people + 1)[1:]
        pa = np.zeros((n_people, num_classes), np.int32)
        pa[:, 2], pa[:, 5], pa[:, 9] = area // 5, area // 3, area - area // 5 - area // 3
        fr = {"instance": inst, "inst_id": np.arange(1, n_people + 1, dtype=np.uint16),
              "inst_score": np.full(n_people, 0.8, np.float32), "inst_bbox": boxes, "inst_area": area.astype(np.int64),
              "inst_embedding": (emb + 0.05 * rng.standard_normal(emb.shape)).astype(np.float16),
              "inst_part_area": pa, "inst_part_rgb": col.astype(np.uint8), "frame_index": t, "time": t / 25.0, "segment": 0}
        out.append(_as_candidate(fr, t % n_people) if t % 4 == 3 else fr)
    return out


def _as_candidate(fr: dict, k: int) -> dict:
    """Frame ``fr`` with person k+1 moved from the detections to the candidates."""
    n = len(fr["inst_id"])
    keep = np.arange(n) != k
    lut = np.zeros(n + 1, np.uint16)
    lut[1:][keep] = np.arange(1, n, dtype=np.uint16)
    out = {**fr, "instance": lut[fr["instance"]], "inst_id": np.arange(1, n, dtype=np.uint16),
           "cand_instance": (fr["instance"] == k + 1).astype(np.uint8)}
    for name in ("inst_score", "inst_bbox", "inst_area", "inst_embedding", "inst_part_area", "inst_part_rgb"):
        out[name] = fr[name][keep]
    out["candidates"] = {"cand_score": np.full(1, 0.05, np.float32), **{f"cand_{x}": fr[f"inst_{x}"][k:k + 1] for x in (
        "bbox", "embedding", "part_area", "part_rgb")}}
    return out


def tracking_cost_ms(kwargs: dict | None = None, n_people: int = 10, sizes=((256, 384), (720, 1280)), reps: int = 5) -> dict:
    """ms per frame of ``Tracker.update`` on ``timing_frames`` at each label-map size: the median of
    ``reps`` runs in wall-clock time and in this process's CPU time (on a shared machine the CPU time
    is the figure that does not count waiting for a core)."""
    res = {}
    for size in sizes:
        frames = timing_frames(n_people, size=size)
        _run(frames, kwargs or {})  # warm-up
        wall = [_run(frames, kwargs or {})[1] for _ in range(reps)]
        cpu = [_run(frames, kwargs or {}, clock=time.process_time)[1] for _ in range(reps)]
        res[f"{size[0]}x{size[1]}"] = {"wall": 1000.0 * float(np.median(wall)) / len(frames),
                                       "cpu": 1000.0 * float(np.median(cpu)) / len(frames)}
    return res


def _plan(mode: str, kw, frames_grid: list[dict], tab: dict, fps: float, frames_full, gt):
    """A method's ``Plan`` on one video and its CPU seconds (ByteTrack and the oracle: detections only)."""
    from streamparse.tracking.offline import Plan, offline_plan, online_plan

    t0 = time.process_time()
    if mode in ("online", "offline"):
        plan = (online_plan if mode == "online" else offline_plan)(frames_grid, kw)
        return plan, time.process_time() - t0
    track = bytetrack(tab, fps, **(kw or {})) if mode == "bytetrack" else oracle_tracks(frames_full, gt)
    dt = time.process_time() - t0
    off = tab["inst_offset"]
    return Plan([track[off[f]:off[f + 1]] for f in range(len(off) - 1)], [[] for _ in range(len(off) - 1)]), dt


def _video(folder: Path, v: str, gt_dir: Path, gt, meth: dict, base: dict) -> dict:
    """Every method on one video's stored detections: method -> (TrackEval sequence result, row stats, CPU s, frames)."""
    from streamparse.evaluation.tracks import new_row_stats, score_sequence, video_data
    from streamparse.tracking.write import Frames, apply
    from streamparse.tracking.store import iter_frames, open_store, read_tables, source_ids

    root = open_store(folder / f"{v}.zarr")
    g = root[source_ids(root)[0]]
    tab = read_tables(g)
    t = len(tab["frame_index"])
    arrays = {n: np.asarray(g[n][:t]) for n in ("part", "instance", "cand_part", "cand_instance") if n in g}
    frames_full = [dict(fr) for fr in iter_frames(g, tab)]
    frames_grid = list(iter_frames(g, tab, grid=int(base.get("grid", 96))))
    det = _detected_tables(tab)
    out = {}
    for m, (mode, kw) in meth.items():
        plan, dt = _plan(mode, kw, frames_grid, det, float(gt[0]["fps"]), frames_full, gt)
        b = apply(Frames(g, tab, 16, arrays), plan)
        rows = new_row_stats()
        seq = score_sequence(video_data(gt_dir, v, b.instance, b.inst_offset, b.inst_id, b.inst_track, gt=gt,
                                        inst_origin=b.inst_origin, rows=rows))
        out[m] = (seq, rows, dt, t)
    return out


def _detected_tables(tab: dict) -> dict:
    """The detected rows of ``read_tables`` (what ByteTrack sees)."""
    keep = tab["inst_origin"] == 0
    out = {k: tab[k][keep] for k in ("inst_id", "inst_bbox", "inst_score")}
    out["inst_offset"] = np.concatenate([[0], np.cumsum(tab["det_count"])]).astype(np.int64)
    return out


ORACLE = "oracle_gt_identities"


def run_track_bench(data: str | Path, stores: dict[str, str | Path], base: dict | None = None,
                    bytetrack_params: dict | None = None, with_gt: bool = True, progress: bool = False,
                    with_cost: bool = True) -> dict:
    """The comparison. ``data``: a synth folder (``videos_gt/``); ``stores``: preset name -> folder of
    ``<video>.zarr`` stores of the same videos (from ``write_v2_store``, untracked). Every method
    re-associates the same stored detections (and candidates); returns per preset and method the
    overall metrics (and per video), the rows before / after what the tracker added (``row_summary``), the
    trackers' CPU ms/frame on these videos, and the cost at 10 people. ``oracle_gt_identities`` labels
    each detection with the GT identity it overlaps at IoU >= 0.5: the ceiling of any association of
    these detections."""
    from streamparse.config import TrackConfig, to_dict
    from streamparse.evaluation.tracks import combine, load_gt, row_summary, summarize

    gt_dir = Path(data) / "videos_gt"
    videos = sorted(p.stem for p in gt_dir.glob("*.json"))
    base = {**{k: v for k, v in to_dict(TrackConfig()).items() if k != "enabled"}, **(base or {})}
    meth = methods(base)
    meth["b_bytetrack"] = ("bytetrack", {**BYTETRACK_DEFAULTS, **(bytetrack_params or {})})
    res: dict = {"videos": videos, "methods": {k: {"mode": m, "params": kw} for k, (m, kw) in meth.items()},
                 "presets": {}, "bytetrack_params": meth["b_bytetrack"][1]}
    gts = {v: load_gt(gt_dir, v) for v in videos}
    for preset, folder in stores.items():
        per = {m: {} for m in meth}
        rows = {m: {} for m in meth}
        cost = {m: [0.0, 0] for m in meth}
        for v in videos:
            for m, (seq, st, dt, n) in _video(Path(folder), v, gt_dir, gts[v], meth, base).items():
                per[m][v] = seq
                rows[m] = {k: rows[m].get(k, 0) + x for k, x in st.items()}
                cost[m][0] += dt
                cost[m][1] += n
            if progress:
                print(f"{preset} {v}: done", flush=True)
        res["presets"][preset] = {
            m: {"overall": summarize(combine(per[m])), "rows": row_summary(rows[m]), "ms_per_frame": 1000.0 * cost[m][0] / max(cost[m][1], 1),
                "videos": {v: summarize(r) for v, r in per[m].items()}} for m in meth}
    if with_gt:
        res["gt_detections"] = gt_detections(gt_dir, videos, gts, base)
    if with_cost:
        res["cost_ms_per_frame_10_people"] = tracking_cost_ms(base)
    return res


def gt_detections(gt_dir: Path, videos: list[str], gts: dict, base: dict) -> dict:
    """The full tracker and IoU-only on the GT masks as detections (the association upper bound)."""
    from streamparse.evaluation.tracks import combine, score_sequence, summarize, video_data

    meth = methods(base)
    per: dict[str, dict] = {"d_full": {}, "a_iou_only": {}}
    for v in videos:
        frames, tab, maps = gt_frames(gt_dir, v)
        stack = np.stack([f["instance"] for f in frames])
        for m in per:
            track, _ = _run(frames, meth[m][1])
            per[m][v] = score_sequence(video_data(gt_dir, v, stack, tab["inst_offset"], tab["inst_id"], track, gt=gts[v]))
    return {m: {"overall": summarize(combine(r))} for m, r in per.items()}


def format_track_table(res: dict) -> str:
    lines = []
    for preset, rows in res["presets"].items():
        lines.append(f"detections: {preset}")
        lines.append(f"  {'method':<26} {'IDF1':>6} {'HOTA':>6} {'MOTA':>7} {'IDsw':>5} {'Frag':>5} {'prec':>6} {'recall':>6} "
                     f"{'+rec':>5} {'+int':>5} {'CPU ms/frame':>12}")
        for m, r in rows.items():
            o, st = r["overall"], r["rows"]
            lines.append(f"  {m:<26} {o['IDF1']:6.3f} {o['HOTA']:6.3f} {o['MOTA']:7.3f} {o['IDSW']:5d} {o['Frag']:5d} "
                         f"{st['precision_all']:6.3f} {st['recall_all']:6.3f} {st['rows_recovered']:5d} "
                         f"{st['rows_interpolated']:5d} {r['ms_per_frame']:12.3f}")
    for m, r in (res.get("gt_detections") or {}).items():
        o = r["overall"]
        lines.append(f"GT detections, {m:<12} IDF1 {o['IDF1']:.3f} HOTA {o['HOTA']:.3f} MOTA {o['MOTA']:.3f} IDsw {o['IDSW']} Frag {o['Frag']}")
    if "cost_ms_per_frame_10_people" in res:
        lines.append("tracker cost at 10 people (ms/frame, wall / CPU): " + ", ".join(
            f"{k} {v['wall']:.2f} / {v['cpu']:.2f}" for k, v in res["cost_ms_per_frame_10_people"].items()))
    return "\n".join(lines)


def oracle_tracks(frames: list[dict], gt: tuple[dict, list[np.ndarray]]) -> np.ndarray:
    """Each detection labelled with the GT identity it overlaps most at IoU >= 0.5 (else 0): the best
    any association can do on these detections."""
    from streamparse.evaluation.tracks import _pairwise_iou

    info, maps = gt
    out = []
    for t, fr in enumerate(frames):
        ids = info["track_ids"][t]
        k = len(fr["inst_id"])
        o = np.zeros(k, np.uint32)
        if k and ids:
            iou = _pairwise_iou(maps[t], fr["instance"], len(ids), fr["inst_id"].astype(np.int64))
            best = iou.argmax(axis=0)
            hit = iou.max(axis=0) >= 0.5
            o[hit] = np.asarray(ids)[best[hit]]
        out.append(o)
    return np.concatenate(out) if out else np.zeros(0, np.uint32)
