"""``streamparse run``, driver side: the engine with local inputs and one store (installed as
``streamparse.pipelines.video``).

``run(cfg, sources, out, ...)``: the plan (config, checkpoint and device, once), every input validated
and the store checked before Ray starts; then Ray, the inference pool (``engine.pool``) and ONE engine
task (``engine.tasks.run_task``) that decodes every source, sends the batches to the pool and writes the
store, exactly as an archive's video task does for its video. The driver only reads progress (a
monitor actor), handles Ctrl-C / SIGTERM (the task drains, flushes and closes the store) and returns the
task's summary.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from streamparse.config import Config
from streamparse.engine.interrupts import Interrupts
from streamparse.engine.raystart import init_ray, plan_while_ray_starts
from streamparse.engine.scheduler import PipelineError, one_line
from streamparse.logs import MissingDependency
from streamparse.sources import SourceError, is_live, redact_uri, source_id

log = logging.getLogger(__name__)

__all__ = ["PipelineError", "init_ray", "probe_file", "run"]


def probe_file(path: str) -> dict:
    """Open a file source and decode its first frame: clear errors before anything starts."""
    from streamparse.sources import open_source

    with open_source(path, max_frames=1) as src:  # a FileSource, or SourceError for an unknown URI scheme
        info = src.info()
        if src.read(1) is None:
            raise SourceError(f"video has zero frames: {path}")
    return info


def probe_sources(sources: list[str]) -> tuple[list[dict], dict]:
    """The run's sources ([{"uri", "sid"}]) and each file's info, its first frame decoded: a missing,
    corrupt or empty file is one line before anything starts."""
    if not sources:
        raise PipelineError("no source given")
    taken: set[str] = set()
    srcs = [{"uri": u, "sid": source_id(u, taken)} for u in sources]
    return srcs, {s["sid"]: probe_file(s["uri"]) for s in srcs if not is_live(s["uri"])}


def make_job(plan, srcs: list[dict], infos: dict, out: str | Path, mode: str):
    """The run's one job: every source into ``out`` (a store written for another model is refused)."""
    from streamparse.engine.job import Job
    from streamparse.store.objstore import is_url

    attrs = plan.root_attrs([s["uri"] for s in srcs])
    if not is_url(out):
        from streamparse.store.sink import check_store

        check_store(out, mode=mode, root_attrs=attrs)
    return Job(store=str(out), sources=srcs, mode=mode, attrs=attrs, infos=infos)


def run(cfg: Config, sources: list[str], out: str | Path, *, checkpoint: str | None = None, mode: str = "create",
        progress: bool = True, on_actors=None) -> dict:
    """Run the pipeline; returns the summary. ``mode``: create | overwrite | resume.
    ``on_actors(inference_actors)``: a hook for fault-injection tests."""
    from streamparse.plan import ray_settings
    from streamparse.store.objstore import is_url

    t_start = time.monotonic()
    srcs, infos = probe_sources(sources)
    if not is_url(out):  # refused, damaged or being written: one line before anything starts
        from streamparse.store.sink import check_store

        check_store(out, mode=mode, root_attrs=None)
    address, _ = ray_settings(cfg)
    intr = Interrupts().install()  # Ctrl-C / SIGTERM from here on: a clean stop, never mid-write
    started, summary, interrupted, job = False, None, False, None
    try:
        # the plan (importing torch, reading the checkpoint) on a thread while Ray starts: both take seconds
        ray_start: dict = {}
        plan = plan_while_ray_starts(cfg, checkpoint, address, ray_start, intr, gpus=0 if address else None, early=True)
        started = ray_start["started"]
        job = make_job(plan, srcs, infos, out, mode)
        summary, interrupted = _drive(plan, job, intr, progress, on_actors, t_start)
    except (KeyboardInterrupt, SystemExit):  # SystemExit: Ray's own SIGTERM handler, during ray.init
        interrupted = True
    finally:
        intr.restore()
        if started:
            import ray

            ray.shutdown()
    if summary is None:  # interrupted before the task ran: nothing was written
        summary = {"out": redact_uri(str(out)), "sources": {s["sid"]: {"uri": redact_uri(s["uri"]), "frames_written": 0,
                                                                         "errors": []} for s in srcs}}
    summary["interrupted"] = bool(summary.get("interrupted")) or interrupted
    summary["elapsed_s"] = round(time.monotonic() - t_start, 3)
    return summary


