"""What a store holds, in a few numbers per source (``streamparse inspect``, the report's summary table)."""

from __future__ import annotations

import numpy as np


def summarize(result) -> dict:
    """JSON-able summary: schema version, model, checkpoint and, per source, committed frames, duration,
    size, state, drops by reason, segments, people per frame (min/median/max) and tracks (schema v2)."""
    a = result.attrs
    out = {"store": result.path, "schema_version": result.schema_version, "streamparse_version": a.get("streamparse_version"),
           "model_name": a.get("model_name"), "checkpoint_sha256": a.get("checkpoint_sha256"),
           "classes": len(result.class_names), "tracker": (a.get("tracker") or {}).get("name"),
           "failed_sources": a.get("failed_sources") or {}, "sources": {}}
    for sid in result.sources:
        info, st = result.info(sid), result.status(sid)
        ft = result.frames_table(sid)
        T = len(ft)
        tm = ft["time"].to_numpy()
        fps = info.get("avg_fps") or info.get("fps")
        step = float(np.median(np.diff(tm))) if T > 1 else (1.0 / fps if fps else 0.0)
        people = ft["people"].to_numpy()
        h, w = result.group(sid)["part"].shape[1:]
        s = {"frames": T, "duration_s": round(float(tm[-1] - tm[0] + step), 3) if T else 0.0,
             "width": int(w), "height": int(h), "fps": fps, "kind": info.get("kind"), "uri": info.get("uri"),
             "state": st.get("state"), "complete": bool(st.get("complete")),
             "uncommitted_frames": int(result.group(sid)["part"].shape[0] - T),
             "dropped": int(st.get("dropped") or 0), "dropped_by_reason": dict(st.get("dropped_by_reason") or {}),
             "segments": int(st.get("segments") or (len(np.unique(ft["segment"])) if T else 0)),
             "reconnects": int(st.get("reconnects") or 0), "errors": list(st.get("errors") or []),
             "instances": int(people.sum()),
             "people_per_frame": {"min": int(people.min()), "median": float(np.median(people)), "max": int(people.max())}
             if T else None,
             "tracks": None}
        if result.schema_version >= 2:
            d = result._per_instance(sid, ("inst_track",))["inst_track"]
            s["tracks"] = int(len(np.unique(d[d > 0]))) if d is not None else 0
            o = np.bincount(result.origins(sid), minlength=3)
            s["added_rows"] = {"recovered": int(o[1]), "interpolated": int(o[2])}
        out["sources"][sid] = s
    return out


def format_summary(s: dict) -> str:
    lines = [f"{s['store']}: schema v{s['schema_version']}, model {s['model_name']}, checkpoint "
             f"{(s['checkpoint_sha256'] or 'none')[:12]}, {s['classes']} classes"
             + (f", tracker {s['tracker']}" if s.get("tracker") else "")]
    for sid, x in s["sources"].items():
        ppf = x["people_per_frame"]
        ppl = f"{ppf['min']}/{ppf['median']:g}/{ppf['max']}" if ppf else "-"
        drops = ", ".join(f"{k} {v}" for k, v in x["dropped_by_reason"].items()) or str(x["dropped"])
        tracks = x["tracks"] if x["tracks"] is not None else "n/a (schema v1)"
        lines.append(f"  {sid}: {x['frames']} frames, {x['duration_s']:.2f} s, {x['width']}x{x['height']}, "
                     f"state {x['state']}{' (complete)' if x['complete'] else ''}"
                     f"{f', {u} frames past the commit marker (ignored)' if (u := x['uncommitted_frames']) else ''}, dropped {drops}, segments "
                     f"{x['segments']}, people/frame min/median/max {ppl}, tracks {tracks}"
                     + "".join(f", {n} {k}" for k, n in (x.get("added_rows") or {}).items() if n))
        for e in x["errors"]:
            lines.append(f"    error: {e}")
    for sid, errs in s["failed_sources"].items():
        lines.append(f"  {sid}: failed: {'; '.join(map(str, errs))}")
    return "\n".join(lines)
