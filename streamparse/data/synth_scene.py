"""Synthetic scenes and files: textured backgrounds, distractor shapes, occluders, composition of people,
lighting/colour jitter and noise (``render_sample``), and the CIHP / MHPv2 file layouts (``write_sample``,
``write_id_list``). Part of ``streamparse.data.synth``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from streamparse.data.synth_people import (  # noqa: F401
    _SKIN, FORMATS, MAX_PEOPLE, PART_IDS, _draw_person, _garment_colour, _Person, _person_pixels, _sample_person,
)

# ------------------------------------------------------------------------------------------ scenes
def _texture_fill(img: np.ndarray, mask: np.ndarray, colour: np.ndarray, rng: np.random.Generator) -> None:
    ys, xs = np.nonzero(mask)
    period = rng.uniform(3, 20)
    if rng.random() < 0.5:
        mod = 1 + rng.uniform(0.1, 0.4) * np.sign(np.sin((xs * rng.uniform(-1, 1) + ys) * (2 * math.pi / period)))
    else:
        mod = 1 + rng.uniform(0.1, 0.4) * (((xs // period + ys // period) % 2) * 2 - 1)
    img[ys, xs] = colour * mod[:, None].astype(np.float32)


def _random_shape(mask_or_img: np.ndarray, rng: np.random.Generator, colour, scale: float) -> None:
    H, W = mask_or_img.shape[:2]
    c = (int(rng.integers(W)), int(rng.integers(H)))
    r = max(2, int(scale * min(H, W) * rng.uniform(0.03, 0.25)))
    kind = rng.integers(3)
    if kind == 0:
        cv2.rectangle(mask_or_img, (c[0] - r, c[1] - r // 2), (c[0] + r, c[1] + r), colour, -1)
    elif kind == 1:
        cv2.ellipse(mask_or_img, c, (r, max(1, int(r * rng.uniform(0.4, 1.5)))), float(rng.uniform(0, 180)), 0, 360, colour, -1)
    else:
        pts = np.array(c) + rng.integers(-r, r + 1, (int(rng.integers(3, 7)), 2))
        cv2.fillPoly(mask_or_img, [pts.astype(np.int32)], colour)


def _background(rng: np.random.Generator, H: int, W: int) -> np.ndarray:
    """Gradient + floor + random (textured) shapes + unlabelled skin/clothing-coloured distractors."""
    c0, c1 = rng.uniform(20, 235, (2, 3)).astype(np.float32)
    a = rng.uniform(0, 2 * math.pi)
    g = (np.arange(W, dtype=np.float32)[None, :] * (math.cos(a) / W) + np.arange(H, dtype=np.float32)[:, None] * (math.sin(a) / H))
    g = (g - g.min()) / max(float(g.max() - g.min()), 1e-6)
    img = c0 + (c1 - c0) * g[..., None]
    if rng.random() < 0.5:
        img[int(H * rng.uniform(0.4, 0.8)):] = rng.uniform(30, 200, 3).astype(np.float32)
    for _ in range(int(rng.integers(3, 10))):
        _random_shape(img, rng, tuple(float(x) for x in rng.uniform(0, 255, 3)), 1.0)
    for _ in range(int(rng.integers(0, 3))):
        mask = np.zeros((H, W), np.uint8)
        _random_shape(mask, rng, 1, 1.5)
        _texture_fill(img, mask.astype(bool), rng.uniform(30, 230, 3).astype(np.float32), rng)
    for _ in range(int(rng.integers(1, 5))):  # distractors: skin or clothing colours, never labelled
        colour = _SKIN[int(rng.integers(len(_SKIN)))] if rng.random() < 0.5 else _garment_colour(rng)
        _random_shape(img, rng, tuple(float(x) for x in colour), 0.6)
    return img


def _place(rng: np.random.Generator, H: int, W: int, gx: float) -> tuple[float, float, float]:
    """(cx, foot, height) with height 20%..90% of H (log-uniform), people clustered around gx."""
    height = H * math.exp(rng.uniform(math.log(0.2), math.log(0.9)))
    foot = rng.uniform(max(0.3 * H, height - 0.1 * H), 1.08 * H)
    cx = float(np.clip(gx + rng.normal(0, 0.22 * W), -0.05 * W, 1.05 * W))
    return cx, foot, height


@dataclass
class SynthSample:
    """One rendered image: ``image`` uint8[H, W, 3] RGB, ``persons`` list of uint8[H, W] category maps
    (non-empty, back to front), ``full_areas[i]``/``visible_areas[i]`` pixels of person i in the image
    before/after occlusion."""

    image: np.ndarray
    persons: list[np.ndarray]
    full_areas: list[int]
    visible_areas: list[int]


def _occluder(rng: np.random.Generator, H: int, W: int) -> tuple[np.ndarray, np.ndarray]:
    """A foreground object (bool[H, W] mask, colour) that hides people; its pixels are background."""
    mask = np.zeros((H, W), np.uint8)
    _random_shape(mask, rng, 1, 0.7)
    return mask.astype(bool), rng.uniform(0, 255, 3).astype(np.float32)


def _compose(img: np.ndarray, people: Sequence[_Person], rng: np.random.Generator, occluder=None):
    """Draw people back to front into ``img`` (float32, in place). Returns (cat, hum, full_areas)."""
    H, W = img.shape[:2]
    cat = np.zeros((H, W), np.uint8)
    hum = np.zeros((H, W), np.uint8)
    full = []
    for k, p in enumerate(people, 1):
        ox, oy = math.floor(p.cx - 0.6 * p.height), math.floor(p.foot - 1.35 * p.height)
        x0, y0 = max(ox, 0), max(oy, 0)
        x1, y1 = min(math.ceil(p.cx + 0.6 * p.height), W), min(math.ceil(p.foot + 0.05 * p.height), H)
        if x1 <= x0 or y1 <= y0:
            full.append(0)
            continue
        lab = np.zeros((y1 - y0, x1 - x0), np.uint8)
        _draw_person(lab, p, x0, y0)
        ys, xs = np.nonzero(lab)
        full.append(int(ys.size))
        img[y0:y1, x0:x1][ys, xs] = _person_pixels(p, lab, ys, xs, x0, y0, rng)
        cat[y0:y1, x0:x1][ys, xs] = lab[ys, xs]
        hum[y0:y1, x0:x1][ys, xs] = k
    if occluder is not None:
        mask, colour = occluder
        img[mask] = colour
        cat[mask] = 0
        hum[mask] = 0
    return cat, hum, full


def _finish(img: np.ndarray, jitter: tuple, rng: np.random.Generator) -> np.ndarray:
    """Colour/lighting jitter, gaussian noise, optional blur -> uint8."""
    gain, bias, contrast, sigma, blur = jitter
    img = (img - 128.0) * contrast + 128.0
    img = img * gain + bias
    if sigma > 0:
        img += rng.standard_normal(img.shape, dtype=np.float32) * sigma
    out = np.clip(img, 0, 255).astype(np.uint8)
    return cv2.GaussianBlur(out, (3, 3), 0) if blur else out


def _jitter(rng: np.random.Generator) -> tuple:
    return (rng.uniform(0.85, 1.15, 3).astype(np.float32), float(rng.uniform(-20, 20)), float(rng.uniform(0.8, 1.2)),
            float(rng.uniform(0, 8)), bool(rng.random() < 0.3))


def _split_persons(cat: np.ndarray, hum: np.ndarray, n: int) -> tuple[list[np.ndarray], list[int]]:
    keep = [k for k, c in enumerate(np.bincount(hum.ravel(), minlength=n + 1)[1:], 1) if c > 0]
    return [np.where(hum == k, cat, 0).astype(np.uint8) for k in keep], keep


def render_sample(rng: np.random.Generator, size: tuple[int, int] = (256, 256), format: str = "cihp",
                  num_people: int = 3) -> SynthSample:
    """Render one image with ``num_people`` people (fully hidden ones are not returned)."""
    _check(format, size, num_people, num_people)
    H, W = size
    img = _background(rng, H, W)
    gx = rng.uniform(0.2, 0.8) * W
    people = sorted((_sample_person(rng, format, *_place(rng, H, W, gx)) for _ in range(num_people)), key=lambda p: p.foot)
    cat, hum, full = _compose(img, people, rng, _occluder(rng, H, W) if rng.random() < 0.25 else None)
    persons, keep = _split_persons(cat, hum, num_people)
    image = _finish(img, _jitter(rng), rng)
    return SynthSample(image, persons, [full[k - 1] for k in keep], [int(np.count_nonzero(p)) for p in persons])


# ------------------------------------------------------------------------------------------ writing
def _check(fmt: str, size: Sequence[int], lo: int, hi: int) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if len(size) != 2 or min(size) < 16:
        raise ValueError(f"size must be (H, W) with both >= 16, got {tuple(size)}")
    if not 0 <= lo <= hi <= MAX_PEOPLE:
        raise ValueError(f"need 0 <= min_people <= max_people <= {MAX_PEOPLE}, got {lo}..{hi}")


def _imwrite(path: Path, arr: np.ndarray, params: Sequence[int] = ()) -> None:
    if not cv2.imwrite(str(path), arr, list(params)):
        raise OSError(f"{path}: cv2.imwrite failed")


def write_sample(out_dir: str | Path, image_id: str, image: np.ndarray, persons: Sequence[np.ndarray], format: str) -> None:
    """Write one image (uint8[H, W, 3] RGB) and its persons (uint8[H, W] each) in the CIHP or MHPv2 layout."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8[H, W, 3], got {image.dtype}{list(image.shape)}")
    for p in persons:
        if p.dtype != np.uint8 or p.shape != image.shape[:2]:
            raise ValueError(f"persons must be uint8{list(image.shape[:2])}, got {p.dtype}{list(p.shape)}")
    out = Path(out_dir)
    bgr = np.ascontiguousarray(image[..., ::-1])
    if format == "cihp":
        for d in ("Images", "Category_ids", "Human_ids", "Instance_ids"):
            (out / d).mkdir(parents=True, exist_ok=True)
        cat = np.zeros(image.shape[:2], np.uint8)
        hum = np.zeros(image.shape[:2], np.uint8)
        for k, p in enumerate(persons, 1):
            m = p > 0
            cat[m], hum[m] = p[m], k
        inst = np.where(hum > 0, (hum.astype(np.int32) - 1) * 20 + cat, 0).astype(np.uint8)
        _imwrite(out / "Images" / f"{image_id}.jpg", bgr, (cv2.IMWRITE_JPEG_QUALITY, 95))
        _imwrite(out / "Category_ids" / f"{image_id}.png", cat)
        _imwrite(out / "Human_ids" / f"{image_id}.png", hum)
        _imwrite(out / "Instance_ids" / f"{image_id}.png", inst)
        values = np.unique(inst[hum > 0])
        lines = [f"{v} {v % 20} {v // 20 + 1}" for v in values.tolist()]  # categories are 1..19
        (out / "Instance_ids" / f"{image_id}.txt").write_text("".join(line + "\n" for line in lines))
    elif format == "mhpv2":
        (out / "images").mkdir(parents=True, exist_ok=True)
        (out / "parsing_annos").mkdir(parents=True, exist_ok=True)
        _imwrite(out / "images" / f"{image_id}.jpg", bgr, (cv2.IMWRITE_JPEG_QUALITY, 95))
        n = len(persons)
        for k, p in enumerate(persons, 1):  # class id in every channel, so channel 0 holds it in any order
            _imwrite(out / "parsing_annos" / f"{image_id}_{n:02d}_{k:02d}.png", np.repeat(p[..., None], 3, axis=2))
    else:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")


def write_id_list(out_dir: str | Path, split: str, ids: Sequence[str], format: str) -> Path:
    """Write ``<split>_id.txt`` (CIHP) or ``list/<split>.txt`` (MHPv2), replacing an existing list."""
    out = Path(out_dir)
    path = out / f"{split}_id.txt" if format == "cihp" else out / "list" / f"{split}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{i}\n" for i in ids))
    return path
