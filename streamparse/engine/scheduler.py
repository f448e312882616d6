"""The driver loop, in plain Python: issue decodes, take decoded batches to inference, take parsings
to the sink, finish sources. It runs behind a small ``Executor`` interface: ``InProcessExecutor``
(``streamparse.engine.decoders``; used by tests, no Ray) or ``streamparse.engine.executor.PoolExecutor``
(decode threads, the inference pool on Ray).

Flow control: each source has at most ``policy.max_in_flight`` batches between its decoder and the
sink (files never drop: the decoder waits; live sources rely on their own drop-oldest queue); results
come back in any order and the sink reorders them by row. Files and live streams differ only by
their ``SourcePolicy``.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from streamparse.engine.interrupts import Interrupts
from streamparse.engine.metrics import SourceMetrics
from streamparse.store.sink import SinkWriteError
from streamparse.sources.uri import redact_uri
from streamparse.structures import ParsingBatch

log = logging.getLogger(__name__)


class PipelineError(RuntimeError):
    """A run that cannot start (bad input) or an internal inconsistency; one line for the user."""


# ----------------------------------------------------------------------------- policies
@dataclass(frozen=True)
class SourcePolicy:
    """What differs between kinds of source. ``resume_rows``: a resumed file continues decoding at its
    commit marker; a live stream starts now and its frames are appended after the committed ones.
    ``keep_numbering``: a file's rows are its frame numbers (checked). ``group_commits``: the writer
    groups whole chunks into larger writes (``pipeline.commit_frames``); a live source writes each chunk
    as soon as it is complete instead: one large write holds up the loop that feeds the stream's
    batches (its queue drops frames meanwhile), and readers of a live store see results sooner."""

    kind: str
    max_in_flight: int
    resume_rows: bool
    keep_numbering: bool
    group_commits: bool = True

    def finish(self, committed: int, errors: list[str], driver_errors: list[str]) -> tuple[str, bool]:
        """(state, complete) of a source whose decoder has ended. ``errors``: all its errors (the
        decoder's and the driver's); ``driver_errors``: those the driver saw, less the decoder's own and
        a live source's final 'gave up'."""
        if self.kind == "live":  # a live stream ends by giving up reconnecting: every frame it delivered is stored
            state = "ended" if committed and not driver_errors else "error"
            return state, state == "ended"
        return ("complete", True) if not errors else ("error", False)


def file_policy(max_in_flight: int) -> SourcePolicy:
    return SourcePolicy("file", max_in_flight, resume_rows=True, keep_numbering=True)


def live_policy(max_in_flight: int) -> SourcePolicy:
    return SourcePolicy("live", max_in_flight, resume_rows=False, keep_numbering=False, group_commits=False)


# ----------------------------------------------------------------------------- executor interface
class Executor(Protocol):
    """Where decoding and inference run. Handles are opaque; ``wait`` returns those ready."""

    def open_source(self, slot: "Slot") -> dict: ...  # start its decoder; its info (blocking)

    def request(self, slot: "Slot") -> object: ...  # ask its decoder for the next batch

    def infer(self, batch: dict) -> object: ...  # a FrameBatch dict -> a handle of its ParsingBatch dict

    def wait(self, handles: list, timeout_s: float) -> list: ...

    def get(self, handle) -> object: ...  # the result (raises the task's error)

    def stats(self, slot: "Slot") -> dict: ...  # the decoder's counters

    def stop_source(self, slot: "Slot") -> None: ...

    def close(self) -> None: ...


@dataclass
class Slot:
    """One source of a run: its identity, policy, writer, and what is in flight."""

    uri: str
    sid: str
    policy: SourcePolicy
    start_frame: int = 0
    info: dict = field(default_factory=dict)
    writer: object = None
    metrics: SourceMetrics = None
    next_seq: int = 0
    requests: deque = field(default_factory=deque)  # decode handles, oldest first
    in_flight: int = 0
    submitted: int = 0  # batches sent to inference
    eof: bool = False
    done: bool = False
    errors: list = field(default_factory=list)
    dropped: dict = field(default_factory=dict)
    decoder: object = None  # the executor's per-source state


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    # Ray wraps remote errors; keep the innermost message line
    msg = next((ln for ln in reversed(text) if ln.strip() and not ln.startswith(" ")), repr(exc))
    return redact_uri(msg)[:500]


