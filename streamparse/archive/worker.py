"""One video of an archive, worker side, in plain Python: ``process_video(job, ctx, make_executor)``.

The Ray task (``streamparse.archive.tasks.archive_video``) only calls this with a ``PoolExecutor`` (decode
here, inference on the shared pool); tests call it with an ``InProcessExecutor``. The video's store is
``job["store"]``, opened through ``plan.build_sink`` and written through ``plan.open_source_writer``
by the same ``Scheduler`` as ``streamparse run``, so an archive store equals a ``run`` store of the same
video. Which store mode (the store's own root attribute ``archive`` holds the input identity and the
model key it was written for):

- no store: ``create``;
- a store for the same input and model: ``resume`` (complete: nothing to do; partial: continue from
  its commit marker; damaged: replaced by a fresh store, said in ``note``);
- a store for another input or model: ``overwrite`` (a fresh store, never mixed; said in ``note``).

Every per-video failure (unreadable, corrupt, truncated, zero frames, a store that cannot be written)
is returned as ``state="failed"`` with one-line errors; only a lost worker or node (a Ray system
failure) escapes, and Ray retries the task. Ctrl-C / task cancellation drains what is in flight,
flushes, and returns ``state="pending"`` (``interrupted``).
"""

from __future__ import annotations

import logging
import os
import socket
import time

from streamparse import plan
from streamparse.archive.resume import model_key
from streamparse.archive.inputs import input_identity, same_input
from streamparse.engine.scheduler import Scheduler, Slot, file_policy, one_line
from streamparse.sources.uri import redact_uri

log = logging.getLogger(__name__)


def _store_mode(outdir_meta: tuple[dict | None, dict | None], ident: dict, key: str) -> tuple[str, str, bool]:
    """(mode, note, complete) for a store whose (root attrs, group status) are ``outdir_meta``."""
    root, status = outdir_meta
    if root is None:
        return "create", "", False
    arc = root.get("archive") or {}
    if "streamparse_schema_version" not in root:
        return "create", "", False  # not ours: the sink refuses it with its own message
    if not arc:
        return "overwrite", "reprocessed: the store was not written by an archive run", False
    if not same_input(arc.get("input"), ident):
        return "overwrite", "reprocessed into a fresh store: the input changed", False
    if arc.get("model_key") != key:
        return "overwrite", "reprocessed into a fresh store: the model or its config changed", False
    return "resume", "", bool(status and status.get("complete"))


def read_store_meta(store: str, video_id: str, storage_options: dict | None) -> tuple[dict | None, dict | None]:
    from streamparse.archive.outdir import _parse_meta
    from streamparse.store.objstore import cat_or_none, filesystem, is_url

    if is_url(store):
        fs, base = filesystem(store, storage_options)
        fs.invalidate_cache(base)
        return _parse_meta(cat_or_none(fs, f"{base}/zarr.json"), cat_or_none(fs, f"{base}/{video_id}/zarr.json"))
    root, grp = os.path.join(store, "zarr.json"), os.path.join(store, video_id, "zarr.json")
    return _parse_meta(open(root, "rb").read() if os.path.isfile(root) else None,
                       open(grp, "rb").read() if os.path.isfile(grp) else None)


def make_context(cfg, meta: dict, *, lock_token: str | None, storage_options: dict | None = None) -> dict:
    """What every video task of a run is given: the resolved config (plain dict), the model meta, the
    model key, the run's lock token and the object-storage options."""
    from streamparse.config import to_dict

    return {"config": to_dict(cfg), "meta": meta, "key": model_key(plan.root_attrs(cfg, meta, [])), "lock_token": lock_token,
            "storage_options": storage_options}


