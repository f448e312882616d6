"""Thin Ray wrappers (house rule 8): the actors only delegate to plain classes (``DecoderCore`` over a
source, ``Predictor``), and ``RayExecutor`` is the scheduler's ``Executor`` on them. Only numpy dicts
cross actors; GPU tensors never leave an inference actor. Actors get plain keyword values made in
``streamparse.build`` and the weights once, as an object ref. Archives (``streamparse archive``) add a
worker-side video task (``archive_video``) with its executor (``PoolExecutor``: decode in the task,
inference on the shared pool) and a progress monitor."""

from __future__ import annotations

import os
import time

import ray

from streamparse.scheduler import DecoderCore, InProcessExecutor, Slot


@ray.remote
class DecoderActor:
    """One per source: ``next()`` -> ``{"batch": FrameBatch dict | None, "end", "stats"}``."""

    def __init__(self, source: dict, batch_size: int, batch_timeout_s: float):
        from streamparse.sources import open_source

        kw = dict(source)
        self.core = DecoderCore(open_source(kw.pop("uri"), **kw), batch_size, batch_timeout_s, kw.get("max_frames", 0))

    def info(self) -> dict:
        return self.core.info()

    def next(self) -> dict:
        return self.core.next()

    def stage_seconds(self) -> dict:
        return {"decode": self.core.decode_s}

    def stats(self) -> dict:
        return self.core.src.stats()

    def close(self) -> None:
        self.core.close()


@ray.remote(max_restarts=4, max_task_retries=4)
class InferenceActor:
    """Owns one model; restartable: a killed actor is restarted and its batch re-run by Ray."""

    def __init__(self, predictor: dict, weights, threads: int):
        """``weights``: None (random init), or a one-element list holding the object ref of the numpy state dict."""
        import torch

        from streamparse.build import make_predictor

        if threads:
            torch.set_num_threads(threads)
        if isinstance(weights, list):
            weights = ray.get(weights[0])
        self.pred = make_predictor(**predictor, weights=weights)

    def infer(self, batch: dict) -> dict:
        return self.pred(batch)

    def pid(self) -> int:
        return os.getpid()

    def node_id(self) -> str:
        """The Ray node this actor runs on (archives keep a video's frames on its node)."""
        return ray.get_runtime_context().get_node_id()

    def stage_seconds(self) -> dict:
        return dict(self.pred.stage_s)

    def info(self) -> dict:
        return self.pred.info()


class RayExecutor:
    """The scheduler's executor on Ray actors: one decoder actor per source, a pool of inference
    actors (``workers``) fed least-loaded first."""

    def __init__(self, workers: list, *, batch_size: int, batch_timeout_s: float, source_kwargs):
        self.workers = workers
        self.load = {i: 0 for i in range(len(workers))}
        self.where: dict = {}  # inference ref -> worker index
        self.batch_size = batch_size
        self.batch_timeout_s = batch_timeout_s
        self.source_kwargs = source_kwargs  # slot -> open_source keyword values

    def open_source(self, slot: Slot) -> dict:
        slot.decoder = DecoderActor.options(num_cpus=0.1).remote(self.source_kwargs(slot), self.batch_size, self.batch_timeout_s)
        return ray.get(slot.decoder.info.remote())

    def request(self, slot: Slot):
        return slot.decoder.next.remote()

    def infer(self, batch: dict):
        wi = min(self.load, key=self.load.get)
        self.load[wi] += 1
        ref = self.workers[wi].infer.remote(batch)
        self.where[ref] = wi
        return ref

    def wait(self, handles: list, timeout_s: float) -> list:
        if not handles:
            return []
        ready, _ = ray.wait(handles, num_returns=1, timeout=timeout_s)
        return ready

    def get(self, handle):
        wi = self.where.pop(handle, None)
        if wi is not None:
            self.load[wi] -= 1
        return ray.get(handle)

    def stats(self, slot: Slot) -> dict:
        return ray.get(slot.decoder.stats.remote())

    def stop_source(self, slot: Slot) -> None:
        if slot.decoder is not None:
            ray.kill(slot.decoder)

    def close(self) -> None:
        for w in self.workers:
            try:
                ray.kill(w, no_restart=True)
            except Exception:  # noqa: BLE001
                pass


# ----------------------------------------------------------------------------- archives (issue 18)
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
    """One archive video, on a worker: ``streamparse.archive_worker.process_video`` with a
    ``PoolExecutor``. Retried by Ray (``max_retries``) when its worker or node is lost; the retry
    continues the store from its commit marker."""
    from streamparse import build
    from streamparse.archive_worker import process_video

    def make_executor(cfg):
        pc = cfg.pipeline
        return PoolExecutor(pool, lambda s: build.build_source(s.uri, cfg, source_id=s.sid, start_frame=s.start_frame),
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