class Scheduler:
    """Drives ``slots`` through ``executor`` into writers opened by ``open_writer(slot)``.

    ``on_progress(n_frames_written)`` is called as results are written; ``intr`` defers interrupts
    while a store write runs. ``run()`` returns when every source is done; it raises
    ``KeyboardInterrupt`` (after ``drain``) when interrupted."""

    def __init__(self, slots: list[Slot], executor: Executor, *, open_writer: Callable[[Slot], None],
                 intr: Interrupts | None = None, on_progress: Callable[[int], None] | None = None,
                 wait_s: float = 0.2, t0: float | None = None, first_batch_s: float = 2.0):
        self.slots = slots
        self.ex = executor
        self.open_writer = open_writer
        self.intr = intr or Interrupts()
        self.on_progress = on_progress or (lambda n: None)
        self.wait_s = wait_s
        self.first_batch_s = first_batch_s  # how long start() waits for a file's first batch before opening its writer
        self.pending: dict = {}  # inference handle -> (slot, seq, n)
        self.first_result_s: float | None = None  # seconds from t0 to the first written result
        self.stage_s = {"write": 0.0, "wait": 0.0}  # driver seconds: in the writers, waiting for results
        self._t0 = time.monotonic() if t0 is None else t0

    # -------------------------------------------------------------- start
    def _open_writer(self, s: Slot) -> None:
        self.open_writer(s)
        if s.writer is not None and not s.policy.group_commits:
            s.writer.commit_frames = s.writer.chunk  # each whole chunk when ready

    def start(self) -> None:
        """Open every source (a source that cannot open must not stop the others) and its writer. A
        numbered source's (a file's) first batch goes to inference before its writer opens (the store's
        arrays take 0.2-0.4 s to create; the network runs meanwhile)."""
        for s in self.slots:
            s.metrics = SourceMetrics(s.sid)
            if not s.done:  # (a source already complete in a resumed store is not decoded again)
                try:
                    s.info = {**s.info, **self.ex.open_source(s)}
                    s.requests.append(self.ex.request(s))  # (a live stream does not wait for its writer)
                except Exception as exc:  # noqa: BLE001
                    s.errors.append(one_line(exc))
                    s.done = True
                    s.info = {"uri": redact_uri(s.uri), "kind": s.policy.kind, **s.info}
        for s in self.slots:
            if s.requests and s.policy.keep_numbering and self.ex.wait([s.requests[0]], self.first_batch_s):
                self._on_decoded(s, s.requests.popleft())  # (submits it, then opens the writer)
            if s.writer is None and s.info.get("width"):  # (a live source not connected yet: with its first frames)
                self._open_writer(s)
            if s.done and s.writer is not None:
                s.writer.set_status(state="complete" if not s.errors else "error", errors=s.errors)

    # -------------------------------------------------------------- the loop
    def run(self) -> None:
        while True:
            active = [s for s in self.slots if not s.done]
            if not active and not self.pending:
                return
            for s in active:  # decode requests under the in-flight bound
                while not s.eof and s.in_flight + len(s.requests) < s.policy.max_in_flight and len(s.requests) < 2:
                    s.requests.append(self.ex.request(s))
            # only the oldest decode request of each source is waited on: batches must be numbered
            # in decode order, and a later one may be reported ready before an earlier one
            oldest = {s.requests[0]: s for s in active if s.requests}
            t0 = time.perf_counter()
            ready = self.ex.wait(list(oldest) + list(self.pending), self.wait_s)
            self.stage_s["wait"] += time.perf_counter() - t0
            for h in ready:
                if h in self.pending:
                    self._on_inferred(h, *self.pending.pop(h))
                elif h in oldest:
                    s = oldest[h]
                    s.requests.popleft()
                    self._on_decoded(s, h)
            for s in active:
                if s.eof and s.in_flight == 0 and not s.requests and not s.done:
                    with self.intr.critical():
                        self.finish(s)

    def _on_decoded(self, s: Slot, h) -> None:
        try:
            out = self.ex.get(h)
        except Exception as exc:  # noqa: BLE001 - decode error: keep earlier frames, record it
            s.errors.append(one_line(exc))
            s.eof = True
            return
        if out.get("stats"):
            self._live_stats(s, out["stats"])
        batch = out.get("batch")
        if batch is None:
            s.eof = s.eof or bool(out.get("end"))
            return
        n = len(batch["frame_index"])
        early = s.writer is None and s.policy.keep_numbering  # a file: submitted first, its writer opened after
        if early:
            s.next_seq = s.start_frame  # (the writer's next row: checked once it is open)
        if s.policy.keep_numbering and int(batch["frame_index"][0]) != s.next_seq:
            raise PipelineError(f"{s.sid}: internal error: a batch starting at frame {int(batch['frame_index'][0])} "
                                f"arrived for row {s.next_seq}")
        if s.writer is None:
            h_, w_ = np.asarray(batch["frames"]).shape[1:3]
            s.info = {**s.info, "height": int(h_), "width": int(w_)}
            if not early:
                self._open_writer(s)
        s.metrics.count("decoded", n)
        if not s.submitted:  # an inference actor runs a source's first batch before others (``Turns``)
            batch = {**batch, "first": np.bool_(True)}
        s.submitted += 1
        s.in_flight += 1
        seq = s.next_seq
        self.pending[self.ex.infer(batch)] = (s, seq, n)
        if early:
            self._open_writer(s)
            if s.next_seq != seq:
                raise PipelineError(f"{s.sid}: internal error: the store continues at row {s.next_seq}, "
                                    f"the source at frame {seq}")
        s.next_seq = seq + n

    def _on_inferred(self, h, s: Slot, seq: int, n: int) -> None:
        s.in_flight -= 1
        res = self.ex.get(h)
        if s.done:  # the source stopped (its store failed): late results are dropped
            return
        pb = ParsingBatch.from_dict(res)
        if len(pb) != n:
            raise PipelineError(f"{s.sid}: internal error: {len(pb)} parsings for a batch of {n} frames")
        t0 = time.perf_counter()
        try:
            with self.intr.critical():
                s.writer.add_batch(seq, pb)
        except SinkWriteError as exc:  # disk full / I/O error: stop this source, keep the others
            self.stop(s, str(exc))
            return
        finally:
            self.stage_s["write"] += time.perf_counter() - t0
        s.metrics.observe_lags(time.time() - pb.wallclock)
        if self.first_result_s is None:
            self.first_result_s = round(time.monotonic() - self._t0, 3)
        s.metrics.count("inferred", n)
        s.metrics.count("written", n)
        self.on_progress(n)

    def _live_stats(self, s: Slot, st: dict) -> None:
        for reason, k in (st.get("dropped") or {}).items():
            new = int(k) - s.dropped.get(reason, 0)
            if new > 0:
                s.metrics.drop(reason, new)
        s.dropped = dict(st.get("dropped") or {})
        s.metrics.set_reconnects(int(st.get("reconnects", 0) or 0), int(st.get("segments", 0) or 0))

    # -------------------------------------------------------------- ends
    def finish(self, s: Slot) -> None:
        """A source whose decoder ended and whose results are all written: flush and record its state."""
        if s.writer is not None:
            try:
                s.writer.flush()
            except SinkWriteError as exc:
                self.stop(s, str(exc))
                return
            try:
                st = self.ex.stats(s)
            except Exception:  # noqa: BLE001
                st = {}
            src_errs = [e for e in st.get("errors", []) if isinstance(e, str)] if isinstance(st.get("errors"), list) else []
            errs = s.errors + [e for e in src_errs if e not in s.errors]
            own = [e for e in s.errors if e not in src_errs and "gave up" not in e]
            state, complete = s.policy.finish(s.writer.committed, errs, own)
            s.errors[:] = errs  # the summary reports what the status records
            if isinstance(st.get("dropped"), dict):
                self._live_stats(s, st)
            dropped = st.get("dropped", 0)
            if isinstance(dropped, dict):
                dropped = sum(dropped.values())
            s.writer.set_status(state=state, complete=complete, errors=errs, dropped=int(dropped or 0),
                                dropped_by_reason=dict(s.dropped), reconnects=int(st.get("reconnects", 0) or 0),
                                segments=int(st.get("segments", 0) or 0))
        s.done = True

    def stop(self, s: Slot, error: str) -> None:
        """A source whose store writes failed: record the error, stop decoding it (the writer already put
        state=error and the error into the store's status, if the store could still take it)."""
        log.error("%s: %s", s.sid, error)
        s.errors.append(error)
        s.done = s.eof = True
        try:
            self.ex.stop_source(s)
        except Exception:  # noqa: BLE001
            pass

    def drain(self, timeout_s: float = 60.0) -> None:
        """After an interrupt: write what is still in flight (up to ``timeout_s``), flush, mark the
        sources ``interrupted``."""
        deadline = time.monotonic() + timeout_s
        while self.pending and time.monotonic() < deadline:
            try:
                ready = self.ex.wait(list(self.pending), 1.0)
            except Exception:  # noqa: BLE001 - the executor itself was stopped (Ctrl-C reaches its processes too)
                break
            for h in ready:
                s, seq, n = self.pending.pop(h)
                if s.done:
                    continue
                try:
                    pb = ParsingBatch.from_dict(self.ex.get(h))
                    with self.intr.critical():
                        s.writer.add_batch(seq, pb)
                except Exception:  # noqa: BLE001
                    pass
        for s in self.slots:
            if s.writer is not None and not s.writer.failed:
                try:
                    with self.intr.critical():
                        s.writer.flush()
                        if s.writer.committed or not s.done:
                            s.writer.set_status(state="interrupted")
                except (SinkWriteError, OSError) as exc:
                    s.errors.append(one_line(exc))
