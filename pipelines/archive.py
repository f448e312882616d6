"""An archive run, driver side: ``run_archive(cfg, inputs, outdir, ...)`` (installed as
``streamparse.pipelines.archive``).

The driver only schedules videos: it expands the inputs, checks and locks OUTDIR, reads
``index.jsonl`` and decides per video (``archive_index.plan_videos``), starts Ray and ONE pool of
inference actors for the whole run (one per GPU; on CPU sized from each node's CPUs; the weights put in
the object store once), then keeps up to ``concurrency`` video tasks (``archive.tasks.archive_video``) in
flight, each placed (soft affinity) on the node with the fewest videos per inference actor so its
frames stay on that node. A task decodes its video, sends batches to the pool, and writes its own
store ``OUTDIR/<video_id>.zarr``; frames never reach the driver. The driver appends one index line
per state change, shows one progress bar and writes the report.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from streamparse.archive.resume import Decision, model_key, plan_videos, record
from streamparse.store.index import parse_index
from streamparse.archive.outdir import INDEX, open_outdir
from streamparse.archive.report import (finalize_report, format_summary, read_archive_json, video_row,
                                        write_archive_json)
from streamparse.archive.balance import NodeBalancer, task_limit
from streamparse.archive.worker import make_context
from streamparse.engine.pool import start_pool
from streamparse.config import Config
from streamparse.archive.inputs import expand_inputs, input_identity, same_input, stat_identity
from streamparse.engine.interrupts import Interrupts
from streamparse.engine.raystart import plan_while_ray_starts, start_ray
from streamparse.logs import MissingDependency
from streamparse.engine.scheduler import PipelineError, one_line
from streamparse.sources.uri import redact_uri

log = logging.getLogger(__name__)

__all__ = ["PipelineError", "format_summary", "run_archive", "start_pool"]


# ----------------------------------------------------------------------------- the run


def _verify_skips(outdir, decisions_in: list[tuple], key: str) -> dict[str, bool]:
    """video_id -> whether a video the index calls complete may be skipped: the first-MiB hash still
    matches, and the store's own attributes say complete, same input and model. In 8 threads."""

    def check(item) -> tuple[str, bool]:
        v, last = item
        ident = input_identity(v.uri)
        if not same_input(last.get("input"), ident):
            return v.video_id, False
        try:
            root, status = outdir.store_meta(v.video_id)
        except OSError:
            return v.video_id, False
        arc = (root or {}).get("archive") or {}
        ok = bool(status and status.get("complete")) and arc.get("model_key") == key and same_input(arc.get("input"), ident)
        return v.video_id, ok

    if not decisions_in:
        return {}
    with ThreadPoolExecutor(8) as pool:
        return dict(pool.map(check, decisions_in))


