"""`streamparse bench archive`: one archive run vs one `streamparse run` per video vs the model alone.

On the same synthetic videos (``videos`` x ``frames``, people 1-4, ``streamparse.data.synth``), the
same model, weights, config and CPU budget, in one bench invocation:

- **(a) model-only**: every frame of every video decoded up front into memory, then
  ``Predictor.predict`` over batches of ``pipeline.batch_size`` (no decode, no store, no Ray): the
  ceiling for this model on this machine;
- **(b) sequential run**: one ``python -m streamparse run VIDEO --out STORE`` process per video, one
  after another (each pays interpreter, imports, Ray and model start);
- **(c) archive**: one ``python -m streamparse archive VIDEOS/ --out OUTDIR`` process, end to end
  (imports, Ray start, the inference pool, every video, the report).

Reported: fps of each, the ratios (c)/(b) (target >= 3) and (c)/(a) (target >= 0.85), the median time
from a video task's start to its first written frame over every video but the first dispatched
(target <= 0.5 s), and the resident memory of the archive process tree (driver + its Ray processes)
when the 5th video completes vs when the last one does (target: growth <= 5 %), each point taken just before that
video's completion is seen in the index. With fewer than 5 videos the first point is the first video.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from streamparse.bench.measure import Sampler, predict_fps, rss_tree

TARGETS = {"archive_vs_run": 3.0, "archive_vs_model_only": 0.85, "first_write_median_s": 0.5,
           "first_write_after_decode_median_s": 0.5, "rss_growth_pct": 5.0}
RSS_AT_VIDEO = 5


def _cli_args(checkpoint: str | None, config: str | None, overrides: list[str]) -> list[str]:
    out = []
    if checkpoint:
        out += ["--checkpoint", checkpoint]
    if config:
        out += ["--config", config]
    for o in overrides:
        out += ["--set", o]
    return out


def make_videos(folder: Path, videos: int, frames: int, size: tuple[int, int], *, progress: bool = True) -> list[Path]:
    """``videos`` synthetic clips ``v00.mp4``... (seed = index, 1-4 people) in ``folder``."""
    from streamparse.data.synth import generate_video

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(videos):
        p = folder / f"v{i:02d}.mp4"
        generate_video(p, folder.parent / "gt", frames, seed=i, size=size, min_people=1, max_people=4)
        paths.append(p)
    if progress:
        print(f"bench archive: {videos} synthetic videos of {frames} frames ({size[0]}x{size[1]}) in {folder}", flush=True)
    return paths


def model_only_fps(cfg, checkpoint: str | None, paths: list[Path], threads: int) -> tuple[float, int, dict]:
    """(a): fps of ``Predictor.predict`` over every frame of ``paths``, pre-decoded; (fps, frames, meta)."""
    import numpy as np
    import torch

    from streamparse import plan
    from streamparse.engine.factory import build_predictor
    from streamparse.sources import FileSource

    torch.set_num_threads(threads)
    pred = build_predictor(cfg, checkpoint=checkpoint, device="cpu")
    clips = []
    for p in paths:
        with FileSource(str(p)) as src:
            clips.append(np.concatenate([b.frames for b in src.batches(256)]))
    fps = predict_fps(pred, clips, cfg.pipeline.batch_size)
    n = sum(len(c) for c in clips)
    meta = plan.resolve_model_meta(cfg, checkpoint)
    del pred
    return fps, n, meta


def _completed(index: Path) -> int:
    try:
        text = index.read_text()
    except OSError:
        return 0
    return sum(1 for line in text.splitlines() if '"state":"complete"' in line)


class _TreeSampler(Sampler):
    """(seconds, RSS bytes of ``pid``'s process tree, videos completed in the index) every ``interval_s``."""

    def __init__(self, pid: int, index: Path, interval_s: float = 0.25):
        super().__init__(interval_s)
        self.pid, self.index = pid, index

    def sample(self, t: float) -> None:
        self.samples.append((t, rss_tree(self.pid), _completed(self.index)))


def rss_points(samples: list[tuple[float, int, int]], videos: int) -> tuple[int, float | None, float | None]:
    """(k, RSS MiB just before video k completed, RSS MiB just before the last one did), k = min(5,
    videos): the last sample that saw fewer completions (so the end point is never Ray's shutdown)."""
    k = min(RSS_AT_VIDEO, videos)

    def before(done):
        got = [rss for _, rss, n in samples if n < done and rss > 0]
        return got[-1] / 2**20 if got else None

    return k, before(k), before(videos)


def first_write_median(rows: list[dict]) -> tuple[float | None, list]:
    """Median seconds from a video task's start to its first written frame, over every video but the
    first dispatched (which pays the pool's warm-up); with one video, that video's."""
    got = sorted((r.get("queued_s") or 0.0, r["first_write_s"]) for r in rows if r.get("first_write_s") is not None)
    vals = [v for _, v in got[1:]] or [v for _, v in got]
    return (round(statistics.median(vals), 3) if vals else None), [v for _, v in got]


def after_decode_median(rows: list[dict]) -> float | None:
    """Median seconds from a video's first decoded frame to its first written frame (``first_write_s -
    first_decoded_s``, both from the video task's start), over every video but the first dispatched."""
    got = sorted((r.get("queued_s") or 0.0, r["first_write_s"] - r["first_decoded_s"]) for r in rows
                 if r.get("first_write_s") is not None and r.get("first_decoded_s") is not None)
    vals = [v for _, v in got[1:]] or [v for _, v in got]
    return round(statistics.median(vals), 3) if vals else None


def run_archive_bench(*, videos: int = 24, frames: int = 60, size: tuple[int, int] = (256, 256), checkpoint: str | None = None,
                      config: str | None = None, overrides: list[str] | None = None, work: str | None = None,
                      progress: bool = True) -> dict:
    """The three measurements (module docstring); ``work``: keep the videos and outputs there (a new
    folder), else a temporary folder removed at the end."""
    from streamparse.config import load_config

    overrides = list(overrides or [])
    cfg = load_config(config, overrides)
    if videos < 1 or frames < 1:
        raise ValueError("--videos and --frames must be >= 1")
    keep = work is not None
    if keep and Path(work).exists():
        raise ValueError(f"--work {work} exists: give a new folder")
    root = Path(work) if keep else Path(tempfile.mkdtemp(prefix="sp-bench-arc-"))
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": os.environ.get("RAY_USAGE_STATS_ENABLED", "0")}
    extra = _cli_args(checkpoint, config, overrides)
    threads = cfg.pipeline.torch_threads or max(1, min(os.cpu_count() or 2, 8))
    try:
        paths = make_videos(root / "videos", videos, frames, size, progress=progress)
        fps_a, n, meta = model_only_fps(cfg, checkpoint, paths, threads)
        res = {"videos": videos, "frames_per_video": frames, "frames": n, "size": list(size), "model": cfg.model.name,
               "input_size": list(cfg.model.input_size), "batch_size": cfg.pipeline.batch_size, "threads": threads,
               "cpu_count": os.cpu_count(), "checkpoint_sha256": meta["checkpoint_sha256"], "model_only_fps": round(fps_a, 2)}
        if progress:
            print(f"bench archive: (a) model-only {fps_a:.2f} fps over {n} pre-decoded frames", flush=True)
        run_s = _sequential_runs(res, paths, root / "run", extra, env, n)
        if progress:
            print(f"bench archive: (b) {videos} sequential runs {run_s:.1f} s ({n / run_s:.2f} fps)", flush=True)
        out = root / "archive"
        arc_s, rep, samples = _archive_run(root / "videos", out, root / "archive-report.json", extra, env, videos, n)
        _archive_figures(res, rep, samples, arc_s=arc_s, run_s=run_s, fps_a=fps_a)
        store_bytes = sum(f.stat().st_size for z in out.glob("*.zarr") for f in z.rglob("*") if f.is_file())
        res["store_bytes_per_frame"] = round(store_bytes / n)
        # per-video cost beyond the model's own time (the start-up a video pays in each mode)
        model_s = frames / fps_a
        res["run_overhead_per_video_s"] = round(run_s / videos - model_s, 3)
        res["archive_overhead_per_video_s"] = round((arc_s - (rep.get("ray_start_s") or 0.0)) / videos - model_s, 3)
        res["targets"] = dict(TARGETS)
        res["met"] = {"archive_vs_run": res["archive_vs_run"] >= TARGETS["archive_vs_run"],
                      "archive_vs_model_only": res["archive_vs_model_only"] >= TARGETS["archive_vs_model_only"],
                      "first_write_median_s": res["first_write_median_s"] is not None
                      and res["first_write_median_s"] <= TARGETS["first_write_median_s"],
                      "first_write_after_decode_median_s": res["first_write_after_decode_median_s"] is not None
                      and res["first_write_after_decode_median_s"] <= TARGETS["first_write_after_decode_median_s"],
                      "rss_growth_pct": res["rss_growth_pct"] is not None and res["rss_growth_pct"] <= TARGETS["rss_growth_pct"]}
        if keep:
            res["work"] = str(root)
        return res
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def _sequential_runs(res: dict, paths: list[Path], out: Path, extra: list[str], env: dict, n: int) -> float:
    """(b): one ``streamparse run`` process per video, one after another; returns the total seconds."""
    per = []
    t = time.perf_counter()
    for p in paths:
        t1 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "streamparse", "run", str(p), "--out", str(out / f"{p.stem}.zarr"),
                            "--no-progress", *extra], capture_output=True, text=True, env=env)
        if r.returncode != 0:
            raise RuntimeError(f"streamparse run {p.name} failed ({r.returncode}): {(r.stderr.strip().splitlines() or ['?'])[-1]}")
        per.append(time.perf_counter() - t1)
    run_s = time.perf_counter() - t
    res.update(run_s=round(run_s, 2), run_fps=round(n / run_s, 2), run_per_video_s=round(statistics.median(per), 3))
    return run_s


