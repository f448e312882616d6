"""A live source's decode thread: connect, decode, reconnect with backoff; and the state it shares
with the consumer (``LiveState``).

* Every blocking PyAV call is bounded: ``av.open(url, options=..., timeout=(open_s, read_s))`` (PyAV's
  interrupt callback, raises ``av.error.ExitError``) plus the protocol's socket timeout (RTSP
  ``timeout``, other protocols ``rw_timeout``, in µs; raises ``av.error.TimeoutError``). A silent or
  frozen server therefore ends the read within ``read_timeout_s``.
* End of stream on a live URL is a disconnect (PyAV reports a killed server as a normal EOF). The thread
  reconnects with exponential backoff ``min(cap, initial * factor**(k-1))`` for the k-th consecutive
  failed attempt; ``max_attempts`` consecutive failures (-1 = never give up) end the source with
  ``LiveSourceError`` (``final_error``). A connection that decodes at least one frame resets the count.
* Each (re)connection, and each backward pts jump inside one, starts a new ``segment`` (``Timeline``).
* Stall detection: no packet for ``read_timeout_s`` (timeout), or packets but no decoded frame for
  ``stall_timeout_s``, reconnects. Time blocked on a full queue (a slow consumer under ``wait``) never
  counts as a stall.
* Texts that reach logs or errors are scrubbed of the URI's credentials.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import traceback
from urllib.parse import urlsplit

import av

from streamparse.sources.base import LiveSourceError
from streamparse.sources.live.queue import FrameQueue
from streamparse.sources.live.timeline import Timeline
from streamparse.sources.uri import redact_uri, scrub

log = logging.getLogger(__name__)

_MAX_PENDING = 16  # frames without pts held at a segment start until a pts arrives


def backoff_delay(k: int, initial_s: float, factor: float, cap_s: float) -> float:
    """Delay before the k-th (1-based) consecutive reconnect attempt."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return float(min(cap_s, initial_s * factor ** (k - 1)))


class LiveState:
    """Counters, gauges and stream info of one live source, shared by its decode thread (writer) and
    its consumer (reader) under ``lock``."""

    def __init__(self, safe_uri: str, source_id: str, transport: str) -> None:
        self.lock = threading.Lock()
        self.connected = threading.Event()
        self.info = {"uri": safe_uri, "kind": "live", "source_id": source_id, "width": None, "height": None,
                     "codec": None, "time_base": None, "fps": None, "transport": transport}
        self.c = {"decoded": 0, "delivered": 0, "reconnects": 0, "reconnect_attempts": 0, "segments": 0,
                  "discontinuities": 0, "stalls": 0, "blocked_s": 0.0, "last_lag_s": None, "last_queue_lag_s": None}
        self.dropped = {"drop_oldest": 0, "drop_latest": 0, "closed": 0}
        self.errors: collections.Counter = collections.Counter()
        self.lags: collections.deque = collections.deque(maxlen=2048)
        self.decode_times: collections.deque = collections.deque(maxlen=128)
        self.delays: collections.deque = collections.deque(maxlen=32)
        self.state = "new"
        self.last_error = ""
        self.segment = -1

    def set(self, state: str | None = None, **counts) -> None:
        with self.lock:
            if state is not None and self.state != "closed":
                self.state = state
            for k, v in counts.items():
                self.c[k] += v

    def error(self, kind: str, text: str) -> None:
        with self.lock:
            self.errors[kind] += 1
            self.last_error = text


