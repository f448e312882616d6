"""A tracking ``Plan`` (``streamparse.tracking.offline``) made into rows and pixels: in memory (``apply``, for
``bench track``) and in a store (``write_plan``, for ``streamparse track``).

Each frame keeps its detected rows (their ``inst_track`` set) and gets the plan's added rows after them,
painted on background pixels (``streamparse.tracking.rows.insert_rows``): a recovered candidate's own
pixels, or an interpolated person -- the mask of the track's nearer row, moved. The store is rewritten
without ever losing the detected people: the label maps' changed chunks first (a frame's detected
people are its ids 1..K, so a rerun can always strip what a tracker added), then the table, staged as
new arrays (``<name>.next``) and swapped in by renaming, under a journal (``.streamparse-retrack.json``):
an interrupted rewrite is finished (``roll_forward``) by the next ``streamparse track``, and
``verify_store`` reports it until then.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from streamparse.store.schema import PER_INSTANCE, RETRACK_JOURNAL as JOURNAL, inst_dims
from streamparse.structures import ParsingBatch
from streamparse.tracking.rows import insert_rows
from streamparse.tracking.store import TABLE, detected_maps

_WRITE = {"write_empty_chunks": True}


class Frames:
    """Full-resolution maps and tables of a source, read chunk by chunk (the last two chunks cached):
    ``maps(f)`` = (part, detected-only instance, cand_part, cand_instance) of frame f."""

    def __init__(self, group, tables: dict, chunk: int = 16, arrays: dict | None = None):
        self.g, self.tab, self.chunk = group, tables, chunk
        self.arrays = arrays  # in memory: {"part", "instance", "cand_part", "cand_instance"} (T,H,W)
        self._cache: dict[int, tuple] = {}

    def _read(self, name: str, c0: int, c1: int) -> np.ndarray:
        if self.arrays is not None:
            return self.arrays[name][c0:c1]
        if name not in self.g:
            return np.zeros((c1 - c0, *self.g["part"].shape[1:]), np.uint8)
        return np.asarray(self.g[name][c0:c1])

    def maps(self, f: int) -> tuple:
        c = f // self.chunk
        if c not in self._cache:
            c0, c1 = c * self.chunk, min((c + 1) * self.chunk, len(self.tab["frame_index"]))
            kd = self.tab["det_count"][c0:c1]
            if len(self._cache) >= 3:  # keep the chunks nearest to this one
                del self._cache[max(self._cache, key=lambda k: (abs(k - c), k))]
            self._cache[c] = (self._read("part", c0, c1), detected_maps(self._read("instance", c0, c1), kd),
                              self._read("cand_part", c0, c1), self._read("cand_instance", c0, c1))
        return tuple(a[f - c * self.chunk] for a in self._cache[c])

    def crop(self, f: int, kind: str, j: int) -> tuple[np.ndarray, np.ndarray]:
        """(box x0, y0, x1, y1; part labels in the box, 0 = not this person) of detected row j or candidate j."""
        part, inst, cpart, cinst = self.maps(f)
        if kind == "det":
            box = self.tab["inst_bbox"][int(self.tab["inst_offset"][f]) + j]
            lab, p, v = inst, part, j + 1
        else:
            box = self.tab["cand_bbox"][int(self.tab["cand_offset"][f]) + j]
            lab, p, v = cinst, cpart, j + 1
        x0, y0, x1, y1 = (int(x) for x in box)
        return np.array([x0, y0, x1, y1]), np.where(lab[y0:y1, x0:x1] == v, p[y0:y1, x0:x1], 0).astype(np.uint8)

    def row(self, f: int, kind: str, j: int) -> dict:
        if kind == "det":
            r = int(self.tab["inst_offset"][f]) + j
            return {"embedding": self.tab["inst_embedding"][r], "part_rgb": self.tab["inst_part_rgb"][r],
                    "score": float(self.tab["inst_score"][r])}
        r = int(self.tab["cand_offset"][f]) + j
        return {"embedding": self.tab["cand_embedding"][r], "part_rgb": self.tab["cand_part_rgb"][r],
                "score": float(self.tab["cand_score"][r])}


def extra_rows(src: Frames, f: int, extra: list[dict]) -> list[dict]:
    """The plan's added rows of frame f in ``insert_rows``' form."""
    H, W = src.maps(f)[0].shape
    out = []
    for e in extra:
        if e["kind"] == "cand":
            box, crop = src.crop(f, "cand", e["index"])
            row = src.row(f, "cand", e["index"])
        else:
            sf, kind, j = e["src"]
            box, crop = src.crop(sf, kind, j)
            row = {**src.row(sf, kind, j), "score": e["score"]}
            x0, y0, x1, y1 = box + np.array([e["dx"], e["dy"], e["dx"], e["dy"]])
            a0, b0, a1, b1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
            if a0 >= a1 or b0 >= b1:
                continue
            crop = crop[b0 - y0 : b1 - y0, a0 - x0 : a1 - x0]
            box = np.array([a0, b0, a1, b1])
        out.append({"bbox": box, "crop": crop.ravel(), "score": row["score"], "embedding": row["embedding"],
                    "part_rgb": row["part_rgb"], "track": e["track"], "origin": e["origin"]})
    return out


def chunk_batch(src: Frames, plan, c0: int, c1: int) -> ParsingBatch:
    """Frames c0..c1-1 as the plan makes them: detected rows with their tracks, then the added rows."""
    tab, kd = src.tab, src.tab["det_count"]
    maps = [src.maps(f) for f in range(c0, c1)]
    rows = {k: [] for k in TABLE}
    for f in range(c0, c1):
        a = int(tab["inst_offset"][f])
        for k in TABLE:
            rows[k].append(tab[k][a:a + int(kd[f])])
    n = int(kd[c0:c1].sum())
    zeros = np.zeros(c1 - c0, np.int64)
    b = ParsingBatch(part=np.stack([np.where(m[1] > 0, m[0], 0) for m in maps]).astype(np.uint8),
                     instance=np.stack([m[1] for m in maps]), frame_index=tab["frame_index"][c0:c1], pts=zeros,
                     time=tab["time"][c0:c1], wallclock=zeros, segment=tab["segment"][c0:c1],
                     inst_offset=np.concatenate([[0], np.cumsum(kd[c0:c1])]), **{k: np.concatenate(v) for k, v in rows.items()},
                     inst_track=np.concatenate([plan.det_track[f] for f in range(c0, c1)]) if n else np.zeros(0, np.uint32))
    return insert_rows(b, [extra_rows(src, f, plan.extra[f]) for f in range(c0, c1)])


def apply(src: Frames, plan) -> ParsingBatch:
    """The whole source as the plan makes it (in memory)."""
    t = len(src.tab["frame_index"])
    return ParsingBatch.concat([chunk_batch(src, plan, c0, min(c0 + src.chunk, t)) for c0 in range(0, t, src.chunk)]) if t else None


# ------------------------------------------------------------------------------------------ the store
def _atomic_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def roll_forward(group_dir: Path, group) -> bool:
    """Finish (or clean up after) an interrupted rewrite of the source in ``group_dir``; True if one was
    found. Without a journal, staged arrays are leftovers of a rewrite that never started its swap."""
    j = group_dir / JOURNAL
    if not j.is_file():
        for p in group_dir.glob("*.next"):
            shutil.rmtree(p, ignore_errors=True)
        return False
    info = json.loads(j.read_text())
    for name in info.get("names", []):
        new, cur, old = group_dir / f"{name}.next", group_dir / name, group_dir / f"{name}.prev"
        if new.exists():
            if cur.exists():
                if old.exists():
                    shutil.rmtree(old)
                os.replace(cur, old)
            os.replace(new, cur)
    if info.get("status"):
        st = dict(group.attrs.get("status", {}))
        st.update(info["status"])
        group.attrs["status"] = st
    for name in info.get("names", []):
        shutil.rmtree(group_dir / f"{name}.prev", ignore_errors=True)
    j.unlink()
    return True


def write_plan(group, group_dir: Path, plan, chunk: int | None = None) -> dict:
    """Rewrite one source of a local store as ``plan`` says (see the module docstring). Returns counts."""
    from streamparse.tracking.store import read_tables

    tab = read_tables(group)
    t = len(tab["frame_index"])
    ch = chunk or group["part"].chunks[0]
    src = Frames(group, tab, ch)
    _atomic_json(group_dir / JOURNAL, {"phase": "maps"})
    cols = {k: [] for k in PER_INSTANCE}
    counts, origin = [], []
    for c0 in range(0, t, ch):
        c1 = min(c0 + ch, t)
        nb = chunk_batch(src, plan, c0, c1)
        if not (np.array_equal(nb.instance, group["instance"][c0:c1]) and np.array_equal(nb.part, group["part"][c0:c1])):
            for name in ("instance", "part"):  # every chunk stays stored, empty ones too (verify_store)
                group[name].with_config(_WRITE)[c0:c1] = getattr(nb, name)
        for k in cols:
            cols[k].append(getattr(nb, k))
        counts.append(np.diff(nb.inst_offset))
        origin.append(nb.inst_origin)
    n = int(sum(len(c) for c in cols["inst_id"]))
    staged = {k: np.concatenate(v).astype(PER_INSTANCE[k]) for k, v in cols.items()}
    staged["inst_offset"] = np.concatenate([[0], np.cumsum(np.concatenate(counts))])[:-1] if t else np.zeros(0, np.int64)
    like = group["inst_id"]  # an older v2 store has no inst_origin: it is made like the others
    for name, values in staged.items():
        a = group[name] if name in group else None
        nxt = group.create_array(f"{name}.next", shape=values.shape, chunks=(a or like).chunks[:1] + values.shape[1:],
                                 dtype=values.dtype, fill_value=0, compressors=(a or like).compressors,
                                 dimension_names=a.metadata.dimension_names if a is not None else inst_dims(name), overwrite=True)
        nxt.with_config(_WRITE)[...] = values
    _atomic_json(group_dir / JOURNAL, {"phase": "swap", "names": sorted(staged), "status": {"instances_written": n}})
    roll_forward(group_dir, group)
    o = np.concatenate(origin) if origin else np.zeros(0, np.uint8)
    return {"instances": n, "recovered": int((o == 1).sum()), "interpolated": int((o == 2).sum()),
            "tracks": int(staged["inst_track"].max(initial=0))}
