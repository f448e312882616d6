"""Thin Ray wrappers (house rule 8): the actors only delegate to plain classes (``DecoderCore`` over a
source, ``Predictor``), and ``RayExecutor`` is the scheduler's ``Executor`` on them. Only numpy dicts
cross actors; GPU tensors never leave an inference actor. Actors get plain keyword values made in
``streamparse.plan`` and the weights once, as an object ref. Archives add their own tasks on top
(``streamparse.archive.tasks``)."""

from __future__ import annotations

import os
import uuid

import ray

from streamparse.engine.scheduler import DecoderCore, Slot


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


@ray.remote(num_cpus=0)
class WeightsHolder:
    """Holds the object ref of a run's weights (put in the object store once by the driver), so that
    inference actors fetch them by the holder's NAME: no constructor argument of a restartable actor
    refers to the object store (Ray cannot restore such arguments on a restart, ray-project/ray#53727)."""

    def __init__(self):
        self.refs: list | None = None

    def hold(self, refs: list) -> None:
        self.refs = refs

    def get(self) -> list | None:
        return self.refs


def share_weights(weights: dict | None):
    """Put ``weights`` (numpy state dict, or None) in the object store once; returns (holder name or
    None, holder handle to keep alive for the run)."""
    if weights is None:
        return None, None
    name = f"streamparse-weights-{uuid.uuid4().hex[:12]}"
    holder = WeightsHolder.options(name=name).remote()
    ray.get(holder.hold.remote([ray.put(weights)]))  # in a list: the ref travels, not the arrays
    return name, holder


@ray.remote(max_restarts=4, max_task_retries=4)
class InferenceActor:
    """Owns one model; restartable: a killed actor is restarted (fetching the weights again from the
    holder) and its batch re-run by Ray."""

    def __init__(self, predictor: dict, weights: str | None, threads: int):
        """``weights``: None (random init), or the name of the run's ``WeightsHolder``."""
        try:
            import torch

            from streamparse.engine.factory import make_predictor
        except ModuleNotFoundError as exc:  # a node without the dependencies: one line naming it
            from streamparse.logs import missing_dependency

            raise RuntimeError(missing_dependency(exc.name or "?", ray.util.get_node_ip_address())) from None
        if threads:
            torch.set_num_threads(threads)
        if weights is not None:
            weights = ray.get(ray.get(ray.get_actor(weights).get.remote())[0])
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
