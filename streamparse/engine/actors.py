"""The inference actors, thin (house rule 8): ``InferenceActor`` only delegates to a ``Predictor`` built
from the plan's plain values; the weights are put in the object store once and fetched by name
(``WeightsHolder``). Only numpy dicts cross actors; GPU tensors never leave an inference actor. The
engine's tasks and executor are ``streamparse.engine.tasks`` / ``executor``."""

from __future__ import annotations

import os
import uuid

import ray

from streamparse.engine.turns import Turns


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


CALLS_AT_ONCE = 32  # calls an inference actor accepts at once (and orders by ``Turns``); more wait in Ray's queue


@ray.remote(max_restarts=4, max_task_retries=4, max_concurrency=CALLS_AT_ONCE)
class InferenceActor:
    """Owns one model; restartable: a killed actor is restarted (fetching the weights again from the
    holder) and its batch re-run by Ray. Batches run one at a time, a source's first batch before the
    others (``Turns``: an archive's new video does not wait behind the batches other videos queued)."""

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
        self.turns = Turns()

    def infer(self, batch: dict) -> dict:
        """``batch``: a ``FrameBatch`` dict; ``batch["first"]`` (optional): its source's first batch."""
        return self.turns.run(self.pred, batch, first=bool(batch.get("first", False)))

    def pid(self) -> int:
        return os.getpid()

    def node_id(self) -> str:
        """The Ray node this actor runs on (archives keep a video's frames on its node)."""
        return ray.get_runtime_context().get_node_id()

    def stage_seconds(self) -> dict:
        return dict(self.pred.stage_s)

    def info(self) -> dict:
        return self.pred.info()
