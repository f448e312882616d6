"""Tiny test videos made with PyAV."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def frame_pattern(i: int, h: int, w: int) -> np.ndarray:
    """A frame whose content identifies its index (moving blocks on a gradient)."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), np.full_like(x, (i * 37) % 256)], -1).astype(np.uint8)
    s = max(4, h // 4)
    x0 = (i * 3) % max(1, w - s)
    img[h // 4 : h // 4 + s, x0 : x0 + s] = (255, 40, 40)
    return img


def make_video(path: Path, n: int = 20, h: int = 48, w: int = 64, codec: str = "libx264", fps: int = 10,
               pix_fmt: str = "yuv420p") -> Path:
    path = Path(path)
    with av.open(str(path), mode="w") as out:
        st = out.add_stream(codec, rate=fps)
        st.width, st.height, st.pix_fmt = w, h, pix_fmt
        if codec == "libx264":
            st.options = {"preset": "ultrafast", "crf": "18"}
        for i in range(n):
            for pkt in st.encode(av.VideoFrame.from_ndarray(frame_pattern(i, h, w), format="rgb24")):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)
    return path


def make_empty_video(path: Path) -> Path:
    """A container with a video stream and no frames."""
    out = av.open(str(path), mode="w")
    st = out.add_stream("mpeg4", rate=10)
    st.width, st.height, st.pix_fmt = 64, 48, "yuv420p"
    out.start_encoding()  # write the header even though no frame follows
    out.close()
    return Path(path)
