"""Parity frames and label-map agreement: how a runtime's parsing compares with torch's.

Parity frames are deterministic synthetic people (``streamparse.data.synth_scene.render_sample``, 2-6
people) at the nominal input size (short x long side of ``model.input_size``: no resize). Agreement
of a runtime's label maps with torch's:

- ``part_map``: the fraction of the part map's pixels with the same label (the bounded figure: auto
  keeps >= ``AUTO_BOUND``; the tests bound bf16 at 99.9 % and int8 at 99.5 %);
- ``foreground``: the same over the pixels that are a part (not background) in either map (stricter:
  the background, most of a frame, always agrees);
- ``same_people``: the fraction of frames with as many people as torch finds;
- ``lost_people_frames``: frames where torch finds people and the runtime none.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PARITY_SEED = 28
PARITY_FRAMES = 4
AUTO_BOUND = 0.999  # auto keeps a runtime/precision whose part maps agree at least this much (and same people)


def parity_frames(size: tuple[int, int], n: int = PARITY_FRAMES, seed: int = PARITY_SEED) -> np.ndarray:
    """``n`` synthetic RGB frames uint8 (n, H, W, 3), H x W = ``size``, with 2..6 people each."""
    from streamparse.data.synth_scene import render_sample

    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        out.append(render_sample(rng, tuple(size), "cihp", 2 + i % 5).image)
    return np.stack(out)


def nominal_frame_size(input_size: tuple[int, int]) -> tuple[int, int]:
    """The frame size that the resize rule leaves unchanged at ``input_size`` (short, long): short x long."""
    return int(input_size[0]), int(input_size[1])


@dataclass(frozen=True)
class Agreement:
    part_map: float
    foreground: float
    same_people: float
    lost_people_frames: int
    people_ref: list[int]
    people: list[int]

    def passes(self, bound: float) -> bool:
        return self.part_map >= bound and self.same_people == 1.0 and self.lost_people_frames == 0

    def to_dict(self) -> dict:
        return {"part_map": self.part_map, "foreground": self.foreground, "same_people": self.same_people,
                "lost_people_frames": self.lost_people_frames, "people_ref": self.people_ref, "people": self.people}


def agreement(ref_part: np.ndarray, part: np.ndarray, ref_counts, counts) -> Agreement:
    """Agreement of part maps ``part`` (B,H,W) with ``ref_part`` and of per-frame people counts."""
    ref_part, part = np.asarray(ref_part), np.asarray(part)
    if ref_part.shape != part.shape:
        raise ValueError(f"label maps of shapes {ref_part.shape} and {part.shape}")
    fg = (ref_part > 0) | (part > 0)
    same = ref_part == part
    n_fg = int(fg.sum())
    ref_counts, counts = [int(c) for c in ref_counts], [int(c) for c in counts]
    return Agreement(part_map=float(same.mean()), foreground=float(same[fg].sum() / n_fg) if n_fg else 1.0,
                     same_people=float(np.mean([a == b for a, b in zip(ref_counts, counts)])) if counts else 1.0,
                     lost_people_frames=sum(a > 0 and b == 0 for a, b in zip(ref_counts, counts)),
                     people_ref=ref_counts, people=counts)
