"""Label exports of a store: COCO (RLE), YouTube-VIS, MOTS (txt + 16-bit PNG) and the CIHP folder layout.

``export_labels(result, fmt, out_dir, ...)`` writes into an existing folder that the caller prepared
(``prepare_output``) and marks afterwards (``finish_dir``). Each format module has ``export(ctx)``.
Frames are named ``<source>_<frame_index:06d>``; ``every`` keeps every N-th committed frame. Only the
detected people are exported by default (``origin="detected"``: their rows and pixels); ``origin=None``
exports every row, the people a tracker recovered or interpolated too (``inst_origin``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMATS = {"coco": "streamparse.exports.coco", "youtube-vis": "streamparse.exports.youtube_vis",
           "mots": "streamparse.exports.mots", "cihp": "streamparse.exports.cihp"}


class ExportError(ValueError):
    """A store or request this export cannot serve (one line)."""


@dataclass
class ExportContext:
    result: object
    sources: list[str]
    out: Path
    every: int = 1
    parts: bool = False
    video: str | None = None
    origin: object = "detected"  # rows of these origins (``Result.origin_mask``); None = all

    def rows(self, source: str) -> np.ndarray:
        return np.arange(0, self.result.num_frames(source), self.every, dtype=np.int64)

    def size(self, source: str) -> tuple[int, int]:
        h, w = self.result.group(source)["part"].shape[1:]
        return int(h), int(w)

    def need_tracks(self, fmt: str) -> None:
        if self.result.schema_version < 2:
            raise ExportError(f"{fmt} needs track ids over time (schema v2); {self.result.path} is a schema "
                              f"v{self.result.schema_version} store without tracks")

    def images(self, source: str, rows):
        """RGB frames of ``--video`` at ``rows`` (checked against the store first): row -> uint8 (H,W,3)."""
        from streamparse.results.video import decode_rows

        return decode_rows(self.result, source, self.video, rows)


def frame_id(source: str, frame_index: int) -> str:
    return f"{source}_{int(frame_index):06d}"


def export_labels(result, fmt: str, out: str | Path, *, sources: list[str] | None = None, every: int = 1,
                  parts: bool = False, video: str | None = None, origin="detected") -> dict:
    """Write ``fmt`` labels of ``sources`` (default: all) into the folder ``out``; returns a summary.
    ``origin``: the rows exported (default the detected people; None = every row)."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    if every < 1:
        raise ExportError(f"--every must be >= 1, got {every}")
    srcs = list(sources or result.sources)
    if video is not None and len(srcs) != 1:
        raise ExportError(f"--video is the video of one source; the store has {len(srcs)}: pick one with --source")
    ctx = ExportContext(result, srcs, Path(out), every, parts, video, origin)
    return importlib.import_module(FORMATS[fmt]).export(ctx)
