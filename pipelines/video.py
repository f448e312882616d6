"""The video pipeline, one invocation: sources -> decoder actors -> a pool of inference actors -> the
zarr sink in this process (installed as ``streamparse.pipelines.video``).

``run(cfg, sources, out, ...)``: validate every input, open the store (refused or locked outputs fail
before Ray starts), start Ray and the actors (``streamparse.engine.actors``), drive them with the plain-Python
``streamparse.engine.scheduler.Scheduler``, show progress, shut down cleanly on Ctrl-C / SIGTERM (drain,
flush, close) and return a summary.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from streamparse import plan
from streamparse.config import Config
from streamparse.engine.interrupts import Interrupts
from streamparse.engine.raystart import init_ray
from streamparse.engine.scheduler import PipelineError, Scheduler, Slot, file_policy, live_policy
from streamparse.sources import SourceError, is_live, redact_uri, source_id

log = logging.getLogger(__name__)

__all__ = ["PipelineError", "init_ray", "probe_file", "run"]


def probe_file(path: str) -> dict:
    """Open a file source and decode its first frame: clear errors before anything starts."""
    from streamparse.sources import open_source

    with open_source(path, max_frames=1) as src:  # a FileSource, or SourceError for an unknown URI scheme
        info = src.info()
        if src.read(1) is None:
            raise SourceError(f"video has zero frames: {path}")
    return info


def run(cfg: Config, sources: list[str], out: str | Path, *, checkpoint: str | None = None, mode: str = "create",
        progress: bool = True, on_actors=None) -> dict:
    """Run the pipeline; returns a summary dict. ``mode``: create | overwrite | resume.
    ``on_actors(inference_actors)``: a hook for fault-injection tests."""
    import ray
    from tqdm import tqdm

    from streamparse.engine.actors import InferenceActor, RayExecutor, share_weights

    pc = cfg.pipeline
    if not sources:
        raise PipelineError("no source given")
    taken: set[str] = set()
    slots = [Slot(uri=u, sid=source_id(u, taken),
                  policy=live_policy(cfg.live.max_in_flight) if is_live(u) else file_policy(pc.max_in_flight)) for u in sources]
    for s in slots:  # validate every file before starting anything
        if s.policy.kind == "file":
            s.info = probe_file(s.uri)
    meta = plan.resolve_model_meta(cfg, checkpoint)
    intr = Interrupts().install()  # Ctrl-C / SIGTERM from here on: a clean stop, never mid-write
    sink = ex = bar = sched = None
    workers: list = []
    started = False
    summary = {"out": str(out), "sources": {}}
    t_start = time.monotonic()
    interrupted = False
    try:
        # the store first (cheap): a refused or locked output fails before Ray starts
        sink = plan.build_sink(cfg, out, mode=mode, attrs=plan.root_attrs(cfg, meta, sources))
        for note in sink.notes:
            summary.setdefault("notes", []).append(note)
        for s in slots:
            if sink.resumed:
                committed = sink.committed(s.sid)
                s.start_frame = committed if s.policy.resume_rows else 0
                if s.sid in sink.root and dict(sink.root[s.sid].attrs.get("status", {})).get("complete"):
                    s.done = True
        started = init_ray(pc.ray_address, pc.object_store_memory_mb)
        intr.install()  # ray.init installs its own SIGTERM handler (sys.exit): ours again
        use_gpu = (pc.device == "cuda") or (pc.device == "auto" and ray.cluster_resources().get("GPU", 0) > 0)
        # the weights cross once: put in the object store by the driver, fetched by name by every actor (and
        # again by a restarted one: tests/test_pipeline.py kills an inference actor mid-run)
        weights_name, holder = share_weights(plan.load_weights(meta))
        pkw = plan.predictor_kwargs(cfg, meta)
        opts = {"num_gpus": 1} if use_gpu else {"num_cpus": 0.5}
        workers = [InferenceActor.options(**opts).remote(pkw, weights_name, plan.inference_threads(cfg))
                   for _ in range(max(1, pc.workers))]
        if on_actors:
            on_actors(workers)
        ex = RayExecutor(workers, batch_size=pc.batch_size, batch_timeout_s=pc.batch_timeout_s,
                         source_kwargs=lambda s: plan.source_kwargs(s.uri, cfg, source_id=s.sid, start_frame=s.start_frame))
        sched = Scheduler(slots, ex, open_writer=lambda s: _open_writer(s, sink, cfg, meta), intr=intr, t0=t_start)
        sched.start()
        total = sum((s.info.get("frames_hint") or 0) for s in slots if s.policy.kind == "file") or None
        if pc.max_frames and total:
            total = min(total, pc.max_frames * len(slots))
        done_before = sum(s.writer.committed for s in slots if s.writer is not None and s.policy.kind == "file")
        bar = tqdm(total=total, initial=done_before, unit="frame", desc="streamparse run", disable=not progress, dynamic_ncols=True)

        def on_progress(n: int) -> None:
            bar.update(n)
            lags = [x.metrics.lag_s for x in slots if x.metrics and x.metrics.lag_s is not None]
            bar.set_postfix(inflight=len(sched.pending), lag=f"{max(lags):.2f}s" if lags else "-", refresh=False)

        sched.on_progress = on_progress
        summary["startup_s"] = round(time.monotonic() - t_start, 3)
        sched.run()
    except (KeyboardInterrupt, SystemExit):  # SystemExit: Ray's own SIGTERM handler, during ray.init
        interrupted = True
        log.warning("interrupted: draining in-flight batches and closing the store")
        if sched is not None:
            sched.drain()
    finally:
        if bar is not None:
            bar.close()
        intr.restore()
        if sched is not None and sched.first_result_s is not None:
            summary["first_result_s"] = sched.first_result_s
        if sched is not None and not interrupted:
            summary["stages_s"] = _stage_seconds(sched, workers, slots, ray)
        for s in slots:
            summ = s.metrics.summary() if s.metrics else {}
            summary["sources"][s.sid] = {"uri": redact_uri(s.uri), "frames_written": s.writer.committed if s.writer else 0,
                                         "errors": s.errors, **{k: v for k, v in summ.items() if k != "source"}}
        failed = {s.sid: s.errors for s in slots if s.writer is None and s.errors}
        if failed and sink is not None:  # sources that never delivered a frame have no group: their status lives at the root
            try:
                sink.root.attrs["failed_sources"] = failed
            except Exception:  # noqa: BLE001
                pass
        if sink is not None:
            # an interrupted start that committed nothing leaves no store behind (if it made the store)
            sink.close(discard_if_empty=interrupted)
        if ex is not None:
            for s in slots:
                try:
                    ex.stop_source(s)
                except Exception:  # noqa: BLE001
                    pass
            ex.close()
        else:
            for w in workers:
                try:
                    ray.kill(w, no_restart=True)
                except Exception:  # noqa: BLE001
                    pass
        if started:
            ray.shutdown()
    summary["interrupted"] = interrupted
    summary["elapsed_s"] = round(time.monotonic() - t_start, 3)
    return summary


def _stage_seconds(sched, workers: list, slots: list, ray) -> dict:
    """Seconds per stage of the run: decode (decoder actors), preprocess / network / postprocess /
    instance table (inference actors, summed), write and wait (driver)."""
    out = {k: round(v, 3) for k, v in sched.stage_s.items()}
    try:
        for d in ray.get([w.stage_seconds.remote() for w in workers], timeout=10):
            for k, v in d.items():
                out[k] = round(out.get(k, 0.0) + v, 3)
        decs = [s.decoder for s in slots if s.decoder is not None]
        out["decode"] = round(sum(d["decode"] for d in ray.get([x.stage_seconds.remote() for x in decs], timeout=10)), 3)
    except Exception:  # noqa: BLE001 - diagnostics only
        pass
    return out


def _open_writer(s: Slot, sink, cfg: Config, meta: dict) -> None:
    s.writer = plan.open_source_writer(sink, cfg, meta, s.sid, s.info)
    s.next_seq = s.writer.next_seq
