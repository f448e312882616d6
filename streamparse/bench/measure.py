"""What the end-to-end benches (``bench pipeline``, ``bench archive``) measure with: the model's own
fps on pre-decoded frames, and the resident memory and CPU time of a process tree (this process or
another, and every descendant: the local Ray processes), sampled on a background thread. Linux /proc."""

from __future__ import annotations

import os
import threading
import time


def predict_fps(pred, clips: list, batch_size: int) -> float:
    """Frames per second of ``pred.predict`` over every frame of ``clips`` (arrays (T,H,W,3)) in
    batches of ``batch_size``, after one warm-up batch."""
    pred.predict(clips[0][:batch_size])  # warm-up
    n = sum(len(c) for c in clips)
    t = time.perf_counter()
    for c in clips:
        for i in range(0, len(c), batch_size):
            pred.predict(c[i : i + batch_size])
    return n / (time.perf_counter() - t)


def descendants(parent: dict[int, int], root: int | None = None) -> set[int]:
    """Process ``root`` (default: this one) and every descendant, from a pid -> parent pid map."""
    root = os.getpid() if root is None else root
    tree, frontier = {root}, [root]
    while frontier:
        p = frontier.pop()
        for c, pp in parent.items():
            if pp == p and c not in tree:
                tree.add(c)
                frontier.append(c)
    return tree


def rss_tree(root: int | None = None) -> int:
    """Resident bytes of process ``root`` (default: this one) and all its descendants (the local Ray
    processes); Linux /proc."""
    parent: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    parent[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    tree = descendants(parent, root)
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for p in tree:
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            pass
    return total


def cpu_by_pid() -> dict[int, tuple[str, float]]:
    """pid -> (role, CPU seconds so far) of this process and its descendants; roles: driver, inference
    actors, decoder actors, other Ray processes (raylet, GCS, idle workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    parent, info = {}, {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().decode(errors="replace")
        except OSError:
            continue
        pid = int(d)
        parent[pid] = int(fields[1])
        role = ("driver" if pid == os.getpid() else "inference actors" if "InferenceActor" in cmd
                else "engine task (decode, write, track)" if "run_task" in cmd else "other Ray processes")
        info[pid] = (role, (int(fields[11]) + int(fields[12])) / tick)
    return {p: info[p] for p in descendants(parent) if p in info}


class Sampler:
    """Calls ``sample(seconds since the start)`` every ``interval_s`` on a background thread while the
    ``with`` block runs (once at the start, then after each interval); ``samples`` collects them."""

    def __init__(self, interval_s: float):
        self.interval_s = interval_s
        self.samples: list[tuple] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)

    def sample(self, t: float) -> None:
        raise NotImplementedError

    def _loop(self) -> None:
        t0 = time.monotonic()
        while not self._stop.is_set():
            self.sample(time.monotonic() - t0)
            self._stop.wait(self.interval_s)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
