"""Tiny drawn 'people' (parts as rectangles) for model tests. CIHP label ids."""

from __future__ import annotations

import numpy as np

# CIHP ids: 2 hair, 13 face, 5 upper-clothes, 14/15 left/right arm, 9 pants, 16/17 left/right leg
COLORS = {2: (40, 20, 10), 13: (230, 180, 150), 5: (200, 30, 30), 14: (120, 200, 60), 15: (60, 120, 220),
          9: (30, 30, 160), 16: (220, 220, 40), 17: (160, 40, 200)}


def draw_person(img: np.ndarray, lab: np.ndarray, x: int, y: int, s: float) -> np.ndarray:
    """Draw one person with top-left (x, y) and scale s (16*s x 40*s px). Returns its label map."""
    person = np.zeros(lab.shape, np.uint8)

    def rect(c, x0, y0, x1, y1):
        x0, y0, x1, y1 = int(x + x0 * s), int(y + y0 * s), int(x + x1 * s), int(y + y1 * s)
        person[y0:y1, x0:x1] = c

    rect(2, 3, 0, 13, 4)      # hair
    rect(13, 3, 4, 13, 10)    # face
    rect(5, 4, 10, 12, 23)    # upper clothes
    rect(15, 0, 10, 4, 23)    # right arm (image left: the person faces the camera)
    rect(14, 12, 10, 16, 23)  # left arm (image right)
    rect(9, 4, 23, 12, 29)    # pants
    rect(17, 4, 29, 8, 40)    # right leg
    rect(16, 8, 29, 12, 40)   # left leg
    m = person > 0
    for c, col in COLORS.items():
        img[person == c] = col
    lab[m] = person[m]
    return person


def make_toy_set(n_images: int = 4, size: tuple[int, int] = (96, 128), seed: int = 0):
    """n images (uint8 HxWx3) with 2-3 non-overlapping people each, and their person maps."""
    rng = np.random.default_rng(seed)
    images, persons_all = [], []
    H, W = size
    for _ in range(n_images):
        img = (rng.integers(0, 40, (H, W, 3)) + np.array([60, 90, 70])).astype(np.uint8)
        lab = np.zeros((H, W), np.uint8)
        k = int(rng.integers(2, 4))
        slot = W // k
        persons = []
        for j in range(k):
            s = float(rng.uniform(3.2, 3.8))
            x = int(j * slot + rng.integers(0, max(1, slot - int(16 * s))))
            y = int(rng.integers(0, max(1, H - int(40 * s))))
            persons.append(draw_person(img, lab, x, y, s))
        images.append(img)
        persons_all.append(persons)
    return images, persons_all
