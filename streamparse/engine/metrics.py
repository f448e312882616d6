"""Per-source counters and gauges, kept locally (for the progress display and the final summary)
and exported as Prometheus metrics through Ray's metrics API when running inside Ray.

Metric names: ``streamparse_frames_total{source, stage}`` (stage = decoded | inferred | written),
``streamparse_dropped_total{source, reason}``, ``streamparse_reconnects_total{source}``,
``streamparse_segments{source}``, ``streamparse_lag_seconds{source}``, ``streamparse_fps{source}``.
The ``source`` label is the sanitized source id, never the URI, so credentials cannot leak into
metric labels.
"""

from __future__ import annotations

import re
import threading
import time
from collections import defaultdict

_SAFE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_RAY_METRICS: dict[str, object] = {}
_LOCK = threading.Lock()


def _ray_metric(kind: str, name: str, desc: str, tag_keys: tuple[str, ...]):
    """A process-wide ray.util.metrics object, or None outside Ray."""
    try:
        import ray

        if not ray.is_initialized():
            return None
        from ray.util import metrics
    except Exception:  # noqa: BLE001 - metrics are best effort
        return None
    with _LOCK:
        m = _RAY_METRICS.get(name)
        if m is None:
            cls = {"counter": metrics.Counter, "gauge": metrics.Gauge}[kind]
            m = cls(name, description=desc, tag_keys=tag_keys)
            _RAY_METRICS[name] = m
    return m


class SourceMetrics:
    """Counters and gauges of one source. Thread-safe; cheap enough to call per batch."""

    def __init__(self, source_id: str, export: bool = True):
        if not _SAFE.match(source_id):
            raise ValueError(f"metric label must be a sanitized source id, got {source_id!r}")
        self.source_id = source_id
        self.export = export
        self.frames: dict[str, int] = defaultdict(int)
        self.dropped: dict[str, int] = defaultdict(int)
        self.reconnects = 0
        self.segments = 0
        self.lag_s: float | None = None
        self.lags: list[float] = []
        self._t0 = time.monotonic()
        self._lock = threading.Lock()

    def count(self, stage: str, n: int = 1) -> None:
        with self._lock:
            self.frames[stage] += n
        if self.export and n:
            m = _ray_metric("counter", "streamparse_frames_total", "frames per source and stage", ("source", "stage"))
            if m is not None:
                m.inc(n, tags={"source": self.source_id, "stage": stage})

    def drop(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self.dropped[reason] += n
        if self.export and n:
            m = _ray_metric("counter", "streamparse_dropped_total", "dropped frames per source and reason", ("source", "reason"))
            if m is not None:
                m.inc(n, tags={"source": self.source_id, "reason": reason})

    def set_reconnects(self, reconnects: int, segments: int) -> None:
        with self._lock:
            new = max(0, reconnects - self.reconnects)
            self.reconnects, self.segments = reconnects, segments
        if self.export:
            c = _ray_metric("counter", "streamparse_reconnects_total", "reconnects per source", ("source",))
            g = _ray_metric("gauge", "streamparse_segments", "segments per source", ("source",))
            if c is not None and new:
                c.inc(new, tags={"source": self.source_id})
            if g is not None:
                g.set(segments, tags={"source": self.source_id})

    def observe_lag(self, lag_s: float) -> None:
        with self._lock:
            self.lag_s = lag_s
            self.lags.append(lag_s)
            if len(self.lags) > 100_000:
                self.lags = self.lags[-50_000:]
        if self.export:
            g = _ray_metric("gauge", "streamparse_lag_seconds", "now - grab time of the frame being written", ("source",))
            if g is not None:
                g.set(lag_s, tags={"source": self.source_id})

    def observe_lags(self, lags_s) -> None:
        """Many frames' lags at once (a written batch)."""
        lags = [float(x) for x in lags_s]
        if not lags:
            return
        with self._lock:
            self.lag_s = lags[-1]
            self.lags.extend(lags)
            if len(self.lags) > 100_000:
                self.lags = self.lags[-50_000:]
        if self.export:
            g = _ray_metric("gauge", "streamparse_lag_seconds", "now - grab time of the frame being written", ("source",))
            if g is not None:
                g.set(lags[-1], tags={"source": self.source_id})

    def fps(self, stage: str = "written") -> float:
        dt = time.monotonic() - self._t0
        return self.frames[stage] / dt if dt > 0 else 0.0

    def summary(self) -> dict:
        import numpy as np

        with self._lock:
            lags = np.asarray(self.lags, dtype=float)
            out = {
                "source": self.source_id,
                "frames": dict(self.frames),
                "dropped": dict(self.dropped),
                "reconnects": self.reconnects,
                "segments": self.segments,
                "fps": round(self.fps(), 3),
                "lag_p50_s": float(np.percentile(lags, 50)) if lags.size else None,
                "lag_p95_s": float(np.percentile(lags, 95)) if lags.size else None,
            }
        if self.export:
            g = _ray_metric("gauge", "streamparse_fps", "written frames per second", ("source",))
            if g is not None:
                g.set(out["fps"], tags={"source": self.source_id})
        return out
