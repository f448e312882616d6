"""The export cache: one directory per entry, keyed by what the export depends on.

Layout under the cache root (``$STREAMPARSE_CACHE_DIR``, else ``$XDG_CACHE_HOME/streamparse``, else
``~/.cache/streamparse``; ``model.runtime_cache`` overrides)::

    exports/<name>-<id>/          an entry: the runtime's files + manifest.json
    exports/.tmp-<id>-<pid>-<rand>/  an entry being written (renamed into place when complete)
    locks/<id>.lock               flock: one process checks or builds an entry at a time

``id`` is the sha256 of the key (canonical JSON: checkpoint sha256, model variant, input size,
precision, runtime and version, ...). ``manifest.json`` holds the key and the sha256 and size of every
file. An entry is used only when its manifest parses, names the same key and every file has its
recorded size and sha256; anything else (a truncated file, a foreign or half-copied entry) is moved
aside, deleted and rebuilt. Entries are written to a temporary directory and renamed atomically.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = "streamparse-export-cache/1"


def default_cache_dir() -> Path:
    """The project's one cache rule (``streamparse.cache``): ``$STREAMPARSE_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/streamparse``, else ``~/.cache/streamparse``."""
    from streamparse.cache import cache_dir

    return cache_dir()


def key_id(key: dict) -> str:
    """sha256 (hex) of the key's canonical JSON."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class CacheEntryError(RuntimeError):
    """A cache entry that cannot be built (the builder failed)."""


class ExportCache:
    """Get-or-build entries under ``root``. ``get(key, build, name)`` -> (entry dir, built: bool)."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser() if root else default_cache_dir()
        self.exports = self.root / "exports"
        self.locks = self.root / "locks"

    def entry_dir(self, key: dict, name: str) -> Path:
        return self.exports / f"{_safe(name)}-{key_id(key)[:20]}"

    @contextlib.contextmanager
    def lock(self, key: dict):
        """Exclusive flock on the entry's lock file (held while checking, building or loading it)."""
        self.locks.mkdir(parents=True, exist_ok=True)
        path = self.locks / f"{key_id(key)[:20]}.lock"
        with open(path, "a+") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def verify(self, path: Path, key: dict) -> str | None:
        """None if the entry at ``path`` is complete and belongs to ``key``, else why not."""
        try:
            man = json.loads((path / MANIFEST).read_text())
        except (OSError, ValueError) as exc:
            return f"unreadable manifest ({type(exc).__name__})"
        if not isinstance(man, dict) or man.get("format") != FORMAT or man.get("key_id") != key_id(key) or man.get("key") != key:
            return "manifest of another key or format"
        files = man.get("files")
        if not isinstance(files, dict) or not files:
            return "manifest lists no files"
        present = {p.name for p in path.iterdir()} - {MANIFEST}
        if present != set(files):
            return f"files differ from the manifest ({sorted(present ^ set(files))[:3]})"
        for name, rec in files.items():
            f = path / name
            if f.stat().st_size != rec.get("size") or sha256_file(f) != rec.get("sha256"):
                return f"{name} does not match its sha256"
        return None

    def get(self, key: dict, build: Callable[[Path], None], name: str) -> tuple[Path, bool]:
        """The verified entry of ``key``; built first (``build(tmp_dir)`` writes the files) when missing
        or invalid. Must be called with ``lock(key)`` held (see ``get_locked``)."""
        dest = self.entry_dir(key, name)
        if dest.exists():
            why = self.verify(dest, key)
            if why is None:
                return dest, False
            log.warning("export cache: discarding %s (%s); rebuilding", dest, why)
            self._discard(dest)
        self._clean_tmp(key)
        self.exports.mkdir(parents=True, exist_ok=True)
        tmp = self.exports / f".tmp-{key_id(key)[:20]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            build(tmp)
            files = {p.name: {"size": p.stat().st_size, "sha256": sha256_file(p)} for p in sorted(tmp.iterdir())}
            if not files:
                raise CacheEntryError(f"export wrote no files for {name}")
            man = {"format": FORMAT, "key_id": key_id(key), "key": key, "files": files, "created": time.time(), "pid": os.getpid()}
            _write_synced(tmp / MANIFEST, json.dumps(man, indent=1, sort_keys=True))
            for p in tmp.iterdir():
                _fsync(p)
            os.rename(tmp, dest)
            _fsync(self.exports)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return dest, True

    def get_locked(self, key: dict, build: Callable[[Path], None], name: str) -> tuple[Path, bool]:
        with self.lock(key):
            return self.get(key, build, name)

    def _discard(self, path: Path) -> None:
        aside = path.with_name(f".trash-{path.name}-{uuid.uuid4().hex[:8]}")
        os.rename(path, aside)
        shutil.rmtree(aside, ignore_errors=True)

    def _clean_tmp(self, key: dict) -> None:
        """Temporary directories of this key left by a crashed writer (safe: the key's lock is held)."""
        if self.exports.is_dir():
            for p in self.exports.glob(f".tmp-{key_id(key)[:20]}-*"):
                shutil.rmtree(p, ignore_errors=True)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80]


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def read_json_entry(path: Path, filename: str) -> dict:
    """A JSON file of a verified entry."""
    return json.loads((path / filename).read_text())


def write_json_file(path: Path, obj: dict) -> None:
    _write_synced(path, json.dumps(obj, indent=1, sort_keys=True))
