"""Prediction folders: one image's parsing as files that ``streamparse eval --pred-dir`` scores.

``<id>_part.png`` (uint8 part per pixel), ``<id>_instance.png`` (person per pixel, 8- or 16-bit) and
``<id>_scores.txt`` (line k = score of person k).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from streamparse.structures import FrameParsing


class PredictionError(ValueError):
    """Bad or missing prediction file; the message names the file."""


def _paths(pred_dir: str | Path, image_id: str) -> tuple[Path, Path, Path]:
    d = Path(pred_dir)
    return d / f"{image_id}_part.png", d / f"{image_id}_instance.png", d / f"{image_id}_scores.txt"


def write_prediction(pred_dir: str | Path, image_id: str, parsing: FrameParsing) -> None:
    """Write ``<id>_part.png`` (uint8), ``<id>_instance.png`` (8-bit, 16-bit if K > 255; 0 =
    background, 1..K people) and ``<id>_scores.txt`` (line k = score of person k).

    People with no pixel cannot be represented in the instance PNG; they are dropped and the
    others renumbered in order (as the predictor's own post-processing does)."""
    import cv2

    if not image_id or "/" in image_id or "\\" in image_id:
        raise ValueError(f"bad image id {image_id!r}")
    part_path, inst_path, score_path = _paths(pred_dir, image_id)
    part_path.parent.mkdir(parents=True, exist_ok=True)
    k = parsing.num_instances
    inst = parsing.instance
    areas = np.bincount(inst.ravel(), minlength=k + 1)
    if areas.size > k + 1:
        raise ValueError(f"{image_id}: instance ids up to {areas.size - 1} but only {k} scores")
    alive = np.flatnonzero(areas[1:] > 0)
    scores = parsing.scores[alive]
    if alive.size != k:
        remap = np.zeros(k + 1, dtype=np.uint16)
        remap[alive + 1] = np.arange(1, alive.size + 1, dtype=np.uint16)
        inst = remap[inst]
    inst = inst.astype(np.uint16 if alive.size > 255 else np.uint8)
    for path, arr in ((part_path, parsing.part), (inst_path, inst)):
        if not cv2.imwrite(str(path), np.ascontiguousarray(arr)):
            raise PredictionError(f"{path}: cannot write PNG")
    with open(score_path, "w") as f:
        f.writelines(f"{np.float32(s)}\n" for s in scores)


def read_prediction(pred_dir: str | Path, image_id: str, expected_shape: tuple[int, int] | None = None) -> FrameParsing:
    """Read the three files written by ``write_prediction`` back into a ``FrameParsing``.

    Raises ``PredictionError`` naming the file: missing or unreadable file, not a single-channel
    PNG, part/instance size mismatch (or != ``expected_shape`` (H, W)), score count != max id."""
    import cv2

    part_path, inst_path, score_path = _paths(pred_dir, image_id)
    for path in (part_path, inst_path, score_path):
        if not path.is_file():
            raise PredictionError(f"{path}: missing prediction file")
    maps = []
    for path, dtypes in ((part_path, (np.uint8,)), (inst_path, (np.uint8, np.uint16))):
        arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if arr is None:
            raise PredictionError(f"{path}: unreadable PNG")
        if arr.ndim != 2 or arr.dtype not in dtypes:
            raise PredictionError(f"{path}: expected a single-channel {'/'.join(np.dtype(d).name for d in dtypes)} "
                                  f"PNG, got {arr.dtype}{list(arr.shape)}")
        maps.append(arr)
    part, inst = maps
    if inst.shape != part.shape:
        raise PredictionError(f"{inst_path}: size {inst.shape[1]}x{inst.shape[0]} does not match "
                              f"{part_path.name} {part.shape[1]}x{part.shape[0]} (WxH)")
    if expected_shape is not None and tuple(part.shape) != tuple(expected_shape):
        raise PredictionError(f"{part_path}: size {part.shape[1]}x{part.shape[0]} does not match the image "
                              f"{expected_shape[1]}x{expected_shape[0]} (WxH)")
    try:
        lines = [ln.strip() for ln in score_path.read_text().splitlines() if ln.strip()]
        scores = np.asarray([float(ln) for ln in lines], dtype=np.float64)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise PredictionError(f"{score_path}: unreadable scores ({exc})") from None
    if not np.isfinite(scores).all():
        raise PredictionError(f"{score_path}: non-finite score")
    max_id = int(inst.max()) if inst.size else 0
    if scores.size != max_id:
        raise PredictionError(f"{score_path}: {scores.size} scores but {inst_path.name} has person ids up to {max_id}")
    return FrameParsing(part=part, instance=inst.astype(np.uint16), scores=scores.astype(np.float32))
