"""ZarrSink: writes schema v2 (see README "Output") -- one zarr v3 group per run, one subgroup per source.

Writes are chunk-aligned along time: each source's ``SourceWriter`` (``streamparse.store.writer``)
buffers results (and reorders them by their frame sequence number) until ``chunk_frames``
consecutive frames are ready, then writes them as whole chunks; only after the data is written is
the source's ``status.frames_written`` attribute advanced (the commit marker). zarr's local store writes every file atomically (temporary file + rename), so a crash or a
full disk leaves at most data past the commit marker, which ``resume`` truncates away.

Safety (README "Safety of outputs"): the store path goes through ``outputs.prepare_output``; one
``WriterLock`` per store; ``--overwrite`` clears only a streamparse store; ``resume`` verifies the
committed data first (``verify_store``) and refuses a damaged store; a failed write (ENOSPC, EIO, a
permission lost) stops that source with ``state="error"`` and the OS error in ``status.errors``
(a small reserve file is given back to the file system first, so the status can still be written).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from streamparse.store.lock import WriterLock
from streamparse.store.outputs import RESERVE_NAME, OutputError, clear_store, prepare_output
from streamparse.store.arrays import create_source_group, missing_arrays
from streamparse.store.schema import SCHEMA_VERSION
from streamparse.store.check import group_ids, uncommitted_notes, verify_store
from streamparse.store.writer import SinkError, SinkWriteError, SourceWriter

__all__ = ["RESERVE_BYTES", "SinkError", "SinkWriteError", "SourceWriter", "ZarrSink", "check_compatible", "check_store",
           "verify_store"]

log = logging.getLogger(__name__)

RESERVE_BYTES = 256 * 1024


def _compressors(name: str):
    from zarr.codecs import BloscCodec, ZstdCodec

    if name == "zstd":
        return [ZstdCodec(level=1)]  # label maps: level 1 compresses them as small as 3, in half the time
    if name == "blosc":
        return [BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")]
    if name in ("none", ""):
        return None
    raise ValueError(f"unknown compressor {name!r} (zstd, blosc, none)")


def check_compatible(path, old: dict, root_attrs: dict) -> None:
    """A store written with ``old`` root attributes may be continued with ``root_attrs``: same model,
    checkpoint and tracker (else ``SinkError``)."""
    for key in ("model_name", "checkpoint_sha256"):
        if key in old and key in root_attrs and old[key] != root_attrs[key]:
            raise SinkError(f"cannot resume {path}: it was written with {key}={old[key]!r}, now {root_attrs[key]!r}")
    if (old.get("tracker") or None) != (root_attrs.get("tracker", old.get("tracker")) or None):
        raise SinkError(f"cannot resume {path}: it was tracked with other track.* settings "
                        f"({old.get('tracker')!r}); resume with the same ones, or re-track it later with `streamparse track`")


def refuse_unresumable(where, rep, listing: str = "") -> None:
    """``SinkError`` when the verified store ``rep`` (a ``StoreReport``) may not be continued: it is of
    another schema version, or damaged (``listing``: where to see every problem)."""
    if rep.schema_version != SCHEMA_VERSION:
        raise SinkError(f"cannot resume {where}: it is a schema v{rep.schema_version} store, this streamparse "
                        f"writes v{SCHEMA_VERSION} (write a new store)")
    problem = rep.first_problem()
    if problem:
        raise SinkError(f"cannot resume {where}: the store is damaged: {problem} ({listing}--overwrite replaces it)")


def _check_path(path: Path, mode: str, lock: WriterLock):
    """The refusals of opening ``path`` in ``mode`` that touch nothing: a live writer, then the output rules."""
    holder = lock.busy() if path.is_dir() and not path.is_symlink() else None
    if holder:  # checked first: a store being written is refused in every mode
        raise SinkError(f"{path} is being written by another process ({holder}); wait for it to finish or stop it")
    try:
        return prepare_output(path, mode=mode, kind="store")
    except OutputError as exc:
        raise SinkError(str(exc)) from None


def _verify_resumable(path: Path, root_attrs: dict | None):
    """A store ``--resume`` may continue: this schema version, undamaged, written for the same model
    (``root_attrs`` None: the model is not known yet, checked again when it is)."""
    rep = verify_store(path)
    refuse_unresumable(path, rep, "verify_store lists all; ")
    if root_attrs is None:
        return rep
    import zarr

    check_compatible(path, dict(zarr.open_group(str(path), mode="r").attrs), root_attrs)
    return rep


def check_store(path: str | Path, *, mode: str, root_attrs: dict | None) -> None:
    """Raise ``SinkError`` (one line) for what opening ``path`` in ``mode`` would refuse, touching nothing: a
    driver calls it before it starts Ray, the engine task opens the store for real. ``root_attrs`` None:
    everything but the model's compatibility (a driver checks that once its plan is made)."""
    path = Path(path)
    state = _check_path(path, mode, WriterLock(path))
    if mode == "resume" and state.what == "store":
        _verify_resumable(path, root_attrs)


