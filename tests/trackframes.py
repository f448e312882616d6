"""Tiny hand-made tracking frames: people as coloured bands on a small label map, with their table rows."""

from __future__ import annotations

import numpy as np

from streamparse.labelstats import instance_features
from streamparse.tracking.tracker import Tracker

H, W, C = 60, 120, 20
UPPER, PANTS, HAIR = 5, 9, 2


def person(x: float, y: float = 10, w: int = 14, h: int = 40, upper=(200, 30, 30), pants=(30, 30, 200), hair=(20, 20, 20)) -> dict:
    return {"x": x, "y": y, "w": w, "h": h, "col": {HAIR: hair, UPPER: upper, PANTS: pants}}


def frame(people: list[dict], emb: list[np.ndarray] | None = None, t: int = 0, segment: int = 0) -> dict:
    """A frame's label maps + image from people (drawn in list order: later ones in front), then its table."""
    inst = np.zeros((H, W), np.uint16)
    part = np.zeros((H, W), np.uint8)
    img = np.full((H, W, 3), 128, np.uint8)
    for k, p in enumerate(people, 1):
        x0, y0 = int(round(p["x"])), int(p["y"])
        x0c, x1c = max(x0, 0), min(x0 + p["w"], W)
        if x1c <= x0c:
            continue
        bands = ((HAIR, y0, y0 + p["h"] // 5), (UPPER, y0 + p["h"] // 5, y0 + p["h"] // 2), (PANTS, y0 + p["h"] // 2, y0 + p["h"]))
        for cls, a, b in bands:
            inst[a:b, x0c:x1c] = k
            part[a:b, x0c:x1c] = cls
            img[a:b, x0c:x1c] = p["col"][cls]
    present = [k for k in range(1, len(people) + 1) if (inst == k).any()]
    remap = np.zeros(len(people) + 1, np.uint16)
    remap[present] = np.arange(1, len(present) + 1)
    inst = remap[inst]
    k = len(present)
    off = np.array([0, k], np.int64)
    pa, rgb = instance_features(img[None], part[None], inst[None], off, C)
    ys, xs = np.nonzero(inst)
    bbox = np.zeros((k, 4), np.int32)
    for j in range(k):
        m = inst[ys, xs] == j + 1
        bbox[j] = (xs[m].min(), ys[m].min(), xs[m].max() + 1, ys[m].max() + 1)
    e = np.zeros((k, 0 if emb is None else len(emb[0])), np.float16)
    if emb is not None and k:
        e = np.stack([emb[i - 1] for i in present]).astype(np.float16)
    return {"instance": inst, "inst_id": np.arange(1, k + 1, dtype=np.uint16), "inst_score": np.full(k, 0.9, np.float32),
            "inst_bbox": bbox, "inst_area": np.bincount(inst.ravel(), minlength=k + 1)[1:].astype(np.int64),
            "inst_embedding": e, "inst_part_area": pa, "inst_part_rgb": rgb, "frame_index": t, "time": t / 10,
            "segment": segment, "_present": present}


def run(tracker: Tracker, frames: list[dict]) -> list[list[int]]:
    """Per frame, the track id of each *drawn* person (in drawing order; missing people omitted)."""
    out = []
    for f in frames:
        ids = tracker.update(**{k: v for k, v in f.items() if not k.startswith("_")})
        out.append(ids.tolist())
    return out
