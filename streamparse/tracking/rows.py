"""Tracks into rows: a tracker run over a ``ParsingBatch`` (with its low-score candidates), and the rows
it adds -- people it recovered (a candidate that continues a track, ``inst_origin`` 1) or interpolated
offline (``inst_origin`` 2) -- painted into the label maps.

Added people are painted only on background pixels (``instance == 0``): a detected person's pixels,
part labels and row never change (``tests/test_golden.py`` checks the detected people's bytes). A
frame's added rows follow its detected rows, with ids K+1, K+2, ... in ``instance`` (K detected).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from streamparse.candidates import CAND_FIELDS, crop_sizes, to_maps
from streamparse.store.schema import ORIGINS
from streamparse.structures import ParsingBatch

TABLE = ("inst_id", "inst_score", "inst_bbox", "inst_area", "inst_embedding", "inst_part_area", "inst_part_rgb")


def frame_inputs(b: ParsingBatch, cmaps: tuple[np.ndarray, np.ndarray] | None = None) -> Iterator[dict]:
    """``Tracker.update`` keyword arguments of each frame of ``b``: label map, table rows, candidates."""
    off, coff = b.inst_offset, b.cand["cand_offset"]
    cinst = (cmaps if cmaps is not None else to_maps(b.cand, b.part.shape[1:]))[1] if coff[-1] else None
    for f in range(len(b)):
        x, y = int(off[f]), int(off[f + 1])
        cx, cy = int(coff[f]), int(coff[f + 1])
        kw = {name: getattr(b, name)[x:y] for name in TABLE}
        if cy > cx:
            kw["cand_instance"] = cinst[f]
            kw["candidates"] = {k: b.cand[k][cx:cy] for k in CAND_FIELDS}
        yield {"instance": b.instance[f], **kw, "frame_index": int(b.frame_index[f]), "time": float(b.time[f]),
               "segment": int(b.segment[f])}


def track_batch(tracker, b: ParsingBatch) -> ParsingBatch:
    """``b`` with ``inst_track`` from ``tracker`` (frames in order) and the candidates it recovered added
    as rows (``inst_origin`` 1) painted into ``instance`` / ``part``."""
    cmaps = to_maps(b.cand, b.part.shape[1:]) if b.cand["cand_offset"][-1] else None
    tracks, extra = [], []
    for f, kw in enumerate(frame_inputs(b, cmaps)):
        tracks.append(tracker.update(**kw))
        rec = getattr(tracker, "recovered", None)
        extra.append(candidate_rows(b, f, rec) if rec is not None and len(rec) else [])
    b.inst_track = np.concatenate(tracks).astype(np.uint32) if tracks else np.zeros(0, np.uint32)
    return insert_rows(b, extra)


def candidate_rows(b: ParsingBatch, f: int, recovered: np.ndarray) -> list[dict]:
    """Rows (``insert_rows``' form) of frame f's candidates ``recovered`` (R,2): (candidate index in the
    frame, track id)."""
    c0 = int(b.cand["cand_offset"][f])
    starts = np.concatenate([[0], np.cumsum(crop_sizes(b.cand["cand_bbox"]))])
    out = []
    for j, tid in np.asarray(recovered, np.int64).reshape(-1, 2):
        r = c0 + int(j)
        out.append({"bbox": b.cand["cand_bbox"][r], "crop": b.cand["cand_crop"][starts[r]:starts[r + 1]],
                    "score": float(b.cand["cand_score"][r]), "embedding": b.cand["cand_embedding"][r],
                    "part_rgb": b.cand["cand_part_rgb"][r], "track": int(tid), "origin": ORIGINS["recovered"]})
    return out


def insert_rows(b: ParsingBatch, extra: list[list[dict]]) -> ParsingBatch:
    """``b`` with rows added after each frame's rows: ``extra[f]`` lists dicts with ``bbox`` (x0, y0, x1,
    y1) and ``crop`` (the person's part labels in that box, row-major, 0 = not the person), ``score``,
    ``embedding`` (D,), ``part_rgb`` (C,3), ``track``, ``origin``. Each is painted where ``instance`` is
    background; its area, box and part areas are those of the pixels painted; a row left with no pixel
    is not added. Returns ``b`` itself when nothing is added."""
    if not any(extra):
        return b
    part, inst = b.part.copy(), b.instance.copy()
    C = b.inst_part_area.shape[1]
    cols: dict[str, list] = {k: [] for k in (*TABLE, "inst_track", "inst_origin")}
    counts = []
    for f in range(len(b)):
        a, e = int(b.inst_offset[f]), int(b.inst_offset[f + 1])
        for k in cols:
            cols[k].append(getattr(b, k)[a:e])
        k_det = e - a  # ids 1..K per frame
        added = 0
        for row in extra[f] if f < len(extra) else []:
            x0, y0, x1, y1 = (int(v) for v in row["bbox"])
            crop = np.asarray(row["crop"], np.uint8).reshape(max(y1 - y0, 0), max(x1 - x0, 0))
            win_i, win_p = inst[f, y0:y1, x0:x1], part[f, y0:y1, x0:x1]
            m = (crop > 0) & (win_i == 0)
            if not m.any():
                continue
            added += 1
            win_i[m], win_p[m] = k_det + added, crop[m]
            ys, xs = np.nonzero(m)
            pa = np.bincount(crop[m], minlength=C)[:C].astype(np.int32)
            vals = {"inst_id": k_det + added, "inst_score": row["score"], "inst_area": int(m.sum()),
                    "inst_bbox": (x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1),
                    "inst_embedding": row["embedding"], "inst_part_area": pa,
                    "inst_part_rgb": np.where(pa[:, None] > 0, row["part_rgb"], 0), "inst_track": row["track"],
                    "inst_origin": row["origin"]}
            for k, v in vals.items():
                cols[k].append(np.asarray(v, dtype=getattr(b, k).dtype)[None])
        counts.append(e - a + added)
    return ParsingBatch(part=part, instance=inst, frame_index=b.frame_index, pts=b.pts, time=b.time, wallclock=b.wallclock,
                        segment=b.segment, inst_offset=np.concatenate([[0], np.cumsum(counts)]),
                        **{k: np.concatenate(v) for k, v in cols.items()}, cand=b.cand, time_base=b.time_base,
                        source_id=b.source_id)
