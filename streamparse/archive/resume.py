"""What an archive OUTDIR's ``index.jsonl`` says, and what ``--resume`` does about it (pure logic, no I/O).

The index's format is ``streamparse.store.index`` (shared with the readers); here: ``record`` (one
line for a video), ``model_key(root_attrs)`` (what must match for a finished store to be kept).

``plan_videos`` decides, per input video, what a run does with it (``Decision``): skip it (complete
with the same input and model), leave it quarantined, or process it (new, continue a partial store,
or reprocess into a fresh store when the input or the model changed; the worker makes the final
choice from the store's own attributes).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Callable

from streamparse.archive.inputs import VideoInput, same_input
from streamparse.store.index import STATES, IndexState




def model_key(attrs: dict) -> str:
    """What a store's content depends on besides its input: model name, checkpoint sha256, the resolved
    ``model`` and ``track`` sections and ``pipeline.max_frames``. ``attrs``: a store's root attributes
    (``streamparse.plan.root_attrs``); a 16-hex-digit digest."""
    cfg = attrs.get("config") or {}
    what = {"model_name": attrs.get("model_name"), "checkpoint_sha256": attrs.get("checkpoint_sha256"),
            "model": cfg.get("model"), "track": cfg.get("track"),
            "max_frames": (cfg.get("pipeline") or {}).get("max_frames", 0)}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def record(video: VideoInput, state: str, **fields) -> dict:
    """One index line for ``video`` (``fields``: frames, fps, wall_s, errors, attempt, input, ...)."""
    if state not in STATES:
        raise ValueError(f"state must be one of {STATES}, got {state!r}")
    rec = {"video_id": video.video_id, "uri": video.redacted, "store": f"{video.video_id}.zarr", "state": state,
           "frames": 0, "fps": None, "wall_s": None, "errors": [], "attempt": 0, "time": round(time.time(), 3)}
    rec.update(fields)
    return rec


@dataclass
class Decision:
    """``action``: process | skip | quarantined; ``reason``: new, continue, retry, input changed,
    model changed, complete, or the quarantining error; ``attempt``: the number this attempt gets."""

    video: VideoInput
    action: str
    reason: str
    attempt: int
    previous: dict | None = None


def plan_videos(videos: list[VideoInput], index: IndexState, *, key: str, stats: dict[str, dict],
                quarantine_after: int = 3, retry_quarantined: bool = False,
                verify_complete: Callable[[VideoInput, dict], bool] | None = None) -> list[Decision]:
    """A ``Decision`` per video (see the module docstring). ``stats``: video_id -> ``stat_identity``
    now; ``verify_complete(video, last_line)``: the costlier checks of a video about to be skipped
    (the first-MiB hash, the store's own status), True to skip it."""
    out = []
    for v in videos:
        last = index.last.get(v.video_id)
        attempt = index.attempts(v.video_id) + 1
        if last is None:
            out.append(Decision(v, "process", "new", attempt))
            continue
        same_in = same_input(last.get("input"), stats.get(v.video_id), head=False)
        same_model = last.get("model_key") == key
        state = last.get("state")
        if state == "complete" and same_in and same_model:
            if verify_complete is None or verify_complete(v, last):
                out.append(Decision(v, "skip", "complete", attempt, last))
                continue
            out.append(Decision(v, "process", "store or input differs from the index", attempt, last))
            continue
        if state == "quarantined" and same_in and same_model and not retry_quarantined:
            err = (last.get("errors") or ["?"])[0]
            out.append(Decision(v, "quarantined", err, attempt, last))
            continue
        if last.get("input") and not same_in:
            reason = "input changed"
        elif state in ("complete", "failed", "quarantined", "running", "pending") and last.get("model_key") and not same_model:
            reason = "model changed"
        elif state in ("failed", "quarantined"):
            reason = "retry"
        else:
            reason = "continue"
        out.append(Decision(v, "process", reason, attempt, last))
    return out
