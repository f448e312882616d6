"""The one preprocessing rule's pieces that training needs too (``streamparse.engine.preprocess`` has the
whole rule and inference's batched ``Preprocessor``): the size rule, the normalisation constants, and
the training side of the resize and the normalisation (the same interpolation and constants as
inference). Here, below both the engine and the data sets, so neither imports the other."""

from __future__ import annotations

import numpy as np
import torch

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
SIZE_DIVISOR = 32


def target_size(h: int, w: int, short: int, long: int) -> tuple[int, int, float]:
    """Resized (h, w) keeping aspect: short side -> ``short`` unless the long side exceeds ``long``."""
    scale = min(short / min(h, w), long / max(h, w))
    return max(1, int(round(h * scale))), max(1, int(round(w * scale))), scale


def padded(n: int, divisor: int = SIZE_DIVISOR) -> int:
    return -(-n // divisor) * divisor


def _check_image(image: np.ndarray) -> torch.Tensor:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8[H, W, 3], got {image.dtype}{list(image.shape)}")
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float().div_(255.0)


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Training side of the resize: one uint8 (H,W,3) RGB image -> uint8 (*size, 3), with the interpolation
    inference uses (bilinear, antialiased when shrinking), rounded to uint8 (the only difference from
    inference's float path: at most 0.5/255 per pixel before normalisation)."""
    x = _check_image(image)
    if tuple(size) != tuple(image.shape[:2]):
        import kornia

        x = kornia.geometry.transform.resize(x, tuple(size), interpolation="bilinear", antialias=(size[0] < image.shape[0]))
    return x[0].mul_(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


def normalize_image(image: np.ndarray) -> torch.Tensor:
    """Training side of the normalisation: uint8 (H,W,3) -> float (3,H,W), as inference normalises."""
    import kornia

    return kornia.enhance.normalize(_check_image(image), torch.tensor(MEAN), torch.tensor(STD))[0]
