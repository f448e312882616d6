"""Helpers shared by the export formats: per-frame person tables, RLE encoding, image files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

PART_CATEGORY_OFFSET = 100  # COCO / YouTube-VIS: person = 1, part class c = 100 + c


def person_rows(result, source: str, origin=None) -> dict:
    """Per-instance arrays of the committed rows whose origin is ``origin`` (None: all) + per-frame
    offsets/counts of those rows."""
    pf = result._per_frame(source)
    d = result._per_instance(source, ("inst_id", "inst_score", "inst_bbox", "inst_area", "inst_track"))
    keep = result.origin_mask(source, origin)
    count = np.bincount(result._row_frame(source)[keep], minlength=len(pf["count"])).astype(np.int64)
    offset = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64) if len(count) else count
    return {"offset": offset, "count": count, "frame_index": pf["frame_index"], "time": pf["time"],
            "id": d["inst_id"][keep], "score": d["inst_score"][keep], "bbox": d["inst_bbox"].reshape(-1, 4)[keep],
            "area": d["inst_area"][keep], "track": None if d["inst_track"] is None else d["inst_track"][keep]}


def rle_encode(masks: np.ndarray) -> list[dict]:
    """COCO compressed RLE of uint8/bool masks (H,W,K) (column-major, counts as ascii)."""
    from pycocotools import mask as mask_utils

    if masks.shape[2] == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(masks.astype(np.uint8)))
    return [{"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"].decode("ascii")} for r in rles]


def person_masks(instance: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """(H,W,K) uint8: one mask per instance id (one broadcast comparison)."""
    return (instance[:, :, None] == np.asarray(ids, instance.dtype)[None, None, :]).view(np.uint8)


def xywh(box) -> list[int]:
    x0, y0, x1, y1 = (int(v) for v in box)
    return [x0, y0, x1 - x0, y1 - y0]


def write_jpeg(path: Path, rgb: np.ndarray) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 95]):
        raise OSError(f"{path}: cannot write JPEG")


def write_png(path: Path, arr: np.ndarray) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), arr):
        raise OSError(f"{path}: cannot write PNG")
