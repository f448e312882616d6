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

import functools
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
        if nh < x.shape[-2] and x.device.type == "cpu" and x.dtype == torch.float32 and max(x.shape[-2] / nh, x.shape[-1] / nw) < 3.5:
            x = antialias_resize(x, (nh, nw))  # (kernels of 3 or 5 taps; oneDNN's convolution wins for longer ones)
        else:
            x = kornia.geometry.transform.resize(x, (nh, nw), interpolation="bilinear", antialias=(nh < x.shape[-2]))
    return kornia.enhance.normalize(x, mean, std)


def antialias_resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``kornia.geometry.transform.resize(x, size, "bilinear", antialias=True)`` with the same bits, faster
    on the CPU for channels_last frames and short kernels (1.65x at 640x480 on one thread, 1.2x at 1280x720;
    slower than kornia's convolution for 7 taps and more, from 1080p): kornia's Gaussian (its
    sigma and kernel size rule, its kernels, its tap order: ``x * k0``, then ``addcmul`` per tap, along
    the width then the height), reading the reflected borders from views of the frame (``_taps``) instead of
    ``F.pad(mode="reflect")`` (40 % of the time on channels_last frames). x float (B,C,h,w)."""
    from kornia.filters.kernels import get_gaussian_kernel1d

    h, w = x.shape[-2:]
    fy, fx = h / size[0], w / size[1]
    if max(fy, fx) > 1:
        sig = (max((fy - 1.0) / 2.0, 0.001), max((fx - 1.0) / 2.0, 0.001))
        ks = [int(max(2.0 * 2 * s, 3)) for s in sig]
        ks = [k if k % 2 else k + 1 for k in ks]
        ks = [1 if n == 1 else k for n, k in zip((h, w), ks)]  # a singleton axis is not smoothed
        for axis, k, s in ((-1, ks[1], sig[1]), (-2, ks[0], sig[0])):
            x = _taps(x, get_gaussian_kernel1d(k, torch.tensor([[s]], dtype=x.dtype))[0], axis)
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def _taps(x: torch.Tensor, kernel: torch.Tensor, axis: int) -> torch.Tensor:
    """One separable pass of ``kernel`` (K,) along ``axis`` with reflect borders (kornia's accumulation order:
    ``x * k0``, then ``addcmul`` per tap). The interior reads shifted views of ``x``; only the ``r`` border
    lines on each side read reflected ones (no padded copy of the frame: ~1.2x on 960x540 frames)."""
    r, n = kernel.shape[0] // 2, x.shape[axis]
    if r == 0:
        return x * kernel[0]
    if n <= 2 * r:
        return _taps_padded(x, kernel, axis)
    out = torch.empty_like(x)  # (the frame's layout: channels_last stays channels_last)
    _accumulate(out.narrow(axis, r, n - 2 * r), [x.narrow(axis, t, n - 2 * r) for t in range(len(kernel))], kernel)
    for i in [*range(r), *range(n - r, n)]:  # source of tap t for output i: i + t - r, reflected into [0, n)
        src = [abs(j) if j < n else 2 * (n - 1) - j for j in (i + t - r for t in range(len(kernel)))]
        _accumulate(out.narrow(axis, i, 1), [x.narrow(axis, j, 1) for j in src], kernel)
    return out


def _accumulate(out: torch.Tensor, views: list[torch.Tensor], kernel: torch.Tensor) -> None:
    """``out = views[0] * k0``, then ``out += views[t] * k[t]`` in tap order (kornia's rounding)."""
    torch.mul(views[0], kernel[0], out=out)
    for t in range(1, len(kernel)):
        out.addcmul_(views[t], kernel[t])


def _taps_padded(x: torch.Tensor, kernel: torch.Tensor, axis: int) -> torch.Tensor:
    """``_taps`` through a reflect-padded copy, for an axis no longer than the kernel's span."""
    r, n = kernel.shape[0] // 2, x.shape[axis]
    shape = list(x.shape)
    shape[axis] = n + 2 * r
    cl = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    pad = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=torch.channels_last if cl else torch.contiguous_format)
    pad.narrow(axis, r, n).copy_(x)
    for i in range(1, r + 1):  # reflect: index -i is i, index n-1+i is n-1-i
        pad.narrow(axis, r - i, 1).copy_(x.narrow(axis, i, 1))
        pad.narrow(axis, r + n - 1 + i, 1).copy_(x.narrow(axis, n - 1 - i, 1))
    out = pad.narrow(axis, 0, n) * kernel[0]
    for t in range(1, kernel.shape[0]):
        out.addcmul_(pad.narrow(axis, t, n), kernel[t])
    return out


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

    @staticmethod
    def labels_to_frame(part: torch.Tensor, instance: torch.Tensor, size: tuple[int, int],
                        out_part: np.ndarray, out_instance: np.ndarray) -> None:
        """``to_frame`` for one frame's two CPU label maps, into host arrays: part (h, w) -> ``out_part``
        uint8 (H, W), instance (h, w) -> ``out_instance`` uint16 (H, W); the same pixels as ``to_frame``
        (the source rows and columns are ``F.interpolate``'s own, ``nearest_index``), gathered in the
        stored dtypes instead of resampled as float32: 3x faster at 768x432, 6x at 1080p (one thread)."""
        iy, ix = nearest_index(part.shape[-2], size[0]), nearest_index(part.shape[-1], size[1])
        p = part.to(torch.uint8).numpy()  # (the same wrap-around as the int32 -> uint8 / uint16 casts)
        i = instance.to(torch.int16).numpy().view(np.uint16)
        np.take(p[iy], ix, axis=1, out=out_part)
        np.take(i[iy], ix, axis=1, out=out_instance)


@functools.lru_cache(maxsize=256)
def nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """int64 (n_out,): the source index of each output row (or column) of ``F.interpolate(mode="nearest")``
    from ``n_in`` to ``n_out`` (computed by it, on an arange: exact below 2**24). Nearest resampling is
    separable, so rows and columns index a label map to the pixels ``to_frame`` gives."""
    src = torch.arange(n_in, dtype=torch.float32).view(1, 1, n_in, 1)
    idx = F.interpolate(src, size=(int(n_out), 1), mode="nearest").view(-1).to(torch.int64).numpy()
    idx.setflags(write=False)
    return idx


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 (B,H,W,3) numpy (possibly read-only, e.g. zero-copy from Ray's object store) -> a CPU
    tensor sharing its memory (only read, never written)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(np.ascontiguousarray(frames))
