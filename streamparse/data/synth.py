"""Deterministic synthetic multi-human parsing data in the CIHP or MHPv2 layout, and H.264 videos.

People are drawn back to front (a later person occludes an earlier one) as cv2 polygons/ellipses
(no anti-aliasing in label maps) with real category ids: hair, face, clothes, left/right arms, legs
and shoes (left = the person's left: image right when facing the camera), optional hat, sunglasses,
coat, dress/skirt, scarf, gloves, socks, backpack (MHPv2 only). Images get textured clothes,
textured backgrounds, unlabelled distractor shapes, colour/lighting jitter and noise.
Everything is a pure function of the seed: same seed -> byte-identical files.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

FORMATS = ("cihp", "mhpv2")
MAX_PEOPLE = 12  # CIHP Instance_ids value (h-1)*20 + c must fit in uint8
_PARTS = ("hat", "hair", "glove", "sunglasses", "upper", "dress", "coat", "socks", "pants", "shorts", "neck",
          "scarf", "skirt", "face", "l_arm", "r_arm", "l_hand", "r_hand", "l_leg", "r_leg", "l_shoe", "r_shoe",
          "backpack")
PART_IDS = {  # part -> label id; 0 = not drawn in this format
    "cihp": dict(zip(_PARTS, (1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 10, 11, 12, 13, 14, 15, 14, 15, 16, 17, 18, 19, 0))),
    "mhpv2": dict(zip(_PARTS, (1, 4, 49, 47, 12, 35, 34, 21, 17, 18, 16, 50, 19, 3, 5, 6, 7, 8, 30, 31, 24, 25, 40))),
}
_MHP_UPPER = (11, 12, 13, 14, 15)  # jacket, t-shirt, polo-shirt, sweater, singlet
_SKIN = np.array([(255, 224, 189), (234, 192, 134), (224, 172, 105), (198, 134, 66), (141, 85, 36), (92, 51, 23)], np.float32)
_HAIR = np.array([(20, 15, 10), (60, 40, 25), (110, 75, 40), (200, 170, 110), (150, 60, 30), (160, 160, 160)], np.float32)
_SHIFT = 3  # cv2 fixed-point bits for sub-pixel geometry
_ONE = 1 << _SHIFT


# ----------------------------------------------------------------------------------------- people
@dataclass
class _Person:
    cx: float      # centre x (px)
    foot: float    # y of the soles (px)
    height: float  # px
    front: bool    # facing the camera
    phase: float   # walking phase (rad)
    stride: float
    arms: tuple[float, float, float, float]  # left out, left elbow, right out, right elbow (rad)
    body: tuple[float, float, float, float]  # head rx, head ry, shoulder half-width, hip half-width (x height)
    outfit: dict   # lower, sleeve, coat, hat, glasses, gloves, scarf, long_hair, socks, backpack, vneck, hem
    ids: dict      # part -> label id
    colour: np.ndarray  # float32[256, 3] per label id
    tex: dict      # label id -> (kind, amp, period, angle, phase)
    light: float


def _garment_colour(rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.3:  # black / grey / white
        return np.full(3, rng.uniform(15, 240), np.float32) + rng.uniform(-8, 8, 3).astype(np.float32)
    return rng.uniform(0, 255, 3).astype(np.float32)


def _sample_person(rng: np.random.Generator, fmt: str, cx: float, foot: float, height: float) -> _Person:
    r = rng.random
    lower = ("pants", "pants", "shorts", "skirt", "dress")[int(rng.integers(5))]
    outfit = dict(lower=lower, sleeve=int(rng.integers(3)), coat=r() < 0.2, hat=r() < 0.3, glasses=r() < 0.2,
                  gloves=r() < 0.1, scarf=r() < 0.15, long_hair=r() < 0.35, socks=r() < 0.15, vneck=r() < 0.3,
                  backpack=fmt == "mhpv2" and r() < 0.25, hem=float(rng.uniform(0.6, 0.8)))
    ids = dict(PART_IDS[fmt])
    if fmt == "mhpv2":
        ids["upper"] = int(_MHP_UPPER[int(rng.integers(len(_MHP_UPPER)))])
    skin = _SKIN[int(rng.integers(len(_SKIN)))] + rng.uniform(-12, 12, 3).astype(np.float32)
    hair = _HAIR[int(rng.integers(len(_HAIR)))] + rng.uniform(-10, 10, 3).astype(np.float32)
    colour = np.zeros((256, 3), np.float32)
    tex: dict[int, tuple] = {}
    for part in _PARTS:  # one colour + texture per part (shared by parts that share a label id)
        v = ids[part]
        if v == 0 or v in tex:
            continue
        if part in ("face", "neck", "l_arm", "r_arm", "l_hand", "r_hand", "l_leg", "r_leg"):
            colour[v], tex[v] = skin, (3, 0.03, 1.0, 0.0, 0.0)
            continue
        colour[v] = hair if part == "hair" else (_garment_colour(rng) * 0.25 if part == "sunglasses" else _garment_colour(rng))
        kind = int(rng.choice(4, p=(0.35, 0.25, 0.15, 0.25)))
        tex[v] = (kind, float(rng.uniform(0.12, 0.4) if kind < 3 else rng.uniform(0.04, 0.15)),
                  float(rng.uniform(0.02, 0.08)), float(rng.uniform(0, math.pi)), float(rng.uniform(0, 2 * math.pi)))
    raised = [rng.random() < 0.15 for _ in range(2)]
    arms = tuple(x for up in raised for x in ((rng.uniform(1.6, 2.8) if up else rng.uniform(0.03, 0.5)), rng.uniform(-0.9, 0.5)))
    body = (rng.uniform(0.045, 0.058), rng.uniform(0.06, 0.072), rng.uniform(0.095, 0.125), rng.uniform(0.07, 0.09))
    return _Person(cx=cx, foot=foot, height=height, front=r() < 0.8, phase=float(rng.uniform(0, 2 * math.pi)),
                   stride=float(rng.uniform(0.0, 0.25)), arms=arms, body=body, outfit=outfit, ids=ids,
                   colour=colour, tex=tex, light=float(rng.uniform(-0.4, 0.4)))


def _draw_person(lab: np.ndarray, p: _Person, ox: float, oy: float) -> None:
    """Draw the person's label map into ``lab`` (canvas whose top-left is image pixel (ox, oy))."""
    h, o, ids = p.height, p.outfit, p.ids
    x0, y0 = p.cx - ox, p.foot - h - oy
    s = 1.0 if p.front else -1.0  # image-x direction of the person's left side

    def P(u, v):
        return np.array([x0 + u * h, y0 + v * h])

    def poly(part, pts):
        if ids[part]:
            cv2.fillPoly(lab, [np.round(np.asarray(pts) * _ONE).astype(np.int32)], ids[part], cv2.LINE_8, _SHIFT)

    def ell(part, c, ax, a0=0, a1=360):
        if ids[part]:
            cv2.ellipse(lab, (round(c[0] * _ONE), round(c[1] * _ONE)), (max(1, round(ax[0] * h * _ONE)), max(1, round(ax[1] * h * _ONE))),
                        0, a0, a1, ids[part], -1, cv2.LINE_8, _SHIFT)

    def limb(part, a, b, w0, w1):
        d = b - a
        n = np.array([-d[1], d[0]]) / max(float(np.hypot(*d)), 1e-6)
        poly(part, [a + n * w0 * h, b + n * w1 * h, b - n * w1 * h, a - n * w0 * h])
        ell(part, a, (w0, w0))

    def along(a, ang, length, side):
        return a + np.array([side * math.sin(ang), math.cos(ang)]) * length * h

    rx, ry, sw, hw = p.body
    head = P(0, 0.075)
    if o["long_hair"]:
        poly("hair", [P(-rx, 0.07), P(rx, 0.07), P(rx * 1.35, 0.27), P(-rx * 1.35, 0.27)])
    # legs (skin), socks, shoes
    legs = {}
    for side, leg in ((s, "l"), (-s, "r")):
        swing = (1 if leg == "l" else -1) * p.stride * math.sin(p.phase)
        hip = P(side * hw * 0.5, 0.5)
        knee = along(hip, 0.04 + swing, 0.22, side)
        ankle = along(knee, 0.02 + swing * 0.6, 0.21, side)
        legs[leg] = (hip, knee, ankle, side)
        limb(f"{leg}_leg", hip, knee, 0.05, 0.038)
        limb(f"{leg}_leg", knee, ankle, 0.036, 0.025)
        if o["socks"]:
            limb("socks", knee + (ankle - knee) * 0.75, ankle, 0.028, 0.026)
        ell(f"{leg}_shoe", ankle + np.array([side * 0.008 * h, 0.03 * h]), (0.034, 0.021))
    # lower garment
    if o["lower"] in ("pants", "shorts"):
        part = o["lower"]
        for hip, knee, ankle, _ in legs.values():
            end = ankle + (knee - ankle) * 0.1 if part == "pants" else hip + (knee - hip) * 0.6
            limb(part, hip, knee if part == "pants" else end, 0.058, 0.045)
            if part == "pants":
                limb(part, knee, end, 0.043, 0.033)
        poly(part, [P(-hw, 0.46), P(hw, 0.46), P(hw * 0.95, 0.57), P(0, 0.6), P(-hw * 0.95, 0.57)])
    elif o["lower"] == "skirt":
        poly("skirt", [P(-hw * 1.02, 0.45), P(hw * 1.02, 0.45), P(hw * 1.7, o["hem"]), P(-hw * 1.7, o["hem"])])
    # neck, torso (upper clothes or dress), coat, backpack, scarf
    poly("neck", [P(-0.022, 0.12), P(0.022, 0.12), P(0.022, 0.19), P(-0.022, 0.19)])
    torso = "dress" if o["lower"] == "dress" else "upper"
    poly(torso, [P(-sw, 0.175), P(sw, 0.175), P(sw * 0.92, 0.32), P(hw, 0.5), P(-hw, 0.5), P(-sw * 0.92, 0.32)])
    if torso == "dress":
        poly("dress", [P(-hw, 0.48), P(hw, 0.48), P(hw * 1.8, o["hem"]), P(-hw * 1.8, o["hem"])])
    if o["vneck"] and p.front:
        poly("neck", [P(-0.03, 0.174), P(0.03, 0.174), P(0, 0.235)])
    if o["coat"]:
        for side in (-1, 1):
            poly("coat", [P(side * 0.015, 0.18), P(side * sw, 0.172), P(side * sw * 0.95, 0.32),
                          P(side * (hw + 0.025), o["hem"] - 0.03), P(side * 0.015, o["hem"] - 0.03)])
    if o["backpack"]:
        if p.front:
            for side in (-1, 1):
                limb("backpack", P(side * 0.06, 0.178), P(side * 0.065, 0.36), 0.012, 0.012)
        else:
            poly("backpack", [P(-0.085, 0.21), P(0.085, 0.21), P(0.09, 0.44), P(-0.09, 0.44)])
    if o["scarf"]:
        poly("scarf", [P(-0.042, 0.15), P(0.042, 0.15), P(0.048, 0.205), P(-0.048, 0.205)])
        limb("scarf", P(s * 0.02, 0.19), P(s * 0.03, 0.32), 0.018, 0.02)
    # arms: sleeve over the upper arm (and forearm), skin, hands or gloves
    sleeve_part = "coat" if o["coat"] else torso
    sleeve = 2 if o["coat"] else o["sleeve"]
    for k, (side, arm) in enumerate(((s, "l"), (-s, "r"))):
        out, elbow = p.arms[2 * k], p.arms[2 * k + 1]
        out += 0.12 * math.sin(p.phase + k * math.pi)
        sh = P(side * (sw - 0.025), 0.2)
        el = along(sh, out, 0.16, side)
        wr = along(el, out + elbow, 0.15, side)
        limb(f"{arm}_arm", sh, el, 0.03, 0.026)
        limb(f"{arm}_arm", el, wr, 0.026, 0.021)
        if sleeve >= 1:
            limb(sleeve_part, sh, sh + (el - sh) * (1.0 if sleeve == 2 else 0.55), 0.036, 0.031)
        if sleeve == 2:
            limb(sleeve_part, el, el + (wr - el) * 0.88, 0.031, 0.026)
        ell("glove" if o["gloves"] else f"{arm}_hand", along(wr, out + elbow, 0.02, side), (0.024, 0.024))
    # head: hair, face, sunglasses, hat
    ell("hair", head, (rx * 1.08, ry * 1.05))
    if p.front:
        ell("face", head + np.array([0, 0.012 * h]), (rx * 0.86, ry * 0.86))
        if o["glasses"]:
            poly("sunglasses", [P(-rx * 0.8, 0.07), P(rx * 0.8, 0.07), P(rx * 0.75, 0.088), P(-rx * 0.75, 0.088)])
    if o["hat"]:
        ell("hat", P(0, 0.045), (rx * 1.05, ry * 0.72), 180, 360)
        ell("hat", P(0, 0.045), (rx * 1.6, 0.012))


