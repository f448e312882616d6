"""`streamparse bench track`: association methods compared on the same stored detections, and the
writer that produces those detections in this process (``write_v2_store``: the scheduler, the
in-process executor and the sink; ``streamparse run`` writes the same stores through Ray).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


PER_FRAME = {"frame_index": "int64", "pts": "int64", "time": "float64", "segment": "uint16", "wallclock": "float64",
             "inst_offset": "int64"}


def _parsing_batch(predictor, fb):
    """A ParsingBatch of ``fb`` from a ``Predictor`` (``parse_batch``) or from any object whose
    ``predict(frames)`` returns FrameParsings with embeddings (e.g. a GT stand-in in tests)."""
    from streamparse.labelstats import instance_stats
    from streamparse.structures import ParsingBatch

    if hasattr(predictor, "parse_batch"):
        return predictor.parse_batch(fb)
    ps = predictor.predict(fb.frames)
    part, inst = np.stack([p.part for p in ps]), np.stack([p.instance for p in ps])
    counts = np.array([p.num_instances for p in ps])
    st = instance_stats(part, inst, predictor.num_classes, fb.frames, counts)
    return ParsingBatch(part=part, instance=inst, frame_index=fb.frame_index, pts=fb.pts, time=fb.time,
                        wallclock=fb.wallclock, segment=fb.segment, inst_offset=st.offset, inst_id=st.inst_id,
                        inst_score=np.concatenate([p.scores for p in ps]), inst_bbox=st.bbox, inst_area=st.area,
                        inst_embedding=np.concatenate([p.embeddings for p in ps]), inst_part_area=st.part_area,
                        inst_part_rgb=st.part_rgb, time_base=fb.time_base, source_id=fb.source_id)


def write_v2_store(video: str | Path, out: str | Path, predictor, *, tracker=None, batch_size: int = 4,
                   chunk_frames: int = 16, max_frames: int = 0, config: dict | None = None, source_id: str = "") -> dict:
    """Parse one video file with ``predictor`` in this process and write its store through the real
    writer path (the plain-Python scheduler with the in-process executor and ``ZarrSink``), with
    ``inst_track`` from ``tracker`` (None: zeros). Replaces ``out`` if it is a streamparse store.
    Returns the source's status (+ ``seconds``)."""
    import zarr

    from streamparse import __version__
    from streamparse.engine.scheduler import InProcessExecutor, Scheduler, Slot, file_policy
    from streamparse.store.sink import ZarrSink
    from streamparse.sources import FileSource, redact_uri, source_id as make_sid
    from streamparse.structures import FrameBatch

    sid = source_id or make_sid(str(video))
    attrs = {"streamparse_version": __version__, "model_name": predictor.model_name,
             "checkpoint_sha256": predictor.checkpoint_sha256, "class_names": predictor.class_names,
             "palette": np.asarray(predictor.palette).tolist(), "config": config or {}, "sources": [redact_uri(str(video))]}
    if tracker is not None:
        attrs["tracker"] = {"name": tracker.name, "params": tracker.params()}
    t0 = time.perf_counter()
    with ZarrSink(out, mode="overwrite" if Path(out).exists() else "create", root_attrs=attrs, chunk_frames=chunk_frames) as sink:
        def open_writer(s):
            s.writer = sink.source(sid, s.info, (s.info["height"], s.info["width"]), predictor.class_names,
                                   np.asarray(predictor.palette), embedding_dim=predictor.embedding_dim, tracker=tracker)
            s.next_seq = s.writer.next_seq

        ex = InProcessExecutor(lambda s: FileSource(s.uri, source_id=sid, max_frames=max_frames),
                               lambda batch: _parsing_batch(predictor, FrameBatch.from_dict(batch)).to_dict(),
                               batch_size=batch_size)
        sched = Scheduler([Slot(uri=str(video), sid=sid, policy=file_policy(4))], ex, open_writer=open_writer)
        sched.start()
        sched.run()
    status = dict(zarr.open_group(str(out), mode="r")[sid].attrs["status"])
    return {**status, "source_id": sid, "seconds": time.perf_counter() - t0}


