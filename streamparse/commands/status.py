"""`streamparse status OUTDIR`: an archive's progress from its output folder alone."""

from __future__ import annotations

HELP = "progress of an archive from its OUTDIR: done / running / failed / quarantined / pending, fps, ETA"


def add_arguments(p) -> None:
    p.add_argument("outdir", metavar="OUTDIR", help="an archive output folder (a path or s3://bucket/prefix)")
    p.add_argument("--json", action="store_true", help="print the status as JSON")


def archive_status(outdir: str, storage_options: dict | None = None) -> dict:
    """The status of an archive OUTDIR (see ``streamparse.status`` docs in docs/archives.md)."""
    import json
    import time

    from streamparse.store.index import parse_index
    from streamparse.archive.outdir import ARCHIVE_JSON, INDEX, open_outdir

    od = open_outdir(outdir, storage_options)
    text = od.read_text(INDEX)
    if text is None:
        raise FileNotFoundError(f"{outdir}: no index.jsonl (not an archive folder, or nothing started yet)")
    try:
        arc = json.loads(od.read_text(ARCHIVE_JSON) or "{}")
    except ValueError:
        arc = {}
    holder = od.busy()
    idx = parse_index(text)
    inputs = arc.get("inputs") or []
    counts = {s: 0 for s in ("complete", "running", "failed", "quarantined", "pending")}
    session = float(arc.get("updated") or 0.0)
    rows, frames_done, session_frames, last_t = [], 0, 0, session
    for vid, rec in idx.last.items():
        st = rec.get("state", "pending")
        if st == "running" and not holder:
            st = "pending"  # its job is gone: the store resumes from its commit marker
        counts[st] = counts.get(st, 0) + 1
        if rec.get("state") == "complete":
            frames_done += int(rec.get("frames") or 0)
        rows.append({"video_id": vid, "state": st, "frames": rec.get("frames"), "errors": rec.get("errors") or [],
                     "attempt": rec.get("attempt"), "note": rec.get("note") or ""})
    for recs in idx.history.values():
        for r in recs:
            t = float(r.get("time") or 0)
            last_t = max(last_t, t)
            if t >= session and r.get("state") in ("complete", "failed", "quarantined", "pending") and r.get("frames_new"):
                session_frames += int(r["frames_new"])
    running = [r for r in rows if r["state"] == "running"]
    live_frames = 0
    for r in running:
        try:
            _, status = od.store_meta(r["video_id"])
            r["frames"] = int((status or {}).get("frames_written") or 0)
            live_frames += r["frames"]
        except Exception:  # noqa: BLE001 - progress only
            pass
    known = set(idx.last)
    total = max(len(idx.last), len(inputs))
    counts["pending"] += max(0, total - len(known))
    end = time.time() if holder else last_t
    elapsed = max(1e-6, end - session) if session else None
    finished_now = sum(1 for recs in idx.history.values() for r in recs
                       if float(r.get("time") or 0) >= session and r.get("state") in ("complete", "failed", "quarantined"))
    fps = round(session_frames / elapsed, 2) if elapsed and session_frames else None
    eta = None
    left = counts["pending"] + counts["running"]
    if holder and elapsed and finished_now:
        eta = round(left * elapsed / finished_now, 1)
    return {"outdir": outdir, "model_name": arc.get("model_name"), "checkpoint_sha256": arc.get("checkpoint_sha256"),
            "job": holder, "live": bool(holder), "videos": total, "counts": counts, "frames_complete": frames_done,
            "frames_in_progress": live_frames, "session_started": session or None, "session_frames": session_frames,
            "fps": fps, "eta_s": eta, "rows": sorted(rows, key=lambda r: r["video_id"])}


def format_status(s: dict) -> str:
    c = s["counts"]
    ck = (s.get("checkpoint_sha256") or "none")[:12]
    lines = [f"archive {s['outdir']}  (model {s.get('model_name')}, checkpoint {ck})",
             f"  job: {'running: ' + s['job'] if s['live'] else 'not running'}",
             f"  videos: {s['videos']}  complete {c['complete']}  running {c['running']}  failed {c['failed']}  "
             f"quarantined {c['quarantined']}  pending {c['pending']}",
             f"  frames: {s['frames_complete']} in complete videos" + (f", {s['frames_in_progress']} in running ones" if c["running"] else "")
             + (f"; {s['fps']:.1f} fps in the last session" if s.get("fps") else "")
             + (f"; ETA {s['eta_s'] / 60:.1f} min" if s.get("eta_s") is not None else "")]
    for r in s["rows"]:
        if r["state"] in ("failed", "quarantined"):
            lines.append(f"  {r['state']}: {r['video_id']}: {'; '.join(r['errors']) or '?'}")
        elif r["state"] == "running":
            lines.append(f"  running: {r['video_id']} ({r.get('frames') or 0} frames committed)")
    return "\n".join(lines)


def run(args) -> int:
    import json

    from streamparse.cli import CLIError

    try:
        s = archive_status(args.outdir)
    except (FileNotFoundError, OSError, ValueError) as exc:
        raise CLIError(str(exc).splitlines()[0]) from None
    print(json.dumps(s, indent=2) if args.json else format_status(s))
    return 0
