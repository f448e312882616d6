"""``verify_store``: read a streamparse store and say whether it can be trusted.

Checks, per source group: the commit marker (``status.frames_written`` / ``instances_written``) against
the arrays' lengths; that every chunk holding committed frames or instances exists and decodes (the
writer stores every chunk, empty ones too, so a missing chunk file is damage, not an all-background
chunk); that the instance table's offsets are monotonic and within the committed rows, and that each
frame's instance ids are 1..K. Data past the commit marker is reported as ``uncommitted`` (a crash
leaves it; resume rewrites it), not as damage.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamparse.store.schema import MAPS, PER_FRAME, READABLE_VERSIONS, RETRACK_JOURNAL, V2_LATER, instance_arrays, rows_axis


@dataclass
class SourceReport:
    source_id: str
    frames_written: int = 0
    instances_written: int = 0
    state: str = ""
    problems: list[str] = field(default_factory=list)  # damage inside the committed range
    uncommitted_frames: int = 0  # rows past the commit marker (rewritten on resume)
    uncommitted_instances: int = 0
    incomplete: bool = False  # the group's creation was cut short (nothing committed; resume redoes it)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class StoreReport:
    path: str
    schema_version: object = None
    problems: list[str] = field(default_factory=list)  # store-level damage
    sources: dict[str, SourceReport] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems and all(s.ok for s in self.sources.values())

    def first_problem(self) -> str | None:
        if self.problems:
            return self.problems[0]
        for s in self.sources.values():
            if s.problems:
                return f"source {s.source_id}: {s.problems[0]}"
        return None

    def to_dict(self) -> dict:
        return {"path": self.path, "schema_version": self.schema_version, "ok": self.ok, "problems": self.problems,
                "sources": {k: {**v.__dict__, "ok": v.ok} for k, v in self.sources.items()}}


def group_ids(path: Path) -> list[str]:
    out = []
    for d in sorted(p for p in path.iterdir() if p.is_dir()):
        try:
            meta = json.loads((d / "zarr.json").read_text())
        except (OSError, ValueError):
            continue
        if meta.get("node_type") == "group":
            out.append(d.name)
    return out


def _chunk_size(store, store_root: Path | None, full_key: str, key: str) -> int | None:
    """Bytes of a chunk, None when it does not exist."""
    if store_root is not None:
        f = store_root / key
        return f.stat().st_size if f.is_file() else None
    from zarr.core.sync import sync

    try:
        return int(sync(store.getsize(full_key)))
    except FileNotFoundError:
        return None


def _check_array(arr, name: str, n: int, deep: bool, rep: SourceReport) -> None:
    """Chunks of ``arr`` covering rows [0, n) exist and (``deep``) decode (an array with a zero-length
    axis, e.g. embeddings of size 0, holds no chunk)."""
    if n == 0 or 0 in arr.shape[1:]:
        return
    c0 = arr.chunks[0]
    enc = arr.metadata.chunk_key_encoding
    store = arr.store_path.store
    local = hasattr(store, "root")  # a LocalStore: look at the files; else ask the store (object storage)
    store_root = Path(str(store.root)) / arr.store_path.path if local else None
    tail = (0,) * (arr.ndim - 1)
    for i in range(math.ceil(n / c0)):
        key = enc.encode_chunk_key((i, *tail))
        lo, hi = i * c0, min(n, (i + 1) * c0)
        size = _chunk_size(store, store_root, f"{arr.store_path.path}/{key}".lstrip("/"), key)
        if size is None:
            rep.problems.append(f"chunk {name}/{key} (rows {lo}-{hi - 1}) is missing")
            return
        if size == 0:
            rep.problems.append(f"chunk {name}/{key} (rows {lo}-{hi - 1}) is empty (truncated)")
            return
        if deep:
            try:
                arr[lo:hi]
            except Exception as exc:  # noqa: BLE001 - any decode failure is damage
                rep.problems.append(f"chunk {name}/{key} (rows {lo}-{hi - 1}) cannot be read "
                                    f"(truncated or corrupt: {type(exc).__name__})")
                return


def verify_source(group, sid: str, *, deep: bool = True, version: int = 2) -> SourceReport:
    st = dict(group.attrs.get("status", {}) or {})
    rep = SourceReport(sid, int(st.get("frames_written", 0) or 0), int(st.get("instances_written", 0) or 0),
                       str(st.get("state", "")))
    t, n = rep.frames_written, rep.instances_written
    rows_of = {"frames": t, "instances": n, "candidates": int(st.get("candidates_written", 0) or 0)}
    names = [*MAPS, *PER_FRAME, *instance_arrays(version)]
    arrays = {name: group[name] for name in (V2_LATER if version >= 2 else ()) if name in group}  # optional
    for name in names:
        try:
            arrays[name] = group[name]
        except KeyError:
            if t or n:
                rep.problems.append(f"array {name} is missing")
            else:  # its creation was cut short and nothing was committed: resume makes it again
                rep.incomplete = True
            return rep
    for name, a in arrays.items():
        axis = rows_axis(name)
        rows = rows_of[axis]
        if a.shape[0] < rows:
            rep.problems.append(f"array {name} has {a.shape[0]} rows, the commit marker says {rows}")
        elif a.shape[0] > rows:
            if axis == "frames":
                rep.uncommitted_frames = max(rep.uncommitted_frames, a.shape[0] - rows)
            else:
                rep.uncommitted_instances = max(rep.uncommitted_instances, a.shape[0] - rows)
    if rep.problems:
        return rep
    for name, a in arrays.items():
        _check_array(a, name, rows_of[rows_axis(name)], deep, rep)
        if rep.problems:
            return rep
    if t:
        off = np.asarray(arrays["inst_offset"][:t], dtype=np.int64)
        if off[0] != 0 or np.any(np.diff(off) < 0) or off[-1] > n:
            rep.problems.append(f"instance table offsets are not monotonic within 0..{n}")
            return rep
        if deep and n:
            ids = np.asarray(arrays["inst_id"][:n], dtype=np.int64)
            counts = np.diff(np.append(off, n))
            expect = np.arange(n) - np.repeat(off, counts) + 1
            if not np.array_equal(ids, expect):
                bad = int(np.nonzero(ids != expect)[0][0])
                rep.problems.append(f"instance ids of row {bad} are not 1..K per frame")
    return rep


def verify_store(path: str | Path, *, deep: bool = True) -> StoreReport:
    """Check a store (see the module docstring). ``deep``: decode every committed chunk (else only check
    that the chunk files exist and are non-empty). Never modifies the store."""
    import zarr

    p = Path(path)
    rep = StoreReport(str(p))
    if not (p / "zarr.json").is_file():
        rep.problems.append("not a zarr store (no zarr.json)")
        return rep
    try:
        root = zarr.open_group(str(p), mode="r")
    except Exception as exc:  # noqa: BLE001
        rep.problems.append(f"root metadata cannot be read ({type(exc).__name__})")
        return rep
    ver = _readable_version(root, rep)
    if ver is None:
        return rep
    rep = _verify_groups(root, group_ids(p), rep, ver, deep)
    for sid, src in rep.sources.items():
        if (p / sid / RETRACK_JOURNAL).is_file():
            src.problems.insert(0, "a `streamparse track` was interrupted while rewriting it; run `streamparse track` "
                                   "again (it finishes the rewrite first)")
    return rep


def _readable_version(root, rep: StoreReport):
    """The store's schema version, recorded in ``rep``; None (and the problem in ``rep``) when it is
    absent or not one this streamparse reads."""
    ver = root.attrs.get("streamparse_schema_version")
    rep.schema_version = ver
    if ver is None:
        rep.problems.append("not a streamparse store (no streamparse_schema_version)")
        return None
    if ver not in READABLE_VERSIONS:
        rep.problems.append(f"schema v{ver} is not one this streamparse reads (v{', v'.join(map(str, READABLE_VERSIONS))})")
        return None
    return ver


def uncommitted_notes(label: str, rep: StoreReport) -> list[str]:
    """One line per source of a verified store with frames or instance rows past its commit marker
    (what a resume rewrites)."""
    return [f"{label}/{s.source_id}: {s.uncommitted_frames} frame(s) past the commit marker "
            f"(frame {s.frames_written}) were not committed; rewriting from the marker"
            for s in rep.sources.values() if s.uncommitted_frames or s.uncommitted_instances]


def _verify_groups(root, sids: list[str], rep: StoreReport, ver, deep: bool) -> StoreReport:
    for sid in sids:
        try:
            g = root[sid]
        except Exception as exc:  # noqa: BLE001
            rep.sources[sid] = SourceReport(sid, problems=[f"group metadata cannot be read ({type(exc).__name__})"])
            continue
        rep.sources[sid] = verify_source(g, sid, deep=deep, version=ver)
    return rep


def verify_open_store(root, label: str, *, deep: bool = True) -> StoreReport:
    """``verify_store`` of a store opened through any zarr store object (object storage: chunks are
    looked up with the store's own ``getsize``)."""
    rep = StoreReport(label)
    ver = _readable_version(root, rep)
    if ver is None:
        return rep
    try:
        sids = sorted(name for name, _ in root.groups())
    except Exception as exc:  # noqa: BLE001
        rep.problems.append(f"groups cannot be listed ({type(exc).__name__})")
        return rep
    return _verify_groups(root, sids, rep, ver, deep)
