"""The engine's Ray side, thin: the task that runs a job where its store is written (``run_task``)
and the progress monitor the driver reads (``ProgressMonitor``). The work is ``engine.job.run_job``
with a ``PoolExecutor``; the driver sends the plan as plain data and reads only small messages."""

from __future__ import annotations

import time

import ray


ENGINE_NEEDS = ("numpy", "av", "zarr", "numcodecs")  # what an engine task imports (the model is in the actors)


@ray.remote(num_cpus=0)
class ProgressMonitor:
    """Frames committed per job and source, reported by the engine tasks every half second and read by
    the driver for its progress bar; nothing else goes through it."""

    def __init__(self):
        self.frames: dict[str, dict] = {}

    def progress(self, job_id: str, frames: dict) -> None:
        self.frames[job_id] = dict(frames)

    def snapshot(self) -> dict:
        return {k: dict(v) for k, v in self.frames.items()}

    def forget(self, job_id: str) -> None:
        self.frames.pop(job_id, None)


def reporter(monitor, job_id: str, every_s: float = 0.5):
    """``on_progress(frames by source)`` that tells ``monitor`` at most every ``every_s`` (and the last word
    through ``final``)."""
    last = [0.0]

    def on_progress(frames: dict, final: bool = False) -> None:
        now = time.monotonic()
        if monitor is not None and (final or now - last[0] >= every_s):
            last[0] = now
            monitor.progress.remote(job_id, frames)

    return on_progress


def pool_executor(plan, pool: list):
    """The executor of a job in a task: this plan's sources, decoded here, inference on ``pool``."""
    from streamparse.engine.executor import PoolExecutor

    def make():
        return PoolExecutor(pool, lambda s: plan.source(s.uri, source_id=s.sid, start_frame=s.start_frame),
                            batch_size=plan.batch_size, batch_timeout_s=plan.batch_timeout_s, max_frames=plan.max_frames)

    return make


@ray.remote(num_cpus=0.25, max_retries=0)
def run_task(job: dict, plan: dict, pool: list, monitor, job_id: str = "run") -> dict:
    """``streamparse run``: one job (all its sources into one store), on a worker. Cancelling the task
    (the driver's Ctrl-C) drains, flushes and returns the summary with ``interrupted``."""
    from streamparse import logs
    from streamparse.engine.job import Job, run_job
    from streamparse.plan import Plan

    logs.configure_worker()
    logs.require(*ENGINE_NEEDS)
    p = Plan.from_dict(plan)
    report = reporter(monitor, job_id)
    started = time.time()
    summary = run_job(Job(**job), p, pool_executor(p, pool), on_progress=report)
    summary["started_wall"] = started
    report({sid: s["frames_written"] for sid, s in summary["sources"].items()}, final=True)
    return summary
