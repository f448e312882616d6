"""The inference pool of a run: ``start_pool`` (one set of ``InferenceActor``s for the whole run, shared
by every engine task: the one of ``streamparse run``, the many of an archive). The actors build their
models while the driver goes on (``Pool.check`` / ``Pool.wait``): a job starts decoding meanwhile."""

from __future__ import annotations

from dataclasses import dataclass, field

from streamparse.engine.scheduler import PipelineError, one_line
from streamparse.plan import Plan, cpu_actor_threads, cpu_actors, decide_device


@dataclass
class Pool:
    """The run's inference actors: ``actors`` [(actor, node id)] (the node asked for until ``wait``
    learns where each one runs), a description, the weights holder (keep the pool for the run: a
    restarted actor fetches the weights from it), the plan on the device chosen."""

    actors: list
    desc: dict
    holder: object
    plan: Plan
    ready: list = field(default_factory=list)  # refs of each actor's node id: done when its model is built
    up: int = 0  # actors up at the last ``check``

    def check(self) -> bool:
        """True once every actor is up (``up`` counts them); a ``PipelineError`` (one line) for an actor
        that could not start (e.g. a node lacking a package). Never blocks."""
        import ray

        done, _ = ray.wait(self.ready, num_returns=len(self.ready), timeout=0)
        for ref in done:
            self._get(ref, 1.0)
        self.up = len(done)
        return self.all_up

    @property
    def all_up(self) -> bool:
        """Every actor was up at the last ``check`` (or ``wait``)."""
        return self.up == len(self.ready)

    def wait(self, timeout_s: float = 600.0) -> "Pool":
        """Until every actor is up (or ``PipelineError``); then ``actors`` name the node each one runs on."""
        where = [self._get(ref, timeout_s) for ref in self.ready]
        self.actors = [(a, node) for (a, _), node in zip(self.actors, where)]
        self.up = len(where)
        self.desc["nodes"] = len(set(where))
        return self

    def _get(self, ref, timeout_s: float):
        import ray

        try:
            return ray.get(ref, timeout=timeout_s)
        except ray.exceptions.RayActorError as exc:
            self.kill()
            raise PipelineError(f"an inference actor did not start: {one_line(exc)}") from None
        except ray.exceptions.GetTimeoutError:
            self.kill()
            raise PipelineError(f"the inference actors did not start within {timeout_s:.0f} s (asked for "
                                f"{self.desc['actors']} {self.desc['device']} actor(s); does the cluster have them?)") from None

    def kill(self) -> None:
        import ray

        for a, _ in self.actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # noqa: BLE001
                pass


def start_pool(plan: Plan, *, workers: int = 0, wait: bool = True, start_timeout_s: float = 600.0) -> Pool:
    """The run's shared inference actors, started (models built in parallel with whatever the caller does
    next unless ``wait``). GPU: one actor per GPU of the cluster (or ``workers``). CPU: ``_cpu_slots``."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from streamparse.engine.actors import InferenceActor, share_weights

    gpus = int(ray.cluster_resources().get("GPU", 0))
    try:
        plan = plan.on_device(decide_device(plan.config["pipeline"]["device"], gpus))
    except ValueError as exc:
        raise PipelineError(f"{exc} (the cluster has no GPU)") from None
    wname, holder = share_weights(plan.weights)  # the weights cross once; actors fetch them by name
    actors: list = []
    if plan.device.startswith("cuda"):
        n = workers or gpus
        threads = plan.config["pipeline"]["torch_threads"] or 2
        actors = [(InferenceActor.options(num_gpus=1, num_cpus=0.5).remote(plan.predictor, wname, threads), None)
                  for _ in range(n)]
        desc = {"device": "cuda", "actors": n, "threads": threads}
    else:
        nodes = [nd for nd in ray.nodes() if nd.get("Alive") and nd.get("Resources", {}).get("CPU", 0) > 0]
        slots = _cpu_slots(nodes, plan.config["pipeline"]["torch_threads"], workers)
        for node, threads in slots:
            strategy = NodeAffinitySchedulingStrategy(node, soft=True)
            actors.append((InferenceActor.options(num_cpus=0.5, scheduling_strategy=strategy).remote(plan.predictor, wname, threads),
                           node))
        desc = {"device": "cpu", "actors": len(slots), "threads": sorted({t for _, t in slots}), "nodes": len(nodes)}
    pool = Pool(actors, desc, holder, plan, ready=[a.node_id.remote() for a, _ in actors])
    return pool.wait(start_timeout_s) if wait else pool


def _cpu_slots(nodes: list[dict], torch_threads: int, workers: int) -> list[tuple[str, int]]:
    """(node id, torch threads) per CPU inference actor. ``workers`` given: that many actors, spread over
    the nodes in turn, sharing each node's cores (``torch_threads``, else min(CPUs, 8) // actors there).
    Else per node ``plan.cpu_actors`` actors of ``plan.cpu_actor_threads`` threads (2 x 1 on 2 cores)."""
    cpus = {nd["NodeID"]: int(nd["Resources"]["CPU"]) for nd in nodes}
    if workers:
        ids = [list(cpus)[i % len(cpus)] for i in range(workers)]
        return [(n, cpu_actor_threads(cpus[n], torch_threads, ids.count(n))) for n in ids]
    slots = []
    for n, c in cpus.items():
        slots += [(n, cpu_actor_threads(c, torch_threads))] * cpu_actors(c, torch_threads)
    return slots
