"""`streamparse bench track`: association methods compared on the same stored detections, and the
stand-in schema-v2 writer that produces those detections (``write_v2_store``) until
``streamparse run`` writes schema v2 itself.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from streamparse.trackstore import SCHEMA_VERSION

PER_FRAME = {"frame_index": "int64", "pts": "int64", "time": "float64", "segment": "uint16", "wallclock": "float64",
             "inst_offset": "int64"}


def write_v2_store(video: str | Path, out: str | Path, predictor, *, tracker=None, batch_size: int = 4,
                   chunk_frames: int = 16, max_frames: int = 0, config: dict | None = None, source_id: str = "") -> dict:
    """Run ``predictor`` (a ``streamparse.predictor.Predictor``) over one video file and write a schema-v2
    store (phase2-design.md: zarr v3, one group per source, ``dimension_names`` on every array, the
    commit marker ``status.frames_written`` / ``instances_written`` advanced after each chunk of
    ``chunk_frames`` frames), with ``inst_track`` from ``tracker`` (a ``tracking.Tracker``; None
    writes zeros). Replaces ``out``. Returns the source's status."""
    import zarr
    from zarr.codecs import ZstdCodec

    from streamparse import __version__
    from streamparse.features import instance_features
    from streamparse.sources import FileSource, redact_uri, source_id as make_sid

    sid = source_id or make_sid(str(video))
    root = zarr.open_group(str(out), mode="w", zarr_format=3)
    with FileSource(video, max_frames=max_frames) as src:
        info = src.info()
        H, W, C = info["height"], info["width"], predictor.num_classes
        root.attrs.update(json.loads(json.dumps({
            "streamparse_schema_version": SCHEMA_VERSION, "streamparse_version": __version__,
            "model_name": predictor.model_name, "checkpoint_sha256": predictor.checkpoint_sha256,
            "class_names": predictor.class_names, "palette": predictor.palette.tolist(), "config": config or {},
            "sources": [redact_uri(str(video))],
            **({"tracker": {"name": tracker.name, "params": tracker.params()}} if tracker is not None else {}),
        })))
        g = root.create_group(sid)
        comp = [ZstdCodec(level=3)]
        names = predictor.class_names
        g.create_array("part", shape=(0, H, W), chunks=(chunk_frames, H, W), dtype="uint8", fill_value=0, compressors=comp,
                       dimension_names=("time", "y", "x"),
                       attributes={"class_names": names, "palette": predictor.palette.tolist(),
                                   "flag_values": list(range(C)), "flag_meanings": " ".join(n.replace(" ", "_") for n in names)})
        g.create_array("instance", shape=(0, H, W), chunks=(chunk_frames, H, W), dtype="uint16", fill_value=0,
                       compressors=comp, dimension_names=("time", "y", "x"))
        for name, dt in PER_FRAME.items():
            g.create_array(name, shape=(0,), chunks=(1024,), dtype=dt, fill_value=0, dimension_names=("time",))
        d = None
        specs = {"inst_id": ("uint16", ()), "inst_score": ("float32", ()), "inst_area": ("int64", ()),
                 "inst_track": ("uint32", ()), "inst_bbox": ("int32", (4,)), "inst_part_area": ("int32", (C,)),
                 "inst_part_rgb": ("uint8", (C, 3))}
        dims = {"inst_bbox": ("inst", "corner"), "inst_part_area": ("inst", "part"), "inst_part_rgb": ("inst", "part", "rgb"),
                "inst_embedding": ("inst", "emb")}
        for name, (dt, tail) in specs.items():
            g.create_array(name, shape=(0, *tail), chunks=(4096, *tail), dtype=dt, fill_value=0,
                           dimension_names=dims.get(name, ("inst",)))
        status = {"state": "running", "complete": False, "frames_written": 0, "instances_written": 0, "dropped": 0,
                  "dropped_by_reason": {}, "reconnects": 0, "segments": 1, "errors": [], "updated": time.time()}
        g.attrs["source"] = json.loads(json.dumps({**info, "fps": info.get("avg_fps")}))
        g.attrs["status"] = status
        pending: list[dict] = []
        t0 = time.perf_counter()
        track_s = 0.0

        def commit(rows: list[dict]) -> None:
            t, n = status["frames_written"], status["instances_written"]
            cat = {k: np.concatenate([r[k] for r in rows]) for k in rows[0] if k not in ("part", "instance") and not np.isscalar(rows[0][k])}
            m = len(rows)
            for name in ("part", "instance", *PER_FRAME):
                a = g[name]
                a.resize((t + m, *a.shape[1:]))
            g["part"][t : t + m] = np.stack([r["part"] for r in rows])
            g["instance"][t : t + m] = np.stack([r["instance"] for r in rows])
            for name in PER_FRAME:
                g[name][t : t + m] = cat[name].astype(PER_FRAME[name]) if name != "inst_offset" else (
                    n + np.concatenate([[0], np.cumsum([len(r["inst_id"]) for r in rows])[:-1]]))
            k = len(cat["inst_id"])
            if k:
                for name in (*specs, "inst_embedding"):
                    a = g[name]
                    a.resize((n + k, *a.shape[1:]))
                    a[n : n + k] = cat[name]
            status.update(frames_written=t + m, instances_written=n + k, updated=time.time())
            g.attrs["status"] = status  # the commit marker, after the data

        for batch in src.batches(batch_size):
            parsings = predictor.predict(batch.frames)
            part = np.stack([p.part for p in parsings])
            inst = np.stack([p.instance for p in parsings])
            counts = [p.num_instances for p in parsings]
            off = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
            pa, rgb = instance_features(batch.frames, part, inst, off, C)
            for b, p in enumerate(parsings):
                k = p.num_instances
                emb = p.embeddings if p.embeddings is not None else np.zeros((k, 0), np.float16)
                if d is None and k:
                    d = emb.shape[1]
                    g.create_array("inst_embedding", shape=(0, d), chunks=(4096, d), dtype="float16", fill_value=0,
                                   dimension_names=dims["inst_embedding"])
                row = {"part": p.part, "instance": p.instance, "inst_id": np.arange(1, k + 1, dtype=np.uint16),
                       "inst_score": p.scores, "inst_bbox": p.bboxes.astype(np.int32), "inst_area": p.areas,
                       "inst_embedding": emb.astype(np.float16), "inst_part_area": pa[off[b] : off[b + 1]],
                       "inst_part_rgb": rgb[off[b] : off[b + 1]]}
                for name in ("frame_index", "pts", "time", "segment", "wallclock"):
                    row[name] = getattr(batch, name)[b : b + 1]
                row["inst_offset"] = np.zeros(1, np.int64)
                if tracker is not None:
                    ts = time.perf_counter()
                    row["inst_track"] = tracker.update(
                        p.instance, row["inst_id"], row["inst_score"], row["inst_bbox"], row["inst_area"],
                        row["inst_embedding"], row["inst_part_area"], row["inst_part_rgb"], frame_index=int(row["frame_index"][0]),
                        time=float(row["time"][0]), segment=int(row["segment"][0]))
                    track_s += time.perf_counter() - ts
                else:
                    row["inst_track"] = np.zeros(k, np.uint32)
                pending.append(row)
            if len(pending) >= chunk_frames:
                commit(pending[:chunk_frames])
                pending = pending[chunk_frames:]
        if pending:
            commit(pending)
        if d is None:  # no person in the whole video
            g.create_array("inst_embedding", shape=(0, 0), chunks=(4096, 1), dtype="float16", fill_value=0,
                           dimension_names=dims["inst_embedding"])
        status.update(state="complete", complete=True, updated=time.time())
        g.attrs["status"] = status
    return {**status, "source_id": sid, "seconds": time.perf_counter() - t0, "track_seconds": track_s}
