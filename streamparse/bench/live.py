"""`streamparse bench live`: a LiveSource on an endless live test stream -- fps, lag, drops, memory.

Without ``uri`` it starts GStreamer's RTSP server on 127.0.0.1 (``streamparse.bench.rtsp_server``,
Debian's GStreamer RTSP packages: see docs/environment.md) serving ``videotestsrc`` at
``width`` x ``height`` and ``fps``. Each delivered frame goes through ``model`` (optional, any callable
taking uint8[H, W, 3]) so the consumer can be made slower than the stream.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np


def rss_mb() -> float:
    """Resident memory of this process in MiB (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _test_server():
    from streamparse.bench.rtsp_server import RtspServer, gst_rtsp_available

    ok, why = gst_rtsp_available()
    if not ok:
        raise RuntimeError(why)
    return RtspServer


def _pct(a, q) -> float | None:
    return float(np.percentile(a, q)) if len(a) else None


def bench_live(
    duration_s: float = 300.0,
    width: int = 640,
    height: int = 480,
    fps: int = 25,
    *,
    uri: str | None = None,
    model: Callable[[np.ndarray], object] | None = None,
    max_batch: int = 4,
    batch_timeout_s: float = 0.04,
    queue_size: int = 8,
    drop_policy: str = "drop-oldest",
    sample_every_s: float = 5.0,
    warmup_s: float = 5.0,
    progress: Callable[[dict], None] | None = None,
) -> dict:
    """Consume a live stream for ``duration_s`` seconds; returns the measured numbers (JSON-friendly).

    Lag (s behind live, at delivery and after ``model``), achieved fps, drop rate and resident memory
    sampled every ``sample_every_s`` (growth measured from the first sample after ``warmup_s``)."""
    from dataclasses import replace

    from streamparse.plan import live_kwargs
    from streamparse.config import LiveConfig
    from streamparse.sources.live import LiveSource

    if duration_s <= 0 or max_batch < 1:
        raise ValueError("duration_s must be > 0 and max_batch >= 1")
    server = None
    if uri is None:
        server = _test_server()(testsrc=True, width=width, height=height, fps=fps).start()
        uri = server.url()
    lags, e2e, samples = [], [], []
    try:
        live = replace(LiveConfig(), queue_size=queue_size, drop_policy=drop_policy, open_timeout_s=10.0, read_timeout_s=5.0,
                       reconnect_max_attempts=-1)
        with LiveSource(uri, batch_timeout_s=batch_timeout_s, **live_kwargs(live)) as src:
            info = src.info(wait_s=15.0)
            t0 = time.monotonic()
            next_sample = t0
            delivered = 0
            while (now := time.monotonic()) - t0 < duration_s:
                if now >= next_sample:
                    st = src.stats()
                    samples.append({"t_s": round(now - t0, 1), "rss_mb": round(rss_mb(), 1), "delivered": delivered,
                                    "dropped": st["dropped_total"], "lag_s": st["last_lag_s"], "reconnects": st["reconnects"]})
                    if progress is not None:
                        progress(samples[-1])
                    next_sample += sample_every_s
                b = src.read(max_batch, batch_timeout_s)
                if b is None:
                    continue
                lags.extend(src.last_lags.tolist())
                delivered += len(b)
                for i in range(len(b)):
                    if model is not None:
                        model(b.frames[i])
                    e2e.append(time.time() - b.wallclock[i])
            elapsed = time.monotonic() - t0
            st = src.stats()
            samples.append({"t_s": round(elapsed, 1), "rss_mb": round(rss_mb(), 1), "delivered": delivered,
                            "dropped": st["dropped_total"], "lag_s": st["last_lag_s"], "reconnects": st["reconnects"]})
    finally:
        if server is not None:
            server.stop()
    rss = [s["rss_mb"] for s in samples if s["t_s"] >= warmup_s] or [s["rss_mb"] for s in samples]
    return {
        "uri": info["uri"], "width": info["width"], "height": info["height"], "source_fps": info["fps"],
        "duration_s": round(elapsed, 1), "drop_policy": drop_policy, "queue_size": queue_size,
        "decoded": st["decoded"], "delivered": delivered, "fps_achieved": delivered / elapsed,
        "decode_fps": st["decoded"] / elapsed,
        "lag_p50_s": _pct(lags, 50), "lag_p95_s": _pct(lags, 95), "lag_max_s": max(lags) if lags else None,
        "after_model_lag_p95_s": _pct(e2e, 95),
        "dropped": st["dropped"], "drop_rate": st["dropped_total"] / max(1, st["decoded"]),
        "reconnects": st["reconnects"], "errors": st["errors_by_kind"],
        "rss_first_mb": rss[0] if rss else None, "rss_last_mb": rss[-1] if rss else None,
        "rss_max_mb": max(rss) if rss else None,
        "rss_growth_pct": 100.0 * (rss[-1] - rss[0]) / rss[0] if rss and rss[0] else None,
        "samples": samples,
    }


def add_live_arguments(p) -> None:
    """Arguments for ``streamparse bench live``."""
    p.add_argument("--duration", type=float, default=300.0, help="seconds")
    p.add_argument("--uri", default=None, help="stream to read (default: a local GStreamer test stream)")
    p.add_argument("--size", default="480x640", help="HxW of the local test stream")
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--drop-policy", default="drop-oldest", choices=("drop-oldest", "drop-latest", "wait"))
    p.add_argument("--work-ms", type=float, default=0.0, help="simulated per-frame model time")


def run_live(args) -> dict:
    h, _, w = str(args.size).lower().partition("x")
    model = None
    if getattr(args, "work_ms", 0) > 0:
        work = args.work_ms / 1000.0

        def sleep_model(_frame):
            time.sleep(work)

        model = sleep_model

    return bench_live(args.duration, int(w), int(h), args.fps, uri=args.uri, model=model,
                      drop_policy=args.drop_policy,
                      progress=lambda s: print(f"t={s['t_s']:7.1f}s rss={s['rss_mb']:.0f} MiB delivered={s['delivered']}"
                                               f" dropped={s['dropped']} lag={s['lag_s'] if s['lag_s'] is None else round(s['lag_s'], 3)}",
                                               flush=True))
