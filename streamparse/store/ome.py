"""OME-Zarr (NGFF 0.5) ``image-label`` metadata for the ``part`` label map: a colour and a name per value.

The sink stores the result as the ``ome`` attribute of each source's ``part`` array::

    part.attrs["ome"] = ome_image_label(class_names, palette)

NGFF 0.5 (zarr v3) nests it as ``{"ome": {"version": "0.5", "image-label": {...}}}``: ``colors`` is a list
of ``{"label-value": int, "rgba": [r, g, b, a]}`` (uint8, unique values), ``properties`` a list of
``{"label-value": int, ...}`` with the same values. napari-ome-zarr (through ome-zarr-py) reads these
keys; a label image it opens must also be a ``multiscales`` group, which the streamparse ``part`` array
(one (time, y, x) array per source) is not, so OME viewers see the colours and names when the array is
wrapped in such a group (or read by a tool that takes the attributes of a plain array).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

NGFF_VERSION = "0.5"


def ome_image_label(class_names: Sequence[str], palette=None, *, background_alpha: int = 0,
                    alpha: int = 255) -> dict:
    """The value of the ``ome`` attribute of a ``part`` array (a plain JSON-able dict).

    class_names: C names, value i = class i (0 = background). palette: (C,3) uint8 RGB or None (then a
    fixed, deterministic colour per class). The background gets ``background_alpha`` (transparent by
    default), every part ``alpha``. Raises ``ValueError`` for a palette whose shape does not match.
    """
    names = [str(n) for n in class_names]
    if not names:
        raise ValueError("class_names is empty")
    if palette is None:
        rng = np.random.default_rng(20)
        pal = rng.integers(40, 256, (len(names), 3))
        pal[0] = 0
    else:
        pal = np.asarray(palette)
        if pal.shape != (len(names), 3):
            raise ValueError(f"palette must be ({len(names)}, 3) for {len(names)} class names, got {pal.shape}")
        if pal.size and (pal.min() < 0 or pal.max() > 255):
            raise ValueError("palette values must be 0..255")
    colors = [{"label-value": i, "rgba": [int(c) for c in pal[i]] + [int(background_alpha if i == 0 else alpha)]}
              for i in range(len(names))]
    properties = [{"label-value": i, "name": n, "class": n} for i, n in enumerate(names)]
    return {"version": NGFF_VERSION,
            "image-label": {"colors": colors, "properties": properties}}