def _archive_run(videos_dir: Path, out: Path, report: Path, extra: list[str], env: dict, videos: int,
                 n: int) -> tuple[float, dict, list]:
    """(c): one ``streamparse archive`` process end to end, its process tree's memory sampled; returns
    (seconds, its report, the samples). Raises ``RuntimeError`` unless every video and frame completed."""
    t = time.perf_counter()
    t_wall = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "streamparse", "archive", str(videos_dir), "--out", str(out),
                             "--report", str(report), "--no-progress", *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    with _TreeSampler(proc.pid, out / "index.jsonl") as mem:
        stdout, stderr = proc.communicate()
    arc_s = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"streamparse archive failed ({proc.returncode}): {(stderr.strip().splitlines() or ['?'])[-1]}")
    rep = json.loads(report.read_text())
    rep["_spawned"] = t_wall
    if rep["counts"]["complete"] != videos or rep["frames_new"] != n:
        raise RuntimeError(f"the archive completed {rep['counts']['complete']} videos / {rep['frames_new']} frames, "
                           f"expected {videos} / {n}")
    return arc_s, rep, mem.samples


def _archive_figures(res: dict, rep: dict, samples: list, *, arc_s: float, run_s: float, fps_a: float) -> None:
    """The archive's figures against (a) and (b): fps and ratios, where a video's time goes (videos
    2..N), the first write after a video starts, the memory growth of the process tree."""
    n, videos = res["frames"], res["videos"]
    med, fw = first_write_median(rep["videos"])
    later = sorted(rep["videos"], key=lambda r: r.get("queued_s") or 0.0)[1:] or rep["videos"]
    for key in ("open_s", "first_decoded_s", "first_result_s", "wall_s"):  # where a video's time goes (videos 2..N)
        vals = [r[key] for r in later if r.get(key) is not None]
        res[f"video_{key}_median"] = round(statistics.median(vals), 3) if vals else None
    k, rss_k, rss_end = rss_points(samples, videos)
    res.update(archive_s=round(arc_s, 2), archive_fps=round(n / arc_s, 2), archive_ray_start_s=rep.get("ray_start_s"),
               archive_pool=rep.get("pool"), archive_concurrency=rep.get("concurrency"),
               archive_vs_run=round(run_s / arc_s, 4), archive_vs_model_only=round((n / arc_s) / fps_a, 4),
               first_write_median_s=med, first_write_s=fw, first_write_after_decode_median_s=after_decode_median(rep["videos"]),
               rss_at_video=k,
               rss_mb_at_video_k=round(rss_k, 1) if rss_k else None, rss_mb_at_end=round(rss_end, 1) if rss_end else None,
               rss_growth_pct=round(100.0 * (rss_end - rss_k) / rss_k, 2) if rss_k and rss_end else None,
               rss_samples=len(samples))
    _startup(res, rep, arc_s, fps_a)


