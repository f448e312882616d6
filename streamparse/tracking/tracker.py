"""Online person tracker: per source, in frame order, on what the parser already outputs.

Per frame the tracker gets the instance label map and that frame's rows of the instance table and
returns ``inst_track`` uint32 (K,): a stable id per person, 1, 2, 3, ... in order of confirmation
(never skipping a number), or 0 for a detection that is not (yet) part of a confirmed track: a new
track's first ``confirm_frames - 1`` frames, and detections that never confirm (mostly false
positives). Committed frames are never rewritten, so a track's tentative frames stay 0.

Association, per frame:
1. active tracks (matched within ``iou_max_gap`` frames, same ``segment``) against detections, cost
   ``(w_iou (1 - IoU) + w_emb (1 - cos) / 2 + w_col colour) / (sum of the weights of the cues
   present)``: IoU of the track's last mask, displaced by its velocity (``iou_mode='motion'``), with
   the detection's mask, both read from the label map on a coarse grid (``grid`` cells on the long
   side; one ``bincount`` per track over its mask's crop, no dense per-instance masks); cosine of the
   unit instance kernels (the track's last one, or an EMA with ``emb_momentum``); the part-colour signature distance: mean over the parts
   both people show (weighted by the smaller area fraction) of the RGB distance / (255 sqrt 3).
   A pair is allowed if its IoU >= ``iou_gate`` (or its appearance cost <= ``reid_cost`` and the
   detection is near: within 0.25 + ``reid_speed`` x seconds-since-seen frame sizes) and the cost
   <= ``max_cost``; Hungarian assignment (``scipy.optimize.linear_sum_assignment``).
2. re-identification: confirmed tracks still unmatched (lost ones, those of an older segment, i.e.
   before a live reconnect) against the detections left or held by tentative tracks, by appearance
   only (the embedding weighted ``w_emb_reid``: the shipped weights' kernels tell people apart within
   a few frames, not across seconds, since they also encode position), cost <= ``reid_cost`` (a
   re-identified track takes the detection from a tentative one), near as above (any distance after
   a reconnect), for detections with score >= ``birth_score``.
3. births: detections left with score >= ``birth_score`` that are not mostly (``birth_overlap``)
   inside a matched track's predicted mask start a tentative track; it gets an id after
   ``confirm_frames`` consecutive matches and is dropped at its first miss. Confirmed tracks are
   kept ``max_lost_s`` seconds of source time after their last match.

Resume: ``state()`` is a JSON-able dict (arrays as base64 of their bytes, floats exact), and
``Tracker.from_state(state)`` continues exactly as the uninterrupted tracker would (store it with
each commit marker). Without a stored state, re-running the tracker over the committed frames
(``streamparse.tracking.store.run_tracker``) rebuilds the same state.
"""

from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

NAME = "streamparse.tracking.tracker.Tracker"
STATE_VERSION = 1
_BIG = 1e6
_COL_NORM = 255.0 * np.sqrt(3.0)


def _enc(a: np.ndarray) -> dict:
    a = np.ascontiguousarray(a)
    return {"dtype": a.dtype.str, "shape": list(a.shape), "b64": base64.b64encode(a.tobytes()).decode("ascii")}


def _dec(d: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(d["b64"]), dtype=np.dtype(d["dtype"])).reshape(d["shape"]).copy()


