"""Tiny hand-made parsings for sink tests: per-frame dicts -> a ParsingBatch."""

from __future__ import annotations

import numpy as np

from streamparse.structures import ParsingBatch


DIM = 4  # the embedding size of these hand-made parsings


def batch_of(frames: list[dict], num_classes: int = 3) -> ParsingBatch:
    """frames: dicts with part (H,W), instance (H,W), frame_index, pts, time, segment, wallclock,
    inst_score (k,), inst_bbox (k,4), inst_area (k,) -> one ParsingBatch (ids 1..k per frame; embeddings
    (k, DIM) = the score in every column; part areas from the maps; colours zero)."""
    counts = [len(f["inst_score"]) for f in frames]
    n = sum(counts)
    scores = np.concatenate([f["inst_score"] for f in frames]).astype(np.float32)
    part_area = np.zeros((n, num_classes), np.int32)
    row = 0
    for f in frames:
        for k in range(1, len(f["inst_score"]) + 1):
            part_area[row] = np.bincount(f["part"][f["instance"] == k], minlength=num_classes)[:num_classes]
            row += 1
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
        inst_embedding=np.repeat(scores[:, None], DIM, axis=1), inst_part_area=part_area,
        inst_part_rgb=np.zeros((n, num_classes, 3), np.uint8),
    )