def run_archive(cfg: Config, inputs: list[str], out: str, *, checkpoint: str | None = None, resume: bool = False,
                ray_address: str = "", max_videos: int = 0, concurrency: int = 0, workers: int = 0,
                quarantine_after: int = 3, retry_quarantined: bool = False, storage_options: dict | None = None,
                report_path: str | None = None, progress: bool = True, on_event=None) -> dict:
    """Parse every video of ``inputs`` into ``out`` (see the module docstring). Returns the report dict
    (``videos``: one row per input video; ``counts``; ``interrupted``), also written to ``report_path``
    (JSON, before the folder marker). ``on_event(name, data)``: a hook for tests (``"dispatched"``,
    ``"result"``)."""
    t_start = time.monotonic()
    if quarantine_after < 1:
        raise PipelineError("--quarantine-after must be >= 1")
    videos = expand_inputs(inputs)
    if not videos:
        raise PipelineError("no video given")
    outdir = open_outdir(out, storage_options)
    outdir.check(resume)  # refused outputs fail before anything is written, loaded or started
    address = ray_address or os.environ.get("RAY_ADDRESS", "")
    intr = Interrupts().install()
    # the plan, once (the checkpoint read once; on a cluster the pool decides the device from its GPUs), on a
    # thread while Ray starts when some input is not complete yet (else Ray starts only if a video needs it;
    # the index is read again under the lock to decide)
    last = parse_index(outdir.read_text(INDEX) or "").last
    ray_start: dict = {}
    try:
        plan = plan_while_ray_starts(cfg, checkpoint, address, ray_start, intr, gpus=0 if address else None,
                                     early=any(last.get(v.video_id, {}).get("state") != "complete" for v in videos))
    except BaseException:
        intr.restore()
        raise
    started_ray = bool(ray_start.get("started"))
    meta = plan.model
    key = model_key(plan.root_attrs([]))
    token = uuid.uuid4().hex
    report = {"outdir": redact_uri(outdir.label), "model_name": meta["model_name"], "checkpoint_sha256": meta["checkpoint_sha256"],
              "model_key": key, "started": time.time(), "resume": resume, "notes": [], "videos": []}
    rows: dict[str, dict] = {}
    pool: list = []
    pending: dict = {}  # task ref -> (decision, node, t_dispatch)
    interrupted = False
    try:
        outdir.lock(token)
        outdir.mark()  # first: from here on a killed run leaves a folder that --resume accepts
        todo, index = _decide(outdir, videos, plan, key, report, rows, intr, quarantine_after=quarantine_after,
                              retry_quarantined=retry_quarantined, max_videos=max_videos)
        if todo:
            if not started_ray:
                ray_start = start_ray(address, cfg.pipeline.object_store_memory_mb, intr)
                started_ray = ray_start["started"]
            report["ray_start_s"] = ray_start["seconds"]
            pool_ = start_pool(plan, workers=workers, wait=False)  # models build while the first videos open
            pool, report["pool"], plan = pool_.actors, pool_.desc, pool_.plan
            interrupted = _drive(plan, key, token, outdir, todo, rows, index, pool_, pending, intr, report,
                                 concurrency=concurrency, quarantine_after=quarantine_after, storage_options=storage_options,
                                 progress=progress, on_event=on_event)
    except (KeyboardInterrupt, SystemExit):
        interrupted = True
        _cancel(pending, rows, outdir, key, intr)
    finally:
        intr.restore()
        finalize_report(report, videos, rows, interrupted, t_start)
        _close(outdir, report, report_path, pool, started_ray)
    return report


def _decide(outdir, videos, plan, key: str, report: dict, rows: dict, intr, *, quarantine_after: int,
            retry_quarantined: bool, max_videos: int) -> tuple[list, object]:
    """What this run does with each video (skip, quarantined, process: ``plan_videos`` on the index,
    complete videos verified against their stores), recorded before anything runs: ``archive.json``,
    a report row per video, a ``pending`` index line per video to process, the folder marker. Returns
    (the decisions to process, at most ``max_videos``; the index read)."""
    meta = plan.model
    index = parse_index(outdir.read_text(INDEX) or "")
    prev = read_archive_json(outdir)
    stats = {v.video_id: stat_identity(v.uri) for v in videos}
    cands = [(v, index.last[v.video_id]) for v in videos if v.video_id in index.last
             and index.last[v.video_id].get("state") == "complete" and index.last[v.video_id].get("model_key") == key
             and same_input(index.last[v.video_id].get("input"), stats[v.video_id], head=False)]
    verified = _verify_skips(outdir, cands, key)
    decisions = plan_videos(videos, index, key=key, stats=stats, quarantine_after=quarantine_after,
                            retry_quarantined=retry_quarantined, verify_complete=lambda v, last: verified.get(v.video_id, False))
    if prev and prev.get("model_key") and prev["model_key"] != key:
        report["notes"].append(f"the model or its config changed since the last run (checkpoint {prev.get('checkpoint_sha256')} -> "
                               f"{meta['checkpoint_sha256']}): finished videos are reprocessed into fresh stores")
    write_archive_json(outdir, plan, key, videos, prev)
    todo = [d for d in decisions if d.action == "process"]
    if max_videos:
        todo = todo[:max_videos]
    for d in decisions:
        rows[d.video.video_id] = video_row(d)
    new_lines = [record(d.video, "pending", attempt=d.attempt - 1, input=stats[d.video.video_id], model_key=key,
                        note=d.reason, frames=(d.previous or {}).get("frames", 0) if d.reason == "continue" else 0)
                 for d in decisions if d.action == "process" and (d.previous or {}).get("state") != "pending"]
    with intr.critical():
        outdir.append_index(new_lines)
        outdir.flush_index(force=True)
    outdir.mark()
    return todo, index


