"""``RemoteZarrSink``: the ``ZarrSink`` of a store on object storage (``s3://bucket/prefix/x.zarr``).

Writes go through zarr's ``FsspecStore`` (s3fs); ``SourceWriter`` is the local one (whole chunks, then
the commit marker) and the construction is ``ZarrSink``'s (``ZarrSink._open``, through its hooks).
What differs from a local store:

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

import logging

from streamparse.store.objstore import LockLost, ObjectLock, filesystem, store_state, zarr_store
from streamparse.store.outputs import LOCK_NAME
from streamparse.store.sink import SinkError, ZarrSink, check_compatible, refuse_unresumable

log = logging.getLogger(__name__)


class RemoteZarrSink(ZarrSink):
    """A streamparse store on object storage; the same interface as ``ZarrSink`` (``mode``: create,
    overwrite, resume). ``storage_options``: passed to fsspec (endpoint, credentials; by default the
    standard AWS environment variables are used)."""

    def __init__(self, url: str, *, mode: str = "create", root_attrs: dict | None = None, chunk_frames: int = 16,
                 compressor: str = "zstd", storage_options: dict | None = None, lock_token: str | None = None,
                 commit_frames: int = 0):
        self.path = self.url = str(url).rstrip("/")
        self.storage_options = storage_options
        self.fs, self.fpath = filesystem(self.url, storage_options)
        self._open(mode, root_attrs, chunk_frames, compressor, lock_token, commit_frames)  # ZarrSink's, through the hooks below

    # -------------------------------------------------------------- the hooks of ZarrSink._open
    def _new_lock(self, lock_token: str | None) -> ObjectLock:
        """A lease on conditional PUTs; when it is lost, every writer of the sink stops (``_lost``)."""
        return ObjectLock(self.url, storage_options=self.storage_options, token=lock_token,
                          supersede=lock_token is not None, on_lost=self._lost)

    def _state(self, mode: str) -> str:
        """``objstore.store_state`` of the URL, after the refusals of ``mode``: a live writer, objects
        that are not ours, a store that ``create`` would overwrite."""
        holder = self.lock.busy()
        if holder:
            raise SinkError(f"{self.url} is being written by another process ({holder}); wait for it to finish or stop it")
        what = store_state(self.fs, self.fpath)
        if what == "foreign":
            raise SinkError(f"refusing to write {self.url}: it holds objects that streamparse did not write")
        if mode == "create" and what == "store":
            raise SinkError(f"output {self.url} exists: pass --resume to continue it or --overwrite to replace it")
        return what

    def _zarr_store(self):
        """zarr's ``FsspecStore`` of the URL (kept as ``self.store``)."""
        self.store = zarr_store(self.url, self.storage_options)
        return self.store

    def _open_resumed(self, store, root_attrs: dict):
        """The root group, verified through the open store (``_check_resumable`` reads ``self.root``)."""
        import zarr

        self.root = zarr.open_group(store, mode="r+", zarr_format=3)
        self._check_resumable(root_attrs)
        return self.root

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
        refuse_unresumable(self.url, rep)
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
