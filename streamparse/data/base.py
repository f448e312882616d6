"""What every dataset reader shares: file helpers with errors that name the file, and the item protocol.

Items are ``dict(image_id: str, image: uint8[H, W, 3] RGB, persons: list[uint8[H, W]])``, one category map
per person (0 outside the person, 255 kept as ignore). A reader subclasses ``ParsingDataset`` and
implements ``_image_path(image_id)`` and ``_persons(image_id, size)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from streamparse.categories import LabelSpace

IGNORE = 255
class DatasetError(ValueError):
    """Bad or missing dataset file; the message names the file."""


def read_id_list(path: Path) -> list[str]:
    """Non-empty, stripped lines of a list file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read id list ({exc.strerror or exc})") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_image(path: Path) -> np.ndarray:
    """Decode an image file to uint8[H, W, 3] RGB."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing image file") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise DatasetError(f"{path}: unreadable image ({exc})") from None


def image_size(path: Path) -> tuple[int, int]:
    """(H, W) from the image header, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            w, h = im.size
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing image file") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise DatasetError(f"{path}: unreadable image ({exc})") from None
    return h, w


def read_label_png(path: Path, num_classes: int | None = None) -> np.ndarray:
    """Decode a label PNG to uint8[H, W]; 3-channel files give channel 0.

    With ``num_classes``, values >= num_classes other than 255 (ignore) raise ``DatasetError``.
    """
    try:
        with Image.open(path) as im:
            if im.format != "PNG":
                raise DatasetError(f"{path}: not a PNG file (format {im.format})")
            arr = np.asarray(im)
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing annotation file") from None
    except DatasetError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:
        raise DatasetError(f"{path}: unreadable PNG ({exc})") from None
    if arr.ndim == 3:
        arr = arr[..., 0]
    if arr.dtype != np.uint8:
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise DatasetError(f"{path}: label values outside 0..255")
        arr = arr.astype(np.uint8)
    if num_classes is not None:
        bad = (arr >= num_classes) & (arr != IGNORE)
        if bad.any():
            raise DatasetError(f"{path}: label {int(arr[bad].max())} >= num_classes {num_classes} (255 = ignore is allowed)")
    return np.ascontiguousarray(arr)


def check_size(path: Path, shape: tuple[int, ...], expected: tuple[int, int], what: str) -> None:
    if tuple(shape[:2]) != tuple(expected):
        raise DatasetError(f"{path}: size {shape[1]}x{shape[0]} does not match {what} {expected[1]}x{expected[0]} (WxH)")


class ParsingDataset:
    """A multi-human parsing dataset: ``ids`` of images, ``label_space``, optional ``transform`` (item -> item)."""

    label_space: LabelSpace
    ids: list[str]
    transform: Callable[[dict], dict] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def _image_path(self, image_id: str) -> Path:
        raise NotImplementedError

    def _persons(self, image_id: str, size: tuple[int, int] | None) -> list[np.ndarray]:
        raise NotImplementedError

    def load_gt(self, i: int) -> tuple[str, list[np.ndarray]]:
        """(image_id, persons) without decoding the image (its header is read for the size check)."""
        image_id = self.ids[i]
        return image_id, self._persons(image_id, image_size(self._image_path(image_id)))

    def __getitem__(self, i: int) -> dict:
        image_id = self.ids[i]
        image = read_image(self._image_path(image_id))
        item = {"image_id": image_id, "image": image, "persons": self._persons(image_id, image.shape[:2])}
        return self.transform(item) if self.transform is not None else item
