"""``SourceWriter``: one source's arrays in a schema v2 store (see README "Output"), and the errors of
writing a store.

Results are buffered (and reordered by their frame sequence number) until ``chunk_frames``
consecutive frames are ready, then written as whole chunks; only after the data is written is the
source's ``status.frames_written`` attribute advanced (the commit marker). The writer is the same for
a local store (``streamparse.store.sink.ZarrSink``) and one on object storage
(``streamparse.store.remote.RemoteZarrSink``); both import it from here.
"""

from __future__ import annotations

import asyncio
import logging
import time

from streamparse.store.schema import PER_FRAME, PER_INSTANCE
from streamparse.structures import ParsingBatch

log = logging.getLogger(__name__)

_ARRAY_CONFIG = {"write_empty_chunks": True}  # every chunk is stored: a missing chunk file means damage


class SinkError(RuntimeError):
    """A store may not be opened, continued or written as asked (one line for the user)."""


class SinkWriteError(SinkError):
    """A write to the store failed (disk full, I/O error, permission); the source's commit marker still
    names the last frame whose arrays were all written."""


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
        for step in (lambda: [a.async_array.resize((n, *a.shape[1:])) for a, n in grow],
                     lambda: [a.async_array.setitem(slice(r, r + len(v)), v) for a, r, v in writes]):
            for res in await asyncio.gather(*step(), return_exceptions=True):  # (made only when the step runs)
                if isinstance(res, BaseException):
                    raise res

    sync(go())
