"""Outputs on object storage (``s3://bucket/prefix`` through fsspec / s3fs): URL helpers and ``ObjectLock``.

Object stores have no ``flock`` and no atomic rename; what they do have (AWS S3 since 2024, MinIO, moto)
is the conditional PUT: ``If-None-Match: *`` (create only if absent) and ``If-Match: <etag>`` (replace
only the version I read). ``ObjectLock`` builds a lease on them:

- ``acquire``: create ``<prefix>/.streamparse.lock`` with ``If-None-Match: *`` (holder: pid, host,
  start, token). If it exists and its last heartbeat (the object's LastModified) is older than
  ``stale_s``, or it carries a token and ``supersede`` is set (see ``streamparse.store.lock``), it is taken
  over with ``If-Match`` on the ETag read, so of two contenders exactly one wins.
- ``heartbeat``: at most every ``heartbeat_s``, rewrite it with ``If-Match`` on our last ETag; if that
  fails someone took the lock over: the holder is told (``on_lost``) and must stop writing.
- ``release``: delete it (after checking it is still ours).

What this guarantees, and what not: with conditional PUTs, two live writers never both hold the lock,
as long as a holder heartbeats more often than ``stale_s`` and the clocks of the machines (which judge
a LastModified by their own time) are within ``stale_s - heartbeat_s`` of the storage's. There is no
fencing: a holder paused for longer than ``stale_s`` (a frozen VM) may be taken over and still write
until its next heartbeat fails. Where the server ignores conditional headers (detected once per
acquire with a probe), the lock degrades to write-then-read-back: it still refuses a live holder seen
before, but two writers starting within the same second can both win; a warning says so.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from datetime import timezone

from streamparse.store.lock import _pid_alive, describe_holder
from streamparse.store.outputs import DIR_MARKER, LOCK_NAME, OutputError

log = logging.getLogger(__name__)


def is_url(path) -> bool:
    """An fsspec URL (``s3://...``, ``gs://``, ``memory://``), not a local path or ``file://``."""
    s = str(path)
    return "://" in s and not s.startswith("file://")


def join(base: str, *names: str) -> str:
    return "/".join([str(base).rstrip("/"), *[n.strip("/") for n in names]])


def filesystem(url: str, storage_options: dict | None = None):
    """(fs, path-in-fs) of a URL; listings are not cached (several writers look at one prefix)."""
    import fsspec

    opts = dict(storage_options or {})
    if url.startswith("s3://"):
        opts.setdefault("use_listings_cache", False)
    fs, path = fsspec.core.url_to_fs(url, **opts)
    return fs, path


def zarr_store(url: str, storage_options: dict | None = None, *, read_only: bool = False):
    """A zarr ``FsspecStore`` for ``url``."""
    from zarr.storage import FsspecStore

    return FsspecStore.from_url(url, storage_options=dict(storage_options or {}), read_only=read_only)


def cat_or_none(fs, path: str) -> bytes | None:
    try:
        return fs.cat_file(path)
    except FileNotFoundError:
        return None


def _precondition_failed(exc: BaseException) -> bool:
    return isinstance(exc, FileExistsError) or "pre-condition" in str(exc).lower() or "precondition" in str(exc).lower()


def store_state(fs, path: str) -> str:
    """What is at an object-storage store path: absent | store (ours: zarr.json with
    streamparse_schema_version) | lock-only (a store whose creation had only begun) | foreign."""
    fs.invalidate_cache(path)
    raw = cat_or_none(fs, f"{path}/zarr.json")
    if raw is None:
        try:
            names = [n.rsplit("/", 1)[-1] for n in fs.ls(path, detail=False)]
        except FileNotFoundError:
            names = []
        if not names:
            return "absent"
        return "lock-only" if set(names) <= {LOCK_NAME} else "foreign"
    try:
        attrs = json.loads(raw).get("attributes") or {}
    except (ValueError, AttributeError):
        return "foreign"
    return "store" if "streamparse_schema_version" in attrs else "foreign"


class LockLost(RuntimeError):
    """Another writer took over an object-storage lock we held (our heartbeat was refused)."""


class ObjectLock:
    """One writer per object-storage prefix (see the module docstring). ``url``: the prefix (a store
    or an archive OUTDIR); the lock object is ``<url>/.streamparse.lock``."""

    def __init__(self, url: str, *, storage_options: dict | None = None, stale_s: float = 120.0, heartbeat_s: float = 15.0,
                 token: str | None = None, supersede: bool = False, on_lost=None):
        self.url = str(url).rstrip("/")
        self.fs, base = filesystem(self.url, storage_options)
        self.key = f"{base}/{LOCK_NAME}"
        self.stale_s, self.heartbeat_s = float(stale_s), float(heartbeat_s)
        self.token, self.supersede = token, supersede
        self.on_lost = on_lost
        self.etag: str | None = None
        self.took_over: dict | None = None
        self.conditional = True
        self.lost = False
        self._last_beat = 0.0
        self._data: dict = {}

    # ------------------------------------------------------------------ reading
    def holder(self) -> tuple[dict | None, str | None, float]:
        """(holder record, ETag, age in s of its last heartbeat) or (None, None, 0) when free."""
        self.fs.invalidate_cache(self.key)
        try:
            info = self.fs.info(self.key)
            raw = self.fs.cat_file(self.key)
        except FileNotFoundError:
            return None, None, 0.0
        try:
            rec = json.loads(raw)
        except ValueError:
            rec = {}
        lm = info.get("LastModified")
        age = time.time() - lm.replace(tzinfo=lm.tzinfo or timezone.utc).timestamp() if lm is not None else 0.0
        return rec, info.get("ETag"), max(0.0, age)

    describe = staticmethod(describe_holder)

    def busy(self) -> str | None:
        """A description of a live holder, or None (free, stale, or ours to supersede)."""
        rec, _, age = self.holder()
        if rec is None or self._may_take(rec, age):
            return None
        return f"{self.describe(rec)}, heartbeat {age:.0f} s ago"

    def _may_take(self, rec: dict, age: float) -> bool:
        if age >= self.stale_s:
            return True
        if rec.get("host") == socket.gethostname() and rec.get("pid"):
            if int(rec["pid"]) == os.getpid() or not _pid_alive(int(rec["pid"])):
                return True
        return bool(self.supersede and rec.get("token") and self._pid_dead_or_remote(rec))

    @staticmethod
    def _pid_dead_or_remote(rec: dict) -> bool:
        if rec.get("host") != socket.gethostname():
            return True
        return not _pid_alive(int(rec.get("pid") or 0))

    # ------------------------------------------------------------------ writing
    def _body(self) -> bytes:
        self._data = {"pid": os.getpid(), "host": socket.gethostname(), "started": self._data.get("started", time.time()),
                      "heartbeat": time.time(), "token": self.token, "nonce": self._data.get("nonce") or uuid.uuid4().hex}
        return json.dumps(self._data).encode()

    def _put(self, body: bytes, **cond) -> str | None:
        bucket, key, _ = self.fs.split_path(self.key)
        out = self.fs.call_s3("put_object", Bucket=bucket, Key=key, Body=body, **cond)
        self.fs.invalidate_cache(self.key)
        return out.get("ETag")

    def acquire(self) -> "ObjectLock":
        for _ in range(5):
            try:
                self.etag = self._put(self._body(), IfNoneMatch="*")
                self._probe()
                self._last_beat = time.monotonic()
                return self
            except OSError as exc:
                if not _precondition_failed(exc):
                    raise
            rec, etag, age = self.holder()
            if rec is None:
                continue  # released in between: try to create it again
            if not self._may_take(rec, age):
                raise OutputError(f"{self.url} is being written by another process ({self.describe(rec)}, heartbeat "
                                  f"{age:.0f} s ago); wait for it to finish or stop it")
            try:
                self.etag = self._put(self._body(), IfMatch=etag)
            except OSError as exc:
                if _precondition_failed(exc):
                    continue  # someone else took it first: look again
                raise
            self.took_over = rec
            log.warning("%s: taking over the writer lock of %s (heartbeat %.0f s ago)", self.url, self.describe(rec), age)
            self._last_beat = time.monotonic()
            return self
        raise OutputError(f"{self.url}: could not take the writer lock (it keeps changing)")

    def _probe(self) -> None:
        """Detect a server that ignores conditional PUTs: a second create of our own lock must fail."""
        try:
            self.etag = self._put(self._body(), IfNoneMatch="*")
        except OSError as exc:
            if _precondition_failed(exc):
                return
            raise
        self.conditional = False
        log.warning("%s: the object store ignores conditional writes (If-None-Match); the writer lock only "
                    "detects writers that started more than a heartbeat apart", self.url)

    def heartbeat(self, force: bool = False) -> None:
        """Refresh the lease (at most every ``heartbeat_s`` unless ``force``); raises ``LockLost`` and
        calls ``on_lost`` when someone else holds it now."""
        if self.etag is None or self.lost:
            if self.lost:
                raise LockLost(f"{self.url}: the writer lock was taken over by another process")
            return
        if not force and time.monotonic() - self._last_beat < self.heartbeat_s:
            return
        try:
            if self.conditional:
                self.etag = self._put(self._body(), IfMatch=self.etag)
            else:
                rec, _, _ = self.holder()
                if (rec or {}).get("nonce") != self._data.get("nonce"):
                    raise OSError("precondition failed: the lock holds another writer's nonce")
                self.etag = self._put(self._body())
        except OSError as exc:
            if not _precondition_failed(exc):
                log.warning("%s: lock heartbeat failed: %s", self.url, exc)
                return
            self.lost = True
            rec, _, _ = self.holder()
            if self.on_lost is not None:
                self.on_lost()
            raise LockLost(f"{self.url}: the writer lock was taken over by {self.describe(rec)}; stopped writing") from None
        self._last_beat = time.monotonic()

    def release(self) -> None:
        if self.etag is None:
            return
        try:
            rec, _, _ = self.holder()
            if rec is not None and rec.get("nonce") == self._data.get("nonce"):
                self.fs.rm_file(self.key)
                self.fs.invalidate_cache(self.key)
        except OSError as exc:
            log.warning("%s: could not remove the writer lock: %s", self.url, exc)
        self.etag = None

    def __enter__(self) -> "ObjectLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def dir_state(fs, path: str) -> tuple[str, str]:
    """(what, why) of an archive OUTDIR on object storage: absent | archive | foreign."""
    fs.invalidate_cache(path)
    try:
        names = [n.rsplit("/", 1)[-1] for n in fs.ls(path, detail=False)]
    except FileNotFoundError:
        names = []
    if not names or set(names) <= {LOCK_NAME}:
        return "absent", "it is empty"
    raw = cat_or_none(fs, f"{path}/{DIR_MARKER}")
    try:
        marker = json.loads(raw) if raw is not None else None
    except ValueError:
        marker = None
    if not isinstance(marker, dict) or not str(marker.get("generator", "")).startswith("streamparse"):
        return "foreign", f"it holds {len(names)} object(s) that streamparse did not write"
    if marker.get("kind") != "archive":
        return "foreign", f"it is a streamparse {marker.get('kind', 'output')} folder, not an archive"
    allowed = set(marker.get("files") or []) | {DIR_MARKER, LOCK_NAME}
    extra = [n for n in names if n not in allowed and not n.endswith(".zarr") and not n.endswith(".tmp")]
    if extra:
        return "foreign", f"it holds {len(extra)} object(s) streamparse did not write (e.g. {extra[0]})"
    return "archive", "it is a streamparse archive"
