"""LiveSource: unit tests of its parts, then end-to-end against a real GStreamer RTSP server on 127.0.0.1.

The server tests skip (with the reason) when Debian's GStreamer RTSP packages are missing; see
streamparse/bench/rtsp_server.py. Every loop is bounded in time; streams are 160x120 at 25 fps.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest

from streamparse.bench.rtsp_server import RtspServer, free_port
from streamparse.plan import build_source, live_kwargs
from streamparse.config import Config, LiveConfig
from streamparse.sources.live import LiveSource, LiveSourceError, backoff_delay
from streamparse.sources.live.queue import FrameQueue as _FrameQueue
from streamparse.sources.live.timeline import Timeline as _Timeline
from streamparse.sources.uri import redact_uri as _redact_uri, secrets_of as _secrets_of

pytestmark = pytest.mark.timeout(120)


def fast(url: str, **kw) -> LiveSource:
    """A LiveSource with short timeouts and backoff (tests)."""
    args = dict(open_timeout_s=3.0, read_timeout_s=1.5, reconnect_initial_s=0.2, reconnect_factor=2.0,
                reconnect_cap_s=1.0, reconnect_max_attempts=20, queue_size=256, drop_policy="wait")
    args.update(kw)
    return LiveSource(url, **{**live_kwargs(LiveConfig()), **args})


def collect(src: LiveSource, seconds: float, until=None, max_batch: int = 8) -> list:
    """Batches read for at most ``seconds`` (or until ``until(batches)``); stops at LiveSourceError."""
    out: list = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            b = src.read(max_batch, 0.05)
        except LiveSourceError:
            break
        if b is not None:
            out.append(b)
        if until is not None and until(out):
            break
    return out


def cat(batches: list, name: str) -> np.ndarray:
    return np.concatenate([getattr(b, name) for b in batches]) if batches else np.zeros(0)


# ----------------------------------------------------------------------------- units (no server)


@pytest.mark.parametrize("k,initial,factor,cap,expected", [
    (1, 0.5, 2.0, 30.0, 0.5), (2, 0.5, 2.0, 30.0, 1.0), (4, 0.5, 2.0, 30.0, 4.0),
    (10, 0.5, 2.0, 30.0, 30.0), (3, 1.0, 1.0, 5.0, 1.0), (1, 0.0, 2.0, 1.0, 0.0),
])
def test_backoff_delay(k, initial, factor, cap, expected):
    assert backoff_delay(k, initial, factor, cap) == pytest.approx(expected)


@pytest.mark.parametrize("uri,redacted", [
    ("rtsp://alice:s3cr3t@10.0.0.5:554/live", "rtsp://***@10.0.0.5:554/live"),
    ("rtsp://10.0.0.5/live", "rtsp://10.0.0.5/live"),
    ("https://cam/x.m3u8?token=abc&q=1", "https://cam/x.m3u8?token=***&q=1"),
])
def test_redact(uri, redacted):
    assert _redact_uri(uri) == redacted
    for s in _secrets_of(uri):
        assert s not in _redact_uri(uri)


@pytest.mark.parametrize("kwargs,match", [
    (dict(drop_policy="newest"), "drop_policy"),
    (dict(transport="quic"), "transport"),
    (dict(read_timeout_s=0), "read_timeout_s"),
    (dict(queue_size=0), "queue_size"),
    (dict(reconnect_max_attempts=-2), "reconnect_max_attempts"),
    (dict(reconnect_factor=0.5), "reconnect_factor"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LiveSource("rtsp://127.0.0.1:1/x", **{**live_kwargs(LiveConfig()), **kwargs})


def test_from_config():
    src = build_source("rtsp://u:p@127.0.0.1:1/x", Config(live=LiveConfig(queue_size=3, drop_policy="wait")), source_id="cam0")
    assert src.source_id == "cam0" and src.stats()["queue_size"] == 3 and src.stats()["drop_policy"] == "wait"
    assert src.info()["uri"] == "rtsp://***@127.0.0.1:1/x"


def test_queue_policies():
    stop = threading.Event()
    q = _FrameQueue(2, "drop-oldest")
    assert [q.put((i,), stop)[0] for i in range(4)] == [None, None, "drop_oldest", "drop_oldest"]
    assert [it[0] for it in q.items] == [2, 3]
    q = _FrameQueue(2, "drop-latest")
    assert [q.put((i,), stop)[0] for i in range(3)] == [None, None, "drop_latest"]
    assert [it[0] for it in q.items] == [0, 1]
    q = _FrameQueue(1, "wait")
    q.put((0,), stop)
    threading.Timer(0.3, lambda: q.items.popleft() and None).start()
    reason, blocked, _ = q.put((1,), stop)
    assert reason is None and 0.2 < blocked < 2.0 and [it[0] for it in q.items] == [1]
    threading.Timer(0.2, stop.set).start()
    assert q.put((2,), stop)[0] == "closed"


def test_queue_start_up_allowance_then_the_backlog_drains_to_the_bound():
    """For startup_s after the first frame the queue keeps size + startup_extra frames; afterwards the bound
    follows the backlog down as it is read, never up, to size (then drop-oldest as before)."""
    stop = threading.Event()

    def f(i):  # a queue item: frame, ..., time base
        return (np.full(1, i), 0, 0, 0, 0, 0, (1, 25))

    q = _FrameQueue(2, "drop-oldest", startup_extra=3, startup_s=0.3)
    assert [q.put(f(i), stop)[0] for i in range(6)] == [None] * 5 + ["drop_oldest"]  # 2 + 3 kept
    assert [int(it[0][0]) for it in q.items] == [1, 2, 3, 4, 5]
    time.sleep(0.4)  # the window is over: the bound only comes down, to the backlog plus 2
    assert [int(it[0][0]) for it in q.get_many(1, time.monotonic(), lambda: False)] == [1]
    assert q.put(f(6), stop) == (None, 0.0, 0) and q.bound == 5
    # a reader that does not keep up: each new frame evicts two until the bound is back at 2
    assert [q.put(f(i), stop) for i in (7, 8, 9)] == [("drop_oldest", 0.0, 2)] * 3
    assert [int(it[0][0]) for it in q.items] == [8, 9] and q.bound == 2
    assert q.put(f(10), stop) == ("drop_oldest", 0.0, 1) and [int(it[0][0]) for it in q.items] == [9, 10]
    q.get_many(2, time.monotonic(), lambda: False)
    assert [q.put(f(i), stop)[0] for i in range(11, 14)] == [None, None, "drop_oldest"]  # size 2, as without the allowance
    # a reader that keeps up works the backlog off without a drop
    q = _FrameQueue(2, "drop-oldest", startup_extra=10, startup_s=0.2)
    assert [q.put(f(i), stop)[0] for i in range(10)] == [None] * 10
    time.sleep(0.3)
    for i in range(10, 20):  # two read for each new frame
        assert q.put(f(i), stop)[0] is None
        q.get_many(2, time.monotonic(), lambda: False)
    assert len(q.items) == 0 and q.bound == 2
    off = _FrameQueue(2, "drop-oldest", startup_extra=3, startup_s=0.0)  # startup_s 0: no allowance
    assert [off.put(f(i), stop)[0] for i in range(3)] == [None, None, "drop_oldest"]
    assert LiveConfig().startup_s == 4.0
    with pytest.raises(ValueError, match="startup_s"):
        LiveConfig(startup_s=-1.0)
    src = build_source("rtsp://127.0.0.1:1/x", Config(live=LiveConfig(queue_size=3, startup_s=2.0)), source_id="c")
    assert src._queue.bound == 3 + 50 and src._queue.startup_s == 2.0


def test_timeline_monotonic_across_segments():
    tl = _Timeline()
    times = [tl.place(p, 1 / 90000, 100.0 + i * 0.04, 0.04)[0] for i, p in enumerate(range(3600, 36000, 3600))]
    assert np.allclose(np.diff(times), 0.04)
    tl.new_segment()  # reconnect 2 s later, pts restart at 0
    t, _, disc = tl.place(0, 1 / 90000, 100.0 + 9 * 0.04 + 2.0, 0.04)
    assert not disc and t == pytest.approx(times[-1] + 2.04)
    tl.place(3600, 1 / 90000, 102.44, 0.04)
    t2, _, disc = tl.place(100, 1 / 90000, 102.48, 0.04)  # backward jump inside a connection
    assert disc and t2 > t


# ----------------------------------------------------------------------------- real RTSP server


def test_file_over_rtsp(gst, clip):
    """Frames arrive in order with pts; the server ending the stream is a disconnect, then a clear error."""
    with RtspServer(file=clip, exit_on_eos=True) as srv, fast(srv.url(), reconnect_max_attempts=1) as src:
        batches = collect(src, 20.0)
        assert srv.wait(5.0) is not None, "server should have exited at the end of the file"
        with pytest.raises(LiveSourceError, match=rf"127\.0\.0\.1:{srv.port}/stream gave up after 1 reconnect"):
            src.read(1, 2.0)
        st = src.stats()
    marker = np.rint((cat(batches, "frames").mean(axis=(1, 2, 3)) - 10) / 3).astype(int)
    assert marker.tolist() == list(range(75))
    pts, t = cat(batches, "pts"), cat(batches, "time")
    assert np.all(np.diff(pts) > 0) and np.all(np.diff(t) > 0)
    assert np.allclose(t - t[0], (pts - pts[0]) / 90000)
    assert cat(batches, "frame_index").tolist() == list(range(75))
    assert set(cat(batches, "segment").tolist()) == {0}
    assert st["reconnect_attempts"] == 1 and st["errors_by_kind"]["eof"] == 1 and st["state"] == "failed"


def test_kill_and_restart_same_port(gst):
    """Kill mid-stream, restart 2 s later on the same port: reconnect, new segment, time monotonic."""
    with RtspServer(testsrc=True) as srv, fast(srv.url()) as src:
        before = collect(src, 10.0, until=lambda bs: sum(map(len, bs)) >= 40)
        srv.kill()
        t_kill = time.monotonic()
        before += collect(src, 2.0)  # whatever was still queued / in flight
        srv.start()
        assert time.monotonic() - t_kill >= 2.0
        after = collect(src, 15.0, until=lambda bs: sum(int((b.segment == 1).sum()) for b in bs) >= 25)
        st = src.stats()
    allb = before + after
    seg, t, idx = cat(allb, "segment"), cat(allb, "time"), cat(allb, "frame_index")
    assert (seg == 0).sum() >= 40 and (seg == 1).sum() >= 25
    assert np.all(np.diff(seg.astype(int)) >= 0) and np.all(np.diff(t) > 0)
    assert idx.tolist() == list(range(len(idx)))  # lossless (wait policy): nothing before the kill lost
    gap = t[np.argmax(seg == 1)] - t[np.argmax(seg == 1) - 1]
    assert gap > 1.5  # the outage shows up as elapsed source time, not as a time reset
    assert st["reconnects"] == 1 and st["segments"] == 2 and st["reconnect_attempts"] >= 2


def test_frozen_server_read_timeout(gst):
    """SIGSTOP: the read timeout fires within read_timeout_s (+ margin), reconnect starts, no hang."""
    read_s = 1.5
    with RtspServer(testsrc=True) as srv, fast(srv.url(), read_timeout_s=read_s, open_timeout_s=2.0) as src:
        collect(src, 10.0, until=lambda bs: sum(map(len, bs)) >= 20)
        srv.freeze()
        t0 = time.monotonic()
        detected = None
        while time.monotonic() - t0 < read_s + 5.0:
            src.read(8, 0.02)
            if src.stats()["errors_by_kind"].get("read_timeout"):
                detected = time.monotonic() - t0
                break
        assert detected is not None and detected <= read_s + 1.0, detected
        time.sleep(0.5)
        assert src.stats()["reconnect_attempts"] >= 1
        # close() while the reconnect is blocked in av.open on the frozen server: bounded
        t1 = time.monotonic()
        other = fast(srv.url(), open_timeout_s=2.0).start()
        time.sleep(0.3)
        assert other.close() and time.monotonic() - t1 < 2.0 + 1.5
        srv.thaw()
        after = collect(src, 20.0, until=lambda bs: any((b.segment >= 1).any() for b in bs))
        assert any((b.segment >= 1).any() for b in after), src.stats()
    print(f"\nread timeout detected {detected:.2f} s after SIGSTOP (read_timeout_s={read_s})")


def test_nothing_listening_backoff_then_error_others_keep_going(gst, caplog):
    caplog.set_level(logging.WARNING, logger="streamparse.sources.live")
    port = free_port()
    with RtspServer(testsrc=True) as srv, fast(srv.url()) as good, fast(
            f"rtsp://127.0.0.1:{port}/nothing", reconnect_initial_s=0.1, reconnect_cap_s=0.4,
            reconnect_max_attempts=4) as dead:
        error, t_error, good_frames_after = None, None, 0
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline:
            if error is None:
                try:
                    dead.read(4, 0.01)
                except LiveSourceError as exc:
                    error, t_error = exc, time.monotonic()
            b = good.read(8, 0.02)
            if b is not None and t_error is not None:
                good_frames_after += len(b)
            if t_error is not None and time.monotonic() - t_error > 1.0:
                break
        dead_stats = dead.stats()
    assert error is not None and f"rtsp://127.0.0.1:{port}/nothing gave up after 4 reconnect attempts" in str(error)
    assert "Connection refused" in str(error)
    assert dead_stats["backoff_delays_s"] == [0.1, 0.2, 0.4, 0.4] and dead_stats["state"] == "failed"
    fails = [r.created for r in caplog.records if f":{port}/" in r.getMessage() and "open failed" in r.getMessage()]
    gaps = np.diff(fails)
    assert len(fails) == 5 and np.all(gaps >= np.array([0.1, 0.2, 0.4, 0.4]) - 0.02), gaps
    assert gaps[2] > gaps[0] + 0.2  # the delays grow
    assert good_frames_after >= 10  # the other source kept delivering after this one died
    print(f"\nmeasured gaps between failed attempts: {np.round(gaps, 3).tolist()} s")


def _overload(url: str, policy: str, seconds: float = 5.0, work_s: float = 0.1):
    """Consume one frame per ``work_s`` (10 fps) from a 25 fps stream; returns (lags, stats)."""
    lags = []
    with fast(url, queue_size=4, drop_policy=policy, startup_s=0.0) as src:  # (the steady-state bound; the
        # start-up allowance is tested apart: test_queue_start_up_allowance_then_the_backlog_drains_to_the_bound)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            b = src.read(1, 0.2)
            if b is not None:
                lags.append(src.stats()["last_lag_s"])
                time.sleep(work_s)  # the "model"
        return np.array(lags), src.stats()


def test_overload_drop_oldest_bounds_lag_wait_grows(gst):
    with RtspServer(testsrc=True) as srv:
        lag_drop, st_drop = _overload(srv.url(), "drop-oldest")
        lag_wait, st_wait = _overload(srv.url(), "wait")
    p95_drop = float(np.percentile(lag_drop, 95))
    n = len(lag_wait) // 4
    early, late = float(lag_wait[:n].mean()), float(lag_wait[-n:].mean())
    print(f"\ndrop-oldest: p95 lag {p95_drop:.3f} s, dropped {st_drop['dropped']}, decoded {st_drop['decoded']}"
          f"\nwait: lag first quarter {early:.3f} s -> last quarter {late:.3f} s (max {lag_wait.max():.3f} s),"
          f" dropped {st_wait['dropped_total']}, queue lag {st_wait['last_queue_lag_s']:.3f} s")
    assert p95_drop < 0.6 and st_drop["dropped"]["drop_oldest"] >= 20
    assert late > early + 1.0 and lag_wait[-1] > 1.5  # grows ~0.6 s per second
    assert st_wait["dropped_total"] == 0 and st_wait["state"] != "failed"


def test_credentials_never_shown(gst, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    user, pw = "alice", "s3cr3tPW"
    texts: list[str] = []
    with RtspServer(testsrc=True, user=user, password=pw) as srv:
        with fast(srv.url(user, pw)) as src:
            got = collect(src, 10.0, until=lambda bs: sum(map(len, bs)) >= 10)
            assert sum(map(len, got)) >= 10, src.stats()  # authenticated and streaming
            texts += [repr(src.info()), repr(src.stats()), got[0].source_id]
            texts += [t.name for t in threading.enumerate()]
        for url in (srv.url(user, "wrong" + pw), f"rtsp://{user}:{pw}@127.0.0.1:{free_port()}/x"):
            with fast(url, reconnect_max_attempts=0) as bad:
                with pytest.raises(LiveSourceError) as ei:
                    collect(bad, 10.0)
                    bad.read(1, 5.0)
                texts += [str(ei.value), repr(ei.value), repr(bad.info()), repr(bad.stats())]
                assert ei.value.__cause__ is None
    texts += [r.getMessage() for r in caplog.records] + list(capfd.readouterr())
    assert len(caplog.records) > 3
    leaks = [t for t in texts if pw in t or user in t]
    assert not leaks, leaks
