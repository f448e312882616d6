"""``RemoteZarrSink``: the ``ZarrSink`` of a store on object storage (``s3://bucket/prefix/x.zarr``).

Writes go through zarr's ``FsspecStore`` (s3fs); ``SourceWriter`` is the local one (whole chunks, then
the commit marker). What differs from a local store:

- ownership: the store path must be absent, a streamparse store (``zarr.json`` with
  ``streamparse_schema_version``) or hold only our lock object; anything else is refused (the objects
  inside a store of ours are not listed one by one: that would cost a LIST per resume);
- one writer: ``streamparse.store.objstore.ObjectLock`` (a lease on conditional PUTs) instead of ``flock``;
  its heartbeat rides on the commit markers; when it is lost, every writer of the sink stops;
- no disk-full reserve, no ``*.partial`` files (a PUT is atomic: an object is there whole or not);
- resume verifies the committed range with ``store_check.verify_open_store`` (chunk sizes from the
  store's own ``getsize``).
"""

from __future__ import annotations

import json
import logging

from streamparse.store.objstore import LockLost, ObjectLock, filesystem, store_state, zarr_store
from streamparse.store.outputs import LOCK_NAME, OutputError
from streamparse.store.schema import SCHEMA_VERSION
from streamparse.store.sink import SinkError, SourceWriter, ZarrSink, _compressors, check_compatible

log = logging.getLogger(__name__)


class RemoteZarrSink(ZarrSink):
    """A streamparse store on object storage; the same interface as ``ZarrSink`` (``mode``: create,
    overwrite, resume). ``storage_options``: passed to fsspec (endpoint, credentials; by default the
    standard AWS environment variables are used)."""

    def __init__(self, url: str, *, mode: str = "create", root_attrs: dict | None = None, chunk_frames: int = 16,
                 compressor: str = "zstd", storage_options: dict | None = None, lock_token: str | None = None):
        import zarr

        self.path = self.url = str(url).rstrip("/")
        self.chunk_frames = int(chunk_frames)
        self.compressor = compressor
        _compressors(compressor)
        if mode not in ("create", "overwrite", "resume"):
            raise ValueError(f"mode must be create, overwrite or resume, got {mode!r}")
        self.fs, self.fpath = filesystem(self.url, storage_options)
        self.lock = ObjectLock(self.url, storage_options=storage_options, token=lock_token,
                               supersede=lock_token is not None, on_lost=self._lost)
        holder = self.lock.busy()
        if holder:
            raise SinkError(f"{self.url} is being written by another process ({holder}); wait for it to finish or stop it")
        what = store_state(self.fs, self.fpath)
        if what == "foreign":
            raise SinkError(f"refusing to write {self.url}: it holds objects that streamparse did not write")
        if mode == "create" and what == "store":
            raise SinkError(f"output {self.url} exists: pass --resume to continue it or --overwrite to replace it")
        self.created = what in ("absent", "lock-only")
        self.was_empty_dir = False
        try:
            self.lock.acquire()
        except OutputError as exc:
            raise SinkError(str(exc)) from None
        self.resumed = mode == "resume" and what == "store"
        self.notes: list[str] = []
        self.writers: dict[str, SourceWriter] = {}
        try:
            self.store = zarr_store(self.url, storage_options)
            first = json.loads(json.dumps({**(root_attrs or {}), "streamparse_schema_version": SCHEMA_VERSION}))
            if self.resumed:
                self.root = zarr.open_group(self.store, mode="r+", zarr_format=3)
                self._check_resumable(root_attrs or {})
                if root_attrs:
                    self.root.update_attributes(first)  # one write of zarr.json
            else:
                if what == "store":  # overwrite: ours (checked), cleared under our lock
                    self._clear()
                # born with every root attribute, in ONE write of zarr.json: a writer killed here leaves
                # a store that is whole or absent (attrs.update would rewrite it once per key)
                self.root = zarr.create_group(store=self.store, zarr_format=3, overwrite=False, attributes=first)
        except BaseException:
            self.lock.release()
            raise

    def _lost(self) -> None:
        for w in self.writers.values():
            w.failed = w.failed or f"{self.url}: the writer lock was taken over by another process; stopped writing"

    def _clear(self) -> None:
        keys = [k for k in self.fs.find(self.fpath) if not k.endswith("/" + LOCK_NAME)]
        if keys:
            self.fs.rm(keys)
        self.fs.invalidate_cache(self.fpath)

    def _check_resumable(self, root_attrs: dict) -> None:
        from streamparse.store.check import uncommitted_notes, verify_open_store

        rep = verify_open_store(self.root, self.url)
        if rep.schema_version != SCHEMA_VERSION:
            raise SinkError(f"cannot resume {self.url}: it is a schema v{rep.schema_version} store, this streamparse "
                            f"writes v{SCHEMA_VERSION} (write a new store)")
        problem = rep.first_problem()
        if problem:
            raise SinkError(f"cannot resume {self.url}: the store is damaged: {problem} (--overwrite replaces it)")
        for msg in uncommitted_notes(str(self.url), rep):
            log.warning("%s", msg)
            self.notes.append(msg)
        check_compatible(self.url, dict(self.root.attrs), root_attrs)

    def _reserve(self) -> None:  # no disk to fill
        pass

    def _release_reserve(self) -> None:
        pass

    def any_committed(self) -> bool:
        return any(self.committed(name) > 0 for name, _ in self.root.groups())

    def close(self, *, discard_if_empty: bool = False) -> None:
        try:
            for w in self.writers.values():
                if w.failed:
                    continue
                try:
                    w.flush()
                except (SinkError, LockLost) as exc:
                    log.error("%s: %s", self.url, exc)
            self.writers.clear()
        finally:
            if not self.lock.lost:
                if discard_if_empty and self.created:
                    try:
                        if not self.any_committed():
                            self._clear()
                    except Exception:  # noqa: BLE001
                        pass
                self.lock.release()
