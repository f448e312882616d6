"""The tracker's per-track record and its JSON form (``Tracker.state()``: arrays as base64 of their
bytes, floats exact, so a resumed tracker continues bit for bit)."""

from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass

import numpy as np

_ARRAYS = ("mask", "emb", "col", "frac")


def enc(a: np.ndarray) -> dict:
    a = np.ascontiguousarray(a)
    return {"dtype": a.dtype.str, "shape": list(a.shape), "b64": base64.b64encode(a.tobytes()).decode("ascii")}


def dec(d: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(d["b64"]), dtype=np.dtype(d["dtype"])).reshape(d["shape"]).copy()


@dataclass
class Track:
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
    recovered: int = 0  # consecutive frames continued by candidates (second stage) since the last detection

    def to_json(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for k in _ARRAYS:
            d[k] = enc(d[k])
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Track":
        d = dict(d)
        for k in _ARRAYS:
            d[k] = dec(d[k])
        return cls(**d)

    def predicted_origin(self, frame_index: int, motion: bool) -> tuple[int, int]:
        """Where the mask crop's origin is expected at ``frame_index`` (the last mask moved by the velocity)."""
        gap = frame_index - self.last_frame
        dy, dx = (self.vy * gap, self.vx * gap) if motion else (0.0, 0.0)
        return self.y0 + int(round(dy)), self.x0 + int(round(dx))
