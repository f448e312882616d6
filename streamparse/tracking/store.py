"""Reading schema-v2 stores for tracking: per-frame tables and label maps, and the one writer of
``inst_track`` (``streamparse track``, ``eval-tracks``, ``bench track``).

Only committed data is read: frames < ``status.frames_written``, rows < ``status.instances_written``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from streamparse.store.schema import SCHEMA_VERSION
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
    """The committed per-frame and per-instance arrays (no label maps)."""
    t, n = committed(group)
    out = {name: group[name][:t] for name in ("frame_index", "time", "segment", "inst_offset")}
    for name in (*TABLE, "inst_track"):
        out[name] = group[name][:n]
    out["inst_offset"] = np.append(out["inst_offset"], n).astype(np.int64)
    return out


def iter_frames(group, tables: dict | None = None, chunk: int = 64) -> Iterator[dict]:
    """Per committed frame: ``instance`` (H,W) uint16 plus that frame's rows of the table."""
    tab = tables if tables is not None else read_tables(group)
    t = len(tab["frame_index"])
    off = tab["inst_offset"]
    inst = group["instance"]
    for c0 in range(0, t, chunk):
        maps = inst[c0 : min(t, c0 + chunk)]
        for j, lab in enumerate(maps):
            f = c0 + j
            a, b = int(off[f]), int(off[f + 1])
            row = {name: tab[name][a:b] for name in TABLE}
            yield {"instance": lab, "frame_index": int(tab["frame_index"][f]), "time": float(tab["time"][f]),
                   "segment": int(tab["segment"][f]), **row}


def run_tracker(group, tracker, tables: dict | None = None) -> np.ndarray:
    """Feed every committed frame of a source to ``tracker`` in order; returns inst_track (N,) uint32."""
    tab = tables if tables is not None else read_tables(group)
    out = [tracker.update(**fr) for fr in iter_frames(group, tab)]
    return np.concatenate(out).astype(np.uint32) if out else np.zeros(0, np.uint32)
