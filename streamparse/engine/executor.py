"""The engine's executor on Ray (the scheduler's ``Executor``): decoding in threads of the engine
task, inference on the run's shared pool of ``InferenceActor``s, by reference.

Each source is decoded by a thread of its own in this process (PyAV releases the GIL while it
decodes and converts), at most two batches ahead of the scheduler. A decoded batch is handed to an
inference actor as an argument, so Ray puts its pixels in the object store once and the actor reads
them there; the actor's parsing comes back as an object reference. Nothing passes through the
driver. Actors on this task's node are preferred; among them the least loaded from this task's
point of view (``pool``: [(actor, node_id)]).
"""

from __future__ import annotations

import concurrent.futures as cf
import os

import ray

from streamparse.engine.decoders import DecoderCore
from streamparse.engine.scheduler import Slot


class DecodeThread:
    """One source's decoder on a thread: ``submit()`` -> a future of ``DecoderCore.next()`` (in order)."""

    def __init__(self, core: DecoderCore):
        self.core = core
        self.pool = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode")

    def submit(self) -> cf.Future:
        return self.pool.submit(self.core.next)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.core.close()


class PoolExecutor:
    """See the module docstring. ``make_source(slot)``: the slot's source (``Plan.source``)."""

    def __init__(self, pool: list, make_source, *, batch_size: int, batch_timeout_s: float = 0.05, max_frames: int = 0):
        self.make_source = make_source
        self.batch_size, self.batch_timeout_s, self.max_frames = int(batch_size), float(batch_timeout_s), int(max_frames)
        here = ray.get_runtime_context().get_node_id()
        local = [a for a, node in pool if node == here]
        self.actors = local or [a for a, _ in pool]
        self.load = [0] * len(self.actors)
        self.where: dict = {}  # inference ref -> actor index
        self.futures: dict = {}  # inference ref -> its future (made once)
        self._rr = os.getpid()  # tasks start their round-robin at different actors

    def open_source(self, slot: Slot) -> dict:
        slot.decoder = DecodeThread(DecoderCore(self.make_source(slot), self.batch_size, self.batch_timeout_s, self.max_frames))
        return slot.decoder.core.info()

    def request(self, slot: Slot) -> cf.Future:
        return slot.decoder.submit()

    def infer(self, batch: dict):
        lo = min(self.load)
        cands = [i for i, x in enumerate(self.load) if x == lo]
        self._rr += 1
        i = cands[self._rr % len(cands)]
        self.load[i] += 1
        ref = self.actors[i].infer.remote(batch)
        self.where[ref] = i
        return ref

    def _future(self, h) -> cf.Future:
        if isinstance(h, cf.Future):
            return h
        f = self.futures.get(h)
        if f is None:
            f = self.futures[h] = h.future()
        return f

    def wait(self, handles: list, timeout_s: float) -> list:
        if not handles:
            return []
        futs = {self._future(h): h for h in handles}
        done, _ = cf.wait(list(futs), timeout=timeout_s, return_when=cf.FIRST_COMPLETED)
        return [futs[f] for f in done]

    def get(self, handle):
        if isinstance(handle, cf.Future):
            return handle.result()
        self.futures.pop(handle, None)
        i = self.where.pop(handle, None)
        if i is not None:
            self.load[i] -= 1
        return ray.get(handle)

    def stats(self, slot: Slot) -> dict:
        return slot.decoder.core.src.stats()

    def decode_seconds(self, slot: Slot) -> float:
        return slot.decoder.core.decode_s if slot.decoder is not None else 0.0

    def stop_source(self, slot: Slot) -> None:
        if slot.decoder is not None:
            slot.decoder.close()

    def close(self) -> None:
        self.futures.clear()


def stage_seconds(pool: list, timeout_s: float = 10.0) -> dict:
    """Seconds per stage summed over the pool's inference actors (preprocess, network, post-processing,
    instance table)."""
    out: dict[str, float] = {}
    try:
        for d in ray.get([a.stage_seconds.remote() for a, _ in pool], timeout=timeout_s):
            for k, v in d.items():
                out[k] = round(out.get(k, 0.0) + v, 3)
    except Exception:  # noqa: BLE001 - diagnostics only
        pass
    return out
