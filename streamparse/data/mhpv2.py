"""MHP v2.0 reader.

Layout under ``root``::

    images/<id>.jpg
    parsing_annos/<id>_<NN>_<KK>.png   one file per person: NN = persons in the image, KK = 1..NN
                                       (2 digits each); class id in channel 0 (1-channel also accepted)
    list/<split>.txt                   one image id per line
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import numpy as np

from streamparse.categories import MHPV2, LabelSpace
from streamparse.data.base import DatasetError, ParsingDataset, check_size, read_id_list, read_label_png

_ANNO_RE = re.compile(r"^(?P<id>.+)_(?P<nn>\d{2})_(?P<kk>\d{2})\.png$")


class MHPv2Dataset(ParsingDataset):
    """MHPv2-layout multi-human parsing dataset (58 parts + background).

    Items are ``dict(image_id: str, image: uint8[H, W, 3] RGB, persons: list[uint8[H, W]])`` with
    persons in KK order; ``transform`` (optional) maps an item dict to an item dict.
    """

    label_space: LabelSpace = MHPV2

    def __init__(self, root: str | Path, split: str = "train", transform: Callable[[dict], dict] | None = None):
        self.root = Path(root)
        self.split = split
        self.transform = transform
        self.ids: list[str] = read_id_list(self.root / "list" / f"{split}.txt")
        anno_dir = self.root / "parsing_annos"
        if not anno_dir.is_dir():
            raise DatasetError(f"{anno_dir}: missing annotation folder")
        self._annos: dict[str, list[tuple[int, int, str]]] = {}
        for name in sorted(p.name for p in anno_dir.iterdir()):
            m = _ANNO_RE.match(name)
            if m:
                self._annos.setdefault(m["id"], []).append((int(m["nn"]), int(m["kk"]), name))

    def _image_path(self, image_id: str) -> Path:
        return self.root / "images" / f"{image_id}.jpg"

    def _persons(self, image_id: str, size: tuple[int, int]) -> list[np.ndarray]:
        anno_dir = self.root / "parsing_annos"
        files = sorted(self._annos.get(image_id, []), key=lambda t: t[1])
        if not files:
            raise DatasetError(f"{anno_dir / (image_id + '_NN_KK.png')}: missing annotation file (no person files)")
        n = len(files)
        for nn, kk, name in files:
            if nn != n:
                raise DatasetError(f"{anno_dir / name}: NN={nn} but {n} person file(s) exist for {image_id}")
        kks = [kk for _, kk, _ in files]
        if kks != list(range(1, n + 1)):
            raise DatasetError(f"{anno_dir / files[0][2]}: person indices KK={kks} are not 1..{n}")
        persons = []
        for _, _, name in files:
            path = anno_dir / name
            person = read_label_png(path, self.label_space.num_classes)
            check_size(path, person.shape, size, "image")
            persons.append(person)
        return persons
