"""Synthetic people: a person's garments and colours (``_sample_person``) and their drawing as cv2
polygons/ellipses into a label map with real category ids (``_draw_person``), back to front, no
anti-aliasing in label maps; left = the person's left (image right when facing the camera).
Part of ``streamparse.data.synth``."""

from __future__ import annotations

import math
from dataclasses import dataclass

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


class _Pen:
    """Draws one person's parts into a label map ``lab`` (canvas whose top-left is image pixel (ox, oy))
    in person units: ``P(u, v)`` is u heights right of the person's centre line and v heights below
    the top of the head; a part whose label id is 0 in the format is not drawn."""

    def __init__(self, lab: np.ndarray, p: _Person, ox: float, oy: float):
        self.lab, self.h, self.ids = lab, p.height, p.ids
        self.x0, self.y0 = p.cx - ox, p.foot - p.height - oy

    def P(self, u, v):
        return np.array([self.x0 + u * self.h, self.y0 + v * self.h])

    def poly(self, part, pts):
        if self.ids[part]:
            cv2.fillPoly(self.lab, [np.round(np.asarray(pts) * _ONE).astype(np.int32)], self.ids[part], cv2.LINE_8, _SHIFT)

    def ell(self, part, c, ax, a0=0, a1=360):
        if self.ids[part]:
            h = self.h
            cv2.ellipse(self.lab, (round(c[0] * _ONE), round(c[1] * _ONE)),
                        (max(1, round(ax[0] * h * _ONE)), max(1, round(ax[1] * h * _ONE))),
                        0, a0, a1, self.ids[part], -1, cv2.LINE_8, _SHIFT)

    def limb(self, part, a, b, w0, w1):
        """A tapered segment from ``a`` (half-width w0 heights, rounded end) to ``b`` (half-width w1)."""
        d = b - a
        n = np.array([-d[1], d[0]]) / max(float(np.hypot(*d)), 1e-6)
        self.poly(part, [a + n * w0 * self.h, b + n * w1 * self.h, b - n * w1 * self.h, a - n * w0 * self.h])
        self.ell(part, a, (w0, w0))

    def along(self, a, ang, length, side):
        """The point ``length`` heights from ``a`` at angle ``ang`` from straight down, outwards on ``side``."""
        return a + np.array([side * math.sin(ang), math.cos(ang)]) * length * self.h


def _draw_person(lab: np.ndarray, p: _Person, ox: float, oy: float) -> None:
    """Draw the person's label map into ``lab`` (canvas whose top-left is image pixel (ox, oy)), back to
    front: long hair, legs, the lower garment, the torso and what is worn on it, arms, head."""
    pen = _Pen(lab, p, ox, oy)
    s = 1.0 if p.front else -1.0  # image-x direction of the person's left side
    rx, _, _, _ = p.body
    if p.outfit["long_hair"]:
        pen.poly("hair", [pen.P(-rx, 0.07), pen.P(rx, 0.07), pen.P(rx * 1.35, 0.27), pen.P(-rx * 1.35, 0.27)])
    legs = _draw_legs(pen, p, s)
    _draw_lower(pen, p, legs)
    torso = _draw_torso(pen, p, s)
    _draw_arms(pen, p, s, torso)
    _draw_head(pen, p)


def _draw_legs(pen: _Pen, p: _Person, s: float) -> dict:
    """Legs (skin), socks and shoes, walking at the person's phase; returns leg -> (hip, knee, ankle, side)."""
    hw = p.body[3]
    legs = {}
    for side, leg in ((s, "l"), (-s, "r")):
        swing = (1 if leg == "l" else -1) * p.stride * math.sin(p.phase)
        hip = pen.P(side * hw * 0.5, 0.5)
        knee = pen.along(hip, 0.04 + swing, 0.22, side)
        ankle = pen.along(knee, 0.02 + swing * 0.6, 0.21, side)
        legs[leg] = (hip, knee, ankle, side)
        pen.limb(f"{leg}_leg", hip, knee, 0.05, 0.038)
        pen.limb(f"{leg}_leg", knee, ankle, 0.036, 0.025)
        if p.outfit["socks"]:
            pen.limb("socks", knee + (ankle - knee) * 0.75, ankle, 0.028, 0.026)
        pen.ell(f"{leg}_shoe", ankle + np.array([side * 0.008 * p.height, 0.03 * p.height]), (0.034, 0.021))
    return legs


