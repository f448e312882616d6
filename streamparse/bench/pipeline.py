"""`streamparse bench pipeline`: end-to-end `streamparse run` vs model-only vs a naive loop.

All three use the same video, model, weights, input size and CPU budget (every core), in one process run:

- **model-only**: every frame decoded up front into memory, then ``Predictor.predict`` over batches of
  ``pipeline.batch_size`` (no decode, no store, no Ray) with a thread per core — the ceiling for this
  model in one process on this machine;
- **naive**: one process, frame by frame: decode (PyAV) → ``predict([frame])`` → zarr write;
- **end-to-end**: ``pipelines.video.run`` (the engine task: decode threads and the writer; the inference actors) into a
  fresh zarr store; Ray is started before the clock starts (its start-up is reported apart).

Resident memory of the whole run (driver + every Ray process) is sampled once a second during the
end-to-end run; growth = median of the last 10% of samples vs the median of the samples at 10-20% of
the run (after warm-up).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from streamparse.bench.measure import Sampler, cpu_by_pid, predict_fps, rss_tree


class _RSSSampler(Sampler):
    """(seconds, RSS bytes of this process tree) every ``interval_s``, and the first and last CPU time
    seen of every process in it (by role)."""

    def __init__(self, interval_s: float = 1.0):
        super().__init__(interval_s)
        self.cpu: dict[int, list] = {}  # pid -> [role, first CPU seconds seen, last seen]

    def sample(self, t: float) -> None:
        self.samples.append((t, rss_tree()))
        for pid, (role, cpu) in cpu_by_pid().items():  # first and last CPU time seen of every process
            first = self.cpu.setdefault(pid, [role, cpu, cpu])
            first[0], first[2] = role, cpu

    def cpu_share_pct(self, wall_s: float) -> dict[str, float]:
        """Each role's CPU use during the sampled interval, in % of one core."""
        out: dict[str, float] = {}
        for role, a, b in self.cpu.values():
            out[role] = out.get(role, 0.0) + (b - a)
        return {k: round(100.0 * v / wall_s, 1) for k, v in sorted(out.items())}

    def summary(self) -> dict:
        rss = np.asarray([s for _, s in self.samples], dtype=float) / 2**20
        n = len(rss)
        if n < 10:
            return {"samples": n, "rss_mb_max": float(rss.max()) if n else None, "growth_pct": None}
        base = float(np.median(rss[n // 10 : max(n // 5, n // 10 + 1)]))
        end = float(np.median(rss[-max(1, n // 10):]))
        return {"samples": n, "rss_mb_after_warmup": round(base, 1), "rss_mb_end": round(end, 1),
                "rss_mb_max": round(float(rss.max()), 1), "growth_pct": round(100.0 * (end - base) / base, 2)}


def _video(args, work: Path) -> tuple[str, int]:
    if args.video:
        return args.video, args.frames
    from streamparse.data.synth import generate_video

    path = work / "bench.mp4"
    print(f"bench pipeline: generating a {args.frames}-frame synthetic video ({args.size})", flush=True)
    h, _, w = args.size.partition("x")
    generate_video(path, work / "gt", args.frames, seed=0, size=(int(h), int(w)), max_people=4)
    return str(path), args.frames


def run_pipeline_bench(args) -> dict:
    """The three measurements (module docstring) on ``args.video`` (or a generated one)."""
    import torch

    from streamparse.config import load_config
    from streamparse.engine.factory import build_predictor

    cfg = load_config(args.config, overrides=list(args.set))
    pc = cfg.pipeline
    work = Path(tempfile.mkdtemp(prefix="sp-bench-"))
    try:
        video, limit = _video(args, work)
        ckpt = args.checkpoint
        cores = os.cpu_count() or 2
        threads = pc.torch_threads or cores  # model-only and naive: one process, every core
        torch.set_num_threads(threads)
        pred = build_predictor(cfg, checkpoint=ckpt)
        res = {"video": video, "model": cfg.model.name, "input_size": list(cfg.model.input_size), "batch_size": pc.batch_size,
               "threads": threads, "cpu_count": cores, "device": str(pred.device), "runtime": pred.info().get("runtime")}
        n = _model_only(res, pred, video, limit, pc.batch_size)
        _naive(res, pred, cfg, ckpt, video, limit, work / "naive.zarr", n)
        del pred
        _end_to_end(res, cfg, ckpt, video, work / "e2e.zarr", n, progress=not args.no_progress)
        return res
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _model_only(res: dict, pred, video: str, limit: int, batch_size: int) -> int:
    """Model-only: pre-decoded frames straight into the batched model; returns the number of frames."""
    from streamparse.sources import FileSource

    with FileSource(video, max_frames=limit) as src:
        info = src.info()
        frames = np.concatenate([b.frames for b in src.batches(256)])
    n = len(frames)
    res.update(frames=n, width=info["width"], height=info["height"])
    res["model_only_fps"] = round(predict_fps(pred, [frames], batch_size), 2)
    print(f"bench pipeline: model-only {res['model_only_fps']} fps", flush=True)
    return n


def _naive(res: dict, pred, cfg, checkpoint: str | None, video: str, limit: int, out: Path, n: int) -> None:
    """Naive: decode -> model -> write, frame by frame, one process (the same writer and tracker as run)."""
    from streamparse import plan
    from streamparse.sources import FileSource
    from streamparse.store.sink import ZarrSink

    pc = cfg.pipeline
    meta = plan.resolve_model_meta(cfg, checkpoint if checkpoint else None)
    t = time.perf_counter()
    with ZarrSink(out, mode="create", root_attrs={}, chunk_frames=pc.chunk_frames,
                  compressor=pc.compressor) as sink, FileSource(video, max_frames=limit) as src:
        w = plan.open_source_writer(sink, cfg, meta, "naive", src.info())  # the same writer (and tracker) as run
        seq = 0
        for b in src.batches(1):
            w.add_batch(seq, pred.parse_batch(b))
            seq += len(b)
        w.flush()
    res["naive_fps"] = round(n / (time.perf_counter() - t), 2)
    print(f"bench pipeline: naive loop {res['naive_fps']} fps", flush=True)


def _end_to_end(res: dict, cfg, checkpoint: str | None, video: str, out: Path, n: int, *, progress: bool) -> None:
    """End-to-end: ``streamparse run`` (Ray started before the clock), its steady state, where the time
    goes (seconds per stage, each role's CPU share) and the memory of the process tree."""
    from streamparse.engine.raystart import init_ray
    from streamparse.pipelines.video import run

    pc = cfg.pipeline
    t = time.perf_counter()
    started = init_ray(pc.ray_address, pc.object_store_memory_mb)
    res["ray_start_s"] = round(time.perf_counter() - t, 2)
    try:
        with _RSSSampler() as mem:
            t = time.perf_counter()
            summ = run(cfg, [video], out, checkpoint=checkpoint, progress=progress)
            wall = time.perf_counter() - t
    finally:
        if started:
            import ray

            ray.shutdown()
    written = sum(s["frames_written"] for s in summ["sources"].values())
    if written != n:
        raise RuntimeError(f"end-to-end run wrote {written} frames, expected {n}")
    res["e2e_fps"] = round(n / wall, 2)
    # steady state: from the first result (actors up, model built) to the end
    steady = wall - summ.get("first_result_s", 0.0)
    res["e2e_startup_s"] = summ.get("first_result_s")
    res["e2e_steady_fps"] = round((n - pc.batch_size) / steady, 2) if steady > 0 else None
    res["e2e_vs_model_only"] = round(res["e2e_fps"] / res["model_only_fps"], 3)
    res["e2e_steady_vs_model_only"] = round(res["e2e_steady_fps"] / res["model_only_fps"], 3) if res["e2e_steady_fps"] else None
    res["e2e_vs_naive"] = round(res["e2e_fps"] / res["naive_fps"], 3)
    res["stages_s"] = summ.get("stages_s", {})
    res["pool"] = summ.get("pool", {})  # the run's inference actors: how many, their threads, the device
    res["cpu_share_pct"] = mem.cpu_share_pct(wall)
    res["memory"] = mem.summary()
    res["memory"]["samples_mb"] = [round(s / 2**20, 1) for _, s in mem.samples]


def format_pipeline(res: dict) -> str:
    m = res["memory"]
    lines = [
        f"video {res['video']}  {res['frames']} frames {res['width']}x{res['height']}  model {res['model']} @ {res['input_size']}  "
        f"batch {res['batch_size']}  {res['cpu_count']} cpus  device {res['device']}: model-only and naive {res['threads']} threads, "
        f"run {res['pool'].get('actors')} actor(s) x {res['pool'].get('threads')} thread(s)",
        f"{'mode':<28}{'fps':>10}",
        f"{'model-only (pre-decoded)':<28}{res['model_only_fps']:>10.2f}",
        f"{'naive loop (1 process)':<28}{res['naive_fps']:>10.2f}",
        f"{'streamparse run':<28}{res['e2e_fps']:>10.2f}   ({res['e2e_vs_model_only']:.2f}x model-only, {res['e2e_vs_naive']:.2f}x naive)",
        f"{'  steady state':<28}{(res['e2e_steady_fps'] or 0):>10.2f}   ({(res['e2e_steady_vs_model_only'] or 0):.2f}x model-only; "
        f"actors+model start {res['e2e_startup_s']} s, Ray start {res['ray_start_s']} s apart)",
        f"memory (driver + Ray processes): after warm-up {m.get('rss_mb_after_warmup')} MB, end {m.get('rss_mb_end')} MB, "
        f"max {m.get('rss_mb_max')} MB, growth {m.get('growth_pct')} % ({m['samples']} samples)",
        "stages (s, summed over actors): " + ", ".join(f"{k} {v}" for k, v in res.get("stages_s", {}).items()),
        "CPU share of the end-to-end run (% of one core): " + ", ".join(f"{k} {v}" for k, v in res.get("cpu_share_pct", {}).items()),
    ]
    return "\n".join(lines)
