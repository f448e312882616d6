"""What an archive run records about itself, driver side: ``archive.json`` (the model, config and
inputs of the run, with the history of earlier models), the report (one row per input video, the
counts by state, the frames parsed and the fps) and its short text summary."""

from __future__ import annotations

import time

from streamparse.archive.outdir import ARCHIVE_JSON
from streamparse.archive.resume import Decision


def finalize_report(report: dict, videos, rows: dict, interrupted: bool, t_start: float) -> None:
    """The report's rows in input order, the counts, the frames parsed and the overall fps."""
    report["videos"] = [rows[v.video_id] for v in videos if v.video_id in rows]
    report["interrupted"] = interrupted
    report["elapsed_s"] = round(time.monotonic() - t_start, 3)
    report["counts"] = count_states(report["videos"])
    new = sum(r.get("frames_new") or 0 for r in report["videos"])
    report["frames_new"] = new
    report["fps"] = round(new / report["elapsed_s"], 2) if report["elapsed_s"] > 0 else None


def video_row(d: Decision) -> dict:
    """The report row of a video as decided before the run (queued, skipped or quarantined)."""
    prev = d.previous or {}
    row = {"video_id": d.video.video_id, "uri": d.video.redacted, "store": f"{d.video.video_id}.zarr",
           "action": {"process": "queued", "skip": "skipped", "quarantined": "quarantined"}[d.action], "reason": d.reason,
           "state": {"skip": "complete", "quarantined": "quarantined"}.get(d.action, "pending"),
           "frames": prev.get("frames", 0) if d.action != "process" else 0, "frames_new": 0, "fps": None, "wall_s": None,
           "errors": list(prev.get("errors") or []) if d.action == "quarantined" else [], "attempt": d.attempt - 1, "note": ""}
    return row


def count_states(rows: list[dict]) -> dict:
    """Videos per state, and how many were skipped and processed."""
    out = {s: 0 for s in ("complete", "failed", "quarantined", "pending", "running")}
    for r in rows:
        out[r["state"]] = out.get(r["state"], 0) + 1
    out["skipped"] = sum(1 for r in rows if r["action"] == "skipped")
    out["processed"] = sum(1 for r in rows if r["action"] == "processed")
    return out


def format_summary(report: dict) -> str:
    """The short text summary printed after a run."""
    c = report["counts"]
    lines = [f"archive {report['outdir']}: {len(report['videos'])} video(s): {c['complete']} complete "
             f"({c['skipped']} skipped as already done), {c['failed']} failed, {c['quarantined']} quarantined"
             + (f", {c['pending'] + c['running']} pending" if c["pending"] + c["running"] else "")]
    fps = f" ({report['fps']:.1f} fps overall)" if report.get("fps") else ""
    lines.append(f"  {report['frames_new']} frame(s) parsed in {report['elapsed_s']:.1f} s{fps}")
    for r in report["videos"]:
        if r["state"] in ("failed", "quarantined"):
            lines.append(f"  {r['state']}: {r['video_id']}: {'; '.join(r.get('errors') or ['?'])}")
        elif r.get("note") and r["action"] == "processed":
            lines.append(f"  {r['video_id']}: {r['note']}")
    for n in report.get("notes") or []:
        lines.append(f"  note: {n}")
    if report.get("interrupted"):
        lines.append("  interrupted: rerun the same command with --resume to continue")
    return "\n".join(lines)


def read_archive_json(outdir) -> dict | None:
    """The OUTDIR's archive.json of an earlier run, or None."""
    import json

    raw = outdir.read_text(ARCHIVE_JSON)
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def write_archive_json(outdir, plan, key: str, videos, prev: dict | None) -> None:
    """archive.json of this run (``prev``: the earlier one's; a changed model goes into its history)."""
    from streamparse import __version__

    history = list((prev or {}).get("history") or [])
    if prev and prev.get("model_key") and prev.get("model_key") != key:
        history.append({k: prev.get(k) for k in ("model_name", "checkpoint_sha256", "model_key", "updated")})
    meta = plan.model
    data = {"streamparse_version": __version__, "model_name": meta["model_name"], "checkpoint_sha256": meta["checkpoint_sha256"],
            "model_key": key, "config": plan.config, "inputs": [v.redacted for v in videos],
            "created": (prev or {}).get("created", time.time()), "updated": time.time(), "history": history}
    outdir.write_json(ARCHIVE_JSON, data)
