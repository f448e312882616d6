"""ZarrSink: writes schema v2 (see README "Output") -- one zarr v3 group per run, one subgroup per source.

Writes are chunk-aligned along time: results are buffered (and reordered by their frame sequence
number) until ``chunk_frames`` consecutive frames are ready, then written as whole chunks; only
after the data is written is the source's ``status.frames_written`` attribute advanced (the commit
marker). zarr's local store writes every file atomically (temporary file + rename), so a crash or a
full disk leaves at most data past the commit marker, which ``resume`` truncates away.

Safety (README "Safety of outputs"): the store path goes through ``outputs.prepare_output``; one
``WriterLock`` per store; ``--overwrite`` clears only a streamparse store; ``resume`` verifies the
committed data first (``verify_store``) and refuses a damaged store; a failed write (ENOSPC, EIO, a
permission lost) stops that source with ``state="error"`` and the OS error in ``status.errors``
(a small reserve file is given back to the file system first, so the status can still be written).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np

from streamparse.store.lock import WriterLock
from streamparse.store.outputs import RESERVE_NAME, OutputError, clear_store, prepare_output
from streamparse.store.ome import ome_image_label
from streamparse.store.schema import PER_FRAME, PER_INSTANCE, SCHEMA_VERSION, inst_dims
from streamparse.store.check import group_ids, uncommitted_notes, verify_store
from streamparse.structures import ParsingBatch

log = logging.getLogger(__name__)

RESERVE_BYTES = 256 * 1024
_ARRAY_CONFIG = {"write_empty_chunks": True}  # every chunk is stored: a missing chunk file means damage


class SinkError(RuntimeError):
    pass


class SinkWriteError(SinkError):
    """A write to the store failed (disk full, I/O error, permission); the source's commit marker still
    names the last frame whose arrays were all written."""


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


class SourceWriter:
    """Writes one source's arrays. Batches come in as ``add_batch(seq, ParsingBatch)`` -- ``seq`` = the
    row of the batch's first frame (0, 1, 2, ... per frame in emission order; frame_index may have
    gaps for live drops), in any order; they are written in row order, in runs that end on a chunk
    boundary (whole chunks), and only then is the commit marker advanced.

    ``tracker`` (optional, e.g. ``streamparse.tracking.tracker.Tracker``): assigns ``inst_track`` to each run of
    frames in row order just before it is written; its ``state()`` is stored with every commit marker
    (``status.tracker_state``), and a resumed writer continues from the stored state (``from_state``), so
    a resumed run assigns the same ids as an uninterrupted one."""

    def __init__(self, group, chunk_frames: int, on_commit=None, on_write_error=None, tracker=None):
        self.g = group
        self.chunk = int(chunk_frames)
        self.pending: dict[int, ParsingBatch] = {}
        self._arrays = {name: group[name].with_config(_ARRAY_CONFIG) for name in ("part", "instance", *PER_FRAME, *PER_INSTANCE)}
        st = dict(self.g.attrs.get("status", {}))
        self.committed = int(st.get("frames_written", 0))
        self.n_inst = int(st.get("instances_written", 0))
        self.next_seq = self.committed
        self.failed: str | None = None
        self._on_commit = on_commit
        self._on_write_error = on_write_error
        self.tracker = tracker
        if tracker is not None and self.committed and st.get("tracker_state"):
            self.tracker = type(tracker).from_state(st["tracker_state"])
        self._truncate(self.committed, self.n_inst)

    def _truncate(self, t: int, n: int) -> None:
        for name in ("part", "instance", *PER_FRAME):
            a = self._arrays[name]
            if a.shape[0] != t:
                a.resize((t, *a.shape[1:]))
        for name in PER_INSTANCE:
            a = self._arrays[name]
            if a.shape[0] != n:
                a.resize((n, *a.shape[1:]))

    def add_batch(self, seq: int, batch: ParsingBatch) -> None:
        """Queue ``batch`` (its frames are rows seq .. seq + len - 1) and write every whole chunk ready."""
        if self.failed:
            raise SinkWriteError(self.failed)
        if not isinstance(batch, ParsingBatch):
            raise TypeError(f"add_batch takes a ParsingBatch, got {type(batch).__name__}")
        for name in ("part", "inst_embedding", "inst_part_area", "inst_part_rgb"):
            got, want = getattr(batch, name).shape[1:], self._arrays[name].shape[1:]
            if got != want:
                raise SinkError(f"{self.g.path}: {name} of shape (., {', '.join(map(str, got))}) does not fit the store's "
                                f"(., {', '.join(map(str, want))})")
        if seq < self.next_seq or seq in self.pending:
            raise SinkError(f"frame sequence {seq} delivered twice (next expected {self.next_seq})")
        if len(batch):
            self.pending[seq] = batch
        self._drain(final=False)

    def _ready(self) -> list[int]:
        """Rows of the pending batches that continue the written ones without a gap, in order."""
        run, s = [], self.next_seq
        while s in self.pending:
            run.append(s)
            s += len(self.pending[s])
        return run

    def _drain(self, final: bool) -> None:
        run = self._ready()
        total = sum(len(self.pending[s]) for s in run)
        if not total:
            return
        # whole chunks: write up to the last chunk boundary reachable (all of it when final)
        end = self.committed + total
        stop = end if final else (end // self.chunk) * self.chunk
        n = stop - self.committed
        if n <= 0:
            return
        data = ParsingBatch.concat([self.pending.pop(s) for s in run])
        if n < len(data):
            self.pending[self.next_seq + n] = data.slice(n, len(data))
            data = data.slice(0, n)
        if self.tracker is not None:  # in row order, right before the rows are written
            data.inst_track = self.tracker.update_batch(data.to_dict())
        self._write(data)

    def flush(self) -> None:
        if self.failed:
            return
        self._drain(final=True)

    @property
    def backlog(self) -> int:
        return sum(len(b) for b in self.pending.values())

    def _write(self, batch: ParsingBatch) -> None:
        t0, t1 = self.committed, self.committed + len(batch)
        try:
            self._write_arrays(batch, t0, t1)
        except OSError as exc:
            self.failed = (f"write failed at frames {t0}-{t1 - 1}: {exc.strerror or exc} (errno {exc.errno}); "
                           f"frames 0-{t0 - 1} are committed")
            self.pending.clear()
            if self._on_write_error is not None:
                self._on_write_error()
            try:
                self.set_status(state="error", complete=False, errors=[*self.errors(), self.failed])
            except OSError as exc2:
                log.error("%s: cannot record the write error in the store either: %s", self.g.path, exc2)
            raise SinkWriteError(self.failed) from None

    def _write_arrays(self, b: ParsingBatch, t0: int, t1: int) -> None:
        a = self._arrays
        i0, i1 = self.n_inst, self.n_inst + b.num_instances
        grow = [(a[name], t1) for name in ("part", "instance", *PER_FRAME)]
        writes = [(a["part"], t0, b.part), (a["instance"], t0, b.instance), (a["inst_offset"], t0, i0 + b.inst_offset[:-1])]
        writes += [(a[name], t0, getattr(b, name)) for name in ("frame_index", "pts", "time", "segment", "wallclock")]
        if i1 > i0:
            grow += [(a[name], i1) for name in PER_INSTANCE]
            writes += [(a[name], i0, getattr(b, name)) for name in PER_INSTANCE]
        _grow_and_write(grow, writes)
        marker = {"frames_written": t1, "instances_written": i1}
        if self.tracker is not None:
            marker["tracker_state"] = self.tracker.state()
        self.set_status(**marker)  # the commit marker, after the data
        self.committed, self.n_inst, self.next_seq = t1, i1, self.next_seq + (t1 - t0)
        if self._on_commit is not None:
            self._on_commit()

    def errors(self) -> list:
        return list(dict(self.g.attrs.get("status", {})).get("errors", []) or [])

    def set_status(self, **kw) -> None:
        st = dict(self.g.attrs.get("status", {}))
        st.update(kw)
        st["updated"] = time.time()
        self.g.attrs["status"] = st


def _grow_and_write(grow: list, writes: list) -> None:
    """Every array of a chunk at once: ``grow`` [(array, new length)], then ``writes`` [(array, first row,
    values)], each step in one pass of zarr's event loop (one wait instead of one per array). The first
    failure is raised once every write has ended, so the commit marker that follows is never ahead of the
    data."""
    from zarr.core.sync import sync

    async def go() -> None:
        for step in ([a.async_array.resize((n, *a.shape[1:])) for a, n in grow],
                     [a.async_array.setitem(slice(r, r + len(v)), v) for a, r, v in writes]):
            for res in await asyncio.gather(*step, return_exceptions=True):
                if isinstance(res, BaseException):
                    raise res

    sync(go())


def _check_path(path: Path, mode: str, lock: WriterLock):
    """The refusals of opening ``path`` in ``mode`` that touch nothing: a live writer, then the output rules."""
    holder = lock.busy() if path.is_dir() and not path.is_symlink() else None
    if holder:  # checked first: a store being written is refused in every mode
        raise SinkError(f"{path} is being written by another process ({holder}); wait for it to finish or stop it")
    try:
        return prepare_output(path, mode=mode, kind="store")
    except OutputError as exc:
        raise SinkError(str(exc)) from None


def _verify_resumable(path: Path, root_attrs: dict):
    """A store ``--resume`` may continue: this schema version, undamaged, written for the same model."""
    rep = verify_store(path)
    if rep.schema_version != SCHEMA_VERSION:
        raise SinkError(f"cannot resume {path}: it is a schema v{rep.schema_version} store, this streamparse "
                        f"writes v{SCHEMA_VERSION} (write a new store)")
    problem = rep.first_problem()
    if problem:
        raise SinkError(f"cannot resume {path}: the store is damaged: {problem} (verify_store lists all; "
                        "--overwrite replaces it)")
    import zarr

    check_compatible(path, dict(zarr.open_group(str(path), mode="r").attrs), root_attrs)
    return rep


def check_store(path: str | Path, *, mode: str, root_attrs: dict) -> None:
    """Raise ``SinkError`` (one line) for what opening ``path`` in ``mode`` would refuse, touching nothing: a
    driver calls it before it starts Ray, the engine task opens the store for real."""
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
                 chunk_frames: int = 16, compressor: str = "zstd", store=None, lock_token: str | None = None):
        import zarr

        self.path = Path(path)
        self.chunk_frames = int(chunk_frames)
        self.compressor = compressor
        _compressors(compressor)  # a bad name fails before anything is created
        if mode not in ("create", "overwrite", "resume"):
            raise ValueError(f"mode must be create, overwrite or resume, got {mode!r}")
        self.lock = WriterLock(self.path, token=lock_token, supersede=lock_token is not None)
        state = _check_path(self.path, mode, self.lock)
        self.created = state.what == "absent"  # we made the path: we may remove it again if nothing is committed
        self.was_empty_dir = state.what == "empty-dir"
        try:
            self.lock.acquire()
        except OutputError as exc:
            raise SinkError(str(exc)) from None
        self.resumed = mode == "resume" and state.what == "store"
        self.notes: list[str] = []
        try:
            first = json.loads(json.dumps({**(root_attrs or {}), "streamparse_schema_version": SCHEMA_VERSION}))
            if self.resumed:
                self._check_resumable(root_attrs or {})
                self.root = zarr.open_group(store if store is not None else str(self.path), mode="r+")
                if root_attrs:
                    self.root.update_attributes(first)  # one write of zarr.json
            else:
                if state.what == "store":  # overwrite: ours (checked), cleared under our lock
                    clear_store(self.path)
                # born with every root attribute, in ONE write of zarr.json: a writer killed here leaves
                # a store that is whole or absent (attrs.update would rewrite it once per key)
                self.root = zarr.create_group(store=store if store is not None else str(self.path), zarr_format=3,
                                              overwrite=False, attributes=first)
        except BaseException:
            self.lock.release()
            raise
        self._reserve()
        self.writers: dict[str, SourceWriter] = {}

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
        if g is not None and self.committed(source_id) == 0 and any(n not in g for n in ("part", "instance", *PER_FRAME, *PER_INSTANCE)):
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
                         tracker=tracker)
        self.writers[source_id] = w
        return w

    def _create_source(self, source_id: str, info: dict, H: int, W: int, class_names: list[str], palette, dim: int):
        g = self.root.create_group(source_id)
        comp = _compressors(self.compressor)
        ch = self.chunk_frames
        flag_values = list(range(len(class_names)))
        g.create_array("part", shape=(0, H, W), chunks=(ch, H, W), dtype="uint8", fill_value=0, compressors=comp,
                       dimension_names=("time", "y", "x"),
                       attributes={"flag_values": flag_values, "flag_meanings": " ".join(n.replace(" ", "_") for n in class_names),
                                   "class_names": list(class_names),
                                   "palette": (np.asarray(palette).tolist() if palette is not None else None),
                                   "long_name": "part category per pixel (0 = background)",
                                   "ome": ome_image_label(class_names, palette)})
        g.create_array("instance", shape=(0, H, W), chunks=(ch, H, W), dtype="uint16", fill_value=0, compressors=comp,
                       dimension_names=("time", "y", "x"),
                       attributes={"long_name": "person id per pixel (0 = background, 1..K)"})
        for name, dt in PER_FRAME.items():
            g.create_array(name, shape=(0,), chunks=(max(1024, ch),), dtype=dt, fill_value=0, dimension_names=("time",))
        n_cls = len(class_names)
        inner = {"inst_bbox": (4,), "inst_embedding": (int(dim),), "inst_part_area": (n_cls,), "inst_part_rgb": (n_cls, 3)}
        for name, dt in PER_INSTANCE.items():
            rest = inner.get(name, ())
            g.create_array(name, shape=(0, *rest), chunks=(4096, *rest), dtype=dt, fill_value=0, dimension_names=inst_dims(name))
        g.attrs["source"] = json.loads(json.dumps(info))
        g.attrs["status"] = {"state": "running", "complete": False, "frames_written": 0, "instances_written": 0,
                             "dropped": 0, "errors": []}
        return g

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