class Connection:
    """The decode thread of one live source: ``run()`` connects, decodes into ``queue`` and reconnects
    until ``stop`` is set or it gives up (then ``final_error`` holds the ``LiveSourceError``)."""

    def __init__(self, uri: str, *, queue: FrameQueue, state: LiveState, stop: threading.Event, transport: str,
                 open_timeout_s: float, read_timeout_s: float, stall_timeout_s: float, analyze_s: float,
                 backoff: tuple[float, float, float], max_attempts: int, decode_threads: int, policy: str):
        self.uri = uri
        self.safe_uri = redact_uri(uri)
        self.queue, self.st, self.stop = queue, state, stop
        self.transport = transport
        self.open_s, self.read_s, self.stall_s = float(open_timeout_s), float(read_timeout_s), float(stall_timeout_s)
        self.analyze_us = str(int(float(analyze_s) * 1e6))
        self.backoff = backoff
        self.max_attempts = int(max_attempts)
        self.decode_threads = int(decode_threads)
        self.policy = policy
        self.timeline = Timeline()
        self.final_error: LiveSourceError | None = None

    def describe(self, exc: BaseException) -> str:
        msg = getattr(exc, "strerror", None) or (exc.args[0] if exc.args and isinstance(exc.args[0], str) else "")
        return scrub(f"{type(exc).__name__}: {msg}", self.uri)

    def _is_rtsp(self) -> bool:
        return urlsplit(self.uri).scheme.lower().startswith("rtsp")

    def _call_timeout_s(self) -> float:
        """Per-call PyAV read timeout. Measured (FFmpeg 8.1 RTSP over TCP): after a frozen server, the
        first interrupted read still returns the packet the depacketizer held back, only the second one
        raises; so RTSP gets read_timeout_s / 2 per call to detect a silent source in read_timeout_s."""
        return self.read_s / 2 if self._is_rtsp() else self.read_s

    def _av_options(self) -> dict:
        # the socket timeout is a backstop behind PyAV's interrupt timeouts (which fire first and also
        # bound open); RTSP's socket timeout applies to open's I/O as well, so never below open_timeout_s
        # analyzeduration: FFmpeg probes 5 s by default, then delivers those frames at once (a burst that a
        # small queue drops); live.analyze_s keeps the probe short
        us = str(int(max(self.open_s, self.read_s) * 1e6))
        if self._is_rtsp():
            return {"rtsp_transport": self.transport, "timeout": us, "analyzeduration": self.analyze_us}
        return {"rw_timeout": us, "analyzeduration": self.analyze_us}

    def run(self) -> None:
        attempt = 0  # reconnect attempts since the last connection that decoded a frame
        try:
            while not self.stop.is_set():
                if self._session() > 0:
                    attempt = 0
                if self.stop.is_set():
                    break
                if 0 <= self.max_attempts <= attempt:
                    msg = (f"live source {self.safe_uri} gave up after {attempt} reconnect attempts"
                           f" (last error: {self.st.last_error or 'end of stream'})")
                    log.error("%s", msg)
                    self.final_error = LiveSourceError(msg)
                    self.st.set("failed")
                    return
                attempt += 1
                delay = backoff_delay(attempt, *self.backoff)
                with self.st.lock:
                    self.st.delays.append(delay)
                    self.st.c["reconnect_attempts"] += 1
                log.warning("live source %s: reconnecting in %.2f s (attempt %d%s)", self.safe_uri, delay,
                            attempt, "" if self.max_attempts < 0 else f"/{self.max_attempts}")
                self.st.set("backoff")
                if self.stop.wait(delay):
                    break
        except Exception as exc:  # a bug: never die silently, never leak the URI
            text = self.describe(exc)
            log.error("live source %s: decode thread failed: %s", self.safe_uri, text)
            log.debug("%s", scrub(traceback.format_exc(), self.uri))
            self.final_error = LiveSourceError(f"live source {self.safe_uri} failed: {text}")
            self.st.set("failed")
        finally:
            with self.queue.cond:
                self.queue.cond.notify_all()

    def _session(self) -> int:
        """One connection: open, decode until EOF/timeout/stall/stop. Returns frames decoded."""
        self.st.set("connecting")
        try:
            container = av.open(self.uri, options=self._av_options(), timeout=(self.open_s, self._call_timeout_s()))
        except Exception as exc:
            text = self.describe(exc)
            kind = "open_timeout" if isinstance(exc, (av.error.ExitError, av.error.TimeoutError)) else "open"
            self.st.error(kind, text)
            log.warning("live source %s: open failed: %s", self.safe_uri, text)
            return 0
        n = 0
        with container:
            try:
                if not container.streams.video:
                    self.st.error("open", "no video stream")
                    log.warning("live source %s: no video stream", self.safe_uri)
                    return 0
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                if self.decode_threads > 0:
                    stream.codec_context.thread_count = self.decode_threads
                self._on_connect(stream)
                tb = stream.time_base
                rate = stream.average_rate or stream.guessed_rate
                dt_default = 1.0 / float(rate) if rate else 0.04
                pending: list = []
                last_progress = time.monotonic()
                for packet in container.demux(stream):
                    if self.stop.is_set():
                        return n
                    try:
                        frames = packet.decode()
                    except av.error.FFmpegError as exc:
                        self.st.error("decode", self.describe(exc))
                        frames = []
                    for frame in frames:
                        n += 1
                        self._emit(frame, tb, dt_default, pending)
                        last_progress = time.monotonic()  # after a possible wait on the queue
                    if time.monotonic() - last_progress > self.stall_s:
                        self.st.error("stall", f"no frame for {self.stall_s:g} s")
                        self.st.set(stalls=1)
                        log.warning("live source %s: stalled (packets but no frame for %.1f s), reconnecting",
                                    self.safe_uri, self.stall_s)
                        return n
                self._flush_pending(tb, dt_default, pending)
                if not self.stop.is_set():
                    log.warning("live source %s: end of stream after %d frames (disconnect)", self.safe_uri, n)
                    self.st.error("eof", "end of stream")
            except Exception as exc:
                text = self.describe(exc)
                timeout = isinstance(exc, (av.error.ExitError, av.error.TimeoutError))
                self.st.error("read_timeout" if timeout else "read", text)
                log.warning("live source %s: %s: %s", self.safe_uri,
                            f"no data for {self.read_s:g} s" if timeout else "read failed", text)
        return n

    def _on_connect(self, stream) -> None:
        cc = stream.codec_context
        rate = stream.average_rate or stream.guessed_rate
        st = self.st
        with st.lock:
            reconnect = st.segment >= 0
            st.segment += 1
            st.c["segments"] += 1
            st.c["reconnects"] += int(reconnect)
            st.state = "streaming" if st.state != "closed" else "closed"
            st.info.update(width=cc.width or None, height=cc.height or None, codec=cc.name,
                           time_base=(stream.time_base.numerator, stream.time_base.denominator),
                           fps=float(rate) if rate else None)
            seg = st.segment
        self.timeline.new_segment()
        st.connected.set()
        log.info("live source %s: connected (segment %d, %sx%s %s)", self.safe_uri, seg, cc.width, cc.height, cc.name)

    def _emit(self, frame, tb, dt_default: float, pending: list) -> None:
        wall = time.time()
        img = frame.to_ndarray(format="rgb24")
        dur = frame.duration if getattr(frame, "duration", None) else None
        if frame.pts is None and self.timeline.last_pts is None and len(pending) < _MAX_PENDING:
            pending.append((img, wall, dur))  # segment start without pts: wait for the next pts
            return
        pts = frame.pts
        if pts is None:
            step = dur or max(1, round(dt_default / float(tb)))
            pts = self.timeline.last_pts + step if self.timeline.last_pts is not None else 0
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

    def _push(self, img, pts: int, wall: float, tb, dt_default: float) -> None:
        t, ref, disc = self.timeline.place(pts, float(tb), wall, dt_default)
        st = self.st
        with st.lock:
            if disc:
                st.segment += 1
                st.c["segments"] += 1
                st.c["discontinuities"] += 1
            idx = st.c["decoded"]
            st.c["decoded"] += 1
            st.decode_times.append(time.monotonic())
            seg = st.segment
        item = (img, idx, pts, t, wall, seg, (tb.numerator, tb.denominator), ref)
        if self.policy == "wait":
            st.set("blocked" if len(self.queue.items) >= self.queue.size else None)
        reason, blocked, dropped = self.queue.put(item, self.stop)
        with st.lock:
            if reason:
                st.dropped[reason] += dropped
            st.c["blocked_s"] += blocked
            if blocked and st.state == "blocked":
                st.state = "streaming"
