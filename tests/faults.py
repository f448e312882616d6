"""Fault injection for store writes: a zarr store wrapper that fails like a full disk, and tree snapshots."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from zarr.storage import LocalStore, WrapperStore


class FaultyStore(WrapperStore):
    """Writes through to ``store`` until a fault condition, then raises ``OSError(err)`` on every write.

    ``fail_after_bytes``: fail the write that would take the total written bytes past this count;
    ``fail_on_chunk``: fail the K-th (1-based) chunk write whose key contains ``match`` (e.g. "part/c/");
    ``fail_on_key``: fail the first write of a key ending with this once 9 chunks were written (e.g.
    "cam/zarr.json": the group attributes, i.e. a commit marker mid-run).
    ``reserve``: a file whose deletion frees space (the sink's reserve file): once it is gone after the
    fault, ``reserve_bytes`` more bytes can be written (a full disk that the reserve gave a little room);
    without it the fault lasts (the disk stays full).
    """

    def __init__(self, store, *, fail_after_bytes: int | None = None, fail_on_chunk: int | None = None,
                 match: str = "/c/", fail_on_key: str | None = None, err: int = errno.ENOSPC,
                 reserve: Path | None = None, reserve_bytes: int = 256 * 1024):
        super().__init__(store)
        self.reserve, self.reserve_bytes, self.freed = reserve, reserve_bytes, None
        self.fail_after_bytes, self.fail_on_chunk, self.match, self.fail_on_key = fail_after_bytes, fail_on_chunk, match, fail_on_key
        self.err = err
        self.written = 0
        self.chunks = 0
        self.data_writes = 0
        self.tripped = False
        self.armed = True

    def _fail(self, key: str):
        self.tripped = True
        raise OSError(self.err, os.strerror(self.err), key)

    async def set(self, key, value) -> None:  # noqa: D401 - zarr store API
        if self.armed and self.tripped and self.reserve is not None and not Path(self.reserve).exists():
            if self.freed is None:
                self.freed = self.written
            if self.written + len(value) - self.freed <= self.reserve_bytes:  # room the reserve gave back
                self.written += len(value)
                await self._store.set(key, value)
                return
        if self.armed:
            if self.tripped:
                self._fail(key)
            if self.fail_after_bytes is not None and self.written + len(value) > self.fail_after_bytes:
                self._fail(key)
            if self.fail_on_chunk is not None and self.match in key:
                self.chunks += 1
                if self.chunks >= self.fail_on_chunk:
                    self._fail(key)
            if self.fail_on_key is not None and key.endswith(self.fail_on_key) and self.data_writes > 8:
                self._fail(key)  # a metadata write after some chunks: e.g. a commit marker mid-run
        if "/c/" in key:
            self.data_writes += 1
        self.written += len(value)
        await self._store.set(key, value)


def faulty_local(path, **kw) -> FaultyStore:
    return FaultyStore(LocalStore(str(path)), **kw)


def snapshot(path: Path) -> dict:
    """Every entry under ``path`` (or ``path`` itself): relative name -> (kind, sha256 / link target)."""
    p = Path(path)
    out = {}
    if p.is_symlink():
        return {".": ("link", os.readlink(p))}
    if p.is_file():
        return {".": ("file", hashlib.sha256(p.read_bytes()).hexdigest())}
    if not p.exists():
        return {}
    for dirpath, dirnames, filenames in os.walk(p):
        for name in dirnames + filenames:
            q = Path(dirpath) / name
            rel = str(q.relative_to(p))
            if q.is_symlink():
                out[rel] = ("link", os.readlink(q))
            elif q.is_file():
                out[rel] = ("file", hashlib.sha256(q.read_bytes()).hexdigest())
            else:
                out[rel] = ("dir", "")
    return out


def run_and_sigkill(args: list[str], group: Path, at_frames: int, env: dict, timeout: float = 180) -> int | None:
    """Start ``python -m streamparse run ARGS`` in its own session and SIGKILL it (the CLI and the Ray
    processes it started) once ``group``'s commit marker reaches ``at_frames``; returns the frames
    committed when it was killed, or None if the run ended (or timed out) first."""
    import zarr

    proc = subprocess.Popen([sys.executable, "-m", "streamparse", "run", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    killed = None
    try:
        deadline = time.time() + timeout
        while time.time() < deadline and proc.poll() is None:
            try:
                n = dict(zarr.open_group(str(group), mode="r").attrs)["status"]["frames_written"]
            except Exception:  # noqa: BLE001 - not created yet, or mid-write
                n = 0
            if n >= at_frames:
                os.killpg(proc.pid, signal.SIGKILL)
                killed = n
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return killed
