"""`streamparse bench track`, the detections: synthetic tracking videos and one schema-v2 store per video
and preset, written in this process by the real writer path (``write_v2_store``: the scheduler, the
in-process executor and the sink; ``streamparse run`` writes the same stores through Ray).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


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
    from streamparse.engine.decoders import InProcessExecutor
    from streamparse.engine.scheduler import Scheduler, Slot, file_policy
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
