"""The video pipeline: Ray decoder actors -> a pool of inference actors -> a zarr sink.

Flow control: each source has at most ``pipeline.max_in_flight`` batches between its decoder and
the sink (backpressure: files never drop, the decoder simply waits); results come back in any
order and the sink reorders them by frame sequence. Sinks run in the driver (one writer per
source, whole-chunk writes, commit markers), so a store on local disk is written by one process.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamparse.config import Config, to_dict
from streamparse.interrupts import Interrupts
from streamparse.metrics import SourceMetrics
from streamparse.sources import SourceError, is_live, redact_uri, source_id

log = logging.getLogger(__name__)

RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


class PipelineError(RuntimeError):
    """A run that cannot start (bad input); the message is one line for the user."""


@dataclass
class _SourceState:
    uri: str
    sid: str
    live: bool
    decoder: object = None
    writer: object = None
    metrics: SourceMetrics = None
    next_seq: int = 0
    decode_refs: list = field(default_factory=list)
    in_flight: int = 0
    eof: bool = False
    done: bool = False
    errors: list = field(default_factory=list)
    dropped: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)


def probe_file(path: str) -> dict:
    """Open a file source and decode its first frame: clear errors before anything starts."""
    from streamparse.sources import open_source

    src = open_source(path, max_frames=1)  # a FileSource, or SourceError for an unknown URI scheme
    with src:
        info = src.info()
        try:
            n = sum(len(b) for b in src.batches(1))
        except SourceError:
            raise
        if n == 0:
            raise SourceError(f"video has zero frames: {path}")
    return info


def resolve_model_meta(cfg: Config, checkpoint: str | None) -> dict:
    """Model name, class names, palette and checkpoint sha256 without building the model; checks
    that a given checkpoint fits ``cfg.model`` (name and class count)."""
    from streamparse import checkpoint as ck
    from streamparse.categories import get_label_space

    mc = cfg.model
    path = ck.resolve_checkpoint(checkpoint, mc.name, mc.num_classes)
    names, sha = None, None
    if path:
        meta = ck.load_checkpoint(path)
        if meta["model_name"] != mc.name:
            raise ck.CheckpointError(f"checkpoint {path} holds model {meta['model_name']!r}, config model.name is {mc.name!r}")
        if len(meta["class_names"]) != mc.num_classes:
            raise ck.CheckpointError(f"checkpoint {path} has {len(meta['class_names'])} classes, config model.num_classes is {mc.num_classes}")
        names, sha = list(meta["class_names"]), ck.sha256_file(path)
    try:
        space = get_label_space(mc.num_classes)
    except ValueError:
        space = None
    if names is None:
        names = list(space.names) if space else ["background"] + [f"part{i}" for i in range(1, mc.num_classes)]
    return {"model_name": mc.name, "class_names": names, "palette": space.palette_array().tolist() if space else None,
            "checkpoint": path, "checkpoint_sha256": sha}


def init_ray(address: str = "", object_store_mb: int = 1024, num_cpus: int | None = None) -> bool:
    """Start (or connect to) Ray with the single-machine settings; returns True if we started it."""
    for k, v in RAY_ENV.items():
        os.environ.setdefault(k, v)
    import ray

    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus or max(2, os.cpu_count() or 2), include_dashboard=False,
                 object_store_memory=int(object_store_mb) * 2**20, _temp_dir="/tmp/sp-ray",
                 logging_level=logging.WARNING, log_to_driver=False)
    return True


def split_result(res: dict) -> list[dict]:
    """One batched inference result -> per-frame dicts for the sink."""
    off = res["inst_offset"]
    out = []
    for i in range(len(res["frame_index"])):
        a, b = int(off[i]), int(off[i + 1])
        out.append({
            "part": res["part"][i], "instance": res["instance"][i],
            "frame_index": int(res["frame_index"][i]), "pts": int(res["pts"][i]), "time": float(res["time"][i]),
            "segment": int(res["segment"][i]), "wallclock": float(res["wallclock"][i]),
            "inst_score": res["inst_score"][a:b], "inst_bbox": res["inst_bbox"][a:b], "inst_area": res["inst_area"][a:b],
        })
    return out


def run(cfg: Config, sources: list[str], out: str | Path, *, checkpoint: str | None = None, mode: str = "create",
        progress: bool = True, on_actors=None) -> dict:
    """Run the pipeline; returns a summary dict. ``mode``: create | overwrite | resume.
    ``on_actors(inference_actors)``: a hook for fault-injection tests."""
    import ray
    from tqdm import tqdm

    from streamparse import __version__
    from streamparse.actors import DecoderActor, InferenceActor
    from streamparse.sink import SinkWriteError, ZarrSink

    pc = cfg.pipeline
    if not sources:
        raise PipelineError("no source given")
    taken: set[str] = set()
    states = [_SourceState(uri=u, sid=source_id(u, taken), live=is_live(u)) for u in sources]
    infos = {}
    for st in states:  # validate every file before starting anything
        if not st.live:
            infos[st.sid] = probe_file(st.uri)
    meta = resolve_model_meta(cfg, checkpoint)
    root_attrs = {
        "streamparse_version": __version__, "model_name": meta["model_name"], "checkpoint_sha256": meta["checkpoint_sha256"],
        "class_names": meta["class_names"], "palette": meta["palette"], "config": to_dict(cfg),
        "sources": [redact_uri(s.uri) for s in states],
    }
    intr = Interrupts().install()  # Ctrl-C / SIGTERM from here on: a clean stop, never mid-write
    sink = None
    started = False
    workers: list = []
    summary = {"out": str(out), "sources": {}}
    t_start = time.monotonic()
    interrupted = False
    bar = None
    pending: dict = {}  # result ref -> (state, seq, n, worker)
    try:
        # the store first (cheap): a refused or locked output fails before Ray starts
        sink = ZarrSink(out, mode=mode, root_attrs=root_attrs, chunk_frames=pc.chunk_frames, compressor=pc.compressor)
        for note in sink.notes:
            summary.setdefault("notes", []).append(note)
        started = init_ray(pc.ray_address, pc.object_store_memory_mb)
        intr.install()  # ray.init installs its own SIGTERM handler (sys.exit): ours again
        n_workers = max(1, pc.workers)
        use_gpu = (pc.device == "cuda") or (pc.device == "auto" and ray.cluster_resources().get("GPU", 0) > 0)
        threads = pc.torch_threads or max(1, (os.cpu_count() or 2) // n_workers)
        cfg_dict = to_dict(cfg)
        opts = {"num_gpus": 1} if use_gpu else {"num_cpus": 0.5}
        workers = [InferenceActor.options(**opts).remote(cfg_dict, meta["checkpoint"] or "none", threads) for _ in range(n_workers)]
        if on_actors:
            on_actors(workers)
        live_cfg = to_dict(cfg)["live"]
        for st in states:
            start = 0
            if sink.resumed and not st.live:
                start = sink.committed(st.sid)
                if st.sid in sink.root and dict(sink.root[st.sid].attrs.get("status", {})).get("complete"):
                    st.done = True
            st.decoder = DecoderActor.options(num_cpus=0.1).remote(
                st.uri, live_cfg if st.live else None, st.sid, start, pc.max_frames, pc.batch_size, pc.batch_timeout_s)
            try:
                info = ray.get(st.decoder.info.remote())
            except Exception as exc:  # noqa: BLE001 - a source that cannot open must not stop the others
                st.errors.append(_one_line(exc))
                st.done = True
                info = {"uri": redact_uri(st.uri), "kind": "live" if st.live else "file"}
            info = {**infos.get(st.sid, {}), **info}
            st.metrics = SourceMetrics(st.sid)
            st.info = info
            if info.get("width"):  # (a live source not connected yet gets its writer with its first frames)
                _open_writer(st, sink, meta)
            if st.done and st.writer is not None:
                st.writer.set_status(state="complete" if not st.errors else "error", errors=st.errors)
        total = sum((infos.get(s.sid, {}).get("frames_hint") or 0) for s in states if not s.live) or None
        if pc.max_frames and total:
            total = min(total, pc.max_frames * len(states))
        done_before = sum(s.writer.committed for s in states if s.writer is not None and not s.live)
        bar = tqdm(total=total, initial=done_before, unit="frame", desc="streamparse run", disable=not progress, dynamic_ncols=True)
        load = {i: 0 for i in range(n_workers)}
        t0 = time.monotonic()
        summary["startup_s"] = round(t0 - t_start, 3)
        while True:
            active = [s for s in states if not s.done]
            if not active and not pending:
                break
            for s in active:  # issue decode requests under the in-flight bound
                bound = cfg.live.max_in_flight if s.live else pc.max_in_flight
                while not s.eof and s.in_flight + len(s.decode_refs) < bound and len(s.decode_refs) < 2:
                    s.decode_refs.append(s.decoder.next_batch.remote())
            # only the oldest decode request of each source is waited on: batches must be numbered
            # in decode order, and Ray may report a later object ready before an earlier one
            decode_refs = [s.decode_refs[0] for s in active if s.decode_refs]
            ready, _ = ray.wait(decode_refs + list(pending), num_returns=1, timeout=0.2)
            for ref in ready:
                if ref in pending:
                    s, seq, n, wi = pending.pop(ref)
                    load[wi] -= 1
                    s.in_flight -= 1
                    res = ray.get(ref)
                    if s.done:  # the source stopped (its store failed): late results are dropped
                        continue
                    now = time.time()
                    try:
                        with intr.critical():
                            for i, fr in enumerate(split_result(res)):
                                s.writer.add(seq + i, fr)
                                s.metrics.observe_lag(now - fr["wallclock"])
                    except SinkWriteError as exc:  # disk full / I/O error: stop this source, keep the others
                        _stop_source(s, str(exc), ray)
                        continue
                    if "first_result_s" not in summary:
                        summary["first_result_s"] = round(time.monotonic() - t_start, 3)
                    s.metrics.count("inferred", n)
                    s.metrics.count("written", n)
                    bar.update(n)
                    continue
                s = next(x for x in active if x.decode_refs and x.decode_refs[0] == ref)
                s.decode_refs.pop(0)
                try:
                    batch = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - decode error: keep earlier frames, record it
                    s.errors.append(_one_line(exc))
                    s.eof = True
                    batch = None
                if batch is not None and "_live" in batch:  # live: drops and reconnects so far
                    _live_metrics(s, batch.pop("_live"))
                if batch is None:
                    s.eof = True
                elif batch.get("empty"):
                    continue
                else:
                    n = len(batch["frame_index"])
                    if not s.live and int(batch["frame_index"][0]) != s.next_seq:  # files: row = frame number
                        raise PipelineError(f"{s.sid}: internal error: a batch starting at frame "
                                            f"{int(batch['frame_index'][0])} arrived for row {s.next_seq}")
                    if s.writer is None:
                        h, w = np.asarray(batch["frames"]).shape[1:3]
                        s.info = {**s.info, "height": int(h), "width": int(w)}
                        _open_writer(s, sink, meta)
                    s.metrics.count("decoded", n)
                    wi = min(load, key=load.get)
                    load[wi] += 1
                    s.in_flight += 1
                    pending[workers[wi].infer.remote(batch)] = (s, s.next_seq, n, wi)
                    s.next_seq += n
            for s in active:
                if s.eof and s.in_flight == 0 and not s.decode_refs and not s.done:
                    with intr.critical():
                        _finish(s, ray)
            if bar is not None:
                lags = [x.metrics.lag_s for x in states if x.metrics and x.metrics.lag_s is not None]
                bar.set_postfix(inflight=len(pending), lag=f"{max(lags):.2f}s" if lags else "-", refresh=False)
    except (KeyboardInterrupt, SystemExit):  # SystemExit: Ray's own SIGTERM handler, during ray.init
        interrupted = True
        log.warning("interrupted: draining in-flight batches and closing the store")
        deadline = time.monotonic() + 60
        while pending and time.monotonic() < deadline:
            try:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            except Exception:  # noqa: BLE001 - Ray itself was stopped (Ctrl-C reaches its processes too)
                break
            for ref in ready:
                s, seq, n, wi = pending.pop(ref)
                if s.done:
                    continue
                try:
                    with intr.critical():
                        for i, fr in enumerate(split_result(ray.get(ref))):
                            s.writer.add(seq + i, fr)
                except Exception:  # noqa: BLE001
                    pass
        for s in states:
            if s.writer is not None and not s.writer.failed:
                try:
                    with intr.critical():
                        s.writer.flush()
                        if s.writer.committed or not s.done:
                            s.writer.set_status(state="interrupted")
                except (SinkWriteError, OSError) as exc:
                    s.errors.append(_one_line(exc))
    finally:
        if bar is not None:
            bar.close()
        intr.restore()
        for s in states:
            summ = s.metrics.summary() if s.metrics else {}
            summary["sources"][s.sid] = {"uri": redact_uri(s.uri), "frames_written": s.writer.committed if s.writer else 0,
                                         "errors": s.errors, **{k: v for k, v in summ.items() if k != "source"}}
        failed = {s.sid: s.errors for s in states if s.writer is None and s.errors}
        if failed and sink is not None:  # sources that never delivered a frame have no group: their status lives at the root
            try:
                sink.root.attrs["failed_sources"] = failed
            except Exception:  # noqa: BLE001
                pass
        if sink is not None:
            # an interrupted start that committed nothing leaves no store behind (if it made the store)
            sink.close(discard_if_empty=interrupted)
        for s in states:
            if s.decoder is not None:
                try:
                    ray.kill(s.decoder)
                except Exception:  # noqa: BLE001
                    pass
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


def _stop_source(s: _SourceState, error: str, ray) -> None:
    """A source whose store writes failed: record the error, stop decoding it (the writer already put
    state=error and the error into the store's status, if the store could still take it)."""
    log.error("%s: %s", s.sid, error)
    s.errors.append(error)
    s.done = True
    s.eof = True
    try:
        ray.kill(s.decoder)
    except Exception:  # noqa: BLE001
        pass


def _open_writer(s: _SourceState, sink, meta: dict) -> None:
    s.writer = sink.source(s.sid, s.info, (s.info["height"], s.info["width"]), meta["class_names"],
                           np.asarray(meta["palette"]) if meta["palette"] else None)
    s.next_seq = s.writer.next_seq


def _finish(s: _SourceState, ray) -> None:
    if s.writer is not None:
        s.writer.flush()
        try:
            st = ray.get(s.decoder.stats.remote())
        except Exception:  # noqa: BLE001
            st = {}
        src_errs = st.get("errors") if isinstance(st.get("errors"), list) else []  # (live: a count)
        driver_errs = [e for e in s.errors if e not in src_errs and "gave up" not in e]
        errs = s.errors + [e for e in src_errs if isinstance(e, str) and e not in s.errors]
        s.errors[:] = errs  # the summary reports what the status records
        if isinstance(st.get("dropped"), dict):
            _live_metrics(s, {"dropped": st["dropped"], "reconnects": st.get("reconnects", 0), "segments": st.get("segments", 0)})
        dropped = st.get("dropped", 0)
        if isinstance(dropped, dict):
            dropped = sum(dropped.values())
        if s.live:  # a live stream ends by giving up reconnecting: every frame it delivered is stored
            state = "ended" if s.writer.committed and not driver_errs else "error"
            complete = state == "ended"
        else:
            state, complete = ("complete" if not errs else "error"), not errs
        s.writer.set_status(state=state, complete=complete, errors=errs,
                            dropped=int(dropped or 0), dropped_by_reason=dict(s.dropped),
                            reconnects=int(st.get("reconnects", 0) or 0), segments=int(st.get("segments", 0) or 0))
    s.done = True


def _live_metrics(s: _SourceState, st: dict) -> None:
    for reason, n in st.get("dropped", {}).items():
        new = int(n) - s.dropped.get(reason, 0)
        if new > 0:
            s.metrics.drop(reason, new)
    s.dropped = dict(st.get("dropped", {}))
    s.metrics.set_reconnects(st.get("reconnects", 0), st.get("segments", 0))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    # Ray wraps remote errors; keep the innermost message line
    msg = next((ln for ln in reversed(text) if ln.strip() and not ln.startswith(" ")), repr(exc))
    return redact_uri(msg)[:500]
