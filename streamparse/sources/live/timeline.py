"""Live timestamps: per-segment pts -> a source time that is strictly increasing across segments.

Inside a segment ``offset + (pts - first_pts) * time_base``; a new segment (reconnect, backward pts
jump) continues at ``last_time + max(frame duration, wall-clock gap)``. ``place`` also tracks the
behind-live reference min(wallclock - time), relaxed by ``DRIFT_PER_S`` to absorb camera clock drift.
"""

from __future__ import annotations

DRIFT_PER_S = 1e-3  # how fast the behind-live reference may relax (camera clock drift allowance)


class Timeline:
    """Maps per-segment pts to a source time that is strictly increasing across segments."""

    def __init__(self) -> None:
        self.last_time: float | None = None
        self.last_wall: float | None = None
        self.new_segment()

    def new_segment(self) -> None:
        self.base_pts: int | None = None
        self.last_pts: int | None = None
        self.offset = 0.0
        self.ref: float | None = None  # min(wallclock - time) in this segment, relaxed for drift
        self.ref_wall = 0.0

    def place(self, pts: int, tb: float, wall: float, dt: float) -> tuple[float, float, bool]:
        """(time, behind-live reference, discontinuity) of a frame with a known pts."""
        disc = self.last_pts is not None and pts < self.last_pts
        if disc:
            self.new_segment()
        if self.base_pts is None:
            self.base_pts = pts
            self.offset = 0.0 if self.last_time is None else self.last_time + max(dt, wall - (self.last_wall or wall))
        t = self.offset + (pts - self.base_pts) * tb
        if self.last_time is not None and t <= self.last_time:  # equal pts: keep time strictly increasing
            t = self.last_time + 1e-6
        self.last_pts, self.last_time, self.last_wall = pts, t, wall
        off = wall - t
        self.ref = off if self.ref is None else min(self.ref + DRIFT_PER_S * (wall - self.ref_wall), off)
        self.ref_wall = wall
        return t, self.ref, disc
