"""The one preprocessing rule, for inference and training alike.

- **Size**: keep the aspect ratio; the short side becomes ``short`` unless the long side would exceed
  ``long`` (then the long side becomes ``long``); round to whole pixels (``target_size``).
- **Interpolation**: bilinear (``align_corners=False``), with antialiasing when shrinking (kornia).
- **Normalisation**: RGB / 255, ImageNet mean and std (``MEAN``, ``STD``).
- **Padding**: zeros (after normalisation) at the bottom and right to a multiple of 32.
- **Inverse**: label maps at the resized size go back to the frame's pixels by nearest-neighbour
  resampling (``to_frame``).

Inference runs it on the model's device on a whole batch (``Preprocessor``); training resizes each
image with the same function on the CPU (``resize_normalize``) and pads in the collate step, so a
trained model sees exactly the tensor inference feeds it.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F

from streamparse.data.imagerule import (  # noqa: F401 (the rule, re-exported for inference's callers)
    MEAN, SIZE_DIVISOR, STD, _check_image, normalize_image, padded, resize_image, target_size,
)


def _resize_normalize(x: torch.Tensor, size: tuple[int, int], mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """x float (B,3,h,w) in [0,1] -> resized to ``size`` and normalised (B,3,*size)."""
    import kornia

    nh, nw = size
    if (nh, nw) != tuple(x.shape[-2:]):
        x = kornia.geometry.transform.resize(x, (nh, nw), interpolation="bilinear", antialias=(nh < x.shape[-2]))
    return kornia.enhance.normalize(x, mean, std)


class Preprocessor:
    """uint8 frames (B,H,W,3) on ``device`` -> normalised, padded float (B,3,Hp,Wp) and the resized
    valid size (h, w). ``input_size``: (short side, max long side); ``channels_last`` on CPU.
    ``mode="official"``: the authors' preprocessing instead (``preprocess_official``: cv2 bilinear on the
    host, no antialiasing), for converted authors' checkpoints; documented as a deviation there."""

    def __init__(self, *, input_size: tuple[int, int], device: torch.device, mode: str = "default"):
        if len(input_size) != 2 or min(input_size) < 1:
            raise ValueError(f"input_size must be (short side, max long side), got {input_size}")
        if mode not in ("default", "official"):
            raise ValueError(f"preprocess must be default or official, got {mode!r}")
        self.mode = mode
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.device = torch.device(device)
        self._mean = torch.tensor(MEAN, device=self.device)
        self._std = torch.tensor(STD, device=self.device)

    def size_of(self, h: int, w: int, input_size: tuple[int, int] | None = None) -> tuple[int, int]:
        nh, nw, _ = target_size(h, w, *(input_size or self.input_size))
        return nh, nw

    def __call__(self, frames_dev: torch.Tensor, input_size: tuple[int, int] | None = None) -> tuple[torch.Tensor, tuple[int, int]]:
        if self.mode == "official":
            from streamparse.official.preprocess import official_preprocess

            x, size = official_preprocess(frames_dev.cpu().numpy(), input_size or self.input_size)
            x = torch.from_numpy(x).to(self.device)
            return (x.contiguous(memory_format=torch.channels_last) if self.device.type == "cpu" else x), size
        b, h, w, _ = frames_dev.shape
        nh, nw = self.size_of(h, w, input_size)
        x = _resize_normalize(frames_dev.permute(0, 3, 1, 2).float().div_(255.0), (nh, nw), self._mean, self._std)
        x = F.pad(x, (0, padded(nw) - nw, 0, padded(nh) - nh))
        if self.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        return x, (nh, nw)

    @staticmethod
    def to_frame(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Inverse mapping: label maps (M, h, w) at the resized size -> (M, H, W) at the frame's size
        (nearest neighbour; integer labels are never blended)."""
        if tuple(maps.shape[-2:]) == tuple(size):
            return maps
        return F.interpolate(maps.float()[None], size=size, mode="nearest")[0].to(maps.dtype)


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 (B,H,W,3) numpy (possibly read-only, e.g. zero-copy from Ray's object store) -> a CPU
    tensor sharing its memory (only read, never written)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(np.ascontiguousarray(frames))
