"""Whose turn it is on an inference actor: one batch at a time, a source's first batch before the rest.

An ``InferenceActor`` accepts several calls at once (Ray ``max_concurrency``) and hands them to its one
inference thread (``Turns``), which runs them one at a time: first batches (a source with nothing
written yet) before other batches, each class in order of arrival. Without it an actor's calls run in
arrival order, and in an archive a new video's first batch waits behind every batch the other videos
have queued (4 videos x 4 in flight on 2 actors: ~8 batches, ~1 s), which is what its first written
frame waited for. The work done is the same; only the order changes (the scheduler writes results in
frame order whatever order they come back in). One thread runs every batch: the model running on
whichever of Ray's threads made the call cost 3-10 % (OpenVINO and torch keep per-thread state).
Plain Python: testable without Ray.
"""

from __future__ import annotations

import concurrent.futures as cf
import heapq
import threading


class Turns:
    """``turns.run(fn, arg, first)`` -> ``fn(arg)``, run on this object's thread when no call waiting
    goes before it (first before not first; then arrival order); exceptions are re-raised to the caller."""

    def __init__(self):
        self._cv = threading.Condition()
        self._waiting: list = []  # heap of (0 = first batch / 1 = other, arrival number, fn, arg, future)
        self._arrived = 0
        self._thread: threading.Thread | None = None

    def run(self, fn, arg, first: bool = False):
        fut: cf.Future = cf.Future()
        with self._cv:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="inference", daemon=True)
                self._thread.start()
            self._arrived += 1
            heapq.heappush(self._waiting, (0 if first else 1, self._arrived, fn, arg, fut))
            self._cv.notify()
        return fut.result()

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._waiting:
                    self._cv.wait()
                _, _, fn, arg, fut = heapq.heappop(self._waiting)
            try:
                fut.set_result(fn(arg))
            except BaseException as exc:  # noqa: BLE001 - the caller's thread raises it
                fut.set_exception(exc)
