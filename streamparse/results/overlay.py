"""Overlays for people to look at: part colours, person outlines, track labels, a legend.

``Overlay.draw`` works on the uint8 label maps with lookup tables and OpenCV's SIMD kernels: one palette
lookup (``np.take``), one weighted blend, one masked copy for the background, one dilate/erode pair on
the instance map for the outlines; the only per-person work is a text label. No per-person pass over
the full frame. ``overlay`` is the one-call form used by ``streamparse predict --overlay``.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

_KERNEL = np.ones((3, 3), np.uint8)


def track_colours(n: int = 256, seed: int = 7) -> np.ndarray:
    """(n,3) uint8 bright colours for outlines/labels, id i -> colour i % n (0 = white)."""
    rng = np.random.default_rng(seed)
    hsv = np.stack([rng.integers(0, 180, n), np.full(n, 200), np.full(n, 255)], 1).astype(np.uint8)[None]
    out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0]
    out[0] = 255
    return out


class Overlay:
    """Draws one frame's parse over its RGB image.

    palette (C,3) uint8 part colours; alpha: weight of the part colour; outlines: person outlines in
    the person's track colour; legend: class names to list with their colours (None = no legend).
    """

    def __init__(self, palette, *, alpha: float = 0.5, outlines: bool = True, legend: Sequence[str] | None = None,
                 legend_ids: Sequence[int] | None = None):
        self.palette = np.ascontiguousarray(np.asarray(palette, np.uint8))
        if self.palette.ndim != 2 or self.palette.shape[1] != 3:
            raise ValueError(f"palette must be (C,3) uint8, got {self.palette.shape}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.alpha = float(alpha)
        self.outlines = outlines
        self.track_lut = track_colours()
        self._legend = None
        if legend is not None:
            ids = list(legend_ids) if legend_ids is not None else list(range(1, len(legend)))
            self._legend = self._legend_patch([legend[i] for i in ids], self.palette[ids])

    @staticmethod
    def _legend_patch(names: Sequence[str], colours: np.ndarray) -> np.ndarray:
        row, pad = 14, 4
        w = pad * 3 + 10 + max((cv2.getTextSize(n, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)[0][0] for n in names), default=0)
        img = np.full((pad * 2 + row * len(names), w, 3), 30, np.uint8)
        for i, (n, c) in enumerate(zip(names, colours)):
            y = pad + i * row
            cv2.rectangle(img, (pad, y + 2), (pad + 10, y + 12), tuple(int(v) for v in c), -1)
            cv2.putText(img, n, (pad * 2 + 10, y + 11), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        return img

    def draw(self, image: np.ndarray, part: np.ndarray, instance: np.ndarray, labels=None, out: np.ndarray | None = None) -> np.ndarray:
        """image uint8 (H,W,3) RGB, part uint8 (H,W), instance uint16 (H,W); labels: optional list of
        (instance id, text, (x0, y0, x1, y1), colour key) drawn at the box's top-left corner, the colour
        key (a track id) picking the outline/label colour of that person. Returns uint8 (H,W,3)."""
        if image.shape[:2] != part.shape or part.shape != instance.shape or image.ndim != 3:
            raise ValueError(f"image {image.shape}, part {part.shape} and instance {instance.shape} must match")
        if part.dtype != np.uint8:
            raise ValueError(f"part must be uint8, got {part.dtype}")
        if part.size and int(part.max()) >= len(self.palette):
            raise ValueError(f"part label {int(part.max())} has no palette colour (palette has {len(self.palette)})")
        image = np.ascontiguousarray(image)
        colour = np.take(self.palette, part, axis=0)
        out = cv2.addWeighted(image, 1.0 - self.alpha, colour, self.alpha, 0.0, dst=out)
        cv2.copyTo(image, (part == 0).view(np.uint8), out)  # background keeps the image
        inst = np.ascontiguousarray(instance)
        if self.outlines and inst.size:
            hi = cv2.dilate(inst, _KERNEL)
            edge = hi != cv2.erode(inst, _KERNEL)
            lut = np.full((int(hi.max()) + 1, 3), 255, np.uint8)
            for inst_id, _, _, key in labels or ():
                if inst_id < len(lut):
                    lut[inst_id] = self.track_lut[int(key) % len(self.track_lut)]
            out[edge] = lut[hi[edge]]
        for _, text, box, key in labels or ():
            x0, y0 = int(box[0]), int(box[1])
            (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
            y = max(th + 2, y0)
            c = tuple(int(v) for v in self.track_lut[int(key) % len(self.track_lut)])
            cv2.rectangle(out, (x0, y - th - 2), (x0 + tw + 2, y), c, -1)
            cv2.putText(out, text, (x0 + 1, y - 2), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        if self._legend is not None:
            lh, lw = self._legend.shape[:2]
            H, W = out.shape[:2]
            if lh + 4 <= H and lw + 4 <= W:
                roi = out[4:4 + lh, W - lw - 4:W - 4]
                cv2.addWeighted(roi, 0.25, self._legend, 0.75, 0.0, dst=roi)
        return out


def overlay(image: np.ndarray, part: np.ndarray, instance: np.ndarray, palette: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend part colours over ``image`` (uint8 HxWx3 RGB) and draw white person outlines.

    part uint8 (H,W), instance uint16 (H,W), palette uint8 (C,3). Returns uint8 HxWx3."""
    return Overlay(palette, alpha=alpha).draw(np.asarray(image, np.uint8), np.asarray(part, np.uint8),
                                             np.asarray(instance, np.uint16))
