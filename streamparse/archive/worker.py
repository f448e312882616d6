"""One video of an archive, worker side, in plain Python: ``process_video(job, ctx, make_executor)``.

The Ray task (``streamparse.archive.tasks.archive_video``) only calls this with a ``PoolExecutor`` (decode
here, inference on the shared pool); tests call it with an ``InProcessExecutor``. The video is one job of
the engine (``streamparse.engine.job.run_job``), exactly as ``streamparse run`` is, so an archive store
equals a ``run`` store of the same video. What is the archive's own (its policy): the input checks, and
which store mode (the store's own root attribute ``archive`` holds the input identity and the model key
it was written for):

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

from streamparse.archive.resume import model_key
from streamparse.archive.inputs import input_identity, same_input
from streamparse.engine.scheduler import one_line
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


def make_context(plan, *, lock_token: str | None, storage_options: dict | None = None) -> dict:
    """What every video task of a run is given: the plan (plain data, made once by the driver), the model
    key, the run's lock token and the object-storage options."""
    return {"plan": plan.to_dict(), "key": model_key(plan.root_attrs([])), "lock_token": lock_token,
            "storage_options": storage_options}


def process_video(job: dict, ctx: dict, make_executor, *, on_progress=None, node: str = "") -> dict:
    """Parse one video into its store (see the module docstring).

    ``job``: video_id, uri, store (path or URL), attempt. ``ctx``: ``make_context``'s. ``make_executor(plan)``:
    the scheduler's executor. ``on_progress(video_id, frames committed by this attempt)``.
    Returns the result row (state complete | failed | pending, frames, frames_new, start_frame, errors,
    note, input identity, timings)."""
    from streamparse.engine.job import Job, run_job
    from streamparse.plan import Plan
    from streamparse.store.sink import SinkError

    t0, t0_wall = time.monotonic(), time.time()
    plan = Plan.from_dict(ctx["plan"])
    vid, uri, store = job["video_id"], job["uri"], job["store"]
    res = {"video_id": vid, "state": "failed", "frames": 0, "frames_new": 0, "start_frame": 0, "errors": [], "note": "",
           "input": {}, "node": node or socket.gethostname(), "pid": os.getpid(), "attempt": job.get("attempt", 1),
           "open_s": None, "first_decoded_s": None, "first_result_s": None, "first_write_s": None, "wall_s": None,
           "fps": None}

    def done(**kw):
        res.update(kw)
        res["wall_s"] = round(time.monotonic() - t0, 3)
        if res["frames_new"] and res["wall_s"]:
            res["fps"] = round(res["frames_new"] / res["wall_s"], 2)
        return res

    ident, err = _check_input(uri)
    if err:
        return done(errors=[err])
    res["input"] = ident
    key = ctx["key"]
    attrs = plan.root_attrs([uri])
    if model_key(attrs) != key:  # the same function on both sides: a mismatch is a bug, not a user error
        return done(errors=["internal error: the worker's model key differs from the driver's"])
    attrs["archive"] = {"video_id": vid, "input": ident, "model_key": key}
    so = ctx.get("storage_options")
    try:
        mode, note, complete = _store_mode(read_store_meta(store, vid, so), ident, key)
    except OSError as exc:
        return done(errors=[f"cannot read the store {redact_uri(store)}: {one_line(exc)}"])
    res["note"] = note
    ejob = Job(store=store, sources=[{"uri": uri, "sid": vid}], mode=mode, attrs=attrs, lock_token=ctx.get("lock_token"),
               storage_options=so, discard_failed=True)
    try:
        sink, res["note"] = _open(ejob, plan, note)
    except (SinkError, OSError) as exc:
        return done(errors=[one_line(exc) if isinstance(exc, SinkError) else f"cannot open the store {redact_uri(store)}: {one_line(exc)}"])
    committed = sink.committed(vid) if sink.resumed else 0
    if complete and sink.resumed:
        sink.close()
        return done(state="complete", frames=committed, start_frame=committed, note="already complete")

    def progress(frames: dict) -> None:
        if on_progress is not None:
            on_progress(vid, frames.get(vid, committed) - committed)

    summ = run_job(ejob, plan, lambda: make_executor(plan), sink=sink, on_progress=progress, drain_s=20.0, t0=t0)
    src = summ["sources"][vid]
    frames = src["frames_written"]
    res.update(start_frame=committed, frames_new=frames - committed, open_s=summ.get("open_s"),
               first_result_s=summ.get("first_result_s"), first_write_s=summ.get("first_write_s"),
               first_decoded_s=round(summ["first_decoded_wall"] - t0_wall, 3) if summ.get("first_decoded_wall") else None)
    if summ["interrupted"]:
        return done(state="pending", frames=frames, errors=[], note=(res["note"] + "; " if res["note"] else "") + "interrupted")
    ok = frames > 0 and not src["errors"]
    if ok and summ["notes"]:
        res["note"] = "; ".join(x for x in [res["note"], *summ["notes"]] if x)
    return done(state="complete" if ok else "failed", frames=frames,
                errors=list(dict.fromkeys(src["errors"])) or ([] if ok else ["no frame was decoded"]))


def _check_input(uri: str) -> tuple[dict, str | None]:
    """(input identity, one-line error or None): the file exists, is readable, is not empty."""
    if not os.path.exists(uri):
        return {}, f"file not found: {redact_uri(uri)}"
    ident = input_identity(uri)
    if not ident:
        return {}, f"cannot read {redact_uri(uri)}: permission denied or not a regular file"
    if ident["size"] == 0:
        return ident, f"empty file (0 bytes): {redact_uri(uri)}"
    return ident, None


def _open(ejob, plan, note: str):
    """The video's store; a damaged store it should continue is replaced by a fresh one (said in the note)."""
    from streamparse.engine.job import open_store
    from streamparse.store.sink import SinkError

    try:
        return open_store(ejob, plan), note
    except SinkError as exc:
        if ejob.mode != "resume" or "damaged" not in str(exc):
            raise
        ejob.mode = "overwrite"
        return open_store(ejob, plan), f"a damaged store was replaced by a fresh one ({one_line(exc)})"
