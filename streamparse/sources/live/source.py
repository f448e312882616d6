"""``LiveSource``: a live stream (RTSP/RTMP/HTTP(S)/HLS) through PyAV with timeouts, reconnects and
bounded lag -- the consumer side of the source protocol::

    network --PyAV (open/read timeouts)--> decode thread (Connection) --FrameQueue (drop policy)--> read()

* The queue holds at most ``queue_size`` decoded frames (for ``startup_s`` seconds after the first frame,
  up to ``25 x startup_s`` more, while the run's first batches wait for the model: then the bound
  follows the backlog down); when full ``drop-oldest`` (live default) evicts
  the oldest frame, ``drop-latest`` discards the new one, ``wait`` blocks the decode thread (lossless;
  lag then grows in the socket). Drops are counted by reason; ``frame_index`` counts every decoded
  frame, so gaps in it mark dropped frames.
* Lag: ``queue_lag`` = now - wallclock at delivery; ``lag`` = how far behind live the delivered frame is:
  now - (time + min over the segment of (wallclock - time)); ``lag`` includes frames waiting in socket
  buffers, ``queue_lag`` does not.
* The URI's credentials never reach logs, exceptions, ``info()`` or ``stats()``.

Its settings come from ``LiveConfig`` through ``streamparse.plan.live_kwargs`` (the constructor has no
defaults of its own for them).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Iterator

import numpy as np

from streamparse.sources.base import LiveSourceError
from streamparse.sources.live.connection import Connection, LiveState
from streamparse.sources.live.queue import DROP_POLICIES, FrameQueue
from streamparse.sources.uri import redact_uri
from streamparse.structures import FrameBatch

log = logging.getLogger(__name__)

TRANSPORTS = ("tcp", "udp")
STARTUP_FPS = 25  # the start-up allowance holds startup_s seconds of a stream at this rate


class LiveSource:
    """A live stream decoded on its own thread into a bounded queue of RGB frames.

    Use as a context manager (``with LiveSource(uri, ...) as src: for b in src.batches(4): ...``);
    ``read()`` / ``batches()`` start the thread if needed. Frames are ``FrameBatch`` es (uint8[B, H, W, 3]).
    """

    kind = "live"

    def __init__(
        self,
        uri: str,
        *,
        transport: str,
        open_timeout_s: float,
        read_timeout_s: float,
        reconnect_initial_s: float,
        reconnect_factor: float,
        reconnect_cap_s: float,
        reconnect_max_attempts: int,
        queue_size: int,
        drop_policy: str,
        stall_timeout_s: float,
        analyze_s: float,
        startup_s: float = 0.0,
        source_id: str = "",
        batch_timeout_s: float = 0.04,
        decode_threads: int = 2,
    ) -> None:
        if not isinstance(uri, str) or not uri:
            raise ValueError("uri must be a non-empty string")
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}, got {transport!r}")
        if drop_policy not in DROP_POLICIES:
            raise ValueError(f"drop_policy must be one of {DROP_POLICIES}, got {drop_policy!r}")
        for name, v in (("open_timeout_s", open_timeout_s), ("read_timeout_s", read_timeout_s),
                        ("stall_timeout_s", stall_timeout_s), ("batch_timeout_s", batch_timeout_s), ("analyze_s", analyze_s)):
            if not v > 0:
                raise ValueError(f"{name} must be > 0, got {v}")
        if reconnect_initial_s < 0 or reconnect_cap_s < reconnect_initial_s or reconnect_factor < 1:
            raise ValueError("need 0 <= reconnect_initial_s <= reconnect_cap_s and reconnect_factor >= 1")
        if reconnect_max_attempts < -1:
            raise ValueError(f"reconnect_max_attempts must be -1 (forever) or >= 0, got {reconnect_max_attempts}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if not startup_s >= 0:
            raise ValueError(f"startup_s must be >= 0, got {startup_s}")
        self._safe_uri = redact_uri(uri)
        self.source_id = source_id or self._safe_uri
        self._open_s, self._read_s = float(open_timeout_s), float(read_timeout_s)
        self._batch_timeout = float(batch_timeout_s)
        self._queue = FrameQueue(int(queue_size), drop_policy, startup_s=float(startup_s),
                                 startup_extra=math.ceil(STARTUP_FPS * float(startup_s)))
        self._policy = drop_policy
        self._stop = threading.Event()
        self._st = LiveState(self._safe_uri, self.source_id, transport)
        self._conn = Connection(uri, queue=self._queue, state=self._st, stop=self._stop, transport=transport,
                                open_timeout_s=open_timeout_s, read_timeout_s=read_timeout_s,
                                stall_timeout_s=stall_timeout_s, analyze_s=analyze_s,
                                backoff=(float(reconnect_initial_s), float(reconnect_factor), float(reconnect_cap_s)),
                                max_attempts=reconnect_max_attempts, decode_threads=decode_threads, policy=drop_policy)
        self._thread: threading.Thread | None = None
        self.last_lags = np.zeros(0)  # seconds behind live of the frames the last read() returned

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "LiveSource":
        if self._thread is None:
            if self._stop.is_set():
                raise LiveSourceError(f"live source {self._safe_uri} is closed")
            self._thread = threading.Thread(target=self._conn.run, name=f"live:{self._safe_uri}", daemon=True)
            self._thread.start()
        return self

    def __enter__(self) -> "LiveSource":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self, timeout_s: float | None = None) -> bool:
        """Stop the decode thread; waits at most ``timeout_s`` (default max(open, read) timeout + 1 s).

        Returns True when the thread has ended (it is a daemon thread either way)."""
        self._stop.set()
        left = self._queue.close()
        with self._st.lock:
            self._st.dropped["closed"] += left
            if self._st.state not in ("failed",):
                self._st.state = "closed"
        t = self._thread
        if t is None or t is threading.current_thread():
            return True
        t.join(max(self._open_s, self._read_s) + 1.0 if timeout_s is None else timeout_s)
        if t.is_alive():
            log.warning("live source %s: decode thread still in a blocking call after close()", self._safe_uri)
            return False
        return True

    # ------------------------------------------------------------------ consumer side

    def _thread_done(self) -> bool:
        return self._thread is not None and not self._thread.is_alive()

    def ended(self) -> bool:
        """No frame will come any more: closed, or the decode thread finished and its queue is drained
        (a source that gave up raises from ``read`` instead)."""
        return self._stop.is_set() or (self._thread_done() and not self._queue.items and self._conn.final_error is None)

    def info(self, wait_s: float = 0.0) -> dict:
        """uri (redacted), kind, source_id, width, height, codec, time_base, fps, transport.

        Stream fields are None until the first connection; ``wait_s`` > 0 waits for it (and starts)."""
        if wait_s > 0:
            self.start()
            self._st.connected.wait(wait_s)
        with self._st.lock:
            return dict(self._st.info)

    def read(self, max_batch: int, timeout_s: float | None = None) -> FrameBatch | None:
        """Up to ``max_batch`` frames available within ``timeout_s`` (default ``batch_timeout_s``).

        Returns None when nothing arrived in time (or the source is closed); raises ``LiveSourceError``
        once the source gave up and its queued frames were delivered."""
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.start()
        deadline = time.monotonic() + (self._batch_timeout if timeout_s is None else float(timeout_s))
        items = self._queue.get_many(int(max_batch), deadline, self._thread_done)
        if not items:
            if self._conn.final_error is not None and not self._queue.items:
                raise self._conn.final_error
            return None
        now = time.time()
        lags = [now - (it[3] + it[7]) for it in items]
        self.last_lags = np.asarray(lags)
        with self._st.lock:
            self._st.c["delivered"] += len(items)
            self._st.c["last_lag_s"] = lags[-1]
            self._st.c["last_queue_lag_s"] = now - items[-1][4]
            self._st.lags.extend(lags)
        tb = items[0][6]
        return FrameBatch(
            frames=np.stack([it[0] for it in items]),
            frame_index=[it[1] for it in items],
            pts=[it[2] for it in items],
            time=[it[3] for it in items],
            wallclock=[it[4] for it in items],
            segment=[it[5] for it in items],
            time_base=tb,
            source_id=self.source_id,
        )

    def batches(self, max_batch: int, timeout_s: float | None = None, *, yield_empty: bool = False) -> Iterator[FrameBatch]:
        """Batches until the source is closed (ends) or gives up (raises ``LiveSourceError``).

        Each batch holds what arrived within ``timeout_s``; with ``yield_empty`` an empty batch is yielded
        whenever nothing arrived, so the caller's loop never waits longer than ``timeout_s``."""
        while True:
            b = self.read(max_batch, timeout_s)
            if b is not None:
                yield b
                continue
            if self._stop.is_set() or (self._thread_done() and not self._queue.items):
                return
            if yield_empty:
                info = self.info()
                h, w = info["height"] or 0, info["width"] or 0
                z = np.zeros(0)
                yield FrameBatch(np.zeros((0, h, w, 3), np.uint8), z, z, z, z, z, info["time_base"] or (1, 1), self.source_id)

    def stats(self) -> dict:
        """Counters and gauges (no credentials): decoded, delivered, dropped{reason}, reconnects, ..."""
        st = self._st
        with st.lock:
            out = dict(st.c)
            out["dropped"] = dict(st.dropped)
            out["dropped_total"] = sum(st.dropped.values())
            out["errors"] = int(sum(st.errors.values()))
            out["errors_by_kind"] = dict(st.errors)
            lags = np.fromiter(st.lags, float) if st.lags else None
            dts = list(st.decode_times)
            out.update(
                uri=self._safe_uri, source_id=self.source_id, state=st.state, segment=max(st.segment, 0),
                queue_len=len(self._queue.items), queue_size=self._queue.size, drop_policy=self._policy,
                backoff_delays_s=list(st.delays), last_error=st.last_error,
                lag_p50_s=None if lags is None else float(np.percentile(lags, 50)),
                lag_p95_s=None if lags is None else float(np.percentile(lags, 95)),
                decode_fps=(len(dts) - 1) / (dts[-1] - dts[0]) if len(dts) > 1 and dts[-1] > dts[0] else None,
            )
        return out