@dataclass
class _Track:
    key: int  # creation serial (deterministic order)
    tid: int  # output id, 0 while tentative
    hits: int  # consecutive matches while tentative, total matches after
    last_frame: int
    last_time: float
    segment: int
    cy: float  # centroid on the grid
    cx: float
    vy: float  # velocity, grid cells per frame
    vx: float
    y0: int  # mask crop origin on the grid
    x0: int
    mask: np.ndarray  # bool (h, w) crop on the grid
    emb: np.ndarray  # float32 (D,) unit, or (0,)
    col: np.ndarray  # float32 (C, 3) mean colour per part
    frac: np.ndarray  # float32 (C,) area fraction per part (EMA), 0 = never seen

    def to_json(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for k in ("mask", "emb", "col", "frac"):
            d[k] = _enc(d[k])
        return d

    @classmethod
    def from_json(cls, d: dict) -> "_Track":
        d = dict(d)
        for k in ("mask", "emb", "col", "frac"):
            d[k] = _dec(d[k])
        return cls(**d)


class Tracker:
    """Online tracker of one source (see the module docstring; parameters = ``config.TrackConfig``).

    Args (keyword-only, plain values):
        grid, iou_mode, w_iou, w_emb, w_col, iou_gate, max_cost, reid_cost, iou_max_gap,
        motion_momentum, appearance_momentum, confirm_frames, birth_score, birth_overlap,
        max_lost_s, min_part_frac: as documented in ``config.TrackConfig``.
    """

    name = NAME

    def __init__(self, **params):
        from streamparse.config import TrackConfig

        known = {f.name for f in dataclasses.fields(TrackConfig)} - {"enabled"}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"unknown tracker parameter {unknown[0]!r} (known: {', '.join(sorted(known))})")
        cfg = TrackConfig(**params)  # the schema: validates ranges and enums (ConfigError, a ValueError)
        self._params = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "enabled"}
        for k, v in self._params.items():
            setattr(self, k, v)
        self.tracks: list[_Track] = []
        self.next_id = 1
        self.next_key = 0
        self.frame_index = -1
        self.segment = None
        self.hw: tuple[int, int] | None = None
        self._grid_cache = None

    def params(self) -> dict:
        return dict(self._params)

    # ------------------------------------------------------------------ state
    def state(self) -> dict:
        """JSON-able state: params, counters, tracks (arrays base64-encoded)."""
        return {"version": STATE_VERSION, "name": NAME, "params": self.params(), "next_id": self.next_id,
                "next_key": self.next_key, "frame_index": self.frame_index, "segment": self.segment,
                "hw": list(self.hw) if self.hw else None, "tracks": [t.to_json() for t in self.tracks]}

    @classmethod
    def from_state(cls, state: dict) -> "Tracker":
        if state.get("version") != STATE_VERSION or state.get("name") != NAME:
            raise ValueError(f"not a {NAME} state of version {STATE_VERSION}")
        tr = cls(**state["params"])
        tr.next_id, tr.next_key, tr.frame_index = int(state["next_id"]), int(state["next_key"]), int(state["frame_index"])
        tr.segment = state["segment"]
        tr.hw = tuple(state["hw"]) if state["hw"] else None
        tr.tracks = [_Track.from_json(t) for t in state["tracks"]]
        return tr

    # ------------------------------------------------------------------ per frame
    def update(self, instance: np.ndarray, inst_id: np.ndarray, inst_score: np.ndarray, inst_bbox: np.ndarray,
               inst_area: np.ndarray, inst_embedding: np.ndarray, inst_part_area: np.ndarray,
               inst_part_rgb: np.ndarray, *, frame_index: int, time: float, segment: int = 0) -> np.ndarray:
        """One frame, in order. instance uint16 (H,W); the frame's K table rows: inst_id uint16 (K,),
        inst_score float32 (K,), inst_bbox int32 (K,4), inst_area int64 (K,), inst_embedding float16
        (K,D), inst_part_area int32 (K,C), inst_part_rgb uint8 (K,C,3). Returns inst_track uint32 (K,)."""
        lab, ids, score, emb, parea, prgb = self._check(instance, inst_id, inst_score, inst_embedding, inst_part_area,
                                                        inst_part_rgb, frame_index)
        k = ids.shape[0]
        s = self._stride(lab.shape)
        g = lab[s // 2 :: s, s // 2 :: s]
        gh, gw = g.shape
        # detections on the grid: area, centroid, bbox
        nid = int(ids.max(initial=0)) + 1
        flat = g.ravel().astype(np.int64)
        area_all = np.bincount(flat, minlength=nid)
        if self._grid_cache is None or self._grid_cache[0] != (gh, gw):
            self._grid_cache = ((gh, gw), *np.divmod(np.arange(flat.size, dtype=np.float64), gw))
        _, yy, xx = self._grid_cache
        # each detection's box on the grid (grid row r samples pixel row s // 2 + r s)
        bb = np.asarray(inst_bbox, np.int64).reshape(k, 4)
        gbox = np.stack([-((s // 2 - bb[:, 1]) // s), -((s // 2 - bb[:, 3]) // s),
                         -((s // 2 - bb[:, 0]) // s), -((s // 2 - bb[:, 2]) // s)], axis=1)
        gbox = np.clip(gbox, 0, [gh, gh, gw, gw])
        cy_all = np.bincount(flat, weights=yy, minlength=nid)
        cx_all = np.bincount(flat, weights=xx, minlength=nid)
        darea = area_all[ids].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            # centroid on the grid; a person too thin for the grid: the centre of its box
            dcy = np.where(darea > 0, cy_all[ids] / np.maximum(darea, 1), ((bb[:, 1] + bb[:, 3]) / 2 - s // 2) / s)
            dcx = np.where(darea > 0, cx_all[ids] / np.maximum(darea, 1), ((bb[:, 0] + bb[:, 2]) / 2 - s // 2) / s)
        # appearance of the detections
        tot = np.maximum(parea.sum(axis=1, keepdims=True), 1).astype(np.float32)
        dfrac = (parea / tot).astype(np.float32)
        dfrac[:, 0] = 0.0
        dcol = prgb.astype(np.float32)
        new_segment = self.segment is not None and segment != self.segment
        self.segment, self.frame_index = segment, frame_index
        # drop confirmed tracks lost too long (tentative ones die at their first miss, below)
        self.tracks = [t for t in self.tracks if time - t.last_time <= self.max_lost_s or t.last_frame == frame_index]
        tracks = self.tracks
        m = len(tracks)
        out = np.zeros(k, np.uint32)
        matched_t = np.full(m, -1, np.int64)
        matched_d = np.full(k, -1, np.int64)
        pred_inter = np.zeros((m, nid), np.float64)  # grid pixels of each label under each track's predicted mask
        tarea = np.zeros(m, np.float64)
        active = np.zeros(m, bool)
        for i, t in enumerate(tracks):
            gap = frame_index - t.last_frame
            if new_segment or t.segment != segment or gap > self.iou_max_gap:
                continue
            active[i] = True
            dy, dx = (t.vy * gap, t.vx * gap) if self.iou_mode == "motion" else (0.0, 0.0)
            y0, x0 = t.y0 + int(round(dy)), t.x0 + int(round(dx))
            h, w = t.mask.shape
            ya, yb, xa, xb = max(y0, 0), min(y0 + h, gh), max(x0, 0), min(x0 + w, gw)
            tarea[i] = float(t.mask.sum())
            if ya >= yb or xa >= xb:
                continue
            sub = g[ya:yb, xa:xb][t.mask[ya - y0 : yb - y0, xa - x0 : xb - x0]]
            pred_inter[i] = np.bincount(sub.astype(np.int64), minlength=nid)[:nid]
        inter = pred_inter[:, ids] if k else np.zeros((m, 0))
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(inter > 0, inter / (tarea[:, None] + darea[None, :] - inter), 0.0)
        cues = self._cues(tracks, emb, dfrac, dcol)
        app, wapp = self._appearance(cues, self.w_emb)
        has_app = wapp > 0
        if m and k:
            near = np.ones((m, k), bool)
            if self.reid_speed > 0:  # no farther than the person could have walked (+ a quarter frame)
                dt = np.array([time - t.last_time for t in tracks])
                dist = np.hypot(np.array([t.cy for t in tracks])[:, None] - dcy[None, :],
                                np.array([t.cx for t in tracks])[:, None] - dcx[None, :]) / float(max(gh, gw))
                other = np.array([t.segment != segment for t in tracks])[:, None]  # after a reconnect: anywhere
                near = (dist <= 0.25 + self.reid_speed * dt[:, None]) | other
            # stage 1: active tracks, IoU + appearance
            cost = (self.w_iou * (1.0 - iou) + wapp * app) / np.maximum(self.w_iou + wapp, 1e-9)
            appc = np.where(has_app, app, 1.0)
            ok = active[:, None] & (cost <= self.max_cost) & ((iou >= self.iou_gate) | ((appc <= self.reid_cost) & near) |
                                                              (self.w_iou <= 0))
            self._assign(cost, ok, matched_t, matched_d)
            # stage 2: re-identification of the confirmed tracks left, by appearance only, against the
            # detections left and those held by tentative tracks (a lost person seen again is often
            # born again before enough of them is visible to recognise them: the old track wins)
            if self.reid_cost > 0:
                if self.w_emb_reid != self.w_emb:
                    app, wapp = self._appearance(cues, self.w_emb_reid)
                    has_app = wapp > 0
                confirmed = np.array([t.tid > 0 for t in tracks])
                left = (matched_t < 0) & confirmed
                free = (matched_d < 0) | ((matched_d >= 0) & ~confirmed[np.maximum(matched_d, 0)])
                strong = score >= self.birth_score  # re-identification is a birth with an old id
                ok2 = left[:, None] & (free & strong)[None, :] & has_app & (app <= self.reid_cost) & near
                held = matched_d.copy()
                self._assign(np.where(has_app, app, _BIG), ok2, matched_t, matched_d)
                for j in np.flatnonzero((held >= 0) & (matched_d != held)):
                    matched_t[held[j]] = -1  # the tentative track loses the detection (and dies below)
        # update matched tracks
        for i in np.flatnonzero(matched_t >= 0):
            t, j = tracks[i], int(matched_t[i])
            self._refresh(t, g, gbox[j], int(ids[j]), dcy[j], dcx[j], emb[j], dfrac[j], dcol[j], frame_index, time, segment)
            if t.tid == 0:
                t.hits += 1
                if t.hits >= self.confirm_frames:
                    t.tid, self.next_id = self.next_id, self.next_id + 1
            else:
                t.hits += 1
            out[j] = t.tid
        # unmatched tentative tracks die
        self.tracks = [t for i, t in enumerate(tracks) if matched_t[i] >= 0 or t.tid > 0]
        # births
        covered = np.zeros(k, np.float64)
        if m and k:
            sel = matched_t >= 0
            if sel.any():
                covered = (inter[sel].sum(axis=0)) / np.maximum(darea, 1)
        for j in range(k):
            if matched_d[j] >= 0 or score[j] < self.birth_score or darea[j] <= 0:
                continue
            if covered[j] > self.birth_overlap:
                continue
            t = _Track(key=self.next_key, tid=0, hits=0, last_frame=frame_index, last_time=time, segment=segment,
                       cy=float(dcy[j]), cx=float(dcx[j]), vy=0.0, vx=0.0, y0=0, x0=0, mask=np.zeros((0, 0), bool),
                       emb=np.zeros(0, np.float32), col=np.zeros_like(dcol[j]), frac=np.zeros_like(dfrac[j]))
            self.next_key += 1
            self._refresh(t, g, gbox[j], int(ids[j]), dcy[j], dcx[j], emb[j], dfrac[j], dcol[j], frame_index, time, segment,
                          new=True)
            t.hits = 1
            if self.confirm_frames <= 1:
                t.tid, self.next_id = self.next_id, self.next_id + 1
            out[j] = t.tid
            self.tracks.append(t)
        return out

    def update_batch(self, batch: dict) -> np.ndarray:
        """All frames of a ParsingBatch-like dict of ONE source, in order: ``instance`` (B,H,W),
        ``inst_offset`` (B+1,), the per-instance arrays (N, ...), ``frame_index`` / ``time`` /
        ``segment`` (B,). Returns inst_track uint32 (N,)."""
        off = np.asarray(batch["inst_offset"], np.int64)
        out = []
        for b in range(len(off) - 1):
            a, e = int(off[b]), int(off[b + 1])
            out.append(self.update(batch["instance"][b], *(np.asarray(batch[k])[a:e] for k in (
                "inst_id", "inst_score", "inst_bbox", "inst_area", "inst_embedding", "inst_part_area", "inst_part_rgb")),
                frame_index=int(batch["frame_index"][b]), time=float(batch["time"][b]),
                segment=int(np.asarray(batch["segment"])[b]) if "segment" in batch else 0))
        return np.concatenate(out).astype(np.uint32) if out else np.zeros(0, np.uint32)

    # ------------------------------------------------------------------ helpers
    def _cues(self, tracks: list[_Track], emb: np.ndarray, dfrac: np.ndarray, dcol: np.ndarray):
        """The appearance cues of every (track, detection) pair: (M,K) embedding cost (1 - cos) / 2 and
        whether it exists, (M,K) colour-signature cost and whether the parts both show cover at least
        ``min_shared_frac`` of both people."""
        m, k = len(tracks), emb.shape[0]
        ec, ev = np.zeros((m, k)), np.zeros((m, k), bool)
        cc, cv = np.zeros((m, k)), np.zeros((m, k), bool)
        if m and k and (self.w_emb > 0 or self.w_emb_reid > 0) and emb.shape[1]:
            te = np.stack([t.emb if t.emb.shape[0] == emb.shape[1] else np.zeros(emb.shape[1], np.float32) for t in tracks])
            ec = (1.0 - te @ emb.T) / 2.0
            ev = np.broadcast_to((np.abs(te).sum(axis=1) > 0)[:, None], (m, k))
        if m and k and self.w_col > 0:
            tf = np.stack([t.frac for t in tracks])  # (M,C)
            tc = np.stack([t.col for t in tracks])  # (M,C,3)
            both = np.minimum(tf[:, None, :], dfrac[None, :, :])  # (M,K,C)
            both = np.where((tf[:, None, :] >= self.min_part_frac) & (dfrac[None, :, :] >= self.min_part_frac), both, 0.0)
            dist = np.sqrt(((tc[:, None] - dcol[None]) ** 2).sum(-1)) / _COL_NORM  # (M,K,C)
            wsum = both.sum(-1)
            cc = np.minimum(2.0 * (both * dist).sum(-1) / np.maximum(wsum, 1e-9), 1.0)
            cv = wsum >= self.min_shared_frac
        return ec, ev, cc, cv

    def _appearance(self, cues, w_emb: float):
        """(M,K) appearance cost in [0,1] (weighted mean of the cues available) and (M,K) the total
        weight of the cues available for each pair (0 = none)."""
        ec, ev, cc, cv = cues
        we = np.where(ev, w_emb, 0.0)
        wc = np.where(cv, self.w_col, 0.0)
        wts = we + wc
        return np.where(wts > 0, (we * ec + wc * cc) / np.maximum(wts, 1e-9), 0.0), wts

    @staticmethod
    def _assign(cost: np.ndarray, ok: np.ndarray, matched_t: np.ndarray, matched_d: np.ndarray) -> None:
        rows, cols = np.flatnonzero(ok.any(axis=1)), np.flatnonzero(ok.any(axis=0))
        if not rows.size or not cols.size:
            return
        c = np.where(ok[np.ix_(rows, cols)], cost[np.ix_(rows, cols)], _BIG)
        r, q = linear_sum_assignment(c)
        for a, b in zip(r, q):
            if c[a, b] < _BIG:
                matched_t[rows[a]], matched_d[cols[b]] = cols[b], rows[a]

    def _stride(self, shape: tuple[int, int]) -> int:
        return max(1, -(-max(shape) // self.grid))

    def _refresh(self, t: _Track, g: np.ndarray, box: np.ndarray, value: int, cy: float, cx: float, emb: np.ndarray,
                 frac: np.ndarray, col: np.ndarray, frame_index: int, time: float, segment: int, new: bool = False) -> None:
        gap = max(frame_index - t.last_frame, 1)
        if not new and t.segment == segment and t.mask.size:
            a = self.motion_momentum
            t.vy = a * t.vy + (1 - a) * (cy - t.cy) / gap
            t.vx = a * t.vx + (1 - a) * (cx - t.cx) / gap
        elif not new:
            t.vy = t.vx = 0.0
        t.cy, t.cx = float(cy), float(cx)
        r0, r1, c0, c1 = (int(v) for v in box)
        crop = g[r0:r1, c0:c1] == value
        if crop.any():  # the mask on the detection's box (the box may have empty margins: harmless)
            t.y0, t.x0, t.mask = r0, c0, crop
        elif (g == value).any():  # a box that does not cover the mask: find it
            ys, xs = np.nonzero(g == value)
            t.y0, t.x0 = int(ys.min()), int(xs.min())
            mask = np.zeros((int(ys.max()) - t.y0 + 1, int(xs.max()) - t.x0 + 1), bool)
            mask[ys - t.y0, xs - t.x0] = True
            t.mask = mask
        b = self.appearance_momentum
        if emb.shape[0]:
            e = emb.astype(np.float32)
            if t.emb.shape[0] == e.shape[0] and not new and self.emb_momentum > 0:
                e = self.emb_momentum * t.emb + (1 - self.emb_momentum) * e
            n = float(np.linalg.norm(e))
            t.emb = (e / n).astype(np.float32) if n > 0 else e.astype(np.float32)
        seen = frac >= self.min_part_frac
        had = t.frac > 0
        upd = seen & had & (not new)
        t.col = t.col.copy()
        t.col[upd] = b * t.col[upd] + (1 - b) * col[upd]
        first = seen & ~upd
        t.col[first] = col[first]
        t.frac = (np.where(had & (not new), b * t.frac + (1 - b) * frac, frac)).astype(np.float32)
        t.last_frame, t.last_time, t.segment = frame_index, float(time), segment

    def _check(self, instance, inst_id, inst_score, inst_embedding, inst_part_area, inst_part_rgb, frame_index):
        lab = np.asarray(instance)
        if lab.ndim != 2 or lab.dtype != np.uint16:
            raise ValueError(f"instance must be uint16 (H,W), got {lab.dtype}{list(lab.shape)}")
        ids = np.asarray(inst_id).astype(np.int64).reshape(-1)
        k = ids.shape[0]
        score = np.asarray(inst_score, np.float32).reshape(-1)
        emb = np.asarray(inst_embedding)
        emb = emb.reshape(k, -1).astype(np.float32) if emb.size else np.zeros((k, emb.shape[-1] if emb.ndim == 2 else 0), np.float32)
        parea = np.asarray(inst_part_area)
        prgb = np.asarray(inst_part_rgb)
        if score.shape != (k,) or parea.ndim != 2 or parea.shape[0] != k or prgb.shape != (*parea.shape, 3):
            raise ValueError(f"the frame's table rows disagree: {k} ids, scores {score.shape}, inst_part_area "
                             f"{parea.shape}, inst_part_rgb {prgb.shape}")
        if k and ids.min() < 1:
            raise ValueError("inst_id values must be >= 1 (0 is background)")
        if self.hw is None:
            self.hw = tuple(lab.shape)
        elif tuple(lab.shape) != self.hw:
            raise ValueError(f"label map size {lab.shape} differs from the source's {self.hw}")
        if frame_index <= self.frame_index:
            raise ValueError(f"frames must come in order: frame_index {frame_index} after {self.frame_index}")
        if emb.shape[1]:
            n = np.linalg.norm(emb, axis=1, keepdims=True)
            emb = np.where(n > 0, emb / np.maximum(n, 1e-12), 0.0).astype(np.float32)
        return lab, ids, score, emb, parea.astype(np.float64), prgb