# ---------------------------------------------------------------------------------- the comparison
def methods(base: dict | None = None) -> dict[str, dict | None]:
    """Method name -> Tracker kwargs over ``base`` (the full tracker's); None = ByteTrack (``trackers``).
    The single-cue baselines (a), (c) use the gates that served each best on the tuning videos
    (seed 7, 512-px detections): (a) IoU >= 0.1, (c) cost <= 0.2 (cosine >= 0.6), no re-identification."""
    b = dict(base or {})
    return {
        "a_iou_only": {**b, "w_emb": 0.0, "w_emb_reid": 0.0, "w_col": 0.0, "reid_cost": 0.0, "iou_gate": 0.1, "max_cost": 0.9},
        "b_bytetrack": None,
        "c_embedding_only": {**b, "w_iou": 0.0, "w_col": 0.0, "w_emb": 1.0, "w_emb_reid": 1.0, "max_cost": 0.2, "reid_cost": 0.0},
        "d_full": b,
        "full_no_iou": {**b, "w_iou": 0.0},
        "full_no_embedding": {**b, "w_emb": 0.0, "w_emb_reid": 0.0},
        "full_no_colour": {**b, "w_col": 0.0},
        "full_static_iou": {**b, "iou_mode": "static"},
        "full_no_reid": {**b, "reid_cost": 0.0},
    }


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


