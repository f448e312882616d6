"""The inference pool of a run: ``start_pool`` (one set of ``InferenceActor``s for the whole run, shared
by every engine task: the one of ``streamparse run``, the many of an archive)."""

from __future__ import annotations

from streamparse.engine.scheduler import PipelineError, one_line
from streamparse.plan import Plan, decide_device


def start_pool(plan: Plan, *, workers: int = 0, start_timeout_s: float = 600.0) -> tuple[list, dict, object, Plan]:
    """The run's shared inference actors: [(actor, node_id)], a description and the weights holder
    (keep it for the run: restarted actors fetch the weights from it) and the plan on the device chosen
    (``decide_device`` from the cluster's GPUs). GPU: one actor per GPU
    of the cluster (or ``workers``). CPU: per alive node, ``cpus // threads`` actors of ``threads``
    torch threads (``pipeline.torch_threads``, else min(node CPUs, 8)); ``workers`` caps the total.
    Waits until every actor is up (model built) and returns the node each one runs on."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from streamparse.engine.actors import InferenceActor, share_weights

    gpus = int(ray.cluster_resources().get("GPU", 0))
    try:
        plan = plan.on_device(decide_device(plan.config["pipeline"]["device"], gpus))
    except ValueError as exc:
        raise PipelineError(f"{exc} (the cluster has no GPU)") from None
    use_gpu = plan.device.startswith("cuda")
    wname, holder = share_weights(plan.weights)  # the weights cross once; actors fetch them by name
    pkw = plan.predictor
    pool: list = []
    if use_gpu:
        n = workers or gpus
        threads = plan.config["pipeline"]["torch_threads"] or 2
        for _ in range(n):
            pool.append(InferenceActor.options(num_gpus=1, num_cpus=0.5).remote(pkw, wname, threads))
        desc = {"device": "cuda", "actors": n, "threads": threads}
    else:
        nodes = [nd for nd in ray.nodes() if nd.get("Alive") and nd.get("Resources", {}).get("CPU", 0) > 0]
        slots = _cpu_slots(nodes, plan.config["pipeline"]["torch_threads"], workers)
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
    return list(zip(pool, where)), desc, holder, plan


def _cpu_slots(nodes: list[dict], torch_threads: int, workers: int) -> list[tuple[str, int]]:
    """(node id, torch threads) per CPU inference actor. ``workers`` given: that many actors, spread over
    the nodes in turn, sharing each node's cores (``torch_threads``, else min(CPUs, 8) // actors there).
    Else per node ``cpus // threads`` actors of ``threads`` = ``torch_threads`` or min(CPUs, 8)."""
    cpus = {nd["NodeID"]: int(nd["Resources"]["CPU"]) for nd in nodes}
    if workers:
        ids = [list(cpus)[i % len(cpus)] for i in range(workers)]
        return [(n, torch_threads or max(1, min(cpus[n], 8) // ids.count(n))) for n in ids]
    slots = []
    for n, c in cpus.items():
        threads = torch_threads or max(1, min(c, 8))
        slots += [(n, threads)] * max(1, c // threads)
    return slots
