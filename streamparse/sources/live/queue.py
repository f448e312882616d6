"""The bounded queue between a live source's decode thread and its consumer; the drop policy applies
in ``put`` (drop-oldest evicts the oldest frame, drop-latest discards the new one, wait blocks).

Start-up allowance: for ``startup_s`` seconds after the first frame the queue holds up to ``size +
startup_extra`` frames (the run's first batches wait while the inference workers make the model for the
stream's shape); after that the bound follows the backlog down as it is read (the backlog plus ``size``
frames), to ``size``, and never grows again. A reader slower than the stream meets a full queue:
drop-oldest then evicts two frames per new one until the bound is back at ``size``, so an overload does
not keep the start-up backlog's lag."""

from __future__ import annotations

import collections
import threading
import time

DROP_POLICIES = ("drop-oldest", "drop-latest", "wait")


class FrameQueue:
    """Bounded deque + condition; the drop policy is applied in ``put``."""

    def __init__(self, size: int, policy: str, *, startup_extra: int = 0, startup_s: float = 0.0) -> None:
        self.size, self.policy = size, policy
        self.bound = size + max(0, int(startup_extra)) if startup_s > 0 else size  # the current bound
        self.startup_s = float(startup_s)
        self.t_first: float | None = None  # monotonic time of the first frame
        self.items: collections.deque = collections.deque()
        self.cond = threading.Condition()
        self.closed = False

    def _limit(self) -> int:
        """The bound now (under the lock): the start-up allowance, then the backlog's length as it drains."""
        if self._draining():  # (room for ``size`` new frames between reads, as without the allowance)
            self.bound = max(self.size, min(self.bound, len(self.items) + self.size))
        return self.bound

    def _draining(self) -> bool:
        """Past the start-up window with a bound still above ``size``."""
        return self.bound > self.size and self.t_first is not None and time.monotonic() - self.t_first > self.startup_s

    def put(self, item, stop: threading.Event) -> tuple[str | None, float, int]:
        """Queue ``item``; returns (drop reason or None, seconds blocked, frames dropped)."""
        with self.cond:
            if self.closed:
                return "closed", 0.0, 1
            if self.t_first is None:
                self.t_first = time.monotonic()
            if len(self.items) < self._limit():
                self.items.append(item)
                self.cond.notify_all()
                return None, 0.0, 0
            if self.policy == "drop-oldest":
                self.items.popleft()
                n = 1
                if self._draining():  # a backlog the reader does not work off (overload): shrink it too
                    self.items.popleft()
                    self.bound -= 1
                    n = 2
                self.items.append(item)
                self.cond.notify_all()
                return "drop_oldest", 0.0, n
            if self.policy == "drop-latest":
                return "drop_latest", 0.0, 1
            t0 = time.monotonic()
            while len(self.items) >= self._limit() and not (self.closed or stop.is_set()):
                self.cond.wait(0.1)
            blocked = time.monotonic() - t0
            if self.closed or stop.is_set():
                return "closed", blocked, 1
            self.items.append(item)
            self.cond.notify_all()
            return None, blocked, 0

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
                self._limit()  # (after the start-up window the bound comes down with the backlog)
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