def _person_pixels(p: _Person, lab: np.ndarray, ys: np.ndarray, xs: np.ndarray, ox: float, oy: float,
                   rng: np.random.Generator) -> np.ndarray:
    """float32[N, 3] colours of the person's pixels (textures in person coordinates)."""
    vals = lab[ys, xs]
    lx = xs + (ox - p.cx + 0.6 * p.height)
    ly = ys + (oy - p.foot + p.height)
    mod = 1.0 + p.light * (lx / p.height - 0.6)
    for v in np.unique(vals):
        kind, amp, period, ang, ph = p.tex[int(v)]
        if kind == 0:
            continue
        sel = vals == v
        px = max(2.0, period * p.height)
        if kind == 1:
            u = (lx[sel] * math.cos(ang) + ly[sel] * math.sin(ang)) * (2 * math.pi / px) + ph
            mod[sel] += amp * np.sign(np.sin(u))
        elif kind == 2:
            mod[sel] += amp * (((lx[sel] // px + ly[sel] // px) % 2) * 2 - 1)
        else:
            mod[sel] += amp * rng.standard_normal(int(sel.sum()), dtype=np.float32)
    return p.colour[vals] * mod[:, None].astype(np.float32)


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


def _num_people(seed: int, tag: int, i: int, lo: int, hi: int) -> int:
    """Stratified counts: every block of (hi-lo+1) consecutive images uses each count once."""
    n = hi - lo + 1
    return lo + int(np.random.default_rng([seed, tag, i // n, 1]).permutation(n)[i % n])


def generate_dataset(out_dir: str | Path, format: str, num_images: int, seed: int, size: tuple[int, int] = (256, 256),
                     split: str = "train", min_people: int = 1, max_people: int = 8, progress: bool = False) -> list[str]:
    """Write ``num_images`` images ``<split>_NNNNNN`` and their GT; returns the ids.

    Image ``i`` depends only on (seed, split, i, size, format, people range).
    """
    _check(format, size, min_people, max_people)
    if num_images < 0:
        raise ValueError(f"num_images must be >= 0, got {num_images}")
    from tqdm import tqdm

    tag = zlib.crc32(split.encode())
    ids = []
    for i in tqdm(range(num_images), desc=f"synth {format} {split}", unit="img", disable=not progress):
        rng = np.random.default_rng([seed, tag, i])
        sample = render_sample(rng, size, format, _num_people(seed, tag, i, min_people, max_people))
        image_id = f"{split}_{i:06d}"
        write_sample(out_dir, image_id, sample.image, sample.persons, format)
        ids.append(image_id)
    write_id_list(out_dir, split, ids, format)
    return ids


# ------------------------------------------------------------------------------------------- videos
def _tracks(rng: np.random.Generator, H: int, W: int, num_frames: int, fps: float, fmt: str, lo: int, hi: int) -> list:
    """People crossing a static scene: (person, entry frame, exit frame, x0, direction, px/frame, h0, h1).

    ``lo..hi`` people are in view at frame 0; others enter from the sides at Poisson times (never more
    than ``hi`` at once); everyone walks out of view eventually, growing/shrinking from h0 to h1.
    """
    def track(t0: int, inside: bool) -> tuple:
        h0, h1 = (H * math.exp(rng.uniform(math.log(0.2), math.log(0.9))) for _ in range(2))
        d = 1.0 if rng.random() < 0.5 else -1.0
        v = rng.uniform(0.08, 0.3) * W / fps
        x0 = rng.uniform(0.1, 0.9) * W if inside else (-0.3 * h0 if d > 0 else W + 0.3 * h0)
        t1 = t0 + max(1, math.ceil(((W + 0.6 * H - x0) if d > 0 else (x0 + 0.6 * H)) / v))
        return (_sample_person(rng, fmt, x0, 0.0, h0), t0, t1, x0, d, v, h0, h1)

    tracks = [track(0, True) for _ in range(int(rng.integers(lo, hi + 1)))]
    rate = max(len(tracks), 1) * 0.19 * W / fps / (W + 0.6 * H)  # arrivals per frame keeping the crowd size
    t = rng.exponential(1 / rate)
    while t < num_frames:
        if sum(t0 <= int(t) < t1 for _, t0, t1, *_ in tracks) < hi:
            tracks.append(track(int(t), False))
        t += rng.exponential(1 / rate)
    return tracks


SCENARIOS = ("default", "tracking")
_SKIN_PARTS = ("face", "neck", "l_arm", "r_arm", "l_hand", "r_hand", "l_leg", "r_leg", "hair")


def _lookalike(p: _Person, other: _Person) -> _Person:
    """``p`` wearing ``other``'s clothes (outfit, garment colours and textures); own skin, hair and body."""
    colour, tex = other.colour.copy(), dict(other.tex)
    for part in _SKIN_PARTS:
        v = p.ids[part]
        if v:
            colour[v], tex[v] = p.colour[v], p.tex[v]
    return replace(p, outfit=dict(other.outfit), ids=dict(other.ids), colour=colour, tex=tex)


def _tracking_tracks(rng: np.random.Generator, H: int, W: int, num_frames: int, fps: float, fmt: str,
                     lo: int, hi: int) -> tuple[list, list[int], tuple[np.ndarray, np.ndarray]]:
    """The tracking scenario: ``lo..hi`` identities, each walking through the scene in 1-3 passes.

    Hard cases, all by construction: identities 1 and 2 enter from opposite sides at the same time with
    similar heights (their paths cross, the nearer one hiding the other); a pillar (a foreground
    occluder 10-16% of the width) hides whoever walks behind it for several frames; after a pass a
    person may leave and re-enter 1-4 s later (from the side they left, or the other) with the same
    appearance and GT id; about a third of the people wear another person's clothes (shared garment
    colours); heights change by up to 1.6x within a pass (walking towards / away from the camera).
    Returns (passes in the ``_tracks`` tuple format, the identity of each pass, the occluder).
    """
    n = int(rng.integers(lo, hi + 1))
    base = [_sample_person(rng, fmt, 0.0, 0.0, 1.0) for _ in range(n)]
    people = list(base)
    for i in range(1, n):
        if rng.random() < 0.35 or (i == 1 and n >= 2 and rng.random() < 0.5):
            people[i] = _lookalike(base[i], base[int(rng.integers(i))])

    def height() -> float:
        return H * math.exp(rng.uniform(math.log(0.3), math.log(0.75)))

    def span(x0: float, d: float, v: float) -> int:
        return max(1, math.ceil(((W + 0.6 * H - x0) if d > 0 else (x0 + 0.6 * H)) / v))

    passes, idents = [], []
    for i, p in enumerate(people):
        t, k = 0.0, 0
        if i < 2 and n >= 2:  # the crossing pair
            if i == 0:
                cross_t, cross_h, cross_v = rng.uniform(0, 0.25 * num_frames), height(), rng.uniform(0.15, 0.3) * W / fps
            d, v = (1.0, -1.0)[i], cross_v * rng.uniform(0.9, 1.1)
            h0 = cross_h * rng.uniform(0.93, 1.07)
            h1 = h0 * rng.uniform(0.9, 1.1)
            t0, x0 = int(cross_t), (-0.3 * h0 if d > 0 else W + 0.3 * h0)
        else:
            d, v = (1.0 if rng.random() < 0.5 else -1.0), rng.uniform(0.12, 0.35) * W / fps
            h0 = height()
            h1 = float(np.clip(h0 * math.exp(rng.uniform(-0.47, 0.47)), 0.2 * H, 0.9 * H))
            if rng.random() < 0.5:
                t0, x0 = 0, rng.uniform(0.1, 0.9) * W
            else:
                t0, x0 = int(rng.uniform(0, 0.6 * num_frames)), (-0.3 * h0 if d > 0 else W + 0.3 * h0)
        while True:
            t1 = t0 + span(x0, d, v)
            passes.append((replace(p, phase=float(rng.uniform(0, 2 * math.pi))), t0, t1, x0, d, v, h0, h1))
            idents.append(i + 1)
            k += 1
            t = t1 + rng.uniform(1.0, 4.0) * fps
            if k >= 3 or t >= num_frames - 5 or rng.random() < 0.4:
                break
            d = -d if rng.random() < 0.6 else d  # back the way they left, or round to the other side
            v = rng.uniform(0.12, 0.35) * W / fps
            h0 = h1
            h1 = float(np.clip(h0 * math.exp(rng.uniform(-0.47, 0.47)), 0.2 * H, 0.9 * H))
            t0, x0 = int(t), (-0.3 * h0 if d > 0 else W + 0.3 * h0)
    mask = np.zeros((H, W), np.uint8)
    cx, half = rng.uniform(0.3, 0.7) * W, rng.uniform(0.05, 0.08) * W
    cv2.rectangle(mask, (int(cx - half), int(rng.uniform(0, 0.3) * H)), (int(cx + half), H - 1), 1, -1)
    return passes, idents, (mask.astype(bool), rng.uniform(0, 255, 3).astype(np.float32))


def generate_video(path: str | Path, gt_dir: str | Path, num_frames: int, seed: int | Sequence[int],
                   size: tuple[int, int] = (256, 256), fps: float = 10, format: str = "cihp",
                   min_people: int = 1, max_people: int = 6, progress: bool = False,
                   scenario: str = "default") -> dict:
    """Write an H.264 mp4 of people walking in/out of a static scene, plus per-frame GT.

    GT ids are ``<video>_<frame:06d>`` (video = file stem) in the ``format`` layout under ``gt_dir``, listed
    as split ``<video>``; persons are numbered in track order. ``<gt_dir>/<video>.json`` holds
    ``num_people`` and ``track_ids`` per frame (persistent identities, 1..); the same dict is returned.
    ``scenario``: 'default' (people crossing a static scene, each id seen once) or 'tracking' (see
    ``_tracking_tracks``: crossings, a pillar, re-entries with the same id, look-alikes, scale changes;
    the json also holds ``scenario`` and ``identities``, and ``min_people..max_people`` counts identities).
    """
    import av
    from tqdm import tqdm

    _check(format, size, min_people, max_people)
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario must be one of {SCENARIOS}, got {scenario!r}")
    H, W = size
    if H % 2 or W % 2:
        raise ValueError(f"video size must be even for yuv420p, got {W}x{H}")
    if num_frames < 1 or fps <= 0:
        raise ValueError(f"need num_frames >= 1 and fps > 0, got {num_frames}, {fps}")
    path, gt_dir = Path(path), Path(gt_dir)
    name = path.stem
    if scenario == "default":
        rng = np.random.default_rng([*np.atleast_1d(seed).tolist(), zlib.crc32(b"video")])
        background = _background(rng, H, W)
        jitter = _jitter(rng)
        occluder = _occluder(rng, H, W) if rng.random() < 0.3 else None
        tracks = _tracks(rng, H, W, num_frames, fps, format, min_people, max_people)
        idents = list(range(1, len(tracks) + 1))
    else:
        rng = np.random.default_rng([*np.atleast_1d(seed).tolist(), zlib.crc32(b"video-tracking")])
        background = _background(rng, H, W)
        jitter = _jitter(rng)
        tracks, idents, occluder = _tracking_tracks(rng, H, W, num_frames, fps, format, min_people, max_people)
    info = {"video": name, "num_frames": num_frames, "fps": fps, "size": [H, W], "format": format,
            "num_people": [], "track_ids": []}
    if scenario != "default":
        info.update(scenario=scenario, identities=max(idents, default=0))
    ids = []
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        for t in tqdm(range(num_frames), desc=f"synth video {name}", unit="frame", disable=not progress):
            frng = np.random.default_rng([*np.atleast_1d(seed).tolist(), zlib.crc32(b"video"), t + 1])
            people, track_of = [], []
            for j, (p, t0, t1, x0, d, v, h0, h1) in enumerate(tracks, 1):
                if not t0 <= t < t1:
                    continue
                a = (t - t0) / (t1 - t0)
                height = h0 + (h1 - h0) * a
                foot = 0.35 * H + 0.75 * height  # nearer (taller) people stand lower
                people.append(replace(p, cx=x0 + d * v * (t - t0), foot=foot, height=height,
                                      phase=p.phase + (t - t0) * 2 * math.pi * 1.8 / fps))
                track_of.append(idents[j - 1])
            order = sorted(range(len(people)), key=lambda k: people[k].foot)
            img = background.copy()
            cat, hum, _ = _compose(img, [people[k] for k in order], frng, occluder)
            # renumber: draw order -> track order
            rank = np.zeros(256, np.uint8)
            for draw_idx, k in enumerate(order, 1):
                rank[draw_idx] = k + 1
            persons, keep = _split_persons(cat, rank[hum], len(people))
            frame = _finish(img, jitter, frng)
            image_id = f"{name}_{t:06d}"
            write_sample(gt_dir, image_id, frame, persons, format)
            ids.append(image_id)
            info["num_people"].append(len(persons))
            info["track_ids"].append([track_of[k - 1] for k in keep])
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    write_id_list(gt_dir, name, ids, format)
    (gt_dir / f"{name}.json").write_text(json.dumps(info))
    return info