def _frames_in_memory(group, tables: dict) -> list[dict]:
    from streamparse.tracking.store import iter_frames

    return [dict(fr, instance=np.array(fr["instance"])) for fr in iter_frames(group, tables)]


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
    the input for the ms/frame figure."""
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
        out.append({"instance": inst, "inst_id": np.arange(1, n_people + 1, dtype=np.uint16),
                    "inst_score": np.full(n_people, 0.8, np.float32), "inst_bbox": boxes, "inst_area": area.astype(np.int64),
                    "inst_embedding": (emb + 0.05 * rng.standard_normal(emb.shape)).astype(np.float16),
                    "inst_part_area": pa, "inst_part_rgb": col.astype(np.uint8), "frame_index": t, "time": t / 25.0,
                    "segment": 0})
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


ORACLE = "oracle_gt_identities"


def run_track_bench(data: str | Path, stores: dict[str, str | Path], base: dict | None = None,
                    bytetrack_params: dict | None = None, with_gt: bool = True, progress: bool = False,
                    with_cost: bool = True) -> dict:
    """The comparison. ``data``: a synth folder (``videos_gt/``); ``stores``: preset name -> folder of
    ``<video>.zarr`` stores of the same videos (inst_embedding etc. from ``write_v2_store``).
    Every method re-associates the same stored detections; returns per preset and method the overall
    metrics (and per video), the trackers' CPU ms/frame on these videos, and the cost at 10 people.
    ``oracle_gt_identities`` labels each detection with the GT identity it overlaps at IoU >= 0.5:
    the ceiling of any association on these detections."""
    from streamparse.evaluation.tracks import combine, load_gt, score_sequence, summarize, video_data
    from streamparse.tracking.store import open_store, read_tables, source_ids

    gt_dir = Path(data) / "videos_gt"
    videos = sorted(p.stem for p in gt_dir.glob("*.json"))
    meth = {**methods(base), ORACLE: None}
    res: dict = {"videos": videos, "methods": {k: v for k, v in meth.items()}, "presets": {},
                 "bytetrack_params": {**BYTETRACK_DEFAULTS, **(bytetrack_params or {})}}
    gts = {v: load_gt(gt_dir, v) for v in videos}
    for preset, folder in stores.items():
        per: dict[str, dict] = {m: {} for m in meth}
        cost: dict[str, list] = {m: [0.0, 0] for m in meth}
        for v in videos:
            root = open_store(Path(folder) / f"{v}.zarr")
            sid = source_ids(root)[0]
            g = root[sid]
            tab = read_tables(g)
            frames = _frames_in_memory(g, tab)
            maps = np.stack([f["instance"] for f in frames])
            fps = float(gts[v][0]["fps"])
            for m, kw in meth.items():
                t0 = time.process_time()
                if m == ORACLE:
                    track, dt = oracle_tracks(frames, gts[v]), 0.0
                elif kw is None:
                    track = bytetrack(tab, fps, **(bytetrack_params or {}))
                    dt = time.process_time() - t0
                else:
                    track, dt = _run(frames, kw, clock=time.process_time)
                cost[m][0] += dt
                cost[m][1] += len(frames)
                data_v = video_data(gt_dir, v, maps, tab["inst_offset"], tab["inst_id"], track, gt=gts[v])
                per[m][v] = score_sequence(data_v)
            if progress:
                print(f"{preset} {v}: done", flush=True)
        res["presets"][preset] = {
            m: {"overall": summarize(combine(per[m])), "ms_per_frame": 1000.0 * cost[m][0] / max(cost[m][1], 1),
                "videos": {v: summarize(r) for v, r in per[m].items()}} for m in meth}
    if with_gt:
        per_gt: dict[str, dict] = {"d_full": {}, "a_iou_only": {}}
        for v in videos:
            frames, tab, maps = gt_frames(gt_dir, v)
            stack = np.stack([f["instance"] for f in frames])
            for m in per_gt:
                track, _ = _run(frames, meth[m])
                per_gt[m][v] = score_sequence(video_data(gt_dir, v, stack, tab["inst_offset"], tab["inst_id"], track, gt=gts[v]))
        res["gt_detections"] = {m: {"overall": summarize(combine(r))} for m, r in per_gt.items()}
    if with_cost:
        res["cost_ms_per_frame_10_people"] = tracking_cost_ms(base)
    return res


def format_track_table(res: dict) -> str:
    lines = []
    for preset, rows in res["presets"].items():
        lines.append(f"detections: {preset}")
        lines.append(f"  {'method':<22} {'IDF1':>6} {'HOTA':>6} {'MOTA':>7} {'IDsw':>5} {'Frag':>5} {'CPU ms/frame':>12}")
        for m, r in rows.items():
            o = r["overall"]
            lines.append(f"  {m:<22} {o['IDF1']:6.3f} {o['HOTA']:6.3f} {o['MOTA']:7.3f} {o['IDSW']:5d} {o['Frag']:5d} {r['ms_per_frame']:12.3f}")
    for m, r in (res.get("gt_detections") or {}).items():
        o = r["overall"]
        lines.append(f"GT detections, {m:<12} IDF1 {o['IDF1']:.3f} HOTA {o['HOTA']:.3f} MOTA {o['MOTA']:.3f} IDsw {o['IDSW']} Frag {o['Frag']}")
    if "cost_ms_per_frame_10_people" in res:
        lines.append("tracker cost at 10 people (ms/frame, wall / CPU): " + ", ".join(
            f"{k} {v['wall']:.2f} / {v['cpu']:.2f}" for k, v in res["cost_ms_per_frame_10_people"].items()))
    return "\n".join(lines)


PRESETS = {"256": [], "512": ["model.input_size=[512,896]", "model.cate_score_thresh=0.275"]}


def prepare_bench(data: str | Path, work: str | Path, *, seed: int = 2027, num_videos: int = 10, frames: int = 160,
                  size: tuple[int, int] = (256, 384), presets: dict[str, list[str]] | None = None,
                  checkpoint: str | None = "default", threads: int = 1, progress: bool = False) -> dict[str, Path]:
    """Make (if absent) ``num_videos`` tracking-scenario videos (3-8 identities) under ``data`` and, per
    preset (config overrides), one schema-v2 store per video under ``work/<preset>/``. Returns the
    preset -> store folder map for ``run_track_bench``."""
    import torch

    from streamparse.config import load_config
    from streamparse.data.synth import generate_video
    from streamparse.engine.factory import build_predictor

    data, work = Path(data), Path(work)
    (data / "videos").mkdir(parents=True, exist_ok=True)
    for k in range(num_videos):
        v = data / "videos" / f"video_{k:03d}.mp4"
        if not (data / "videos_gt" / f"video_{k:03d}.json").is_file():
            generate_video(v, data / "videos_gt", frames, (seed, k), size=size, min_people=3, max_people=8, scenario="tracking")
    torch.set_num_threads(max(1, threads))
    out = {}
    for name, overrides in (presets or PRESETS).items():
        cfg = load_config(None, [*overrides, "pipeline.device=cpu"])
        pred = None
        folder = work / name
        for k in range(num_videos):
            store = folder / f"video_{k:03d}.zarr"
            if (store / "zarr.json").is_file() and _complete(store):
                continue
            if pred is None:
                pred = build_predictor(cfg, checkpoint=checkpoint, device="cpu")
            from streamparse.config import to_dict

            st = write_v2_store(data / "videos" / f"video_{k:03d}.mp4", store, pred, config=to_dict(cfg), source_id=f"video_{k:03d}")
            if progress:
                print(f"preset {name}: video_{k:03d} {st['frames_written']} frames, {st['instances_written']} people, "
                      f"{st['seconds']:.0f}s", flush=True)
        out[name] = folder
    return out


def _complete(store: Path) -> bool:
    import zarr

    root = zarr.open_group(str(store), mode="r")
    return all(dict(g.attrs.get("status", {})).get("complete") for _, g in root.groups())


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
