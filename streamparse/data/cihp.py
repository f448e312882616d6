"""CIHP reader (instance-level human parsing).

Layout under ``root`` (or under ``root/Training`` / ``root/Validation`` as in the official archive)::

    Images/<id>.jpg          RGB image
    Category_ids/<id>.png    uint8 part categories 0..19 (255 = ignore)
    Human_ids/<id>.png       uint8 person ids, 0 = background
    Instance_ids/<id>.png    (h-1)*20 + category, with <id>.txt side-car "value category human_id"
    <split>_id.txt           one image id per line

Persons are derived from ``Category_ids`` and ``Human_ids``; ``Instance_ids`` is not read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from streamparse.categories import CIHP, LabelSpace
from streamparse.data.base import IGNORE, DatasetError, ParsingDataset, check_size, image_size, read_id_list, read_image, read_label_png

__all__ = ["CIHPDataset", "DatasetError", "IGNORE", "check_size", "image_size", "read_id_list", "read_image", "read_label_png"]

_OFFICIAL_SUBDIRS = {"train": "Training", "val": "Validation"}


class CIHPDataset(ParsingDataset):
    """CIHP-layout multi-human parsing dataset.

    Items are ``dict(image_id: str, image: uint8[H, W, 3] RGB, persons: list[uint8[H, W]])``, one
    category map per person (0 outside the person, 255 kept as ignore), in ascending human id order.
    ``transform`` (optional) maps an item dict to an item dict.
    """

    label_space: LabelSpace = CIHP

    def __init__(self, root: str | Path, split: str = "train", transform: Callable[[dict], dict] | None = None):
        root = Path(root)
        if not (root / f"{split}_id.txt").is_file() and split in _OFFICIAL_SUBDIRS:
            sub = root / _OFFICIAL_SUBDIRS[split]
            if (sub / f"{split}_id.txt").is_file():
                root = sub
        self.root = root
        self.split = split
        self.transform = transform
        self.ids: list[str] = read_id_list(root / f"{split}_id.txt")

    def _image_path(self, image_id: str) -> Path:
        return self.root / "Images" / f"{image_id}.jpg"

    def _persons(self, image_id: str, size: tuple[int, int] | None) -> list[np.ndarray]:
        cat_path = self.root / "Category_ids" / f"{image_id}.png"
        hum_path = self.root / "Human_ids" / f"{image_id}.png"
        cat = read_label_png(cat_path, self.label_space.num_classes)
        hum = read_label_png(hum_path)
        if size is not None:
            check_size(cat_path, cat.shape, size, "image")
        check_size(hum_path, hum.shape, cat.shape[:2], "Category_ids")
        persons = []
        for h in np.unique(hum):
            if h == 0 or h == IGNORE:
                continue
            person = np.where(hum == h, cat, 0).astype(np.uint8)
            if person.any():
                persons.append(person)
        return persons