def _close(outdir, report: dict, report_path: str | None, pool: list, started_ray: bool) -> None:
    """The end of a run, whatever happened: the index flushed, the report written (before the folder
    marker, so that a report inside OUTDIR is one of its files), the marker, the lock released, the
    pool's actors killed and a Ray this run started shut down."""
    import ray

    try:
        outdir.flush_index(force=True)
    except Exception as exc:  # noqa: BLE001
        log.error("%s: cannot write the index: %s", outdir.label, exc)
    if report_path and outdir.lock_obj is not None:  # before the folder marker: a report inside OUTDIR is then one of its files
        from streamparse.store.outputs import write_json

        write_json(report_path, report)
    if outdir.lock_obj is not None:
        try:
            outdir.mark()
        except Exception as exc:  # noqa: BLE001
            log.error("%s: cannot write the folder marker: %s", outdir.label, exc)
    outdir.close()
    outdir.unlock()
    for a, _ in pool:
        try:
            ray.kill(a, no_restart=True)
        except Exception:  # noqa: BLE001
            pass
    if started_ray:
        ray.shutdown()


def _drive(plan, key, token, outdir, todo, rows, index, pool, pending, intr, report, *, concurrency, quarantine_after,
           storage_options, progress, on_event) -> bool:
    """The scheduling loop; returns True when interrupted."""
    import ray
    from tqdm import tqdm

    from streamparse.engine.tasks import ProgressMonitor

    ctx = make_context(plan, lock_token=token, storage_options=storage_options)
    if ctx["key"] != key:
        raise PipelineError("internal error: two model keys for one run")
    monitor = ProgressMonitor.remote()
    balancer = NodeBalancer(pool.actors)
    conc = concurrency or max(2, 2 * len(pool.actors))
    pool_up = False
    report["concurrency"] = conc
    queue = deque(todo)
    bar = tqdm(total=len(todo), unit="video", desc="streamparse archive", disable=not progress, dynamic_ncols=True)
    t0 = time.monotonic()
    report["dispatch_started"] = time.time()  # wall clock of queued_s = 0 (bench archive: start-up vs steady state)
    done_frames = 0
    last_poll = last_beat = 0.0
    counts = {"complete": 0, "failed": 0, "quarantined": 0}
    try:
        while queue or pending:
            limit = task_limit(conc, pool.up, pool_up)  # fewer while the models build
            while queue and len(pending) < limit:
                _dispatch(queue.popleft(), ctx, key, outdir, pool, balancer, monitor, pending, rows, intr, on_event)
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            if not pool_up:  # an inference actor that cannot start ends the run in one line
                try:
                    pool_up = pool.check()
                except PipelineError:
                    bar.close()
                    _cancel(pending, rows, outdir, key, intr, wait_s=5.0)
                    raise
            for ref in ready:
                d, node, t_disp = pending.pop(ref)
                balancer.give(node)
                try:
                    res = _result(ref, d)
                except PipelineError:  # a node lacking a dependency: the other videos stop too
                    bar.close()
                    _cancel(pending, rows, outdir, key, intr, wait_s=5.0)
                    raise
                res["queued_s"] = round(t_disp - t0, 3)
                state = _final_state(res, d, index, key, quarantine_after)
                _finish(outdir, rows, d, res, state, key, intr)
                if state in counts:
                    counts[state] += 1
                done_frames += res.get("frames_new") or 0
                monitor.forget.remote(d.video.video_id)
                bar.update(1)
                if on_event:
                    on_event("result", res)
            now = time.monotonic()
            if now - last_poll >= 1.0:
                last_poll = now
                try:
                    snap = ray.get(monitor.snapshot.remote(), timeout=5)
                except Exception:  # noqa: BLE001 - progress only
                    snap = {}
                running = {pending[r][0].video.video_id for r in pending}
                frames = done_frames + sum(sum(n.values()) for vid, n in snap.items() if vid in running)
                el = max(1e-6, now - t0)
                bar.set_postfix(done=counts["complete"], failed=counts["failed"] + counts["quarantined"], frames=frames,
                                fps=f"{frames / el:.1f}", refresh=False)
                bar.refresh()
            if now - last_beat >= 10.0:
                last_beat = now
                outdir.heartbeat()
                outdir.flush_index()
    except (KeyboardInterrupt, SystemExit):
        bar.close()
        _cancel(pending, rows, outdir, key, intr)
        return True
    bar.close()
    return False


