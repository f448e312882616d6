"""An archive OUTDIR (the layout of ``docs/archives.md``), local or on object storage: ``open_outdir``.

What the driver does to it, and nothing else: check it may be used (absent, empty, or an archive
streamparse wrote), hold its writer lock, read and append ``index.jsonl``, write ``archive.json`` and
the folder marker, and read the root/status metadata of a few stores.

``index.jsonl`` appends are atomic on a local or NFS path: each batch of lines is one ``write`` on an
``O_APPEND`` descriptor followed by ``fsync``, so readers see whole lines (a reader skips a last line
cut by a crash). Objects cannot be appended to: on object storage the driver keeps the index in
memory and rewrites the whole object (one atomic PUT) at most every ``flush_s`` seconds and at the
end; a killed driver loses at most the last ``flush_s`` of lines (resume does not depend on them: a
store's own attributes say whether it is complete and for which input and model).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from streamparse.store.index import encode
from streamparse.store.objstore import ObjectLock, cat_or_none, dir_state, filesystem, is_url, join
from streamparse.store.outputs import DIR_MARKER, OutputError, generator_mark, inspect_path, prepare_output

log = logging.getLogger(__name__)

INDEX = "index.jsonl"
ARCHIVE_JSON = "archive.json"
STORES = "*.zarr"


def _check_kind(marker: dict | None, where: str) -> None:
    if marker is not None and marker.get("kind") != "archive":
        raise OutputError(f"refusing to write into {where}: it is a streamparse {marker.get('kind', 'output')} folder, "
                          "not an archive")


class _Outdir:
    """What both kinds of OUTDIR share: one writer (a lock taken with the job's token; its heartbeat
    rides on the driver's progress) and the refusal that names a live writer. ``label``: the OUTDIR as
    the user gave it; ``busy()`` and ``_new_lock(token)`` are the kind's."""

    label: str
    lock_obj = None

    def busy(self) -> str | None:
        raise NotImplementedError

    def _new_lock(self, token: str):
        raise NotImplementedError

    def _refuse_if_busy(self) -> None:
        holder = self.busy()
        if holder:
            raise OutputError(f"{self.label} is being written by another archive job ({holder}); wait for it or stop it")

    def lock(self, token: str) -> None:
        self._refuse_if_busy()
        self.lock_obj = self._new_lock(token).acquire()

    def heartbeat(self) -> None:
        if self.lock_obj is not None:
            self.lock_obj.heartbeat()

    def unlock(self) -> None:
        if self.lock_obj is not None:
            self.lock_obj.release()
            self.lock_obj = None


class LocalOutdir(_Outdir):
    """An OUTDIR on a local or NFS path."""

    remote = False

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.label = str(self.path)
        self.lock_obj = None
        self._fd: int | None = None

    # -------------------------------------------------------------- safety
    def check(self, resume: bool) -> str:
        """'new' (absent or empty) or 'archive' (ours: resume continues it); ``OutputError`` otherwise
        (a live job holding it is named first: that is the one thing to wait for)."""
        self._refuse_if_busy()
        st = inspect_path(self.path)
        if st.what == "store":
            raise OutputError(f"refusing to write into {self.path}: it is a zarr store, not an archive folder")
        prepare_output(self.path, mode="update", kind="dir")  # absent, empty or a folder of ours; else refused
        if st.what in ("absent", "empty-dir"):
            return "new"
        marker = self._marker()
        _check_kind(marker, str(self.path))
        if not resume:
            raise OutputError(f"output {self.path} holds an archive: pass --resume to continue it (or choose another --out)")
        return "archive"

    def _marker(self) -> dict | None:
        try:
            return json.loads((self.path / DIR_MARKER).read_text())
        except (OSError, ValueError):
            return None

    def busy(self) -> str | None:
        from streamparse.store.lock import WriterLock

        return WriterLock(self.path).busy() if self.path.is_dir() else None

    def _new_lock(self, token: str):
        from streamparse.store.lock import WriterLock

        self.path.mkdir(parents=True, exist_ok=True)
        return WriterLock(self.path, token=token)

    # -------------------------------------------------------------- files
    def read_text(self, name: str) -> str | None:
        try:
            return (self.path / name).read_text()
        except FileNotFoundError:
            return None

    def write_json(self, name: str, data: dict) -> None:
        from streamparse.store.outputs import write_json

        write_json(self.path / name, data)

    def append_index(self, records: list[dict]) -> None:
        if not records:
            return
        if self._fd is None:
            self._fd = os.open(self.path / INDEX, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        data = encode(records)
        n = os.write(self._fd, data)  # one write of whole lines on O_APPEND: never interleaved
        while n < len(data):  # a short write (a signal, a full disk): finish the line, never leave half
            n += os.write(self._fd, data[n:])
        os.fsync(self._fd)

    def flush_index(self, force: bool = False) -> None:
        pass

    def mark(self) -> None:
        """The folder marker: its own files (archive.json and index.jsonl always, before they exist, so
        a run killed at any point leaves a folder ``--resume`` accepts) and the store pattern."""
        from streamparse.store.outputs import LOCK_NAME, finish_dir

        files = {e.name for e in self.path.iterdir() if e.is_file() and e.name not in (DIR_MARKER, LOCK_NAME)
                 and not e.name.endswith(".tmp")}
        finish_dir(self.path, "archive", extra={"stores": STORES, "files": sorted(files | {ARCHIVE_JSON, INDEX})})

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # -------------------------------------------------------------- stores
    def store_url(self, video_id: str) -> str:
        return str(self.path / f"{video_id}.zarr")

    def store_meta(self, video_id: str) -> tuple[dict | None, dict | None]:
        """(root attributes, the video group's status) of a store, None where absent or unreadable."""
        base = self.path / f"{video_id}.zarr"
        return _parse_meta((base / "zarr.json").read_bytes() if (base / "zarr.json").is_file() else None,
                           (base / video_id / "zarr.json").read_bytes() if (base / video_id / "zarr.json").is_file() else None)


def _parse_meta(root_raw: bytes | None, group_raw: bytes | None) -> tuple[dict | None, dict | None]:
    def attrs(raw):
        if raw is None:
            return None
        try:
            return json.loads(raw).get("attributes") or {}
        except (ValueError, AttributeError):
            return None

    g = attrs(group_raw)
    return attrs(root_raw), (dict(g.get("status") or {}) if g is not None else None)


class RemoteOutdir(_Outdir):
    """An OUTDIR on object storage (``s3://bucket/prefix``)."""

    remote = True

    def __init__(self, url: str, storage_options: dict | None = None, *, flush_s: float = 5.0):
        self.url = str(url).rstrip("/")
        self.label = self.url
        self.so = dict(storage_options or {})
        self.fs, self.base = filesystem(self.url, self.so)
        self.flush_s = float(flush_s)
        self.lock_obj: ObjectLock | None = None
        self._index: bytes | None = None
        self._dirty = False
        self._flushed = 0.0

    def check(self, resume: bool) -> str:
        self._refuse_if_busy()
        what, why = dir_state(self.fs, self.base)
        if what == "foreign":
            raise OutputError(f"refusing to write into {self.url}: {why}")
        if what == "absent":
            return "new"
        if not resume:
            raise OutputError(f"output {self.url} holds an archive: pass --resume to continue it (or choose another --out)")
        return "archive"

    def busy(self) -> str | None:
        return ObjectLock(self.url, storage_options=self.so).busy()

    def _new_lock(self, token: str) -> ObjectLock:
        return ObjectLock(self.url, storage_options=self.so, token=token)

    def read_text(self, name: str) -> str | None:
        self.fs.invalidate_cache(join(self.base, name))
        raw = cat_or_none(self.fs, join(self.base, name))
        return raw.decode() if raw is not None else None

    def write_json(self, name: str, data: dict) -> None:
        self.fs.pipe_file(join(self.base, name), json.dumps({"generator": generator_mark(), **data}, indent=2, default=str).encode())

    def append_index(self, records: list[dict]) -> None:
        if not records:
            return
        if self._index is None:
            old = self.read_text(INDEX) or ""
            if old and not old.endswith("\n"):
                old += "\n"  # a line cut short stays unreadable, the next one starts clean
            self._index = old.encode()
        self._index += encode(records)
        self._dirty = True
        self.flush_index()

    def flush_index(self, force: bool = False) -> None:
        if not self._dirty or (not force and time.monotonic() - self._flushed < self.flush_s):
            return
        self.fs.pipe_file(join(self.base, INDEX), self._index)  # a PUT replaces the object whole
        self._dirty = False
        self._flushed = time.monotonic()

    def mark(self) -> None:
        self.fs.invalidate_cache(self.base)
        names = {n.rsplit("/", 1)[-1] for n in self.fs.ls(self.base, detail=False)}
        files = sorted({n for n in names if n not in (DIR_MARKER,) and not n.endswith(".zarr") and not n.startswith(".")
                        and not n.endswith(".tmp")} | {ARCHIVE_JSON, INDEX})
        self.write_json(DIR_MARKER, {"kind": "archive", "created": time.time(), "files": files, "stores": STORES})

    def close(self) -> None:
        self.flush_index(force=True)

    def store_url(self, video_id: str) -> str:
        return join(self.url, f"{video_id}.zarr")

    def store_meta(self, video_id: str) -> tuple[dict | None, dict | None]:
        base = join(self.base, f"{video_id}.zarr")
        got = self.fs.cat([f"{base}/zarr.json", f"{base}/{video_id}/zarr.json"], on_error="omit")
        return _parse_meta(got.get(f"{base}/zarr.json"), got.get(f"{base}/{video_id}/zarr.json"))


def open_outdir(out: str, storage_options: dict | None = None):
    """``LocalOutdir`` for a path, ``RemoteOutdir`` for an fsspec URL."""
    return RemoteOutdir(out, storage_options) if is_url(out) else LocalOutdir(out)
