"""Per-track views of a store (``Result.tracks``, ``Result.part_areas``): tables computed from the
per-instance arrays alone (no label map decoded), over the rows ``keep`` selects (an origin filter)."""

from __future__ import annotations

import numpy as np


def tracks_table(self, source: str, keep_rows: np.ndarray):
    """See ``Result.tracks``."""
    import pandas as pd

    pf = self._per_frame(source)
    d = self._per_instance(source, ("inst_track", "inst_area", "inst_score", "inst_part_area", "inst_part_rgb"))
    rf = self._row_frame(source)
    tr = d["inst_track"]
    keep = (tr > 0) & keep_rows
    ids, code = np.unique(tr[keep], return_inverse=True)
    n, rf = len(ids), rf[keep]
    cnt = np.bincount(code, minlength=n)
    first = np.full(n, np.iinfo(np.int64).max)
    np.minimum.at(first, code, rf)
    last = np.zeros(n, np.int64)
    np.maximum.at(last, code, rf)
    area = np.bincount(code, weights=d["inst_area"][keep], minlength=n)
    score = np.bincount(code, weights=d["inst_score"][keep], minlength=n)
    names = self.class_names
    C = len(names)
    pa = d["inst_part_area"][keep].astype(np.float64)
    tot = np.stack([np.bincount(code, weights=pa[:, c], minlength=n) for c in range(C)], 1)  # (n,C)
    rgb = np.zeros((n, C, 3))
    if d["inst_part_rgb"] is not None:
        w = d["inst_part_rgb"][keep].astype(np.float64) * pa[:, :, None]
        for c in range(1, C):
            for k in range(3):
                rgb[:, c, k] = np.bincount(code, weights=w[:, c, k], minlength=n)
        rgb /= np.maximum(tot, 1)[:, :, None]
    hexes = np.array([[f"#{int(r):02x}{int(g_):02x}{int(b):02x}" for r, g_, b in np.rint(row)] for row in rgb], object)
    hexes = np.where(tot > 0, hexes, None) if n else np.zeros((0, C), object)
    order = np.argsort(-tot[:, 1:], axis=1, kind="stable")[:, :3] + 1 if n else np.zeros((0, 3), int)
    fi, tm = pf["frame_index"], pf["time"]
    df = pd.DataFrame({"track": ids.astype(np.int64), "first_frame": fi[first] if n else [], "last_frame": fi[last] if n else [],
                       "first_time": tm[first] if n else [], "last_time": tm[last] if n else [], "frames": cnt,
                       "mean_area": area / np.maximum(cnt, 1), "mean_score": score / np.maximum(cnt, 1),
                       "top_parts": [[names[c] for c in o if tot[i, c] > 0] for i, o in enumerate(order)],
                       "top_colours": [[hexes[i, c] for c in o if tot[i, c] > 0] for i, o in enumerate(order)]})
    colours = pd.DataFrame(hexes[:, 1:], columns=[f"colour_{nm}" for nm in names[1:]])
    return pd.concat([df, colours], axis=1)


def part_areas(self, source: str, by: str, tracks, from_maps: bool, keep_rows: np.ndarray):
    """See ``Result.part_areas``."""
    import xarray as xr

    pf = self._per_frame(source)
    T = len(pf["count"])
    pa = self._part_area_from_maps(source) if from_maps else self._per_instance(source, ("inst_part_area",))["inst_part_area"]
    pa = pa[:, 1:]
    rf = self._row_frame(source)
    coords = {"time": pf["time"], "frame_index": ("time", pf["frame_index"]), "part": self.class_names[1:]}
    if by == "frame":
        out = np.zeros((T, pa.shape[1]), np.int64)
        np.add.at(out, rf[keep_rows], pa[keep_rows])
        return xr.DataArray(out.astype(np.int32), dims=("time", "part"), coords=coords, name="part_area")
    tr = self._per_instance(source, ("inst_track",))["inst_track"]
    ids = np.unique(tr[(tr > 0) & keep_rows]) if tracks is None else np.unique(np.asarray(tracks, np.int64))
    pos = np.searchsorted(ids, tr)
    keep = (tr > 0) & (pos < len(ids)) & keep_rows
    keep[keep] = ids[pos[keep]] == tr[keep]
    out = np.zeros((T * len(ids), pa.shape[1]), np.int32)
    flat = rf[keep] * len(ids) + pos[keep]
    if len(np.unique(flat)) == len(flat):
        out[flat] = pa[keep]
    else:  # a track twice in one frame (should not happen): add
        np.add.at(out, flat, pa[keep])
    coords["track"] = ids.astype(np.int64)
    return xr.DataArray(out.reshape(T, len(ids), -1), dims=("time", "track", "part"), coords=coords, name="part_area")

