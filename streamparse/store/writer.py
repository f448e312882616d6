"""``SourceWriter``: one source's arrays in a schema v2 store (see README "Output"), and the errors of
writing a store.

Results are buffered (and reordered by their frame sequence number) until ``commit_frames``
consecutive frames are ready (at least every ``commit_s`` seconds), then written as whole chunks of
``chunk_frames``. The first rows a writer gets are written at once, whatever their number: a reader
sees the first results after one batch (the next write completes their chunk). Only after the data is
written is the source's ``status.frames_written`` attribute advanced (the commit marker). Writing
several chunks at a time costs zarr's per-array work (a resize and a read-modify-write of every
table's last chunk, about 1 ms per array) once instead of once per chunk; the stored bytes are the
same either way. The writer is the same for
a local store (``streamparse.store.sink.ZarrSink``) and one on object storage
(``streamparse.store.remote.RemoteZarrSink``); both import it from here.
"""

from __future__ import annotations

import logging
import time

from streamparse.store.arrays import ALL_ARRAYS, missing_arrays, truncate, write_rows
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

    ``tracker`` (optional, e.g. ``streamparse.tracking.tracker.Tracker``): ``track_batch`` gives each run of
    frames its ``inst_track`` (and the rows the tracker adds: people it recovered from the frames' low-score
    candidates) in row order just before it is written; its ``state()`` is stored with every commit marker
    (``status.tracker_state``), and a resumed writer continues from the stored state (``from_state``), so
    a resumed run assigns the same ids as an uninterrupted one."""

    def __init__(self, group, chunk_frames: int, on_commit=None, on_write_error=None, tracker=None, *,
                 commit_frames: int = 0, commit_s: float = 2.0):
        self.g = group
        self.chunk = int(chunk_frames)
        self.commit_frames = max(int(commit_frames), self.chunk)  # frames per write (whole chunks), at least one chunk
        self.commit_s = float(commit_s)
        self._last_write: float | None = None  # monotonic time of this writer's last write (None: none yet)
        self.pending: dict[int, ParsingBatch] = {}
        missing = missing_arrays(group)
        if missing:
            raise SinkError(f"cannot continue {group.path}: it was written by an earlier streamparse without {missing[0]} "
                            "(write a new store)")
        self._arrays = {name: group[name].with_config(_ARRAY_CONFIG) for name in ALL_ARRAYS}
        st = dict(self.g.attrs.get("status", {}))
        self.committed = int(st.get("frames_written", 0))
        self.n_inst = int(st.get("instances_written", 0))
        self.n_cand = int(st.get("candidates_written", 0))
        self.next_seq = self.committed
        self.failed: str | None = None
        self._on_commit = on_commit
        self._on_write_error = on_write_error
        self.tracker = tracker
        if tracker is not None and self.committed and st.get("tracker_state"):
            self.tracker = type(tracker).from_state(st["tracker_state"])
        truncate(self._arrays, self.committed, self.n_inst, self.n_cand)

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
        # whole chunks: write up to the last chunk boundary reachable (all of it when final, and the first
        # rows this writer gets: a reader sees the first results at once; their chunk is rewritten whole later)
        end = self.committed + total
        stop = end if final or self._last_write is None else (end // self.chunk) * self.chunk
        n = stop - self.committed
        if n <= 0:
            return
        # (after the first write, which may end mid-chunk, a group ends on the commit_frames boundary)
        if not final and n < self.commit_frames - self.committed % self.chunk and self._last_write is not None \
                and time.monotonic() - self._last_write < self.commit_s:
            return  # wait for more
        data = ParsingBatch.concat([self.pending.pop(s) for s in run])
        if n < len(data):
            self.pending[self.next_seq + n] = data.slice(n, len(data))
            data = data.slice(0, n)
        if self.tracker is not None:  # in row order, right before the rows are written (and any it adds)
            data = self.tracker.track_batch(data)
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
        self._last_write = time.monotonic()
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
        i1, c1 = write_rows(self._arrays, b, t0, self.n_inst, self.n_cand)
        marker = {"frames_written": t1, "instances_written": i1, "candidates_written": c1}
        if self.tracker is not None:
            marker["tracker_state"] = self.tracker.state()
        self.set_status(**marker)  # the commit marker, after the data
        self.committed, self.n_inst, self.n_cand, self.next_seq = t1, i1, c1, self.next_seq + (t1 - t0)
        if self._on_commit is not None:
            self._on_commit()

    def errors(self) -> list:
        return list(dict(self.g.attrs.get("status", {})).get("errors", []) or [])

    def set_status(self, **kw) -> None:
        st = dict(self.g.attrs.get("status", {}))
        st.update(kw)
        st["updated"] = time.time()
        self.g.attrs["status"] = st
