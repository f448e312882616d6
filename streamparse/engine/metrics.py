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
import sys
import threading
import time
from collections import defaultdict

_SAFE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_RAY_METRICS: dict[str, object] = {}
_LOCK = threading.Lock()


def _ray_metric(kind: str, name: str, desc: str, tag_keys: tuple[str, ...]):
    """A process-wide ray.util.metrics object, or None outside Ray. Ray is never imported here: inside
    Ray (a worker, or a driver that started it) it is imported already; elsewhere there is nothing to
    export to."""
    ray = sys.modules.get("ray")
    try:
        if ray is None or not ray.is_initialized():
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

    def _export(self, kind: str, name: str, desc: str, value: float, **labels: str) -> None:
        """Add ``value`` to the counter, or set the gauge, ``name`` of this source (labelled ``source`` and
        ``labels``) when exporting inside Ray."""
        if not self.export:
            return
        m = _ray_metric(kind, name, desc, ("source", *labels))
        if m is not None:
            tags = {"source": self.source_id, **labels}
            m.inc(value, tags=tags) if kind == "counter" else m.set(value, tags=tags)

    def count(self, stage: str, n: int = 1) -> None:
        with self._lock:
            self.frames[stage] += n
        if n:
            self._export("counter", "streamparse_frames_total", "frames per source and stage", n, stage=stage)

    def drop(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self.dropped[reason] += n
        if n:
            self._export("counter", "streamparse_dropped_total", "dropped frames per source and reason", n, reason=reason)

    def set_reconnects(self, reconnects: int, segments: int) -> None:
        with self._lock:
            new = max(0, reconnects - self.reconnects)
            self.reconnects, self.segments = reconnects, segments
        if new:
            self._export("counter", "streamparse_reconnects_total", "reconnects per source", new)
        self._export("gauge", "streamparse_segments", "segments per source", segments)

    def observe_lag(self, lag_s: float) -> None:
        self.observe_lags([lag_s])

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
        self._export("gauge", "streamparse_lag_seconds", "now - grab time of the frame being written", lags[-1])

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
        self._export("gauge", "streamparse_fps", "written frames per second", out["fps"])
        return out
