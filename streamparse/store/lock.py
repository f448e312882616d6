"""One writer per store: an advisory lock file inside it.

``<store>/.streamparse.lock`` holds the writer's pid, host and start time and is held with ``flock``
while the writer lives; a lock left by a dead process on this host (or one whose heartbeat is older
than ``stale_s`` on another host, where ``flock`` may not reach) is taken over, and the takeover is
logged. The file exists only while a writer runs.

Archives (``streamparse archive``) write many stores under one OUTDIR lock; their per-store locks carry
the run's ``token`` and are taken with ``supersede=True``: a per-store lock that carries a token and
whose holder is on another host (or dead here) was left by an earlier attempt of an archive task -- the
OUTDIR lock we hold guarantees no other archive job runs, and the driver runs one attempt of a video at
a time -- so it is taken over at once instead of after ``stale_s``. A lock without a token (a
``streamparse run``) is never superseded, and a live holder on this host never is.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path

from streamparse.store.outputs import LOCK_NAME, OutputError

log = logging.getLogger(__name__)


def _proc(pid: int) -> tuple[int | None, bytes]:
    """(parent pid, command line) of a process of this host, (None, b"") if it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None, b""
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("PPid:")), None), cmd


def _orphaned_ray_worker(pid: int) -> bool:
    """A Ray worker (``ray::...``) on this host whose run was killed: re-parented to init, or under a raylet
    that was itself re-parented to init (its driver is gone); it exits within seconds. (The raylet of a
    ``ray start`` node also has init as parent: a live writer there only makes the caller wait before it
    is refused.)"""
    ppid, cmd = _proc(pid)
    if ppid is None or not cmd.startswith(b"ray::"):
        return False
    if ppid <= 1 or not _session_leader_alive(pid):
        return True
    grand, parent_cmd = _proc(ppid)
    return b"raylet" in parent_cmd and (grand is None or grand <= 1)


def wait_for_orphan(holder: dict | None, timeout_s: float = 30.0) -> bool:
    """If ``holder`` (a lock record) is an orphaned Ray worker of this host, wait up to ``timeout_s`` for it
    to exit; True if it did (its lock is then free)."""
    if not holder or not holder.get("pid") or (holder.get("host") and holder["host"] != socket.gethostname()):
        return False
    pid = int(holder["pid"])
    if not _orphaned_ray_worker(pid):
        return False
    log.info("waiting for pid %d (a Ray worker of a run that was killed) to let go of its store", pid)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.1)
    return not _pid_alive(pid)


def _session_leader_alive(pid: int) -> bool:
    """Whether the leader of ``pid``'s session (the command that started it, e.g. a killed ``run``) lives."""
    try:
        sid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3])
    except (OSError, IndexError, ValueError):
        return True
    return sid <= 0 or _pid_alive(sid)


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def describe_holder(h: dict | None) -> str:
    """A lock holder's record ({pid, host, started, ...}) in words, for the refusal messages."""
    if not h:
        return "unknown holder"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(h.get("started", 0)))
    return f"pid {h.get('pid')} on {h.get('host')}, since {started}"


class WriterLock:
    """One writer per store: an advisory lock file ``<store>/.streamparse.lock``.

    ``acquire()`` refuses (``OutputError``) while another live process holds it; takes over (and logs)
    a lock whose process is dead (same host) or whose heartbeat is older than ``stale_s`` (another
    host, where ``flock`` may not reach). ``heartbeat()`` refreshes it (the sink calls it at each
    commit); ``release()`` removes it. Usable as a context manager."""

    def __init__(self, store: str | Path, *, stale_s: float = 300.0, token: str | None = None, supersede: bool = False):
        self.store = Path(store)
        self.path = self.store / LOCK_NAME
        self.stale_s = float(stale_s)
        self.token, self.supersede = token, supersede
        self.fd: int | None = None
        self.took_over: dict | None = None

    def holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def busy(self, include_self: bool = False) -> str | None:
        """A description of the live process holding this lock, or None; creates nothing. A lock file
        naming this process counts only with ``include_self`` (a reader in the writer's process)."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            holder = self.holder()
            if wait_for_orphan(holder):  # the engine task of a killed run: gone now, look again
                return self.busy(include_self)
            return self._describe(holder)
        finally:
            os.close(fd)
        old = self.holder()
        if not old or not old.get("pid"):
            return None
        if old.get("host") and old.get("host") != socket.gethostname():  # flock may not reach another host
            age = time.time() - self.path.stat().st_mtime
            return self._describe(old) if age < self.stale_s else None
        pid = int(old["pid"])
        if (pid != os.getpid() or include_self) and _pid_alive(pid):
            return self._describe(old)
        return None

    def _superseded(self, old: dict) -> bool:
        """A lock of an earlier archive attempt on another host, which this archive task may take over."""
        return bool(self.supersede and old.get("token"))

    def acquire(self) -> "WriterLock":
        self.store.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                raise OutputError(f"{self.store} is being written by another process ({self._describe(self.holder())}); "
                                  "wait for it to finish or stop it") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the file was removed and recreated between open and flock: retry
                os.close(fd)
                continue
            old = self.holder()
            host = socket.gethostname()
            if old and old.get("pid") is not None:
                other_host = bool(old.get("host")) and old.get("host") != host
                age = time.time() - self.path.stat().st_mtime
                alive = (not other_host and int(old["pid"]) != os.getpid() and _pid_alive(int(old["pid"])))
                if other_host and age < self.stale_s and not self._superseded(old):
                    os.close(fd)
                    raise OutputError(f"{self.store} is being written from another host ({self._describe(old)}, "
                                      f"heartbeat {age:.0f} s ago); wait for it or stop it")
                if alive:  # holds no flock (e.g. an older writer): trust the pid
                    os.close(fd)
                    raise OutputError(f"{self.store} is being written by another process ({self._describe(old)}); "
                                      "wait for it to finish or stop it")
                self.took_over = old
                log.warning("%s: taking over the stale writer lock of %s (%s)", self.store, self._describe(old),
                            f"no heartbeat for {age:.0f} s" if other_host else "process no longer running")
            data = {"pid": os.getpid(), "host": host, "started": time.time()}
            if self.token:
                data["token"] = self.token
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(data).encode(), 0)
            self.fd = fd
            return self
        raise OutputError(f"{self.store}: could not take the writer lock (it keeps changing)")

    _describe = staticmethod(describe_holder)

    def heartbeat(self) -> None:
        if self.fd is not None:
            try:
                os.utime(self.path)
            except OSError:
                pass

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass
        try:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "WriterLock":
        return self.acquire() if self.fd is None else self

    def __exit__(self, *exc) -> None:
        self.release()
