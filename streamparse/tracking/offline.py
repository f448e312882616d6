"""Tracking a whole stored source at once (``streamparse track``: no model, no video): the online replay,
and the offline tracks that may look both ways.

Input: one dict per frame, the ``Tracker.update`` keyword arguments (label maps sampled on the
tracker's grid, ``hw`` their full size; detected rows only, plus the frame's candidates). Output: a
``Plan``: per frame, the track of each detected row and the rows to add (recovered candidates,
interpolated people), which ``streamparse.tracking.store.write_plan`` turns into rows and pixels.

Offline (``offline=True``), over the online (forward) pass:
- a track's first frames, tentative online (``confirm_frames``), get its id;
- with ``offline_backward``, the source is also tracked backwards and two forward tracks are joined
  when a backward track continues one into the other (holding at least ``_MIN_VOTES`` rows of each),
  their whole-track colour signatures agree (cost <= ``reid_cost``) and they are never seen in the same
  frame;
- tracks seen in fewer than ``offline_min_frames`` frames are not reported (mostly false detections);
- with ``interp_frames`` > 0, a gap of up to that many frames between two rows of a track is filled
  with the nearer row's mask, moved along the line between the two rows' boxes (``inst_origin`` 2);
- ids are renumbered 1, 2, 3, ... in order of first appearance.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from streamparse.store.schema import ORIGINS
from streamparse.tracking.cues import COL_NORM

_MIN_VOTES = 2


@dataclass
class Pass:
    """One tracker pass: per frame the track key of each detection (-1 none) and the candidates taken
    ((R,2): candidate index, track key); ``tid`` maps keys of confirmed tracks to their ids."""

    keys: list[np.ndarray]
    rec: list[np.ndarray]
    tid: dict[int, int]
    online: list[np.ndarray] = field(default_factory=list)  # inst_track as the online tracker gave it


@dataclass
class Plan:
    """Per frame: ``det_track`` (K,) uint32 for the detected rows; ``extra``: rows to add, dicts with
    ``kind`` ("cand": ``index`` = candidate of the frame; "interp": ``src`` = (frame, kind, index) of
    the row whose mask moves, ``dy``, ``dx`` in pixels, ``score``), ``track``, ``origin``."""

    det_track: list[np.ndarray]
    extra: list[list[dict]]


def run_pass(frames: list[dict], params: dict, *, reverse: bool = False) -> Pass:
    from streamparse.tracking.tracker import Tracker

    tr = Tracker(**params)
    n = len(frames)
    keys, rec, online, tid = [None] * n, [None] * n, [None] * n, {}
    t_end = max((f["time"] for f in frames), default=0.0)
    for i in range(n):
        f = n - 1 - i if reverse else i
        fr = frames[f]
        if reverse:  # the same frames backwards: frame order and time both increasing
            fr = {**fr, "frame_index": i, "time": t_end - fr["time"]}
        online[f] = tr.update(**fr)
        keys[f] = tr.keys.copy()
        key_of = {t.tid: t.key for t in tr.tracks if t.tid}
        rec[f] = np.array([(j, key_of[t]) for j, t in tr.recovered], np.int64).reshape(-1, 2)
        for t in tr.tracks:
            if t.tid:
                tid[t.key] = t.tid
    return Pass(keys, rec, tid, online)


def online_plan(frames: list[dict], params: dict) -> Plan:
    """What ``streamparse run`` gives (the causal tracker, candidates recovered online)."""
    p = run_pass(frames, params)
    extra = [[{"kind": "cand", "index": int(j), "track": p.tid[int(k)], "origin": ORIGINS["recovered"]} for j, k in r]
             for r in p.rec]
    return Plan([o.astype(np.uint32) for o in p.online], extra)


def offline_plan(frames: list[dict], params: dict) -> Plan:
    fwd = run_pass(frames, params)
    label = {k: t for k, t in fwd.tid.items()}  # forward key -> forward id (tentative frames included)
    parent: dict[int, int] = {}
    if params.get("offline_backward", True) and frames:
        sig = _signatures(frames, fwd)
        _join(fwd, run_pass(frames, params, reverse=True), parent,
              lambda a, b: _colour_cost(sig.get(a), sig.get(b), params) <= params["reid_cost"])

    def root(t: int) -> int:
        while parent.get(t, t) != t:
            t = parent[t]
        return t

    det = [np.array([root(label[int(k)]) if int(k) in label else 0 for k in keys], np.int64) for keys in fwd.keys]
    rec = [[(int(j), root(label[int(k)])) for j, k in r if int(k) in label] for r in fwd.rec]
    seen = np.bincount(np.concatenate([*det, *(np.array([t for _, t in r], np.int64) for r in rec), [0]]))
    short = seen < int(params.get("offline_min_frames", 0))  # tracks seen too little: not reported
    order = {}  # renumber by first appearance
    for f in range(len(frames)):
        for t in [*det[f].tolist(), *(t for _, t in rec[f])]:
            if t and not short[t] and t not in order:
                order[t] = len(order) + 1
    det_track = [np.array([order.get(int(t), 0) for t in d], np.uint32) for d in det]
    extra = [[{"kind": "cand", "index": j, "track": order[t], "origin": ORIGINS["recovered"]} for j, t in r if t in order]
             for r in rec]
    if params.get("interp_frames", 0) > 0:
        _interpolate(frames, det_track, extra, int(params["interp_frames"]))
    return Plan(det_track, extra)


def _signatures(frames: list[dict], fwd: Pass) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Each forward track's part-colour signature over all its detected rows: (area fraction per part (C,),
    mean colour per part (C,3)), as the tracker's colour cue compares them (``tracking.cues``)."""
    acc: dict[int, list] = {}
    for fr, keys in zip(frames, fwd.keys):
        pa = np.asarray(fr["inst_part_area"], np.float64)
        for j, k in enumerate(keys.tolist()):
            t = fwd.tid.get(k, 0)
            if t:
                a = acc.setdefault(t, [np.zeros(pa.shape[1]), np.zeros((pa.shape[1], 3))])
                a[0] += pa[j]
                a[1] += pa[j][:, None] * np.asarray(fr["inst_part_rgb"][j], np.float64)
    out = {}
    for t, (w, c) in acc.items():
        w = w.copy()
        w[0] = 0.0
        out[t] = (w / max(w.sum(), 1.0), c / np.maximum(w, 1.0)[:, None])
    return out


