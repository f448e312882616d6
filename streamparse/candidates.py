"""Low-score person candidates in compact form: what crosses Ray and what the tracker's second stage reads.

A frame's candidates (``models.candidates``: people the centre heatmap almost found, on pixels no
detected person holds) are rows of a small CSR table like the people's -- ``cand_offset`` (B+1,),
``cand_score`` float32 (Nc,), ``cand_bbox`` int32 (Nc,4) (x0, y0, x1, y1; exclusive ends),
``cand_embedding`` float16 (Nc,D), ``cand_part_area`` int32 (Nc,C), ``cand_part_rgb`` uint8 (Nc,C,3) --
plus ``cand_crop`` uint8 (P,): each candidate's part labels inside its box, row-major, 0 = not this
candidate, concatenated in row order (candidate j's crop is ``(y1-y0) * (x1-x0)`` values). The store
keeps them as two label maps instead (``cand_instance`` = candidate k of the frame, ``cand_part``):
``to_maps`` / ``from_maps`` convert.
"""

from __future__ import annotations

import numpy as np

CAND_FIELDS = {"cand_score": np.float32, "cand_bbox": np.int32, "cand_embedding": np.float16, "cand_part_area": np.int32,
               "cand_part_rgb": np.uint8}
CAND_NDIM = {"cand_score": 1, "cand_bbox": 2, "cand_embedding": 2, "cand_part_area": 2, "cand_part_rgb": 3}


def empty(b: int, dim: int, num_classes: int) -> dict:
    """No candidates for ``b`` frames."""
    return {"cand_offset": np.zeros(b + 1, np.int64), "cand_score": np.zeros(0, np.float32),
            "cand_bbox": np.zeros((0, 4), np.int32), "cand_embedding": np.zeros((0, dim), np.float16),
            "cand_part_area": np.zeros((0, num_classes), np.int32), "cand_part_rgb": np.zeros((0, num_classes, 3), np.uint8),
            "cand_crop": np.zeros(0, np.uint8)}


def crop_sizes(bbox: np.ndarray) -> np.ndarray:
    b = np.asarray(bbox, np.int64).reshape(-1, 4)
    return np.maximum(b[:, 2] - b[:, 0], 0) * np.maximum(b[:, 3] - b[:, 1], 0)


def from_maps(part: np.ndarray, instance: np.ndarray, counts: np.ndarray, scores: np.ndarray, kernels: np.ndarray,
              num_classes: int, images: np.ndarray | None = None) -> dict:
    """Candidate label maps part uint8 (B,H,W), instance uint8/uint16 (B,H,W) (candidate k of frame b, 1..
    counts[b]) with their scores (Nc,) and kernels (Nc,D) -> the compact table (``images`` (B,H,W,3): part
    colours)."""
    from streamparse.labelstats import instance_stats

    inst = np.asarray(instance).astype(np.uint16, copy=False)
    st = instance_stats(np.asarray(part, np.uint8), inst, num_classes, images, counts=np.asarray(counts, np.int64))
    crops = []
    for j in range(len(st.inst_id)):
        x0, y0, x1, y1 = (int(v) for v in st.bbox[j])
        f, k = int(st.frame[j]), int(st.inst_id[j])
        sub = inst[f, y0:y1, x0:x1] == k
        crops.append(np.where(sub, part[f, y0:y1, x0:x1], 0).astype(np.uint8).ravel())
    return {"cand_offset": st.offset, "cand_score": np.asarray(scores, np.float32).reshape(-1),
            "cand_bbox": st.bbox, "cand_embedding": np.asarray(kernels, np.float16).reshape(len(st.inst_id), np.shape(kernels)[-1]),
            "cand_part_area": st.part_area, "cand_part_rgb": st.part_rgb,
            "cand_crop": np.concatenate(crops) if crops else np.zeros(0, np.uint8)}


def stack_frames(cand: list, size: tuple[int, int], dim: int) -> tuple:
    """Per frame (maps (2,H,W): part, candidate; scores (K,); kernels (K,D)) as tensors, or None (no
    candidate) -> (part (B,H,W), instance (B,H,W) uint8, B scores, B kernels) as numpy: ``from_maps``' input."""
    part, inst = np.zeros((len(cand), *size), np.uint8), np.zeros((len(cand), *size), np.uint8)
    scores, kernels = [], []
    for i, c in enumerate(cand):
        if c is not None:
            part[i], inst[i] = c[0].numpy()
        scores.append(np.zeros(0, np.float32) if c is None else c[1].numpy())
        kernels.append(np.zeros((0, dim), np.float16) if c is None else c[2].numpy())
    return part, inst, scores, kernels


def to_maps(cand: dict, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The compact table of B frames -> (cand_part uint8 (B,H,W), cand_instance uint8 (B,H,W))."""
    off = np.asarray(cand["cand_offset"], np.int64)
    b = len(off) - 1
    H, W = shape
    part, inst = np.zeros((b, H, W), np.uint8), np.zeros((b, H, W), np.uint8)
    bbox = np.asarray(cand["cand_bbox"]).reshape(-1, 4)
    start = np.concatenate([[0], np.cumsum(crop_sizes(bbox))])
    crop = np.asarray(cand["cand_crop"], np.uint8)
    for f in range(b):
        for j in range(int(off[f]), int(off[f + 1])):
            x0, y0, x1, y1 = (int(v) for v in bbox[j])
            c = crop[start[j]:start[j + 1]].reshape(max(y1 - y0, 0), max(x1 - x0, 0))
            m = c > 0
            part[f, y0:y1, x0:x1][m] = c[m]
            inst[f, y0:y1, x0:x1][m] = j - off[f] + 1
    return part, inst


def frame_rows(cand: dict, f: int) -> dict:
    """Frame f's candidate rows (``cand_*`` arrays without the crops)."""
    a, b = int(cand["cand_offset"][f]), int(cand["cand_offset"][f + 1])
    return {k: np.asarray(cand[k])[a:b] for k in CAND_FIELDS}
