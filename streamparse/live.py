"""Live sources (RTSP/RTMP/HTTP(S)/HLS) through PyAV: timeouts, reconnect, bounded lag.

``LiveSource`` runs one decode thread per source::

    network --PyAV (open/read timeouts)--> decode thread --bounded queue (drop policy)--> read()/batches()

* Every blocking PyAV call is bounded: ``av.open(url, options=..., timeout=(open_s, read_s))`` (PyAV's
  interrupt callback, raises ``av.error.ExitError``) plus the protocol's socket timeout (RTSP
  ``timeout``, other protocols ``rw_timeout``, in µs; raises ``av.error.TimeoutError``). A silent or
  frozen server therefore ends the read within ``read_timeout_s``.
* End of stream on a live URL is a disconnect (PyAV reports a killed server as a normal EOF). The thread
  reconnects with exponential backoff ``min(cap, initial * factor**(k-1))`` for the k-th consecutive
  failed attempt; ``reconnect_max_attempts`` consecutive failures (-1 = never give up) end the source
  with ``LiveSourceError``, raised by ``read()``/``batches()`` once the queued frames are delivered.
  A connection that decodes at least one frame resets the count.
* Each (re)connection, and each backward pts jump inside one, starts a new ``segment``. ``pts`` is the
  stream's own (it may restart); ``time`` stays strictly increasing per source: inside a segment
  ``offset + (pts - first_pts) * time_base``, and a new segment continues at
  ``last_time + max(frame duration, wall-clock gap)``. ``wallclock`` is the unix time at which the
  frame was decoded (grabbed).
* The queue between the thread and the consumer holds at most ``queue_size`` decoded frames. When full:
  ``drop-oldest`` (live default) evicts the oldest frame, ``drop-latest`` discards the new one, ``wait``
  blocks the decode thread (lossless; lag then grows in the socket). Drops are counted by reason;
  ``frame_index`` counts every decoded frame, so gaps in it mark dropped frames.
* Stall detection: no packet for ``read_timeout_s`` (timeout), or packets but no decoded frame for
  ``stall_timeout_s``, reconnects. Time the thread spends blocked on a full queue (a slow consumer under
  ``wait``) never counts as a stall.
* Lag: ``queue_lag`` = now - wallclock at delivery; ``lag`` = how far behind live the delivered frame is:
  now - (time + min over the segment of (wallclock - time)), the minimum relaxing by 1 ms/s to absorb
  camera clock drift. ``lag`` includes frames waiting in socket buffers, ``queue_lag`` does not.
* The URI's credentials never reach logs, exceptions, ``info()`` or ``stats()``.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import traceback
from typing import Iterator
from urllib.parse import unquote, urlsplit, urlunsplit

import av
import numpy as np

from streamparse.structures import FrameBatch

log = logging.getLogger(__name__)

DROP_POLICIES = ("drop-oldest", "drop-latest", "wait")
TRANSPORTS = ("tcp", "udp")
_SECRET_QUERY_KEYS = ("password", "passwd", "pass", "pwd", "token", "key", "secret", "auth", "sig", "signature")
_DRIFT_PER_S = 1e-3  # how fast the behind-live reference may relax (camera clock drift allowance)
_MAX_PENDING = 16  # frames without pts held at a segment start until a pts arrives


class LiveSourceError(RuntimeError):
    """A live source gave up; the message names the redacted URI and the last error."""


def _redact_uri(uri: str) -> str:
    """``rtsp://user:pw@host/p?token=x`` -> ``rtsp://***@host/p?token=***`` (private fallback)."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparsable uri>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    query = parts.query
    if query:
        items = []
        for item in query.split("&"):
            k, eq, _v = item.partition("=")
            items.append(f"{k}=***" if eq and k.lower() in _SECRET_QUERY_KEYS else item)
        query = "&".join(items)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


try:  # the shared helper, when streamparse.sources provides it
    from streamparse.sources import redact_uri