def _startup(res: dict, rep: dict, arc_s: float, fps_a: float) -> None:
    """Start-up apart from the steady state: from the archive process's spawn to the first frame written
    (of any video), and the frames per second after it (against model-only)."""
    firsts = [rep["dispatch_started"] + r["queued_s"] + r["first_write_s"] for r in rep["videos"]
              if r.get("first_write_s") is not None and r.get("queued_s") is not None] if "dispatch_started" in rep else []
    if not firsts:
        res.update(archive_startup_s=None, archive_steady_fps=None, archive_steady_vs_model_only=None)
        return
    startup = min(firsts) - rep["_spawned"]
    steady = (res["frames"] - res["batch_size"]) / (arc_s - startup) if arc_s > startup else None
    res.update(archive_startup_s=round(startup, 3), archive_steady_fps=round(steady, 2) if steady else None,
               archive_steady_vs_model_only=round(steady / fps_a, 4) if steady else None)


def format_archive(res: dict) -> str:
    ok = {True: "ok", False: "MISSED"}
    m = res["met"]
    lines = [
        f"{res['videos']} videos x {res['frames_per_video']} frames {res['size'][0]}x{res['size'][1]}  model {res['model']} @ "
        f"{res['input_size']}  batch {res['batch_size']}  threads {res['threads']}/{res['cpu_count']} cpus",
        f"{'mode':<36}{'wall s':>9}{'fps':>9}",
        f"{'(a) model-only (pre-decoded)':<36}{res['frames'] / res['model_only_fps']:>9.1f}{res['model_only_fps']:>9.2f}",
        f"{'(b) sequential streamparse run':<36}{res['run_s']:>9.1f}{res['run_fps']:>9.2f}",
        f"{'(c) streamparse archive':<36}{res['archive_s']:>9.1f}{res['archive_fps']:>9.2f}   "
        f"(Ray start {res['archive_ray_start_s']} s, pool {res.get('archive_pool')})",
        f"    start-up (spawn to the first written frame) {res.get('archive_startup_s')} s (target <= 8 s), steady state "
        f"{res.get('archive_steady_fps')} fps = {res.get('archive_steady_vs_model_only')}x model-only (target >= 0.9x)",
        f"(c)/(b) {res['archive_vs_run']:.2f}x (target >= {TARGETS['archive_vs_run']}x: {ok[m['archive_vs_run']]});  "
        f"(c)/(a) {res['archive_vs_model_only']:.2f}x (target >= {TARGETS['archive_vs_model_only']}x: {ok[m['archive_vs_model_only']]})",
        f"first written frame after a video starts: median {res['first_write_median_s']} s over videos 2..{res['videos']} "
        f"(target <= {TARGETS['first_write_median_s']} s: {ok[m['first_write_median_s']]}); after its first decoded frame: "
        f"median {res['first_write_after_decode_median_s']} s (target <= {TARGETS['first_write_after_decode_median_s']} s: "
        f"{ok[m['first_write_after_decode_median_s']]})",
        f"RSS of the archive's process tree: {res['rss_mb_at_video_k']} MiB at video {res['rss_at_video']}, "
        f"{res['rss_mb_at_end']} MiB at video {res['videos']}: {res['rss_growth_pct']} % "
        f"(target <= {TARGETS['rss_growth_pct']} %: {ok[m['rss_growth_pct']]})",
        f"per-video overhead beyond the model's time: run {res['run_overhead_per_video_s']} s, "
        f"archive {res['archive_overhead_per_video_s']} s; a video task (median, videos 2..N): open "
        f"{res['video_open_s_median']} s, first decoded frame {res['video_first_decoded_s_median']} s, first result {res['video_first_result_s_median']} s, wall {res['video_wall_s_median']} s",
    ]
    return "\n".join(lines)
