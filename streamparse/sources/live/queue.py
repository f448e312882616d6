"""The bounded queue between a live source's decode thread and its consumer; the drop policy applies
in ``put`` (drop-oldest evicts the oldest frame, drop-latest discards the new one, wait blocks)."""

from __future__ import annotations

import collections
import threading
import time

DROP_POLICIES = ("drop-oldest", "drop-latest", "wait")


class FrameQueue:
    """Bounded deque + condition; the drop policy is applied in ``put``."""

    def __init__(self, size: int, policy: str) -> None:
        self.size, self.policy = size, policy
        self.items: collections.deque = collections.deque()
        self.cond = threading.Condition()
        self.closed = False

    def put(self, item, stop: threading.Event) -> tuple[str | None, float]:
        """Queue ``item``; returns (drop reason or None, seconds blocked)."""
        with self.cond:
            if self.closed:
                return "closed", 0.0
            if len(self.items) < self.size:
                self.items.append(item)
                self.cond.notify_all()
                return None, 0.0
            if self.policy == "drop-oldest":
                self.items.popleft()
                self.items.append(item)
                self.cond.notify_all()
                return "drop_oldest", 0.0
            if self.policy == "drop-latest":
                return "drop_latest", 0.0
            t0 = time.monotonic()
            while len(self.items) >= self.size and not (self.closed or stop.is_set()):
                self.cond.wait(0.1)
            blocked = time.monotonic() - t0
            if self.closed or stop.is_set():
                return "closed", blocked
            self.items.append(item)
            self.cond.notify_all()
            return None, blocked

    def get_many(self, n: int, deadline: float, done) -> list:
        """Up to ``n`` compatible items (same shape and time base), waiting until ``deadline``."""
        out: list = []
        with self.cond:
            while True:
                while self.items and len(out) < n:
                    it = self.items[0]
                    if out and (it[0].shape != out[0][0].shape or it[6] != out[0][6]):
                        return out
                    out.append(self.items.popleft())
                self.cond.notify_all()
                remaining = deadline - time.monotonic()
                if len(out) >= n or remaining <= 0 or self.closed or (not self.items and done()):
                    return out
                self.cond.wait(min(remaining, 0.1))

    def close(self) -> int:
        with self.cond:
            self.closed = True
            n = len(self.items)
            self.items.clear()
            self.cond.notify_all()
            return n
