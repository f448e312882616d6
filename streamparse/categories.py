"""Category names, colour palettes and left/right flip pairs of the supported label spaces.

Names and palettes are the public dataset definitions (CIHP: Engineering-Course/CIHP_PGN;
MHP v2.0: ZhaoJ9014/Multi-Human-Parsing README, palette from a third-party tool since the
dataset has no official one). Index = label value; 0 is background.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LabelSpace:
    """A dataset's part categories: ``names[i]`` is label ``i`` (0 = background)."""

    name: str
    names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    flip_pairs: tuple[tuple[int, int], ...]

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def flip_lut(self) -> np.ndarray:
        """uint8 lookup table (num_classes,) mapping each label to its mirrored label."""
        lut = np.arange(self.num_classes, dtype=np.uint8)
        for a, b in self.flip_pairs:
            lut[a], lut[b] = b, a
        return lut

    def palette_array(self) -> np.ndarray:
        """(num_classes, 3) uint8 RGB colours."""
        return np.asarray(self.palette, dtype=np.uint8)


CIHP = LabelSpace(
    name="cihp",
    names=('Background', 'Hat', 'Hair', 'Glove', 'Sunglasses', 'UpperClothes', 'Dress', 'Coat', 'Socks', 'Pants', 'Torso-skin', 'Scarf', 'Skirt', 'Face', 'Left-arm', 'Right-arm', 'Left-leg', 'Right-leg', 'Left-shoe', 'Right-shoe'),
    palette=((0, 0, 0), (128, 0, 0), (255, 0, 0), (0, 85, 0), (170, 0, 51), (255, 85, 0), (0, 0, 85), (0, 119, 221), (85, 85, 0), (0, 85, 85), (85, 51, 0), (52, 86, 128), (0, 128, 0), (0, 0, 255), (51, 170, 221), (0, 255, 255), (85, 255, 170), (170, 255, 85), (255, 255, 0), (255, 170, 0)),
    flip_pairs=((14, 15), (16, 17), (18, 19)),
)

MHPV2 = LabelSpace(
    name="mhpv2",
    names=('background', 'cap/hat', 'helmet', 'face', 'hair', 'left-arm', 'right-arm', 'left-hand', 'right-hand', 'protector', 'bikini/bra', 'jacket/windbreaker/hoodie', 't-shirt', 'polo-shirt', 'sweater', 'singlet', 'torso-skin', 'pants', 'shorts/swim-shorts', 'skirt', 'stockings', 'socks', 'left-boot', 'right-boot', 'left-shoe', 'right-shoe', 'left-highheel', 'right-highheel', 'left-sandal', 'right-sandal', 'left-leg', 'right-leg', 'left-foot', 'right-foot', 'coat', 'dress', 'robe', 'jumpsuit', 'other-full-body-clothes', 'headwear', 'backpack', 'ball', 'bats', 'belt', 'bottle', 'carrybag', 'cases', 'sunglasses', 'eyewear', 'glove', 'scarf', 'umbrella', 'wallet/purse', 'watch', 'wristband', 'tie', 'other-accessary', 'other-upper-body-clothes', 'other-lower-body-clothes'),
    palette=((0, 0, 0), (255, 114, 196), (63, 31, 34), (253, 1, 0), (254, 26, 1), (253, 54, 0), (253, 82, 0), (252, 110, 0), (253, 137, 0), (253, 166, 1), (254, 191, 0), (253, 219, 0), (252, 248, 0), (238, 255, 1), (209, 255, 0), (182, 255, 0), (155, 255, 0), (133, 254, 0), (102, 254, 0), (78, 255, 0), (55, 254, 1), (38, 255, 0), (30, 255, 13), (34, 255, 35), (35, 254, 64), (36, 254, 87), (37, 252, 122), (37, 255, 143), (35, 255, 172), (35, 255, 200), (40, 253, 228), (40, 255, 255), (37, 228, 255), (33, 198, 254), (31, 170, 254), (22, 145, 255), (26, 112, 255), (20, 86, 253), (22, 53, 255), (19, 12, 253), (19, 1, 246), (30, 1, 252), (52, 0, 254), (72, 0, 255), (102, 0, 255), (121, 1, 252), (157, 1, 245), (182, 0, 253), (210, 0, 254), (235, 0, 255), (253, 1, 246), (254, 0, 220), (255, 0, 191), (254, 0, 165), (252, 0, 137), (248, 2, 111), (253, 0, 81), (255, 0, 54), (253, 1, 26)),
    flip_pairs=((5, 6), (7, 8), (22, 23), (24, 25), (26, 27), (28, 29), (30, 31), (32, 33)),
)

LABEL_SPACES = {"cihp": CIHP, "mhpv2": MHPV2}


def get_label_space(name_or_num_classes: str | int) -> LabelSpace:
    """Look a label space up by name (``"cihp"``/``"mhpv2"``) or class count (20/59)."""
    if isinstance(name_or_num_classes, int):
        for space in LABEL_SPACES.values():
            if space.num_classes == name_or_num_classes:
                return space
        raise ValueError(f"no label space with {name_or_num_classes} classes (known: 20 = cihp, 59 = mhpv2)")
    try:
        return LABEL_SPACES[name_or_num_classes.lower()]
    except KeyError:
        raise ValueError(f"unknown label space {name_or_num_classes!r}; known: {sorted(LABEL_SPACES)}") from None


def label_space_for(name: str, num_classes: int) -> LabelSpace | None:
    """The label space of a model: the one named (``model.label_space``) if its class count fits, else
    the one with ``num_classes`` classes, else None (custom classes: generic names, no palette)."""
    for key in (name, num_classes):
        try:
            space = get_label_space(key)
        except (ValueError, AttributeError):
            continue
        if space.num_classes == num_classes:
            return space
    return None


def class_names_for(space: LabelSpace | None, num_classes: int) -> list[str]:
    """The space's names, or background + part1..part{N-1} when there is no known space."""
    return list(space.names) if space else ["background"] + [f"part{i}" for i in range(1, num_classes)]
