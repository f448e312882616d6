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


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """x float (B,3,h,w) in [0,1] -> resized to ``size`` (bilinear, antialiased when shrinking: kornia's rule)."""
    import kornia

    nh, nw = size
    if (nh, nw) == tuple(x.shape[-2:]):
        return x
    if _fast_shrink(x.shape[-2], x.shape[-1], size) and x.device.type == "cpu" and x.dtype == torch.float32:
        return antialias_resize(x, (nh, nw))
    return kornia.geometry.transform.resize(x, (nh, nw), interpolation="bilinear", antialias=(nh < x.shape[-2]))


def _fast_shrink(h: int, w: int, size: tuple[int, int]) -> bool:
    """Whether the CPU shrink by taps (``antialias_resize``) takes a (h, w) frame to ``size``: kernels of 3 or 5
    taps (oneDNN's convolution, kornia's own path, wins for longer ones)."""
    return size[0] < h and max(h / size[0], w / size[1]) < 3.5


@functools.lru_cache(maxsize=64)
def _gaussians(h: int, w: int, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """kornia's antialiasing kernels (its sigma and kernel size rule) for (h, w) -> ``size``: (ky, kx) float32
    (K,) each, only read; a singleton axis gets the one-tap kernel. Cached: made once per frame size, not
    per batch (~0.2 ms each)."""
    from kornia.filters.kernels import get_gaussian_kernel1d

    sig = (max((h / size[0] - 1.0) / 2.0, 0.001), max((w / size[1] - 1.0) / 2.0, 0.001))
    ks = [int(max(2.0 * 2 * s, 3)) for s in sig]
    ks = [k if k % 2 else k + 1 for k in ks]
    ks = [1 if n == 1 else k for n, k in zip((h, w), ks)]  # a singleton axis is not smoothed
    ky, kx = (get_gaussian_kernel1d(k, torch.tensor([[s]], dtype=torch.float32))[0] for k, s in zip(ks, sig))
    return ky, kx


def antialias_resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``kornia.geometry.transform.resize(x, size, "bilinear", antialias=True)`` with the same bits, faster
    on the CPU for channels_last frames and short kernels (1.65x at 640x480 on one thread, 1.2x at 1280x720;
    slower than kornia's convolution for 7 taps and more, from 1080p): kornia's Gaussian (its
    sigma and kernel size rule, its kernels, its tap order: ``x * k0``, then ``addcmul`` per tap, along
    the width then the height), reading the reflected borders from views of the frame (``_taps``) instead of
    ``F.pad(mode="reflect")`` (40 % of the time on channels_last frames). x float32 (B,C,h,w)."""
    h, w = x.shape[-2:]
    if max(h / size[0], w / size[1]) > 1:
        ky, kx = _gaussians(int(h), int(w), (int(size[0]), int(size[1])))
        x = _taps(_taps(x, kx, -1), ky, -2)
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def blurred_frames(frames: torch.Tensor, ky: torch.Tensor, kx: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 frames (B,h,w,3) -> ``_taps(_taps(x, kx, -1), ky, -2)`` of ``x = frames / 255`` as float32 (B,3,h,w)
    channels_last, the same bits, in strips of rows: each strip's float copy and width pass stay in the
    cache and only the result is written at full size (into ``out`` when given: a buffer of that shape and
    layout). Needs h > 2 * (len(ky) // 2)."""
    b, h, w, c = frames.shape
    ry = ky.shape[0] // 2
    src = frames.permute(0, 3, 1, 2)
    if out is None:
        out = torch.empty((b, c, h, w), dtype=torch.float32, memory_format=torch.channels_last)
    rows = min(h, max(8, _STRIP_BYTES // max(1, b * c * w * 4)))
    xs_buf, hs_buf = (torch.empty((b, c, min(h, rows + 2 * ry), w), dtype=torch.float32, memory_format=torch.channels_last)
                      for _ in range(2))  # (reused by every strip: no fresh pages per strip)
    for s in range(0, h, rows):
        e = min(h, s + rows)
        a, z = max(0, s - ry), min(h, e + ry)  # the strip's width pass covers rows a..z: its rows and the height taps' reach
        xs = xs_buf[:, :, :z - a]
        xs.copy_(src[:, :, a:z]).div_(255.0)
        hs = _taps(xs, kx, -1, out=hs_buf[:, :, :z - a])
        lo, hi = max(s, ry), min(e, h - ry)  # rows whose height taps need no reflected row
        if hi > lo:
            _accumulate(out[:, :, lo:hi], [hs[:, :, lo + t - ry - a:hi + t - ry - a] for t in range(len(ky))], ky)
        for i in [*range(s, min(lo, e)), *range(max(hi, s), e)]:
            src_rows = [_reflect(i + t - ry, h) - a for t in range(len(ky))]
            _accumulate(out[:, :, i:i + 1], [hs[:, :, j:j + 1] for j in src_rows], ky)
    return out


_STRIP_BYTES = 768 * 1024  # a strip's float copy: fits in L2 beside its width pass


def _reflect(j: int, n: int) -> int:
    """Index ``j`` in [-n+1, 2n-2] reflected into [0, n) (``F.pad(mode="reflect")``'s rule)."""
    return abs(j) if j < n else 2 * (n - 1) - j


def _taps(x: torch.Tensor, kernel: torch.Tensor, axis: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """One separable pass of ``kernel`` (K,) along ``axis`` with reflect borders (kornia's accumulation order:
    ``x * k0``, then ``addcmul`` per tap). The interior reads shifted views of ``x``; only the ``r`` border
    lines on each side read reflected ones (no padded copy of the frame: ~1.2x on 960x540 frames).
    Needs r < n (as ``F.pad(mode="reflect")`` does). ``out``: where to write (x's shape), else a new tensor."""
    r, n = kernel.shape[0] // 2, x.shape[axis]
    if out is None:
        out = torch.empty_like(x)  # (the frame's layout: channels_last stays channels_last)
    if r == 0:
        return torch.mul(x, kernel[0], out=out)
    if n > 2 * r:
        _accumulate(out.narrow(axis, r, n - 2 * r), [x.narrow(axis, t, n - 2 * r) for t in range(len(kernel))], kernel)
    for i in sorted({*range(min(r, n)), *range(max(n - r, 0), n)}):  # tap t of output i reads i + t - r, reflected
        _accumulate(out.narrow(axis, i, 1), [x.narrow(axis, _reflect(i + t - r, n), 1) for t in range(len(kernel))], kernel)
    return out


def _accumulate(out: torch.Tensor, views: list[torch.Tensor], kernel: torch.Tensor) -> None:
    """``out = views[0] * k0``, then ``out += views[t] * k[t]`` in tap order (kornia's rounding)."""
    torch.mul(views[0], kernel[0], out=out)
    for t in range(1, len(kernel)):
        out.addcmul_(views[t], kernel[t])


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
        self._buf: torch.Tensor | None = None  # (CPU) the shrink's frame-sized float buffer

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
        if self.device.type == "cpu" and _fast_shrink(h, w, (nh, nw)) and frames_dev.dtype == torch.uint8:
            ky, kx = _gaussians(h, w, (nh, nw))
            if h > 2 * (ky.shape[0] // 2):
                blur = blurred_frames(frames_dev, ky, kx, out=self._full_size((b, 3, h, w)))
                x = F.interpolate(blur, size=(nh, nw), mode="bilinear", align_corners=False)
                return self._normalize_padded(x), (nh, nw)
        x = _resize(frames_dev.permute(0, 3, 1, 2).float().div_(255.0), (nh, nw))
        return self._normalize_padded(x), (nh, nw)

    def _normalize_padded(self, x: torch.Tensor) -> torch.Tensor:
        """float (B,3,h,w) -> ``(x - MEAN) / STD`` (kornia's normalize: the same two operations) written into
        zeros padded at the bottom and right to multiples of ``SIZE_DIVISOR`` (B,3,Hp,Wp); channels_last on CPU."""
        b, c, nh, nw = x.shape
        fmt = torch.channels_last if self.device.type == "cpu" else torch.contiguous_format
        out = torch.empty((b, c, padded(nh), padded(nw)), dtype=x.dtype, device=x.device, memory_format=fmt)
        out[..., nh:, :].zero_()
        out[..., :nh, nw:].zero_()
        valid = out[..., :nh, :nw]
        mean, std = self._mean.view(1, -1, 1, 1), self._std.view(1, -1, 1, 1)
        if self.device.type == "cpu" and x.is_contiguous(memory_format=torch.channels_last):
            # channels innermost: a row's values with MEAN/STD repeated along it (one vectorised loop per row,
            # not a loop of 3 per pixel: 3x faster), the same subtraction and division of each value
            valid = valid.permute(0, 2, 3, 1).view(b, nh, nw * c)
            x = x.permute(0, 2, 3, 1).view(b, nh, nw * c)
            mean, std = self._mean.repeat(nw), self._std.repeat(nw)
        torch.sub(x, mean, out=valid)
        valid.div_(std)
        return out

    def _full_size(self, shape: tuple) -> torch.Tensor:
        """The frame-sized float buffer of the CPU shrink, kept between batches of one size (a fresh 16-25 MB
        tensor per batch costs its page faults again: ~0.4 ms a frame at 768x432). Callers take turns: the
        inference worker runs one batch at a time."""
        if self._buf is None or tuple(self._buf.shape) != tuple(shape):
            self._buf = torch.empty(shape, dtype=torch.float32, memory_format=torch.channels_last)
        return self._buf

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
        uint8 (H, W), instance (h, w) -> ``out_instance`` uint16 or uint8 (H, W); the same pixels as
        ``to_frame`` (the source rows and columns are ``F.interpolate``'s own, ``nearest_index``), gathered in
        the stored dtypes instead of resampled as float32: 3x faster at 768x432, 6x at 1080p (one thread)."""
        iy, ix = nearest_index(part.shape[-2], size[0]), nearest_index(part.shape[-1], size[1])
        for m, out in ((part, out_part), (instance, out_instance)):
            if out.dtype == np.uint8:  # (the same wrap-around as the int -> uint8 / uint16 casts)
                m = m.to(torch.uint8).numpy()
            else:
                m = m.to(torch.int16).numpy().view(np.uint16)
            np.take(m[iy], ix, axis=1, out=out)


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