def _drive(plan, job, intr, progress: bool, on_actors, t_start: float) -> tuple[dict | None, bool]:
    """Pool, engine task, progress bar; Ctrl-C cancels the task (it drains and closes the store)."""
    import ray
    from tqdm import tqdm

    from streamparse.engine.executor import stage_seconds
    from streamparse.engine.pool import start_pool
    from streamparse.engine.tasks import ProgressMonitor, run_task

    t_wall = time.time() - (time.monotonic() - t_start)
    # files: the models build while the job opens its sources; a live stream is read once the models are
    # ready (frames arriving while the actors start could only be dropped: drop-oldest at start-up)
    live = any(is_live(s["uri"]) for s in job.sources)
    pool = start_pool(plan, workers=plan.workers, wait=live)
    try:
        plan = pool.plan
        if on_actors:
            on_actors([a for a, _ in pool.actors])
        monitor = ProgressMonitor.remote()
        node = pool.actors[0][1]
        opts = {}
        if node is not None:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node, soft=True)
        ref = run_task.options(**opts).remote(job.to_dict(), plan.to_dict(), pool.actors, monitor)
        pool_up = False
        total = sum((i.get("frames_hint") or 0) for i in job.infos.values()) or None
        if plan.max_frames and total:
            total = min(total, plan.max_frames * len(job.sources))
        bar = tqdm(total=total, unit="frame", desc="streamparse run", disable=not progress, dynamic_ncols=True)
        startup_s = round(time.monotonic() - t_start, 3)
        interrupted, shown, base = False, 0, None
        try:
            while True:
                ready, _ = ray.wait([ref], timeout=0.5)
                if not pool_up:
                    try:
                        pool_up = pool.check()
                    except PipelineError:
                        ray.cancel(ref, force=True)
                        raise
                try:
                    snap = ray.get(monitor.snapshot.remote(), timeout=5).get("run", {})
                except Exception:  # noqa: BLE001 - progress only
                    snap = {}
                if snap:
                    base = snap if base is None else base  # (a resumed run starts at its commit markers)
                    n = sum(snap.values()) - sum(base.values())
                    bar.update(n - shown)
                    shown = n
                if ready:
                    break
        except (KeyboardInterrupt, SystemExit):
            interrupted = True
            log.warning("interrupted: draining in-flight batches and closing the store")
            ray.cancel(ref, force=False)
        finally:
            bar.close()
        summary = _result(ref, interrupted)
        summary["startup_s"] = startup_s
        stages = {**summary.get("stages_s", {}), **stage_seconds(pool.actors)}
        if summary.get("first_result_s") is not None and summary.get("started_wall"):  # from the start of this run
            summary["first_result_s"] = round(summary["first_result_s"] + summary.pop("started_wall") - t_wall, 3)
        if summary.get("first_decoded_wall"):  # the first frame the engine decoded, from the start of this run
            summary["first_decoded_s"] = round(summary.pop("first_decoded_wall") - t_wall, 3)
        summary["stages_s"] = stages
        summary["pool"] = {**pool.desc, "device": plan.device}  # actors, their threads, nodes
        return summary, interrupted
    finally:
        pool.kill()  # the run's actors end with it (not when Python collects their handles)


def _result(ref, interrupted: bool, wait_s: float = 90.0) -> dict:
    import ray

    try:
        return ray.get(ref, timeout=wait_s)
    except ray.exceptions.TaskCancelledError:
        return {"sources": {}, "interrupted": True}
    except ray.exceptions.GetTimeoutError:
        ray.cancel(ref, force=True)
        return {"sources": {}, "interrupted": True, "error": "the engine task did not stop in time"}
    except ray.exceptions.RayTaskError as exc:
        raise PipelineError(str(exc.cause) if isinstance(exc.cause, MissingDependency) else one_line(exc)) from None