class ZarrSink:
    """The output store. ``mode``: 'create' (fails if it exists), 'overwrite' (replaces a streamparse
    store only), 'resume' (continues a streamparse store after verifying it).

    Usage::

        with ZarrSink(path, mode="create", root_attrs={...}) as sink:
            w = sink.source(source_id, info, (H, W), class_names)
            w.add_batch(seq, parsing_batch) ...

    ``store``: a zarr store object to write through instead of the local path (tests wrap the local
    store to inject faults); the path still carries the lock and the ownership checks. Stores on object
    storage (``s3://...``) are ``streamparse.store.remote.RemoteZarrSink`` (``build.build_sink`` picks it).
    ``lock_token``: an archive run's token for the writer lock (``streamparse.store.lock``: a lock left by an
    earlier attempt of an archive task is taken over at once).
    """

    def __init__(self, path: str | Path, *, mode: str = "create", root_attrs: dict | None = None,
                 chunk_frames: int = 16, compressor: str = "zstd", store=None, lock_token: str | None = None,
                 commit_frames: int = 0):
        self.path = Path(path)
        self._store = store
        self._open(mode, root_attrs, chunk_frames, compressor, lock_token, commit_frames)

    def _open(self, mode: str, root_attrs: dict | None, chunk_frames: int, compressor: str, lock_token: str | None,
              commit_frames: int = 0) -> None:
        """The construction every sink shares (``RemoteZarrSink`` too): check the arguments, refuse what
        may not be touched, take the writer lock, then open (resume) or create the root group -- born
        with every root attribute in ONE write of zarr.json, so a writer killed here leaves a store that
        is whole or absent. What differs by where the store is lives in the hooks ``_new_lock``,
        ``_state``, ``_zarr_store``, ``_open_resumed`` and ``_clear``."""
        import zarr

        self.chunk_frames = int(chunk_frames)
        self.commit_frames = int(commit_frames)  # frames per write and commit (``SourceWriter``; 0 = one chunk)
        self.compressor = compressor
        _compressors(compressor)  # a bad name fails before anything is created
        if mode not in ("create", "overwrite", "resume"):
            raise ValueError(f"mode must be create, overwrite or resume, got {mode!r}")
        self.notes: list[str] = []
        self.writers: dict[str, SourceWriter] = {}
        self.lock = self._new_lock(lock_token)
        what = self._state(mode)
        self.created = what in ("absent", "lock-only")  # we made it: we may remove it again if nothing is committed
        self.was_empty_dir = what == "empty-dir"
        try:
            self.lock.acquire()
        except OutputError as exc:
            raise SinkError(str(exc)) from None
        self.resumed = mode == "resume" and what == "store"
        try:
            store = self._zarr_store()
            first = json.loads(json.dumps({**(root_attrs or {}), "streamparse_schema_version": SCHEMA_VERSION}))
            if self.resumed:
                self.root = self._open_resumed(store, root_attrs or {})
                if root_attrs:
                    self.root.update_attributes(first)  # one write of zarr.json
            else:
                if what == "store":  # overwrite: ours (checked), cleared under our lock
                    self._clear()
                self.root = zarr.create_group(store=store, zarr_format=3, overwrite=False, attributes=first)
        except BaseException:
            self.lock.release()
            raise
        self._reserve()

    # -------------------------------------------------------------- where the store is (hooks of _open)
    def _new_lock(self, lock_token: str | None) -> WriterLock:
        """The writer lock (``lock_token``: an archive task's, which takes over a lock left by an earlier attempt)."""
        return WriterLock(self.path, token=lock_token, supersede=lock_token is not None)

    def _state(self, mode: str) -> str:
        """What is at the path (``PathState.what``), after the refusals of ``mode`` that touch nothing."""
        return _check_path(self.path, mode, self.lock).what

    def _zarr_store(self):
        """What zarr writes through: the ``store`` given, else the local path."""
        return self._store if self._store is not None else str(self.path)

    def _open_resumed(self, store, root_attrs: dict):
        """The root group of a store being resumed, verified first."""
        import zarr

        self._check_resumable(root_attrs)
        return zarr.open_group(store, mode="r+")

    def _clear(self) -> None:
        """Remove the store's content (``--overwrite``; the lock stays)."""
        clear_store(self.path)

    def _check_resumable(self, root_attrs: dict) -> None:
        rep = _verify_resumable(self.path, root_attrs)
        for msg in uncommitted_notes(str(self.path), rep):
            log.warning("%s", msg)
            self.notes.append(msg)
        for p in self.path.rglob("*.partial"):  # left by a write that was killed: never committed
            p.unlink(missing_ok=True)

    # -------------------------------------------------------------- disk-full reserve
    def _reserve(self) -> None:
        try:
            with open(self.path / RESERVE_NAME, "wb") as f:
                f.write(b"\0" * RESERVE_BYTES)
        except OSError:
            (self.path / RESERVE_NAME).unlink(missing_ok=True)

    def _release_reserve(self) -> None:
        (self.path / RESERVE_NAME).unlink(missing_ok=True)

    def __enter__(self) -> "ZarrSink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def committed(self, source_id: str) -> int:
        """Frames committed for a source (0 if unknown)."""
        if source_id in self.root:
            return int(dict(self.root[source_id].attrs.get("status", {})).get("frames_written", 0))
        return 0

    def source(self, source_id: str, info: dict, size: tuple[int, int], class_names: list[str],
               palette: np.ndarray | None = None, *, embedding_dim: int, tracker=None) -> SourceWriter:
        """The writer of one source: created (arrays of ``size`` (H, W), ``class_names``, instance
        embeddings of ``embedding_dim``) or, in a resumed store, continued from its commit marker."""
        H, W = int(size[0]), int(size[1])
        g = self.root[source_id] if source_id in self.root else None
        if g is not None and self.committed(source_id) == 0 and missing_arrays(g):
            del self.root[source_id]  # a group whose creation was interrupted, nothing committed: ours to redo
            g = None
        if g is None:
            try:
                g = self._create_source(source_id, info, H, W, class_names, palette, embedding_dim)
            except OSError as exc:
                raise SinkWriteError(f"cannot create source {source_id} in the store: {exc.strerror or exc} "
                                     f"(errno {exc.errno})") from None
        else:
            part = g["part"]
            if part.shape[1:] != (H, W):
                raise SinkError(f"cannot resume source {source_id}: stored size {part.shape[1:]} != {(H, W)}")
            st = dict(g.attrs.get("status", {}))
            if not st.get("complete"):  # a source being continued: its earlier errors are history
                st.update(state="running", errors=[], previous_errors=st.get("errors") or [])
                g.attrs["status"] = st
        w = SourceWriter(g, self.chunk_frames, on_commit=self.lock.heartbeat, on_write_error=self._release_reserve,
                         tracker=tracker, commit_frames=self.commit_frames)
        self.writers[source_id] = w
        return w

    def _create_source(self, source_id: str, info: dict, H: int, W: int, class_names: list[str], palette, dim: int):
        return create_source_group(self.root, source_id, info, (H, W), class_names, palette, dim,
                                   chunk_frames=self.chunk_frames, compressors=_compressors(self.compressor))

    def any_committed(self) -> bool:
        return any(self.committed(sid) > 0 for sid in group_ids(self.path))

    def close(self, *, discard_if_empty: bool = False) -> None:
        """Flush every writer and release the lock. ``discard_if_empty``: a store this sink created in
        which no frame was committed is removed again (an interrupted start leaves no store)."""
        try:
            for w in self.writers.values():
                try:
                    w.flush()
                except SinkWriteError as exc:
                    log.error("%s: %s", self.path, exc)
            self.writers.clear()
        finally:
            self._release_reserve()
            discard = False
            if discard_if_empty and (self.created or self.was_empty_dir):
                try:
                    discard = not self.any_committed()
                except Exception:  # noqa: BLE001
                    discard = False
            if discard:
                for entry in list(self.path.iterdir()):
                    if entry.name == ".streamparse.lock":
                        continue
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
            self.lock.release()
            if discard and self.created:
                try:
                    os.rmdir(self.path)
                except OSError:
                    pass
