"""One job of the engine, in plain Python: sources into one store.

``run_job(job, plan, make_executor)`` opens the job's store (``Plan.sink``), drives every source
through the ``Scheduler`` (decode -> inference -> writer, with the file or live policy of each
source) and closes the store. ``streamparse run`` is one job holding all its inputs; an archive is one
job per video (``streamparse.archive.worker`` decides its store mode and input checks). The job runs
inside the engine's Ray task (``streamparse.engine.tasks``) with a ``PoolExecutor``, or in this
process with an ``InProcessExecutor`` (tests, no Ray).

Interrupts (Ctrl-C, or the driver cancelling the task) drain what is in flight, flush, and mark the
sources ``interrupted``; a store that an interrupted job created and committed nothing to is removed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from streamparse.engine.interrupts import Interrupts
from streamparse.engine.scheduler import Scheduler, Slot, file_policy, live_policy, one_line
from streamparse.sources.uri import is_live, redact_uri

log = logging.getLogger(__name__)


@dataclass
class Job:
    """What one engine job writes: ``sources`` ([{"uri", "sid"}]) into ``store`` (path or URL) opened in
    ``mode`` (create | overwrite | resume) with root ``attrs``. ``lock_token``: an archive run's token
    (``streamparse.store.lock``). ``discard_failed``: also remove a store whose sources all failed with
    nothing committed (an archive's bad video leaves no store)."""

    store: str
    sources: list[dict]
    mode: str
    attrs: dict
    lock_token: str | None = None
    storage_options: dict | None = None
    discard_failed: bool = False
    infos: dict = field(default_factory=dict)  # sid -> source info probed by the driver (files)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def open_store(job: Job, plan):
    """The job's sink (``SinkError`` / ``OutputError`` propagate: the caller reports them)."""
    return plan.sink(job.store, mode=job.mode, attrs=job.attrs, lock_token=job.lock_token, storage_options=job.storage_options)


def run_job(job: Job, plan, make_executor, *, sink=None, intr: Interrupts | None = None, on_progress=None,
            drain_s: float = 60.0, t0: float | None = None) -> dict:
    """Run ``job`` (see the module docstring); returns its summary: per source frames written, errors and
    metrics, the store's notes, ``first_result_s``, ``first_write_s``, ``stages_s`` (this process: write,
    wait, decode), ``interrupted``, ``error`` (an unexpected failure, one line). ``sink``: the store if
    the caller opened it already. ``on_progress(sid -> frames committed)``: after each write."""
    t0 = time.monotonic() if t0 is None else t0
    intr = intr or Interrupts()
    sink = sink if sink is not None else open_store(job, plan)
    slots = _slots(job, plan, sink)
    log.info("job: %d source(s) into %s (%s), batches of %d, %s", len(slots), redact_uri(str(job.store)), job.mode,
             plan.batch_size, "resumed" if sink.resumed else "new store")
    summary = {"out": redact_uri(str(job.store)), "sources": {}, "notes": list(sink.notes), "interrupted": False,
               "error": None, "first_result_s": None, "first_write_s": None}
    ex = sched = None

    def open_writer(s: Slot) -> None:
        s.writer = plan.writer(sink, s.sid, s.info)
        s.next_seq = s.writer.next_seq

    def progress(n: int) -> None:
        if summary["first_write_s"] is None and any(s.writer is not None and s.writer.committed > s.start_frame for s in slots):
            summary["first_write_s"] = round(time.monotonic() - t0, 3)
        if on_progress is not None:
            on_progress({s.sid: s.writer.committed for s in slots if s.writer is not None})

    try:
        ex = make_executor()
        sched = Scheduler(slots, ex, open_writer=open_writer, intr=intr, on_progress=progress, t0=t0)
        sched.start()
        summary["open_s"] = round(time.monotonic() - t0, 3)
        sched.run()
    except KeyboardInterrupt:
        summary["interrupted"] = True
        log.warning("interrupted: draining in-flight batches and closing the store")
        if sched is not None:
            sched.drain(timeout_s=drain_s)
    except Exception as exc:  # noqa: BLE001 - reported by the caller (a failed video, or a failed run)
        summary["error"] = one_line(exc)
        for s in slots:
            if not s.done:
                s.errors.append(summary["error"])
    finally:
        _close(job, sink, slots, ex, summary)
    log.info("job: %s", ", ".join(f"{s.sid} {s.writer.committed if s.writer else 0} frames" for s in slots))
    if sched is not None:
        summary["first_result_s"] = sched.first_result_s
        summary["stages_s"] = {k: round(v, 3) for k, v in sched.stage_s.items()}
        if ex is not None and hasattr(ex, "decode_seconds"):
            summary["stages_s"]["decode"] = round(sum(ex.decode_seconds(s) for s in slots), 3)
        cores = [getattr(s.decoder, "core", s.decoder) for s in slots if getattr(s, "decoder", None) is not None]
        firsts = [c.first_decoded for c in cores if getattr(c, "first_decoded", None)]  # (a thread's core, or in-process)
        summary["first_decoded_wall"] = min(firsts) if firsts else None
    for s in slots:
        summ = s.metrics.summary() if s.metrics else {}
        summary["sources"][s.sid] = {"uri": redact_uri(s.uri), "frames_written": s.writer.committed if s.writer else 0,
                                     "start_frame": s.start_frame, "errors": list(s.errors),
                                     **{k: v for k, v in summ.items() if k != "source"}}
    return summary


def _slots(job: Job, plan, sink) -> list[Slot]:
    """The job's sources as scheduler slots; a resumed store continues each file at its commit marker and
    skips the sources it already completed."""
    slots = []
    for src in job.sources:
        live = is_live(src["uri"])
        policy = live_policy(plan.live_max_in_flight) if live else file_policy(plan.max_in_flight)
        s = Slot(uri=src["uri"], sid=src["sid"], policy=policy, info=dict(job.infos.get(src["sid"]) or {}))
        if sink.resumed:
            s.start_frame = sink.committed(s.sid) if policy.resume_rows else 0
            if s.sid in sink.root and dict(sink.root[s.sid].attrs.get("status", {})).get("complete"):
                s.done = True
        slots.append(s)
    return slots


def _close(job: Job, sink, slots: list[Slot], ex, summary: dict) -> None:
    failed = {s.sid: s.errors for s in slots if s.writer is None and s.errors}
    if failed:  # sources that never delivered a frame have no group: their status lives at the root
        try:
            sink.root.attrs["failed_sources"] = failed
        except Exception:  # noqa: BLE001
            pass
    discard = summary["interrupted"] or (job.discard_failed and any(s.errors for s in slots))
    try:  # an interrupted (or, in an archive, failed) job that committed nothing leaves no store it made
        sink.close(discard_if_empty=discard)
    except Exception as exc:  # noqa: BLE001
        summary["error"] = summary["error"] or one_line(exc)
        for s in slots:
            s.errors.append(one_line(exc))
    for s in slots:
        if ex is not None and s.decoder is not None:
            try:
                ex.stop_source(s)
            except Exception:  # noqa: BLE001
                pass
    if ex is not None:
        ex.close()
