"""The Ray side of an archive: the worker-side video task (``archive_video``), its executor
(``PoolExecutor``: decode in the task, inference on the run's shared pool of ``InferenceActor``s) and
a progress monitor (``ArchiveMonitor``). Thin wrappers: the work is ``streamparse.archive.worker``."""

from __future__ import annotations

import os
import time

import ray

from streamparse.engine.scheduler import InProcessExecutor


class PoolExecutor(InProcessExecutor):
    """The executor of one archive video inside its worker task: decoding here (``DecoderCore`` over
    the file, as ``InProcessExecutor``), inference on the run's SHARED pool of ``InferenceActor``s
    (handles passed in; ``pool``: [(actor, node_id)], actors on this task's node preferred, then the
    least loaded from this task's point of view). Frames never pass through the driver."""

    def __init__(self, pool: list, make_source, *, batch_size: int, batch_timeout_s: float = 0.05, max_frames: int = 0):
        super().__init__(make_source, None, batch_size=batch_size, batch_timeout_s=batch_timeout_s, max_frames=max_frames)
        here = ray.get_runtime_context().get_node_id()
        local = [a for a, node in pool if node == here]
        self.actors = local or [a for a, _ in pool]
        self.load = [0] * len(self.actors)
        self.where: dict = {}
        self._rr = os.getpid()  # tasks start their round-robin at different actors

    def infer(self, batch: dict):
        lo = min(self.load)
        cands = [i for i, x in enumerate(self.load) if x == lo]
        self._rr += 1
        i = cands[self._rr % len(cands)]
        self.load[i] += 1
        ref = self.actors[i].infer.remote(batch)
        self.where[ref] = i
        return ref

    def wait(self, handles: list, timeout_s: float) -> list:
        done = [h for h in handles if not isinstance(h, ray.ObjectRef)]
        refs = [h for h in handles if isinstance(h, ray.ObjectRef)]
        if not refs:
            return done
        ready, rest = ray.wait(refs, num_returns=1, timeout=0 if done else timeout_s)
        if ready and rest:
            more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        return done + ready

    def get(self, handle):
        if not isinstance(handle, ray.ObjectRef):
            return super().get(handle)
        i = self.where.pop(handle, None)
        if i is not None:
            self.load[i] -= 1
        return ray.get(handle)


@ray.remote(num_cpus=0)
class ArchiveMonitor:
    """Progress of the videos being written (frames committed per video), reported by the video tasks
    and read by the driver for its progress bar; nothing else goes through it."""

    def __init__(self):
        self.frames: dict[str, int] = {}

    def progress(self, video_id: str, frames: int) -> None:
        self.frames[video_id] = int(frames)

    def snapshot(self) -> dict:
        return dict(self.frames)

    def forget(self, video_id: str) -> None:
        self.frames.pop(video_id, None)


@ray.remote(num_cpus=0.25, max_retries=3, retry_exceptions=False)
def archive_video(job: dict, ctx: dict, pool: list, monitor) -> dict:
    """One archive video, on a worker: ``streamparse.archive.worker.process_video`` with a
    ``PoolExecutor``. Retried by Ray (``max_retries``) when its worker or node is lost; the retry
    continues the store from its commit marker."""
    from streamparse import plan
    from streamparse.archive.worker import process_video

    def make_executor(cfg):
        pc = cfg.pipeline
        return PoolExecutor(pool, lambda s: plan.build_source(s.uri, cfg, source_id=s.sid, start_frame=s.start_frame),
                            batch_size=pc.batch_size, batch_timeout_s=pc.batch_timeout_s, max_frames=0)

    last = [0.0]

    def on_progress(video_id: str, frames: int) -> None:
        now = time.monotonic()
        if monitor is not None and now - last[0] >= 0.5:
            last[0] = now
            monitor.progress.remote(video_id, frames)

    res = process_video(job, ctx, make_executor, on_progress=on_progress, node=ray.get_runtime_context().get_node_id())
    if monitor is not None:
        monitor.progress.remote(job["video_id"], res.get("frames_new", 0))
    return res
