"""Where an archive's next video task goes (``NodeBalancer``) and how many run at once (``task_limit``)."""

from __future__ import annotations


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


def task_limit(concurrency: int, actors_up: int, pool_up: bool) -> int:
    """Video tasks allowed at once: one while the inference actors build their models, then two per
    actor up, ``concurrency`` once all are up. More tasks could only open their videos, decode a first
    batch and wait for the models, on the CPU the models build with (docs/performance.md)."""
    return concurrency if pool_up else min(concurrency, max(1, 2 * actors_up))
