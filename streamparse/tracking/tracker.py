"""Online person tracker: per source, in frame order, on what the parser already outputs.

Per frame the tracker gets the instance label map and that frame's rows of the instance table (and,
optionally, the frame's low-score candidates: ``streamparse.candidates``) and returns ``inst_track``
uint32 (K,): a stable id per person, 1, 2, 3, ... in order of confirmation (never skipping a number),
or 0 for a detection that is not (yet) part of a confirmed track: a new track's first
``confirm_frames - 1`` frames, and detections that never confirm (mostly false positives). Committed
frames are never rewritten, so a track's tentative frames stay 0. The candidates it takes are in
``recovered`` after each ``update``.

Association, per frame (the cues: ``streamparse.tracking.cues``):
1. active tracks (matched within ``iou_max_gap`` frames, same ``segment``: a lost track keeps its
   predicted mask, the last one moved by its velocity, that long) against detections, cost
   ``(w_iou (1 - IoU) + w_emb (1 - cos) / 2 + w_col colour) / (sum of the weights of the cues
   present)``: IoU of the track's predicted mask (``iou_mode='motion'``; 'static': the last mask) with
   the detection's mask, both read from the label map on a coarse grid (``grid`` cells on the long
   side; one ``bincount`` per track over its mask's crop, no dense per-instance masks); cosine of the
   unit instance kernels (the track's last one, or an EMA with ``emb_momentum``); the part-colour
   signature distance: mean over the parts both people show (weighted by the smaller area fraction)
   of the RGB distance / (255 sqrt 3). A pair is allowed if its IoU >= ``iou_gate`` (or its
   appearance cost <= ``reid_cost`` and the detection is near: within 0.25 + ``reid_speed`` x
   seconds-since-seen frame sizes) and the cost <= ``max_cost``; Hungarian assignment
   (``scipy.optimize.linear_sum_assignment``).
2. re-identification: confirmed tracks still unmatched (lost ones, those of an older segment, i.e.
   before a live reconnect) against the detections left or held by tentative tracks, by appearance
   only (the embedding weighted ``w_emb_reid``), cost <= ``reid_cost`` (a re-identified track takes the
   detection from a tentative one), near as above, for detections with score >= ``birth_score``.
3. second stage (the ByteTrack idea, on masks): confirmed tracks still unmatched and active against
   the frame's candidates (people the centre heatmap almost found, on pixels no detected person
   holds), IoU with the predicted mask >= ``recover_iou`` and the same cost <= ``max_cost``, for at
   most ``recover_frames`` frames in a row without a detection. A candidate taken continues the track
   and becomes a row of the frame (``inst_origin`` 1); candidates never start tracks.
4. births: detections left with score >= ``birth_score`` that are not mostly (``birth_overlap``)
   inside a matched track's predicted mask start a tentative track; it gets an id after
   ``confirm_frames`` consecutive matches and is dropped at its first miss. Confirmed tracks are
   kept ``max_lost_s`` seconds of source time after their last match.

Resume: ``state()`` is a JSON-able dict, and ``Tracker.from_state(state)`` continues exactly as the
uninterrupted tracker would (store it with each commit marker). Without a stored state, re-running
the tracker over the committed frames (``streamparse.tracking.store.run_tracker``) rebuilds it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.optimize import linear_sum_assignment

from streamparse.tracking import cues as tc
from streamparse.tracking.state import Track

NAME = "streamparse.tracking.tracker.Tracker"
STATE_VERSION = 1
_BIG = 1e6


class Tracker:
    """Online tracker of one source (see the module docstring; parameters = ``config.TrackConfig``).

    Args (keyword-only, plain values): the fields of ``config.TrackConfig`` but ``enabled`` (the offline
    ones, ``interp_frames`` and ``offline_backward``, are accepted and kept for ``streamparse track``).
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
        self.tracks: list[Track] = []
        self.next_id = 1
        self.next_key = 0
        self.frame_index = -1
        self.segment = None
        self.hw: tuple[int, int] | None = None
        self.recovered = np.zeros((0, 2), np.int64)  # the last frame's (candidate index, track id) taken
        self.keys = np.zeros(0, np.int64)  # the last frame's track key per detection (-1: none)
        self._coords = None

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
        tr.tracks = [Track.from_json(t) for t in state["tracks"]]
        return tr

    # ------------------------------------------------------------------ per frame
    def update(self, instance: np.ndarray, inst_id: np.ndarray, inst_score: np.ndarray, inst_bbox: np.ndarray,
               inst_area: np.ndarray, inst_embedding: np.ndarray, inst_part_area: np.ndarray,
               inst_part_rgb: np.ndarray, *, frame_index: int, time: float, segment: int = 0,
               cand_instance: np.ndarray | None = None, candidates: dict | None = None,
               hw: tuple[int, int] | None = None) -> np.ndarray:
        """One frame, in order. instance uint16 (H,W); the frame's K table rows: inst_id uint16 (K,),
        inst_score float32 (K,), inst_bbox int32 (K,4), inst_area int64 (K,), inst_embedding float16
        (K,D), inst_part_area int32 (K,C), inst_part_rgb uint8 (K,C,3). Optional low-score candidates:
        ``cand_instance`` (H,W) (candidate k of the frame, 1..Kc) and ``candidates`` (``cand_score``,
        ``cand_bbox``, ``cand_embedding``, ``cand_part_area``, ``cand_part_rgb`` rows). ``hw``: the label
        maps' size when ``instance`` and ``cand_instance`` are given already sampled on the tracker's grid
        (``streamparse.tracking.cues.sample``; what ``streamparse track`` keeps in memory). Returns inst_track
        uint32 (K,); the candidates taken are in ``self.recovered`` ((R,2): candidate index, track id), the
        key of the track each detection joined or started (-1: none) in ``self.keys``."""
        d = self._dets(instance, inst_id, inst_score, inst_bbox, inst_embedding, inst_part_area, inst_part_rgb, frame_index, hw)
        new_segment = self.segment is not None and segment != self.segment
        self.segment, self.frame_index = segment, frame_index
        self.recovered = np.zeros((0, 2), np.int64)
        # drop confirmed tracks lost too long (tentative ones die at their first miss, below)
        self.tracks = [t for t in self.tracks if time - t.last_time <= self.max_lost_s or t.last_frame == frame_index]
        tracks = self.tracks
        m, k = len(tracks), d.k
        matched_t, matched_d = np.full(m, -1, np.int64), np.full(k, -1, np.int64)
        active = np.array([not new_segment and t.segment == segment and frame_index - t.last_frame <= self.iou_max_gap
                           for t in tracks], bool)
        inter, tarea = tc.intersections(tracks, active, d, frame_index, self.iou_mode == "motion")
        if m and k:
            self._associate(tracks, d, inter, tarea, active, time, segment, matched_t, matched_d)
        out = np.zeros(k, np.uint32)
        self.keys = np.full(k, -1, np.int64)
        for i in np.flatnonzero(matched_t >= 0):
            t, j = tracks[i], int(matched_t[i])
            self.keys[j] = t.key
            self._refresh(t, d, j, frame_index, time, segment)
            t.recovered = 0
            t.hits += 1
            if t.tid == 0 and t.hits >= self.confirm_frames:
                t.tid, self.next_id = self.next_id, self.next_id + 1
            out[j] = t.tid
        if cand_instance is not None and candidates is not None and self.recover_iou > 0:
            self._second_stage(tracks, active & (matched_t < 0), cand_instance, candidates, frame_index, time, segment)
        # unmatched tentative tracks die
        self.tracks = [t for i, t in enumerate(tracks) if matched_t[i] >= 0 or t.tid > 0]
        self._births(d, inter, matched_t, matched_d, out, frame_index, time, segment)
        return out

    def track_batch(self, batch):
        """A ``ParsingBatch`` of this source, frames in order -> the same with ``inst_track`` and the candidates
        this tracker recovered added as rows (``streamparse.tracking.rows.track_batch``): what the writer calls."""
        from streamparse.tracking.rows import track_batch

        return track_batch(self, batch)

    def update_batch(self, batch: dict) -> np.ndarray:
        """All frames of a ParsingBatch-like dict of ONE source, in order: ``instance`` (B,H,W),
        ``inst_offset`` (B+1,), the per-instance arrays (N, ...), ``frame_index`` / ``time`` /
        ``segment`` (B,). Returns inst_track uint32 (N,) (candidates are not used here: see
        ``streamparse.tracking.rows.track_batch``)."""
        off = np.asarray(batch["inst_offset"], np.int64)
        out = []
        for b in range(len(off) - 1):
            a, e = int(off[b]), int(off[b + 1])
            out.append(self.update(batch["instance"][b], *(np.asarray(batch[k])[a:e] for k in (
                "inst_id", "inst_score", "inst_bbox", "inst_area", "inst_embedding", "inst_part_area", "inst_part_rgb")),
                frame_index=int(batch["frame_index"][b]), time=float(batch["time"][b]),
                segment=int(np.asarray(batch["segment"])[b]) if "segment" in batch else 0))
        return np.concatenate(out).astype(np.uint32) if out else np.zeros(0, np.uint32)

    # ------------------------------------------------------------------ stages
    def _associate(self, tracks, d: tc.Dets, inter, tarea, active, time, segment, matched_t, matched_d) -> None:
        """Stage 1 (active tracks: predicted-mask IoU + appearance) and stage 2 (re-identification)."""
        iou = tc.iou_of(inter, tarea, d.area)
        cues = tc.cues(tracks, d, use_emb=self.w_emb > 0 or self.w_emb_reid > 0, use_col=self.w_col > 0,
                       min_part_frac=self.min_part_frac, min_shared_frac=self.min_shared_frac)
        app, wapp = tc.appearance(cues, self.w_emb, self.w_col)
        near = tc.near(tracks, d, time, segment, self.reid_speed)
        cost = (self.w_iou * (1.0 - iou) + wapp * app) / np.maximum(self.w_iou + wapp, 1e-9)
        appc = np.where(wapp > 0, app, 1.0)
        ok = active[:, None] & (cost <= self.max_cost) & ((iou >= self.iou_gate) | ((appc <= self.reid_cost) & near) |
                                                          (self.w_iou <= 0))
        self._assign(cost, ok, matched_t, matched_d)
        if self.reid_cost <= 0:
            return
        # re-identification of the confirmed tracks left, by appearance only, against the detections left
        # and those held by tentative tracks (a lost person seen again is often born again before enough of
        # them is visible to recognise them: the old track wins)
        if self.w_emb_reid != self.w_emb:
            app, wapp = tc.appearance(cues, self.w_emb_reid, self.w_col)
        has_app = wapp > 0
        confirmed = np.array([t.tid > 0 for t in tracks])
        left = (matched_t < 0) & confirmed
        free = (matched_d < 0) | ((matched_d >= 0) & ~confirmed[np.maximum(matched_d, 0)])
        strong = d.score >= self.birth_score  # re-identification is a birth with an old id
        ok2 = left[:, None] & (free & strong)[None, :] & has_app & (app <= self.reid_cost) & near
        held = matched_d.copy()
        self._assign(np.where(has_app, app, _BIG), ok2, matched_t, matched_d)
        for j in np.flatnonzero((held >= 0) & (matched_d != held)):
            matched_t[held[j]] = -1  # the tentative track loses the detection (and dies below)

    def _second_stage(self, tracks, left: np.ndarray, cand_instance, cand: dict, frame_index, time, segment) -> None:
        """Confirmed active tracks left unmatched take low-score candidates (see the module docstring)."""
        sel = left & np.array([t.tid > 0 and t.recovered < self.recover_frames for t in tracks], bool)
        kc = len(cand["cand_score"])
        if not sel.any() or not kc:
            return
        s = tc.grid_stride(self.hw, self.grid)
        g = np.asarray(cand_instance)
        g = (tc.sample(g, s) if g.shape == tuple(self.hw) else g).astype(np.uint16)
        emb = self._unit(cand["cand_embedding"], kc)
        c = tc.make_dets(g, s, np.arange(1, kc + 1), cand["cand_score"], cand["cand_bbox"], emb, cand["cand_part_area"],
                         cand["cand_part_rgb"], self._grid_coords(g.shape))
        inter, tarea = tc.intersections(tracks, sel, c, frame_index, self.iou_mode == "motion")
        iou = tc.iou_of(inter, tarea, c.area)
        app, wapp = tc.appearance(tc.cues(tracks, c, use_emb=self.w_emb > 0, use_col=self.w_col > 0,
                                          min_part_frac=self.min_part_frac, min_shared_frac=self.min_shared_frac),
                                  self.w_emb, self.w_col)
        cost = (self.w_iou * (1.0 - iou) + wapp * app) / np.maximum(self.w_iou + wapp, 1e-9)
        ok = sel[:, None] & (iou >= self.recover_iou) & (cost <= self.max_cost) & (c.area > 0)[None, :]
        mt, md = np.full(len(tracks), -1, np.int64), np.full(kc, -1, np.int64)
        self._assign(cost, ok, mt, md)
        taken = []
        for i in np.flatnonzero(mt >= 0):
            t, j = tracks[i], int(mt[i])
            self._refresh(t, c, j, frame_index, time, segment)
            t.recovered += 1
            t.hits += 1
            taken.append((j, t.tid))
        self.recovered = np.array(sorted(taken), np.int64).reshape(-1, 2)

    def _births(self, d: tc.Dets, inter, matched_t, matched_d, out, frame_index, time, segment) -> None:
        k = d.k
        covered = np.zeros(k, np.float64)
        sel = matched_t >= 0
        if k and sel.any():
            covered = inter[sel].sum(axis=0) / np.maximum(d.area, 1)
        for j in range(k):
            if matched_d[j] >= 0 or d.score[j] < self.birth_score or d.area[j] <= 0 or covered[j] > self.birth_overlap:
                continue
            C = d.frac.shape[1]
            t = Track(key=self.next_key, tid=0, hits=0, last_frame=frame_index, last_time=time, segment=segment,
                      cy=float(d.cy[j]), cx=float(d.cx[j]), vy=0.0, vx=0.0, y0=0, x0=0, mask=np.zeros((0, 0), bool),
                      emb=np.zeros(0, np.float32), col=np.zeros((C, 3), np.float32), frac=np.zeros(C, np.float32))
            self.keys[j] = t.key
            self.next_key += 1
            self._refresh(t, d, j, frame_index, time, segment, new=True)
            t.hits = 1
            if self.confirm_frames <= 1:
                t.tid, self.next_id = self.next_id, self.next_id + 1
            out[j] = t.tid
            self.tracks.append(t)

    # ------------------------------------------------------------------ helpers
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

    def _grid_coords(self, shape: tuple[int, int]):
        if self._coords is None or self._coords[0] != shape:
            self._coords = (shape, np.divmod(np.arange(shape[0] * shape[1], dtype=np.float64), shape[1]))
        return self._coords[1]

    def _refresh(self, t: Track, d: tc.Dets, j: int, frame_index: int, time: float, segment: int, new: bool = False) -> None:
        g, value, cy, cx = d.g, int(d.ids[j]), d.cy[j], d.cx[j]
        gap = max(frame_index - t.last_frame, 1)
        if not new and t.segment == segment and t.mask.size:
            a = self.motion_momentum
            t.vy = a * t.vy + (1 - a) * (cy - t.cy) / gap
            t.vx = a * t.vx + (1 - a) * (cx - t.cx) / gap
        elif not new:
            t.vy = t.vx = 0.0
        t.cy, t.cx = float(cy), float(cx)
        r0, r1, c0, c1 = (int(v) for v in d.gbox[j])
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
        if d.emb.shape[1]:
            e = d.emb[j].astype(np.float32)
            if t.emb.shape[0] == e.shape[0] and not new and self.emb_momentum > 0:
                e = self.emb_momentum * t.emb + (1 - self.emb_momentum) * e
            n = float(np.linalg.norm(e))
            t.emb = (e / n).astype(np.float32) if n > 0 else e.astype(np.float32)
        frac, col = d.frac[j], d.col[j]
        seen = frac >= self.min_part_frac
        had = t.frac > 0
        upd = seen & had & (not new)
        t.col = t.col.copy()
        t.col[upd] = b * t.col[upd] + (1 - b) * col[upd]
        first = seen & ~upd
        t.col[first] = col[first]
        t.frac = (np.where(had & (not new), b * t.frac + (1 - b) * frac, frac)).astype(np.float32)
        t.last_frame, t.last_time, t.segment = frame_index, float(time), segment

    @staticmethod
    def _unit(emb, k: int) -> np.ndarray:
        emb = np.asarray(emb)
        emb = emb.reshape(k, -1).astype(np.float32) if emb.size else np.zeros((k, emb.shape[-1] if emb.ndim == 2 else 0), np.float32)
        if emb.shape[1]:
            n = np.linalg.norm(emb, axis=1, keepdims=True)
            emb = np.where(n > 0, emb / np.maximum(n, 1e-12), 0.0).astype(np.float32)
        return emb

    def _dets(self, instance, inst_id, inst_score, inst_bbox, inst_embedding, inst_part_area, inst_part_rgb,
              frame_index, hw=None) -> tc.Dets:
        lab = np.asarray(instance)
        if lab.ndim != 2 or lab.dtype != np.uint16:
            raise ValueError(f"instance must be uint16 (H,W), got {lab.dtype}{list(lab.shape)}")
        ids = np.asarray(inst_id).astype(np.int64).reshape(-1)
        k = ids.shape[0]
        score = np.asarray(inst_score, np.float32).reshape(-1)
        parea, prgb = np.asarray(inst_part_area), np.asarray(inst_part_rgb)
        if score.shape != (k,) or parea.ndim != 2 or parea.shape[0] != k or prgb.shape != (*parea.shape, 3):
            raise ValueError(f"the frame's table rows disagree: {k} ids, scores {score.shape}, inst_part_area "
                             f"{parea.shape}, inst_part_rgb {prgb.shape}")
        if k and ids.min() < 1:
            raise ValueError("inst_id values must be >= 1 (0 is background)")
        size = tuple(int(v) for v in hw) if hw is not None else tuple(lab.shape)
        if self.hw is None:
            self.hw = size
        elif size != self.hw:
            raise ValueError(f"label map size {size} differs from the source's {self.hw}")
        if frame_index <= self.frame_index:
            raise ValueError(f"frames must come in order: frame_index {frame_index} after {self.frame_index}")
        s = tc.grid_stride(size, self.grid)
        g = tc.sample(lab, s) if lab.shape == size else lab
        if g.shape != tc.grid_shape(size, s):
            raise ValueError(f"instance {lab.shape} is neither the {size} label map nor its grid sample")
        return tc.make_dets(g, s, ids, score, inst_bbox, self._unit(inst_embedding, k), parea, prgb, self._grid_coords(g.shape))