def _colour_cost(a, b, params: dict) -> float:
    """The colour-signature distance of two tracks (1 when they share too few parts to compare)."""
    if a is None or b is None:
        return 1.0
    mf = params.get("min_part_frac", 0.02)
    both = np.where((a[0] >= mf) & (b[0] >= mf), np.minimum(a[0], b[0]), 0.0)
    if both.sum() < params.get("min_shared_frac", 0.1):
        return 1.0
    dist = np.sqrt(((a[1] - b[1]) ** 2).sum(-1)) / COL_NORM
    return float(min(2.0 * (both * dist).sum() / both.sum(), 1.0))


def _join(fwd: Pass, bwd: Pass, parent: dict[int, int], alike=lambda a, b: True) -> None:
    """Join forward tracks that one backward track continues one into the other and that look ``alike``
    (see the module docstring)."""
    frames_of: dict[int, set] = {}
    seq: dict[int, list] = {}  # backward key -> forward ids of its rows, in time order
    for f, (fk, bk) in enumerate(zip(fwd.keys, bwd.keys)):
        for a, b in zip(fk.tolist(), bk.tolist()):
            t = fwd.tid.get(a, 0)
            if t:
                frames_of.setdefault(t, set()).add(f)
            if b in bwd.tid and t:
                seq.setdefault(b, []).append(t)
    votes: dict[tuple[int, int], int] = {}  # rows of both sides of a backward track passing from one to the other
    for ids in seq.values():
        runs: list[list[int]] = []  # [forward id, rows]
        for t in ids:
            if runs and runs[-1][0] == t:
                runs[-1][1] += 1
            else:
                runs.append([t, 1])
        for (a, na), (b, nb) in zip(runs, runs[1:]):
            key = (min(a, b), max(a, b))
            votes[key] = votes.get(key, 0) + min(na, nb)

    def root(t: int) -> int:
        while parent.get(t, t) != t:
            t = parent[t]
        return t

    members: dict[int, set] = {}
    for (a, b), n in sorted(votes.items(), key=lambda kv: (-kv[1], kv[0])):
        if n < _MIN_VOTES:
            continue
        ra, rb = root(a), root(b)
        if ra == rb or not alike(a, b):
            continue
        fa = members.setdefault(ra, set(frames_of.get(ra, ())))
        fb = members.setdefault(rb, set(frames_of.get(rb, ())))
        if fa & fb:  # seen together: two people
            continue
        lo, hi = min(ra, rb), max(ra, rb)
        parent[hi] = lo
        members[lo] = fa | fb


def _box(fr: dict, kind: str, index: int) -> np.ndarray:
    if kind == "det":
        return np.asarray(fr["inst_bbox"][index], np.float64)
    return np.asarray(fr["candidates"]["cand_bbox"][index], np.float64)


def _interpolate(frames: list[dict], det_track: list[np.ndarray], extra: list[list[dict]], max_gap: int) -> None:
    """Add interpolated rows over each track's gaps of up to ``max_gap`` frames (same segment)."""
    rows: dict[int, list] = {}  # track -> [(frame, kind, index, score)]
    for f, fr in enumerate(frames):
        for j, t in enumerate(det_track[f].tolist()):
            if t:
                rows.setdefault(t, []).append((f, "det", j, float(fr["inst_score"][j])))
        for e in extra[f]:
            rows.setdefault(e["track"], []).append((f, "cand", e["index"], float(fr["candidates"]["cand_score"][e["index"]])))
    for t, rs in rows.items():
        rs.sort()
        for (fa, ka, ja, sa), (fb, kb, jb, sb) in zip(rs, rs[1:]):
            gap = fb - fa - 1
            if gap < 1 or gap > max_gap or frames[fa]["segment"] != frames[fb]["segment"]:
                continue
            ba, bb = _box(frames[fa], ka, ja), _box(frames[fb], kb, jb)
            ca, cb = (ba[:2] + ba[2:]) / 2, (bb[:2] + bb[2:]) / 2
            for f in range(fa + 1, fb):
                w = (f - fa) / (fb - fa)
                src = (fa, ka, ja) if w <= 0.5 else (fb, kb, jb)
                c = ca + w * (cb - ca) - (ca if w <= 0.5 else cb)
                extra[f].append({"kind": "interp", "src": src, "dx": int(round(c[0])), "dy": int(round(c[1])),
                                 "score": min(sa, sb), "track": t, "origin": ORIGINS["interpolated"]})
