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
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from streamparse.data.synth_people import FORMATS, MAX_PEOPLE, PART_IDS, _Person, _sample_person  # noqa: F401
from streamparse.data.synth_scene import (  # noqa: F401
    SynthSample, _background, _check, _compose, _finish, _jitter, _occluder, _split_persons, render_sample,
    write_id_list, write_sample,
)


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
