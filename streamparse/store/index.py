"""The format of an archive OUTDIR's ``index.jsonl``, read by the archive (``streamparse.archive``) and by
analysts (``streamparse.results.open_archive``) alike.

Append-only: one JSON object per line per state change of a video; the LAST line of a ``video_id``
wins. A line: ``{"video_id", "uri" (redacted), "store" ("<video_id>.zarr"), "state" (one of
``STATES``), "frames", "fps", "wall_s", "errors", "attempt", "time", "input": {"size", "mtime",
"sha256_1mb"}, "model_key", ...}``. A line cut by a killed writer is counted and skipped.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

STATES = ("pending", "running", "complete", "failed", "quarantined")


def encode(records: list[dict]) -> bytes:
    """Lines of ``records`` (each ends with a newline; no record holds a newline)."""
    return "".join(json.dumps(r, separators=(",", ":"), default=str) + "\n" for r in records).encode()


@dataclass
class IndexState:
    """The index read back: ``last`` (video_id -> its last line), ``history`` (video_id -> every line,
    in order), ``bad_lines`` (unreadable lines skipped, e.g. one cut by a killed writer)."""

    last: dict[str, dict] = field(default_factory=dict)
    history: dict[str, list[dict]] = field(default_factory=dict)
    bad_lines: int = 0

    def attempts(self, video_id: str) -> int:
        return sum(1 for r in self.history.get(video_id, []) if r.get("state") == "running")

    def same_failures(self, video_id: str, error: str, key: str) -> int:
        """Earlier failures of ``video_id`` with the same first error under the same model."""
        return sum(1 for r in self.history.get(video_id, [])
                   if r.get("state") in ("failed", "quarantined") and (r.get("errors") or [""])[0] == error
                   and r.get("model_key") == key)


def parse_index(text: str) -> IndexState:
    st = IndexState()
    for ln in text.splitlines():
        if not ln.strip():
            continue
        try:
            rec = json.loads(ln)
        except ValueError:
            st.bad_lines += 1
            continue
        if not isinstance(rec, dict) or not isinstance(rec.get("video_id"), str):
            st.bad_lines += 1
            continue
        st.last[rec["video_id"]] = rec
        st.history.setdefault(rec["video_id"], []).append(rec)
    if st.bad_lines:
        log.warning("index.jsonl: %d unreadable line(s) skipped (a writer killed mid-line)", st.bad_lines)
    return st