def process_video(job: dict, ctx: dict, make_executor, *, on_progress=None, node: str = "") -> dict:
    """Parse one video into its store (see the module docstring).

    ``job``: video_id, uri, store (path or URL), attempt. ``ctx``: config (``to_dict``), meta
    (``plan.resolve_model_meta``), key (``model_key``), lock_token, storage_options.
    ``make_executor(cfg)``: the scheduler's executor. ``on_progress(video_id, frames committed by this
    attempt)``.
    Returns the result row (state complete | failed | pending, frames, frames_new, start_frame, errors,
    note, input identity, timings)."""
    from streamparse.config import from_dict
    from streamparse.store.sink import SinkError

    t0 = time.monotonic()
    vid, uri, store = job["video_id"], job["uri"], job["store"]
    res = {"video_id": vid, "state": "failed", "frames": 0, "frames_new": 0, "start_frame": 0, "errors": [], "note": "",
           "input": {}, "node": node or socket.gethostname(), "pid": os.getpid(), "attempt": job.get("attempt", 1),
           "open_s": None, "first_result_s": None, "first_write_s": None, "wall_s": None, "fps": None}

    def done(**kw):
        res.update(kw)
        res["wall_s"] = round(time.monotonic() - t0, 3)
        if res["frames_new"] and res["wall_s"]:
            res["fps"] = round(res["frames_new"] / res["wall_s"], 2)
        return res

    if not os.path.exists(uri):
        return done(errors=[f"file not found: {redact_uri(uri)}"])
    ident = input_identity(uri)
    if not ident:
        return done(errors=[f"cannot read {redact_uri(uri)}: permission denied or not a regular file"])
    res["input"] = ident
    if ident["size"] == 0:
        return done(errors=[f"empty file (0 bytes): {redact_uri(uri)}"])
    cfg = from_dict(ctx["config"])
    meta = ctx["meta"]
    key = ctx["key"]
    attrs = plan.root_attrs(cfg, meta, [uri])
    if model_key(attrs) != key:  # the same function on both sides: a mismatch is a bug, not a user error
        return done(errors=["internal error: the worker's model key differs from the driver's"])
    attrs["archive"] = {"video_id": vid, "input": ident, "model_key": key}
    so = ctx.get("storage_options")
    try:
        mode, note, complete = _store_mode(read_store_meta(store, vid, so), ident, key)
    except OSError as exc:
        return done(errors=[f"cannot read the store {redact_uri(store)}: {one_line(exc)}"])
    res["note"] = note
    try:
        sink = plan.build_sink(cfg, store, mode=mode, attrs=attrs, lock_token=ctx.get("lock_token"), storage_options=so)
    except SinkError as exc:
        if mode != "resume" or "damaged" not in str(exc):
            return done(errors=[one_line(exc)])
        res["note"] = f"a damaged store was replaced by a fresh one ({one_line(exc)})"
        try:
            sink = plan.build_sink(cfg, store, mode="overwrite", attrs=attrs, lock_token=ctx.get("lock_token"), storage_options=so)
        except SinkError as exc2:
            return done(errors=[one_line(exc2)])
    except OSError as exc:
        return done(errors=[f"cannot open the store {redact_uri(store)}: {one_line(exc)}"])
    committed = sink.committed(vid) if sink.resumed else 0
    if complete and sink.resumed:
        sink.close()
        return done(state="complete", frames=committed, start_frame=committed, note="already complete")
    slot = Slot(uri=uri, sid=vid, policy=file_policy(cfg.pipeline.max_in_flight), start_frame=committed)
    res["start_frame"] = committed
    ex = sched = None
    interrupted = False
    first_write = [None]

    def open_writer(s: Slot) -> None:
        s.writer = plan.open_source_writer(sink, cfg, meta, s.sid, s.info)
        s.next_seq = s.writer.next_seq

    def progress(n: int) -> None:
        w = slot.writer
        if w is not None and w.committed > committed and first_write[0] is None:
            first_write[0] = round(time.monotonic() - t0, 3)
        if on_progress is not None and w is not None:
            on_progress(vid, w.committed - committed)

    try:
        ex = make_executor(cfg)
        sched = Scheduler([slot], ex, open_writer=open_writer, on_progress=progress, t0=t0)
        sched.start()
        res["open_s"] = round(time.monotonic() - t0, 3)
        sched.run()
    except KeyboardInterrupt:
        interrupted = True
        if sched is not None:
            sched.drain(timeout_s=20.0)
    except Exception as exc:  # noqa: BLE001 - a per-video failure (store, lock, internal): this video only
        slot.errors.append(one_line(exc))
    finally:
        frames = slot.writer.committed if slot.writer is not None else 0
        try:
            sink.close(discard_if_empty=bool(slot.errors) or interrupted)
        except Exception as exc:  # noqa: BLE001
            slot.errors.append(one_line(exc))
        if ex is not None:
            try:
                ex.stop_source(slot) if slot.decoder is not None else None
            except Exception:  # noqa: BLE001
                pass
    res["first_result_s"] = sched.first_result_s if sched is not None else None
    res["first_write_s"] = first_write[0]
    res["frames_new"] = frames - committed
    if interrupted:
        return done(state="pending", frames=frames, errors=[], note=(res["note"] + "; " if res["note"] else "") + "interrupted")
    ok = slot.writer is not None and not slot.errors
    if ok and sink.notes:
        res["note"] = "; ".join(x for x in [res["note"], *sink.notes] if x)
    return done(state="complete" if ok else "failed", frames=frames,
                errors=list(dict.fromkeys(slot.errors)) or ([] if ok else ["no frame was decoded"]))
