"""What the tracker compares, per frame: people (or candidates) on a coarse grid of the label map, and
the cues between tracks and them -- mask IoU with each track's predicted mask, the instance-embedding
cosine and the part-colour signature distance (see ``streamparse.tracking``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COL_NORM = 255.0 * np.sqrt(3.0)


@dataclass
class Dets:
    """The people (or candidates) of one frame as the tracker sees them; K rows."""

    g: np.ndarray  # (gh, gw) the label map sampled on the grid
    ids: np.ndarray  # (K,) int64 label of each row in ``g``
    score: np.ndarray  # (K,) float32
    area: np.ndarray  # (K,) float64 grid cells
    cy: np.ndarray  # (K,) centroid on the grid
    cx: np.ndarray
    gbox: np.ndarray  # (K,4) int64 rows r0, r1, cols c0, c1 of the box on the grid
    emb: np.ndarray  # (K,D) float32 unit (D may be 0)
    frac: np.ndarray  # (K,C) float32 area fraction per part (background 0)
    col: np.ndarray  # (K,C,3) float32 mean colour per part

    @property
    def k(self) -> int:
        return int(self.ids.shape[0])

    @property
    def nid(self) -> int:
        return int(self.ids.max(initial=0)) + 1


def grid_stride(shape: tuple[int, int], grid: int) -> int:
    return max(1, -(-max(shape) // grid))


def sample(lab: np.ndarray, s: int) -> np.ndarray:
    """The label map (..., H, W) on the grid of stride ``s`` (cell centres)."""
    return lab[..., s // 2 :: s, s // 2 :: s]


def grid_shape(size: tuple[int, int], s: int) -> tuple[int, int]:
    return tuple(len(range(s // 2, n, s)) for n in size)


def make_dets(g: np.ndarray, s: int, ids, score, bbox, emb, parea, prgb, coords) -> Dets:
    """``Dets`` of rows with labels ``ids`` in the grid map ``g`` (stride ``s``); ``coords`` = (yy, xx)
    (flat grid coordinates of ``g``'s cells)."""
    gh, gw = g.shape
    ids = np.asarray(ids).astype(np.int64).reshape(-1)
    k = ids.shape[0]
    nid = int(ids.max(initial=0)) + 1
    flat = g.ravel().astype(np.int64)
    area_all = np.bincount(flat, minlength=nid)[:nid]
    yy, xx = coords
    bb = np.asarray(bbox, np.int64).reshape(k, 4)
    # each row's box on the grid (grid row r samples pixel row s // 2 + r s)
    gbox = np.stack([-((s // 2 - bb[:, 1]) // s), -((s // 2 - bb[:, 3]) // s),
                     -((s // 2 - bb[:, 0]) // s), -((s // 2 - bb[:, 2]) // s)], axis=1)
    gbox = np.clip(gbox, 0, [gh, gh, gw, gw])
    cy_all = np.bincount(flat, weights=yy, minlength=nid)[:nid]
    cx_all = np.bincount(flat, weights=xx, minlength=nid)[:nid]
    darea = area_all[ids].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        # centroid on the grid; a person too thin for the grid: the centre of its box
        dcy = np.where(darea > 0, cy_all[ids] / np.maximum(darea, 1), ((bb[:, 1] + bb[:, 3]) / 2 - s // 2) / s)
        dcx = np.where(darea > 0, cx_all[ids] / np.maximum(darea, 1), ((bb[:, 0] + bb[:, 2]) / 2 - s // 2) / s)
    parea = np.asarray(parea, np.float64)
    tot = np.maximum(parea.sum(axis=1, keepdims=True), 1).astype(np.float32)
    dfrac = (parea / tot).astype(np.float32)
    if dfrac.shape[1]:
        dfrac[:, 0] = 0.0
    return Dets(g=g, ids=ids, score=np.asarray(score, np.float32).reshape(-1), area=darea, cy=dcy, cx=dcx, gbox=gbox,
                emb=emb, frac=dfrac, col=np.asarray(prgb).astype(np.float32))


def intersections(tracks, active: np.ndarray, d: Dets, frame_index: int, motion: bool) -> tuple[np.ndarray, np.ndarray]:
    """(M,K) grid cells of each row under each active track's predicted mask (its last mask moved by its
    velocity when ``motion``), and (M,) the tracks' mask areas. One ``bincount`` per track over its crop."""
    m, nid = len(tracks), d.nid
    gh, gw = d.g.shape
    inter = np.zeros((m, nid), np.float64)
    tarea = np.zeros(m, np.float64)
    for i, t in enumerate(tracks):
        if not active[i]:
            continue
        y0, x0 = t.predicted_origin(frame_index, motion)
        h, w = t.mask.shape
        ya, yb, xa, xb = max(y0, 0), min(y0 + h, gh), max(x0, 0), min(x0 + w, gw)
        tarea[i] = float(t.mask.sum())
        if ya >= yb or xa >= xb:
            continue
        sub = d.g[ya:yb, xa:xb][t.mask[ya - y0 : yb - y0, xa - x0 : xb - x0]]
        inter[i] = np.bincount(sub.astype(np.int64), minlength=nid)[:nid]
    return (inter[:, d.ids] if d.k else np.zeros((m, 0))), tarea


def iou_of(inter: np.ndarray, tarea: np.ndarray, darea: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(inter > 0, inter / (tarea[:, None] + darea[None, :] - inter), 0.0)


def cues(tracks, d: Dets, *, use_emb: bool, use_col: bool, min_part_frac: float, min_shared_frac: float):
    """The appearance cues of every (track, row) pair: (M,K) embedding cost (1 - cos) / 2 and whether it
    exists, (M,K) colour-signature cost and whether the parts both show cover at least ``min_shared_frac``
    of both people."""
    m, k = len(tracks), d.k
    emb = d.emb
    ec, ev = np.zeros((m, k)), np.zeros((m, k), bool)
    cc, cv = np.zeros((m, k)), np.zeros((m, k), bool)
    if m and k and use_emb and emb.shape[1]:
        te = np.stack([t.emb if t.emb.shape[0] == emb.shape[1] else np.zeros(emb.shape[1], np.float32) for t in tracks])
        ec = (1.0 - te @ emb.T) / 2.0
        ev = np.broadcast_to((np.abs(te).sum(axis=1) > 0)[:, None], (m, k))
    if m and k and use_col:
        tf = np.stack([t.frac for t in tracks])  # (M,C)
        tc = np.stack([t.col for t in tracks])  # (M,C,3)
        both = np.minimum(tf[:, None, :], d.frac[None, :, :])  # (M,K,C)
        both = np.where((tf[:, None, :] >= min_part_frac) & (d.frac[None, :, :] >= min_part_frac), both, 0.0)
        dist = np.sqrt(((tc[:, None] - d.col[None]) ** 2).sum(-1)) / COL_NORM  # (M,K,C)
        wsum = both.sum(-1)
        cc = np.minimum(2.0 * (both * dist).sum(-1) / np.maximum(wsum, 1e-9), 1.0)
        cv = wsum >= min_shared_frac
    return ec, ev, cc, cv


def appearance(c, w_emb: float, w_col: float):
    """(M,K) appearance cost in [0,1] (weighted mean of the cues available) and (M,K) the total weight of
    the cues available for each pair (0 = none)."""
    ec, ev, cc, cv = c
    we = np.where(ev, w_emb, 0.0)
    wc = np.where(cv, w_col, 0.0)
    wts = we + wc
    return np.where(wts > 0, (we * ec + wc * cc) / np.maximum(wts, 1e-9), 0.0), wts


def near(tracks, d: Dets, time: float, segment: int, reid_speed: float) -> np.ndarray:
    """(M,K) whether each row is where the track could have walked since it was last seen (0.25 frame
    sizes + ``reid_speed`` x seconds; anywhere after a live reconnect; everywhere when the speed is 0)."""
    m, k = len(tracks), d.k
    if reid_speed <= 0 or not m or not k:
        return np.ones((m, k), bool)
    gh, gw = d.g.shape
    dt = np.array([time - t.last_time for t in tracks])
    dist = np.hypot(np.array([t.cy for t in tracks])[:, None] - d.cy[None, :],
                    np.array([t.cx for t in tracks])[:, None] - d.cx[None, :]) / float(max(gh, gw))
    other = np.array([t.segment != segment for t in tracks])[:, None]
    return (dist <= 0.25 + reid_speed * dt[:, None]) | other