def _draw_lower(pen: _Pen, p: _Person, legs: dict) -> None:
    """Pants or shorts over the legs, or a skirt (a dress is drawn with the torso)."""
    o, hw, P = p.outfit, p.body[3], pen.P
    if o["lower"] in ("pants", "shorts"):
        part = o["lower"]
        for hip, knee, ankle, _ in legs.values():
            end = ankle + (knee - ankle) * 0.1 if part == "pants" else hip + (knee - hip) * 0.6
            pen.limb(part, hip, knee if part == "pants" else end, 0.058, 0.045)
            if part == "pants":
                pen.limb(part, knee, end, 0.043, 0.033)
        pen.poly(part, [P(-hw, 0.46), P(hw, 0.46), P(hw * 0.95, 0.57), P(0, 0.6), P(-hw * 0.95, 0.57)])
    elif o["lower"] == "skirt":
        pen.poly("skirt", [P(-hw * 1.02, 0.45), P(hw * 1.02, 0.45), P(hw * 1.7, o["hem"]), P(-hw * 1.7, o["hem"])])


def _draw_torso(pen: _Pen, p: _Person, s: float) -> str:
    """Neck, torso (upper clothes or dress), v-neck, coat, backpack, scarf; returns the torso's part."""
    o, P = p.outfit, pen.P
    _, _, sw, hw = p.body
    pen.poly("neck", [P(-0.022, 0.12), P(0.022, 0.12), P(0.022, 0.19), P(-0.022, 0.19)])
    torso = "dress" if o["lower"] == "dress" else "upper"
    pen.poly(torso, [P(-sw, 0.175), P(sw, 0.175), P(sw * 0.92, 0.32), P(hw, 0.5), P(-hw, 0.5), P(-sw * 0.92, 0.32)])
    if torso == "dress":
        pen.poly("dress", [P(-hw, 0.48), P(hw, 0.48), P(hw * 1.8, o["hem"]), P(-hw * 1.8, o["hem"])])
    if o["vneck"] and p.front:
        pen.poly("neck", [P(-0.03, 0.174), P(0.03, 0.174), P(0, 0.235)])
    if o["coat"]:
        for side in (-1, 1):
            pen.poly("coat", [P(side * 0.015, 0.18), P(side * sw, 0.172), P(side * sw * 0.95, 0.32),
                              P(side * (hw + 0.025), o["hem"] - 0.03), P(side * 0.015, o["hem"] - 0.03)])
    if o["backpack"]:
        if p.front:
            for side in (-1, 1):
                pen.limb("backpack", P(side * 0.06, 0.178), P(side * 0.065, 0.36), 0.012, 0.012)
        else:
            pen.poly("backpack", [P(-0.085, 0.21), P(0.085, 0.21), P(0.09, 0.44), P(-0.09, 0.44)])
    if o["scarf"]:
        pen.poly("scarf", [P(-0.042, 0.15), P(0.042, 0.15), P(0.048, 0.205), P(-0.048, 0.205)])
        pen.limb("scarf", P(s * 0.02, 0.19), P(s * 0.03, 0.32), 0.018, 0.02)
    return torso


def _draw_arms(pen: _Pen, p: _Person, s: float, torso: str) -> None:
    """Arms (skin) swinging with the walk, the sleeves over them (the coat's, else the torso's), hands or gloves."""
    o, sw = p.outfit, p.body[2]
    sleeve_part = "coat" if o["coat"] else torso
    sleeve = 2 if o["coat"] else o["sleeve"]
    for k, (side, arm) in enumerate(((s, "l"), (-s, "r"))):
        out, elbow = p.arms[2 * k], p.arms[2 * k + 1]
        out += 0.12 * math.sin(p.phase + k * math.pi)
        sh = pen.P(side * (sw - 0.025), 0.2)
        el = pen.along(sh, out, 0.16, side)
        wr = pen.along(el, out + elbow, 0.15, side)
        pen.limb(f"{arm}_arm", sh, el, 0.03, 0.026)
        pen.limb(f"{arm}_arm", el, wr, 0.026, 0.021)
        if sleeve >= 1:
            pen.limb(sleeve_part, sh, sh + (el - sh) * (1.0 if sleeve == 2 else 0.55), 0.036, 0.031)
        if sleeve == 2:
            pen.limb(sleeve_part, el, el + (wr - el) * 0.88, 0.031, 0.026)
        pen.ell("glove" if o["gloves"] else f"{arm}_hand", pen.along(wr, out + elbow, 0.02, side), (0.024, 0.024))


def _draw_head(pen: _Pen, p: _Person) -> None:
    """Hair, the face and sunglasses (facing the camera), a hat."""
    o, P = p.outfit, pen.P
    rx, ry, _, _ = p.body
    head = P(0, 0.075)
    pen.ell("hair", head, (rx * 1.08, ry * 1.05))
    if p.front:
        pen.ell("face", head + np.array([0, 0.012 * p.height]), (rx * 0.86, ry * 0.86))
        if o["glasses"]:
            pen.poly("sunglasses", [P(-rx * 0.8, 0.07), P(rx * 0.8, 0.07), P(rx * 0.75, 0.088), P(-rx * 0.75, 0.088)])
    if o["hat"]:
        pen.ell("hat", P(0, 0.045), (rx * 1.05, ry * 0.72), 180, 360)
        pen.ell("hat", P(0, 0.045), (rx * 1.6, 0.012))


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
