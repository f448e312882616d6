"""Reading schema-v2 stores for tracking: per-frame tables and label maps (``streamparse track``,
``eval-tracks``, ``bench track``); ``streamparse.tracking.write`` writes tracks back.

Only committed data is read: frames < ``status.frames_written``, rows < ``status.instances_written``,
candidates < ``status.candidates_written``. Tracking reads the detected people only: rows with
``inst_origin`` 0 (a frame's first rows) and their pixels; rows a tracker added (recovered,
interpolated) are its output, and re-tracking recomputes them. A v2 store from before ``inst_origin``
reads as all detected, without candidates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from streamparse.store.schema import CAND_TABLE, SCHEMA_VERSION

TABLE = ("inst_id", "inst_score", "inst_bbox", "inst_area", "inst_embedding", "inst_part_area", "inst_part_rgb")


class StoreError(ValueError):
    """A store that cannot be used here; the message is one line naming the problem."""


def writer_busy(path: str | Path) -> str | None:
    """Who holds the store's writer lock (a live process, ``streamparse.store.lock.WriterLock``), else None."""
    from streamparse.store.lock import WriterLock

    return WriterLock(path).busy(include_self=True)


def open_store(path: str | Path, mode: str = "r"):
    """The store's root group; ``StoreError`` unless it is a streamparse schema-v2 store."""
    import zarr

    p = Path(path)
    if not (p / "zarr.json").is_file():
        raise StoreError(f"{p} is not a zarr v3 store")
    root = zarr.open_group(str(p), mode=mode, zarr_format=3)
    ver = root.attrs.get("streamparse_schema_version")
    if ver is None:
        raise StoreError(f"{p} is not a streamparse store (no streamparse_schema_version)")
    if ver != SCHEMA_VERSION:
        raise StoreError(f"{p} is a schema v{ver} store without tracks (tracking needs schema v{SCHEMA_VERSION}: rerun it with this version)")
    return root


def source_ids(root) -> list[str]:
    """The source groups of a local store (read from the folder: the writer's lock file is no zarr node)."""
    from streamparse.store.check import group_ids

    return group_ids(Path(str(root.store_path.store.root)))


def committed(group) -> tuple[int, int]:
    st = dict(group.attrs.get("status", {}))
    return int(st.get("frames_written", 0)), int(st.get("instances_written", 0))


def read_tables(group) -> dict[str, np.ndarray]:
    """The committed per-frame, per-instance and candidate arrays (no label maps). ``inst_origin`` is
    zeros and the candidate table empty in a store without them; ``det_count`` (T,) counts each frame's
    detected rows."""
    t, n = committed(group)
    out = {name: group[name][:t] for name in ("frame_index", "time", "segment", "inst_offset")}
    for name in (*TABLE, "inst_track"):
        out[name] = group[name][:n]
    out["inst_origin"] = group["inst_origin"][:n] if "inst_origin" in group else np.zeros(n, np.uint8)
    out["inst_offset"] = np.append(out["inst_offset"], n).astype(np.int64)
    counts = np.diff(out["inst_offset"])
    frame = np.repeat(np.arange(t), counts)
    out["det_count"] = np.bincount(frame[out["inst_origin"] == 0], minlength=t).astype(np.int64)
    nc = int(dict(group.attrs.get("status", {})).get("candidates_written", 0))
    has_cand = "cand_offset" in group and "cand_instance" in group
    out["cand_offset"] = np.append(group["cand_offset"][:t], nc).astype(np.int64) if has_cand else np.zeros(t + 1, np.int64)
    for name in CAND_TABLE:
        out[name] = group[name][:nc] if has_cand else None
    return out


def detected_maps(inst: np.ndarray, det_count: np.ndarray) -> np.ndarray:
    """Instance maps (B,...) of frames with ``det_count`` (B,) detected people: the other ids set to 0."""
    return np.where(inst <= np.asarray(det_count).reshape(-1, *([1] * (inst.ndim - 1))), inst, 0).astype(inst.dtype)


def iter_frames(group, tables: dict | None = None, chunk: int = 64, grid: int | None = None) -> Iterator[dict]:
    """Per committed frame, ``Tracker.update``'s keyword arguments: the detected people's ``instance`` (H,W)
    uint16 and table rows, the frame's candidates (``cand_instance``, ``candidates``) when it has any.
    With ``grid`` (the tracker's ``grid``) the maps come sampled on that grid, with ``hw``: what a
    whole source in memory needs."""
    from streamparse.tracking.cues import grid_stride, sample

    tab = tables if tables is not None else read_tables(group)
    t = len(tab["frame_index"])
    off, coff, kd = tab["inst_offset"], tab["cand_offset"], tab["det_count"]
    hw = tuple(group["instance"].shape[1:])
    s = grid_stride(hw, grid) if grid else 1
    for c0 in range(0, t, chunk):
        c1 = min(t, c0 + chunk)
        maps = detected_maps(sample(group["instance"][c0:c1], s), kd[c0:c1])
        cmaps = sample(group["cand_instance"][c0:c1], s) if coff[c1] > coff[c0] else None
        for j, lab in enumerate(maps):
            f = c0 + j
            a = int(off[f])
            fr = {"instance": lab, **{name: tab[name][a:a + int(kd[f])] for name in TABLE},
                  "frame_index": int(tab["frame_index"][f]), "time": float(tab["time"][f]), "segment": int(tab["segment"][f])}
            if coff[f + 1] > coff[f]:
                fr["cand_instance"] = cmaps[j]
                fr["candidates"] = {name: tab[name][coff[f]:coff[f + 1]] for name in CAND_TABLE}
            if grid:
                fr["hw"] = hw
            yield fr


def run_tracker(group, tracker, tables: dict | None = None) -> np.ndarray:
    """Feed every committed frame of a source to ``tracker`` in order; returns inst_track (N,) uint32 of
    the detected rows (candidates are passed; what the tracker recovered is in ``tracker.recovered``
    after each frame: ``streamparse.tracking.offline.online_plan`` keeps it)."""
    tab = tables if tables is not None else read_tables(group)
    out = [tracker.update(**fr) for fr in iter_frames(group, tab)]
    return np.concatenate(out).astype(np.uint32) if out else np.zeros(0, np.uint32)
