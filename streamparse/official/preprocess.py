"""The authors' test-time preprocessing (their mmdetection test pipeline), for ``preprocess="official"``.

RGB frames -> keep-ratio resize into ``size`` = (short, long) = (800, 1333) the way mmcv's
``imrescale`` does it (scale = min(long / max(h, w), short / min(h, w)), new side = int(side *
scale + 0.5), cv2 bilinear on uint8, no antialias) -> ImageNet mean/std on the 0-255 scale
(float32, subtract then multiply by 1/std) -> zeros appended bottom/right up to a multiple of 32.
The authors read BGR files and convert to RGB in ``Normalize(to_rgb=True)``; frames here are RGB
already, and the resize treats channels independently, so the order of the two does not matter.
"""

from __future__ import annotations

import numpy as np

MEAN_255 = np.array([123.675, 116.28, 103.53], dtype=np.float32)
STD_255 = np.array([58.395, 57.12, 57.375], dtype=np.float32)
OFFICIAL_SIZE = (800, 1333)


def official_resize_shape(h: int, w: int, size: tuple[int, int] = OFFICIAL_SIZE) -> tuple[int, int]:
    """(new_h, new_w) of mmcv's keep-ratio rescale of an h x w image into ``size`` (short, long)."""
    short, long = min(size), max(size)
    scale = min(long / max(h, w), short / min(h, w))
    return int(h * scale + 0.5), int(w * scale + 0.5)


def official_preprocess(frames: np.ndarray, size: tuple[int, int] = OFFICIAL_SIZE,
                        divisor: int = 32) -> tuple[np.ndarray, tuple[int, int]]:
    """frames uint8[B, H, W, 3] RGB -> (float32[B, 3, Hp, Wp] normalised and zero-padded, (h, w)
    of the resized images inside the padding)."""
    import cv2

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8[B,H,W,3], got {frames.dtype}{list(frames.shape)}")
    b, H, W, _ = frames.shape
    nh, nw = official_resize_shape(H, W, size)
    ph, pw = -(-nh // divisor) * divisor, -(-nw // divisor) * divisor
    out = np.zeros((b, 3, ph, pw), dtype=np.float32)
    inv_std = (1.0 / STD_255.astype(np.float64)).astype(np.float32)
    for i in range(b):
        img = cv2.resize(frames[i], (nw, nh), interpolation=cv2.INTER_LINEAR)
        x = (img.astype(np.float32) - MEAN_255) * inv_std
        out[i, :, :nh, :nw] = x.transpose(2, 0, 1)
    return out, (nh, nw)