except Exception:  # pragma: no cover - sources.py not there yet / being written
    redact_uri = _redact_uri


def _secrets_of(uri: str) -> list[str]:
    """Substrings of ``uri`` that must never be shown (raw and percent-decoded)."""
    out: list[str] = []
    try:
        parts = urlsplit(uri)
    except ValueError:
        return [uri]
    if "@" in parts.netloc:
        userinfo = parts.netloc.rpartition("@")[0]
        out += [userinfo, unquote(userinfo)]
        user, _, pw = userinfo.partition(":")
        out += [s for s in (pw, unquote(pw)) if s]
        out += [s for s in (user, unquote(user)) if len(s) >= 3]
    for item in parts.query.split("&") if parts.query else []:
        k, eq, v = item.partition("=")
        if eq and v and k.lower() in _SECRET_QUERY_KEYS:
            out += [v, unquote(v)]
    return sorted({s for s in out if s}, key=len, reverse=True)


def backoff_delay(k: int, initial_s: float, factor: float, cap_s: float) -> float:
    """Delay before the k-th (1-based) consecutive reconnect attempt."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return float(min(cap_s, initial_s * factor ** (k - 1)))


class _FrameQueue:
    """Bounded deque + condition; the drop policy is applied in ``put``."""

    def __init__(self, size: int, policy: str) -> None:
        self.size, self.policy = size, policy
        self.items: collections.deque = collections.deque()
        self.cond = threading.Condition()
        self.closed = False

    def put(self, item, stop: threading.Event) -> tuple[str | None, float]:
        """Queue ``item``; returns (drop reason or None, seconds blocked)."""
        with self.cond:
            if self.closed:
                return "closed", 0.0
            if len(self.items) < self.size:
                self.items.append(item)
                self.cond.notify_all()
                return None, 0.0
            if self.policy == "drop-oldest":
                self.items.popleft()
                self.items.append(item)
                self.cond.notify_all()
                return "drop_oldest", 0.0
            if self.policy == "drop-latest":
                return "drop_latest", 0.0
            t0 = time.monotonic()
            while len(self.items) >= self.size and not (self.closed or stop.is_set()):
                self.cond.wait(0.1)
            blocked = time.monotonic() - t0
            if self.closed or stop.is_set():
                return "closed", blocked
            self.items.append(item)
            self.cond.notify_all()
            return None, blocked

    def get_many(self, n: int, deadline: float, done) -> list:
        """Up to ``n`` compatible items (same shape and time base), waiting until ``deadline``."""
        out: list = []
        with self.cond:
            while True:
                while self.items and len(out) < n:
                    it = self.items[0]
                    if out and (it[0].shape != out[0][0].shape or it[6] != out[0][6]):
                        return out
                    out.append(self.items.popleft())
                self.cond.notify_all()
                remaining = deadline - time.monotonic()
                if len(out) >= n or remaining <= 0 or self.closed or (not self.items and done()):
                    return out
                self.cond.wait(min(remaining, 0.1))

    def close(self) -> int:
        with self.cond:
            self.closed = True
            n = len(self.items)
            self.items.clear()
            self.cond.notify_all()
            return n


class _Timeline:
    """Maps per-segment pts to a source time that is strictly increasing across segments."""

    def __init__(self) -> None:
        self.last_time: float | None = None
        self.last_wall: float | None = None
        self.new_segment()

    def new_segment(self) -> None:
        self.base_pts: int | None = None
        self.last_pts: int | None = None
        self.offset = 0.0
        self.ref: float | None = None  # min(wallclock - time) in this segment, relaxed for drift
        self.ref_wall = 0.0

    def place(self, pts: int, tb: float, wall: float, dt: float) -> tuple[float, float, bool]:
        """(time, behind-live reference, discontinuity) of a frame with a known pts."""
        disc = self.last_pts is not None and pts < self.last_pts
        if disc:
            self.new_segment()
        if self.base_pts is None:
            self.base_pts = pts
            self.offset = 0.0 if self.last_time is None else self.last_time + max(dt, wall - (self.last_wall or wall))
        t = self.offset + (pts - self.base_pts) * tb
        if self.last_time is not None and t <= self.last_time:  # equal pts: keep time strictly increasing
            t = self.last_time + 1e-6
        self.last_pts, self.last_time, self.last_wall = pts, t, wall
        off = wall - t
        self.ref = off if self.ref is None else min(self.ref + _DRIFT_PER_S * (wall - self.ref_wall), off)
        self.ref_wall = wall
        return t, self.ref, disc


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
        transport: str = "tcp",
        open_timeout_s: float = 10.0,
        read_timeout_s: float = 5.0,
        reconnect_initial_s: float = 0.5,
        reconnect_factor: float = 2.0,
        reconnect_cap_s: float = 30.0,
        reconnect_max_attempts: int = -1,
        queue_size: int = 8,
        drop_policy: str = "drop-oldest",
        stall_timeout_s: float = 10.0,
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
                        ("stall_timeout_s", stall_timeout_s), ("batch_timeout_s", batch_timeout_s)):
            if not v > 0:
                raise ValueError(f"{name} must be > 0, got {v}")
        if reconnect_initial_s < 0 or reconnect_cap_s < reconnect_initial_s or reconnect_factor < 1:
            raise ValueError("need 0 <= reconnect_initial_s <= reconnect_cap_s and reconnect_factor >= 1")
        if reconnect_max_attempts < -1:
            raise ValueError(f"reconnect_max_attempts must be -1 (forever) or >= 0, got {reconnect_max_attempts}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self._uri = uri
        self._safe_uri = redact_uri(uri)
        self._secrets = _secrets_of(uri)
        self.source_id = source_id or self._safe_uri
        self._transport = transport
        self._open_s, self._read_s, self._stall_s = float(open_timeout_s), float(read_timeout_s), float(stall_timeout_s)
        self._backoff = (float(reconnect_initial_s), float(reconnect_factor), float(reconnect_cap_s))
        self._max_attempts = int(reconnect_max_attempts)
        self._batch_timeout = float(batch_timeout_s)
        self._decode_threads = int(decode_threads)
        self._queue = _FrameQueue(int(queue_size), drop_policy)
        self._policy = drop_policy
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._final_error: LiveSourceError | None = None
        self._info = {"uri": self._safe_uri, "kind": "live", "source_id": self.source_id, "width": None,
                      "height": None, "codec": None, "time_base": None, "fps": None, "transport": transport}
        self._c = {"decoded": 0, "delivered": 0, "reconnects": 0, "reconnect_attempts": 0, "segments": 0,
                   "discontinuities": 0, "stalls": 0, "blocked_s": 0.0, "last_lag_s": None, "last_queue_lag_s": None}
        self._dropped = {"drop_oldest": 0, "drop_latest": 0, "closed": 0}
        self._errors: collections.Counter = collections.Counter()
        self._lags: collections.deque = collections.deque(maxlen=2048)
        self._decode_times: collections.deque = collections.deque(maxlen=128)
        self._delays: collections.deque = collections.deque(maxlen=32)
        self._state = "new"
        self._last_error = ""
        self._segment = -1
        self._timeline = _Timeline()
        self.last_lags = np.zeros(0)  # seconds behind live of the frames the last read() returned

    @classmethod
    def from_config(cls, uri: str, live_cfg, *, source_id: str = "", **overrides) -> "LiveSource":
        """Build from a ``LiveConfig`` (the one place config reaches this class)."""
        names = ("transport", "open_timeout_s", "read_timeout_s", "reconnect_initial_s", "reconnect_factor",
                 "reconnect_cap_s", "reconnect_max_attempts", "queue_size", "drop_policy", "stall_timeout_s")
        kwargs = {n: getattr(live_cfg, n) for n in names if hasattr(live_cfg, n)}
        kwargs.update(overrides)
        return cls(uri, source_id=source_id, **kwargs)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "LiveSource":
        if self._thread is None:
            if self._stop.is_set():
                raise LiveSourceError(f"live source {self._safe_uri} is closed")
            self._thread = threading.Thread(target=self._run, name=f"live:{self._safe_uri}", daemon=True)
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
        with self._lock:
            self._dropped["closed"] += left
            if self._state not in ("failed",):
                self._state = "closed"
        t = self._thread
        if t is None or t is threading.current_thread():
            return True
        t.join(max(self._open_s, self._read_s) + 1.0 if timeout_s is None else timeout_s)
        if t.is_alive():
            log.warning("live source %s: decode thread still in a blocking call after close()", self._safe_uri)
            return False
        return True

    # ------------------------------------------------------------------ consumer side

    def info(self, wait_s: float = 0.0) -> dict:
        """uri (redacted), kind, source_id, width, height, codec, time_base, fps, transport.

        Stream fields are None until the first connection; ``wait_s`` > 0 waits for it (and starts)."""
        if wait_s > 0:
            self.start()
            self._connected.wait(wait_s)
        with self._lock:
            return dict(self._info)

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
            if self._final_error is not None and not self._queue.items:
                raise self._final_error
            return None
        now = time.time()
        lags = [now - (it[3] + it[7]) for it in items]
        self.last_lags = np.asarray(lags)
        with self._lock:
            self._c["delivered"] += len(items)
            self._c["last_lag_s"] = lags[-1]
            self._c["last_queue_lag_s"] = now - items[-1][4]
            self._lags.extend(lags)
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
                h, w = self._info["height"] or 0, self._info["width"] or 0
                z = np.zeros(0)
                yield FrameBatch(np.zeros((0, h, w, 3), np.uint8), z, z, z, z, z,
                                 self._info["time_base"] or (1, 1), self.source_id)

    def stats(self) -> dict:
        """Counters and gauges (no credentials): decoded, delivered, dropped{reason}, reconnects, ..."""
        with self._lock:
            out = dict(self._c)
            out["dropped"] = dict(self._dropped)
            out["dropped_total"] = sum(self._dropped.values())
            out["errors"] = int(sum(self._errors.values()))
            out["errors_by_kind"] = dict(self._errors)
            lags = np.fromiter(self._lags, float) if self._lags else None
            dts = list(self._decode_times)
            out.update(
                uri=self._safe_uri, source_id=self.source_id, state=self._state, segment=max(self._segment, 0),
                queue_len=len(self._queue.items), queue_size=self._queue.size, drop_policy=self._policy,
                backoff_delays_s=list(self._delays), last_error=self._last_error,
                lag_p50_s=None if lags is None else float(np.percentile(lags, 50)),
                lag_p95_s=None if lags is None else float(np.percentile(lags, 95)),
                decode_fps=(len(dts) - 1) / (dts[-1] - dts[0]) if len(dts) > 1 and dts[-1] > dts[0] else None,
            )
        return out

    # ------------------------------------------------------------------ decode thread

    def _thread_done(self) -> bool:
        return self._thread is not None and not self._thread.is_alive()

    def _scrub(self, text: str) -> str:
        text = text.replace(self._uri, self._safe_uri)
        for s in self._secrets:
            text = text.replace(s, "***")
        return text

    def _describe(self, exc: BaseException) -> str:
        msg = getattr(exc, "strerror", None) or (exc.args[0] if exc.args and isinstance(exc.args[0], str) else "")
        return self._scrub(f"{type(exc).__name__}: {msg}")

    def _set(self, state: str | None = None, **counts) -> None:
        with self._lock:
            if state is not None and self._state != "closed":
                self._state = state
            for k, v in counts.items():
                self._c[k] += v

    def _error(self, kind: str, text: str) -> None:
        with self._lock:
            self._errors[kind] += 1
            self._last_error = text

    def _is_rtsp(self) -> bool:
        return urlsplit(self._uri).scheme.lower().startswith("rtsp")

    def _call_timeout_s(self) -> float:
        """Per-call PyAV read timeout. Measured (FFmpeg 8.1 RTSP over TCP): after a frozen server, the
        first interrupted read still returns the packet the depacketizer held back, only the second one
        raises; so RTSP gets read_timeout_s / 2 per call to detect a silent source in read_timeout_s."""
        return self._read_s / 2 if self._is_rtsp() else self._read_s

    def _av_options(self) -> dict:
        # the socket timeout is a backstop behind PyAV's interrupt timeouts (which fire first and also
        # bound open); RTSP's socket timeout applies to open's I/O as well, so never below open_timeout_s
        us = str(int(max(self._open_s, self._read_s) * 1e6))
        if self._is_rtsp():
            return {"rtsp_transport": self._transport, "timeout": us}
        return {"rw_timeout": us}

    def _run(self) -> None:
        attempt = 0  # reconnect attempts since the last connection that decoded a frame
        try:
            while not self._stop.is_set():
                if self._session() > 0:
                    attempt = 0
                if self._stop.is_set():
                    break
                if 0 <= self._max_attempts <= attempt:
                    msg = (f"live source {self._safe_uri} gave up after {attempt} reconnect attempts"
                           f" (last error: {self._last_error or 'end of stream'})")
                    log.error("%s", msg)
                    self._final_error = LiveSourceError(msg)
                    self._set("failed")
                    return
                attempt += 1
                delay = backoff_delay(attempt, *self._backoff)
                with self._lock:
                    self._delays.append(delay)
                    self._c["reconnect_attempts"] += 1
                log.warning("live source %s: reconnecting in %.2f s (attempt %d%s)", self._safe_uri, delay,
                            attempt, "" if self._max_attempts < 0 else f"/{self._max_attempts}")
                self._set("backoff")
                if self._stop.wait(delay):
                    break
        except Exception as exc:  # a bug: never die silently, never leak the URI
            text = self._describe(exc)
            log.error("live source %s: decode thread failed: %s", self._safe_uri, text)
            log.debug("%s", self._scrub(traceback.format_exc()))
            self._final_error = LiveSourceError(f"live source {self._safe_uri} failed: {text}")
            self._set("failed")
        finally:
            with self._queue.cond:
                self._queue.cond.notify_all()

    def _session(self) -> int:
        """One connection: open, decode until EOF/timeout/stall/stop. Returns frames decoded."""
        self._set("connecting")
        try:
            container = av.open(self._uri, options=self._av_options(), timeout=(self._open_s, self._call_timeout_s()))
        except Exception as exc:
            text = self._describe(exc)
            kind = "open_timeout" if isinstance(exc, (av.error.ExitError, av.error.TimeoutError)) else "open"
            self._error(kind, text)
            log.warning("live source %s: open failed: %s", self._safe_uri, text)
            return 0
        n = 0
        with container:
            try:
                if not container.streams.video:
                    self._error("open", "no video stream")
                    log.warning("live source %s: no video stream", self._safe_uri)
                    return 0
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                if self._decode_threads > 0:
                    stream.codec_context.thread_count = self._decode_threads
                self._on_connect(stream)
                tb = stream.time_base
                rate = stream.average_rate or stream.guessed_rate
                dt_default = 1.0 / float(rate) if rate else 0.04
                pending: list = []
                last_progress = time.monotonic()
                for packet in container.demux(stream):
                    if self._stop.is_set():
                        return n
                    try:
                        frames = packet.decode()
                    except av.error.FFmpegError as exc:
                        self._error("decode", self._describe(exc))
                        frames = []
                    for frame in frames:
                        n += 1
                        self._emit(frame, tb, dt_default, pending)
                        last_progress = time.monotonic()  # after a possible wait on the queue
                    if time.monotonic() - last_progress > self._stall_s:
                        self._error("stall", f"no frame for {self._stall_s:g} s")
                        self._set(stalls=1)
                        log.warning("live source %s: stalled (packets but no frame for %.1f s), reconnecting",
                                    self._safe_uri, self._stall_s)
                        return n
                self._flush_pending(tb, dt_default, pending)
                if not self._stop.is_set():
                    log.warning("live source %s: end of stream after %d frames (disconnect)", self._safe_uri, n)
                    self._error("eof", "end of stream")
            except Exception as exc:
                text = self._describe(exc)
                timeout = isinstance(exc, (av.error.ExitError, av.error.TimeoutError))
                self._error("read_timeout" if timeout else "read", text)
                log.warning("live source %s: %s: %s", self._safe_uri,
                            f"no data for {self._read_s:g} s" if timeout else "read failed", text)
        return n

    def _on_connect(self, stream) -> None:
        cc = stream.codec_context
        rate = stream.average_rate or stream.guessed_rate
        with self._lock:
            reconnect = self._segment >= 0
            self._segment += 1
            self._c["segments"] += 1
            self._c["reconnects"] += int(reconnect)
            self._state = "streaming" if self._state != "closed" else "closed"
            self._info.update(width=cc.width or None, height=cc.height or None, codec=cc.name,
                              time_base=(stream.time_base.numerator, stream.time_base.denominator),
                              fps=float(rate) if rate else None)
            seg = self._segment
        self._timeline.new_segment()
        self._connected.set()
        log.info("live source %s: connected (segment %d, %sx%s %s)", self._safe_uri, seg, cc.width, cc.height, cc.name)

    def _emit(self, frame, tb, dt_default: float, pending: list) -> None:
        wall = time.time()
        img = frame.to_ndarray(format="rgb24")
        dur = frame.duration if getattr(frame, "duration", None) else None
        if frame.pts is None and self._timeline.last_pts is None and len(pending) < _MAX_PENDING:
            pending.append((img, wall, dur))  # segment start without pts: wait for the next pts
            return
        pts = frame.pts
        if pts is None:
            step = dur or max(1, round(dt_default / float(tb)))
            pts = self._timeline.last_pts + step if self._timeline.last_pts is not None else 0
        if pending:
            step = dur or max(1, round(dt_default / float(tb)))
            for i, (pimg, pwall, _) in enumerate(pending):
                self._push(pimg, pts - step * (len(pending) - i), pwall, tb, dt_default)
            pending.clear()
        self._push(img, int(pts), wall, tb, dt_default)

    def _flush_pending(self, tb, dt_default: float, pending: list) -> None:
        """Frames of a segment that never got a pts: number them from 0."""
        step = max(1, round(dt_default / float(tb)))
        for i, (img, wall, _) in enumerate(pending):
            self._push(img, step * i, wall, tb, dt_default)
        pending.clear()

    def _push(self, img: np.ndarray, pts: int, wall: float, tb, dt_default: float) -> None:
        t, ref, disc = self._timeline.place(pts, float(tb), wall, dt_default)
        with self._lock:
            if disc:
                self._segment += 1
                self._c["segments"] += 1
                self._c["discontinuities"] += 1
            idx = self._c["decoded"]
            self._c["decoded"] += 1
            self._decode_times.append(time.monotonic())
            seg = self._segment
        item = (img, idx, pts, t, wall, seg, (tb.numerator, tb.denominator), ref)
        if self._policy == "wait":
            self._set("blocked" if len(self._queue.items) >= self._queue.size else None)
        reason, blocked = self._queue.put(item, self._stop)
        with self._lock:
            if reason:
                self._dropped[reason] += 1
            self._c["blocked_s"] += blocked
            if blocked and self._state == "blocked":
                self._state = "streaming"
