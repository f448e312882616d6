"""The inference pool of an archive run: ``start_pool`` (one set of ``InferenceActor``s for the whole
run, shared by every video task) and ``NodeBalancer`` (which node the next video task goes to)."""

from __future__ import annotations

from streamparse import plan
from streamparse.config import Config
from streamparse.engine.scheduler import PipelineError, one_line


def start_pool(cfg: Config, meta: dict, *, workers: int = 0, start_timeout_s: float = 600.0) -> tuple[list, dict, object]:
    """The run's shared inference actors: [(actor, node_id)], a description and the weights holder
    (keep it for the run: restarted actors fetch the weights from it). GPU: one actor per GPU
    of the cluster (or ``workers``). CPU: per alive node, ``cpus // threads`` actors of ``threads``
    torch threads (``pipeline.torch_threads``, else min(node CPUs, 8)); ``workers`` caps the total.
    Waits until every actor is up (model built) and returns the node each one runs on."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from streamparse.engine.actors import InferenceActor, share_weights

    pc = cfg.pipeline
    wname, holder = share_weights(plan.load_weights(meta))  # the weights cross once; actors fetch them by name
    gpus = int(ray.cluster_resources().get("GPU", 0))
    use_gpu = pc.device == "cuda" or str(pc.device).startswith("cuda:") or (pc.device == "auto" and gpus > 0)
    pkw = plan.predictor_kwargs(cfg, meta, device="cuda" if use_gpu else "cpu")
    pool: list = []
    if use_gpu:
        n = workers or gpus
        if n < 1:
            raise PipelineError("pipeline.device is cuda but the cluster has no GPU")
        threads = pc.torch_threads or 2
        for _ in range(n):
            pool.append(InferenceActor.options(num_gpus=1, num_cpus=0.5).remote(pkw, wname, threads))
        desc = {"device": "cuda", "actors": n, "threads": threads}
    else:
        nodes = [nd for nd in ray.nodes() if nd.get("Alive") and nd.get("Resources", {}).get("CPU", 0) > 0]
        slots = []
        for nd in nodes:
            cpus = int(nd["Resources"]["CPU"])
            threads = pc.torch_threads or max(1, min(cpus, 8))
            slots += [(nd["NodeID"], threads)] * max(1, cpus // threads)
        if workers:
            slots = [slots[i % len(slots)] for i in range(workers)]
        for node, threads in slots:
            pool.append(InferenceActor.options(num_cpus=0.5, scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=True))
                        .remote(pkw, wname, threads))
        desc = {"device": "cpu", "actors": len(slots), "threads": sorted({t for _, t in slots}), "nodes": len(nodes)}
    try:  # where each actor really runs (placement is soft): video tasks go to those nodes
        where = ray.get([a.node_id.remote() for a in pool], timeout=start_timeout_s)
    except ray.exceptions.RayActorError as exc:  # an actor that could not start (e.g. a node lacking a package)
        for a in pool:
            ray.kill(a, no_restart=True)
        raise PipelineError(f"an inference actor did not start: {one_line(exc)}") from None
    except ray.exceptions.GetTimeoutError:
        for a in pool:
            ray.kill(a, no_restart=True)
        raise PipelineError(f"the inference actors did not start within {start_timeout_s:.0f} s "
                            f"(asked for {desc['actors']} {desc['device']} actor(s); does the cluster have them?)") from None
    desc["nodes"] = len(set(where))
    return list(zip(pool, where)), desc, holder


class NodeBalancer:
    """Where the next video task goes: the node with the fewest videos in flight per inference actor
    (its frames then stay in that node's object store)."""

    def __init__(self, pool: list):
        self.actors: dict = {}
        for _, node in pool:
            if node is not None:
                self.actors[node] = self.actors.get(node, 0) + 1
        self.inflight = {n: 0 for n in self.actors}

    def take(self):
        if not self.actors:
            return None
        node = min(self.actors, key=lambda n: (self.inflight[n] / self.actors[n], n))
        self.inflight[node] += 1
        return node

    def give(self, node) -> None:
        if node in self.inflight:
            self.inflight[node] = max(0, self.inflight[node] - 1)
