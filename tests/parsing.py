"""Tiny hand-made parsings for sink tests: per-frame dicts -> a ParsingBatch."""

from __future__ import annotations

import numpy as np

from streamparse.structures import ParsingBatch


def batch_of(frames: list[dict]) -> ParsingBatch:
    """frames: dicts with part (H,W), instance (H,W), frame_index, pts, time, segment, wallclock,
    inst_score (k,), inst_bbox (k,4), inst_area (k,) -> one ParsingBatch (ids 1..k per frame)."""
    counts = [len(f["inst_score"]) for f in frames]
    return ParsingBatch(
        part=np.stack([f["part"] for f in frames]).astype(np.uint8),
        instance=np.stack([f["instance"] for f in frames]).astype(np.uint16),
        frame_index=[f["frame_index"] for f in frames], pts=[f["pts"] for f in frames], time=[f["time"] for f in frames],
        wallclock=[f["wallclock"] for f in frames], segment=[f["segment"] for f in frames],
        inst_offset=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        inst_id=np.concatenate([np.arange(1, c + 1) for c in counts] or [np.zeros(0)]).astype(np.uint16),
        inst_score=np.concatenate([f["inst_score"] for f in frames]).astype(np.float32),
        inst_bbox=np.concatenate([np.asarray(f["inst_bbox"]).reshape(-1, 4) for f in frames]).astype(np.int32),
        inst_area=np.concatenate([f["inst_area"] for f in frames]).astype(np.int64),
    )