def _dispatch(d: Decision, ctx: dict, key: str, outdir, pool, balancer, monitor, pending: dict, rows: dict, intr,
              on_event) -> None:
    """One video task, on the node with the fewest videos per inference actor, and its "running" line."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from streamparse.archive.tasks import archive_video

    v = d.video
    node = balancer.take()
    opts = {"name": f"archive:{v.video_id}"}
    opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node, soft=True) if node else "SPREAD"
    job = {"video_id": v.video_id, "uri": v.uri, "store": outdir.store_url(v.video_id), "attempt": d.attempt}
    ref = archive_video.options(**opts).remote(job, ctx, pool.actors, monitor)
    pending[ref] = (d, node, time.monotonic())
    rows[v.video_id].update(action="processed", state="running", attempt=d.attempt)
    with intr.critical():
        outdir.append_index([record(v, "running", attempt=d.attempt, input=stat_identity(v.uri), model_key=key,
                                    note=d.reason)])
    if on_event:
        on_event("dispatched", {"video_id": v.video_id, "ref": ref, "running": len(pending), "actors_up": pool.up,
                                "pool_up": pool.all_up})


def _result(ref, d: Decision) -> dict:
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, MissingDependency):  # a node set up without the dependencies: the run ends here
            raise PipelineError(str(exc.cause)) from None
        return _lost(exc, d)
    except ray.exceptions.RayError as exc:  # the task or its node was lost beyond its retries, or it was cancelled
        return _lost(exc, d)


def _lost(exc, d: Decision) -> dict:
    return {"video_id": d.video.video_id, "state": "failed", "frames": 0, "frames_new": 0, "errors": [one_line(exc)],
            "note": "lost: " + type(exc).__name__, "input": {}, "attempt": d.attempt}


def _final_state(res: dict, d: Decision, index, key: str, quarantine_after: int) -> str:
    if res["state"] != "failed":
        return res["state"]
    err = (res.get("errors") or ["?"])[0]
    return "quarantined" if index.same_failures(d.video.video_id, err, key) + 1 >= quarantine_after else "failed"


def _finish(outdir, rows, d: Decision, res: dict, state: str, key: str, intr) -> None:
    v = d.video
    fields = {k: res.get(k) for k in ("frames", "fps", "wall_s", "errors", "attempt", "frames_new", "start_frame", "note",
                                      "node", "first_write_s")}
    fields["input"] = res.get("input") or stat_identity(v.uri)
    with intr.critical():
        outdir.append_index([record(v, state, model_key=key, **fields)])
    row = rows[v.video_id]
    row.update({k: res.get(k) for k in ("frames", "frames_new", "start_frame", "fps", "wall_s", "errors", "note", "node",
                                        "open_s", "first_decoded_s", "first_result_s", "first_write_s", "queued_s", "attempt")})
    row["state"] = state
    if state == "quarantined":
        row["note"] = "; ".join(x for x in [row.get("note"), f"quarantined: failed the same way {d.attempt} time(s) or more"] if x)


def _cancel(pending: dict, rows: dict, outdir, key: str, intr, wait_s: float = 20.0) -> None:
    """Interrupted: ask every video task to stop (each drains, flushes and closes its store), record
    what they committed, and give up on those that do not answer within ``wait_s``."""
    import ray

    if not pending:
        return
    log.warning("interrupted: stopping %d video task(s) (their stores keep every committed frame)", len(pending))
    for ref in pending:
        try:
            ray.cancel(ref, force=False)
        except Exception:  # noqa: BLE001
            pass
    deadline = time.monotonic() + wait_s
    while pending and time.monotonic() < deadline:
        try:
            ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=max(0.1, deadline - time.monotonic()))
        except Exception:  # noqa: BLE001
            break
        for ref in ready:
            d, _, _ = pending.pop(ref)
            try:
                res = ray.get(ref)
            except Exception:  # noqa: BLE001
                res = {"state": "pending", "frames": None, "errors": [], "note": "interrupted"}
            st = res.get("state") if res.get("state") == "complete" or (res.get("state") == "failed" and res.get("errors")) \
                else "pending"
            try:
                outdir.append_index([record(d.video, st, model_key=key, frames=res.get("frames") or 0, errors=res.get("errors") or [],
                                            note=res.get("note") or "interrupted", attempt=d.attempt,
                                            input=res.get("input") or stat_identity(d.video.uri))])
            except Exception:  # noqa: BLE001
                pass
            rows[d.video.video_id].update(state=st, frames=res.get("frames") or 0, frames_new=res.get("frames_new") or 0,
                                          note=res.get("note") or "interrupted")
        if not ready:
            break
    for ref in list(pending):
        try:
            ray.cancel(ref, force=True)
        except Exception:  # noqa: BLE001
            pass
        d, _, _ = pending.pop(ref)
        rows[d.video.video_id].update(state="pending", note="interrupted (no answer; its store resumes from its commit marker)")


