"""Video files through PyAV: decode into RGB ``FrameBatch``es (the source protocol of ``base``)."""

from __future__ import annotations

import logging
import time
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from streamparse.sources.base import SourceError
from streamparse.sources.uri import redact_uri, source_id as make_source_id
from streamparse.structures import FrameBatch

log = logging.getLogger(__name__)


def _rotate(img: np.ndarray, degrees: int) -> np.ndarray:
    """Apply display rotation metadata (degrees counter-clockwise, as FFmpeg reports it)."""
    k = (int(round(degrees / 90.0)) % 4)
    return np.ascontiguousarray(np.rot90(img, k=k)) if k else img


class FileSource:
    """Decodes a video file (any container PyAV opens) into RGB ``FrameBatch``es.

    Frame indices count decoded frames from 0; ``time`` is seconds since the first frame (from
    pts x time_base, never from frame_number/fps); decode errors mid-file are recorded in
    ``stats()['errors']`` and end the stream, keeping every frame decoded before them.
    ``start_frame`` skips (decodes but does not emit) the first frames, for resuming.
    """

    kind = "file"

    def __init__(self, path: str | Path, *, source_id: str = "", start_frame: int = 0, max_frames: int = 0,
                 threads: int = 0):
        self.uri = str(path)
        self.path = Path(str(path).replace("file://", "", 1) if str(path).startswith("file://") else path)
        self.source_id = source_id or make_source_id(self.uri)
        self.start_frame = int(start_frame)
        self.max_frames = int(max_frames)
        self.threads = threads
        self._container = None
        self._stream = None
        self._info: dict | None = None
        self._frames_it = None
        self._ended = False
        self._stats = {"decoded": 0, "emitted": 0, "errors": [], "complete": False}

    # --------------------------------------------------------------- lifecycle
    def open(self) -> "FileSource":
        import av

        if not self.path.exists():
            raise SourceError(f"file not found: {self.path}")
        if self.path.is_dir():
            raise SourceError(f"{self.path} is a directory, not a video file")
        try:
            self._container = av.open(str(self.path), mode="r", timeout=(10.0, 10.0))
        except av.error.EOFError:
            raise SourceError(f"video has zero frames (the file ends before any frame): {self.path}") from None
        except av.error.FFmpegError as exc:
            raise SourceError(f"not a video (PyAV cannot open it): {self.path}: {exc.strerror or exc}") from None
        if not self._container.streams.video:
            self.close()
            raise SourceError(f"not a video (no video stream): {self.path}")
        st = self._container.streams.video[0]
        st.thread_type = "AUTO"
        if self.threads:
            st.thread_count = self.threads
        self._stream = st
        tb = st.time_base or Fraction(1, 1000)
        fps = st.average_rate or st.guessed_rate
        self._info = {
            "uri": redact_uri(self.uri),
            "source_id": self.source_id,
            "kind": "file",
            "width": int(st.codec_context.width),
            "height": int(st.codec_context.height),
            "codec": st.codec_context.name,
            "time_base": [tb.numerator, tb.denominator],
            "avg_fps": float(fps) if fps else None,
            "frames_hint": int(st.frames or 0),
            "container": self._container.format.name,
        }
        return self

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def __enter__(self) -> "FileSource":
        return self.open() if self._container is None else self

    def __exit__(self, *exc) -> None:
        self.close()

    def info(self) -> dict:
        if self._info is None:
            self.open()
        return dict(self._info)

    def stats(self) -> dict:
        return {**self._stats, "errors": list(self._stats["errors"])}

    def ended(self) -> bool:
        return self._ended

    # --------------------------------------------------------------- decoding
    def _decoded(self):
        import av

        try:
            for frame in self._container.decode(self._stream):
                yield frame
        except av.error.FFmpegError as exc:  # corrupt/truncated data: keep what we have
            msg = f"decode error after frame {self._stats['decoded'] - 1}: {type(exc).__name__}: {exc.strerror or exc}"
            log.warning("%s: %s", redact_uri(self.uri), msg)
            self._stats["errors"].append(msg)

    def _frames(self) -> Iterator[tuple]:
        """(rgb, frame_index, pts, time, wallclock) of every emitted frame, in decode order; the checks of
        a file's end (truncation, zero frames) run when it is exhausted."""
        tb = self._stream.time_base or Fraction(1, 1000)
        fps = self._info["avg_fps"] or 25.0
        t_first = None
        last_pts = None
        limit = self.max_frames if self.max_frames > 0 else None
        for frame in self._decoded():
            idx = self._stats["decoded"]
            self._stats["decoded"] += 1
            pts = frame.pts if frame.pts is not None else (last_pts + max(1, int(round(1 / (fps * tb)))) if last_pts is not None else 0)
            last_pts = pts
            t = float(pts * tb)
            if t_first is None:
                t_first = t
            if idx < self.start_frame:
                continue
            if limit is not None and idx >= limit:
                break
            img = frame.to_ndarray(format="rgb24")
            rot = getattr(frame, "rotation", 0) or 0
            if rot:
                img = _rotate(img, rot)
            yield img, idx, pts, t - t_first, time.time()
        hint = self._info.get("frames_hint") or 0
        stopped_early = limit is not None and self._stats["decoded"] > limit
        if hint and self._stats["decoded"] < hint and not stopped_early and not self._stats["errors"]:
            msg = f"truncated: the header announces {hint} frames, {self._stats['decoded']} could be decoded"
            log.warning("%s: %s", redact_uri(self.uri), msg)
            self._stats["errors"].append(msg)
        if self._stats["decoded"] == 0 and not self._stats["errors"]:
            raise SourceError(f"video has zero frames: {self.path}")
        if self._stats["decoded"] == 0:
            raise SourceError(f"no frame could be decoded from {self.path}: {self._stats['errors'][0]}")
        self._stats["complete"] = not self._stats["errors"]

    def read(self, max_batch: int, timeout_s: float | None = None) -> FrameBatch | None:
        """The next up to ``max_batch`` frames (decoding does not wait: ``timeout_s`` is unused), or
        None at the end of the file."""
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if self._container is None:
            self.open()
        if self._ended:
            return None
        if self._frames_it is None:
            self._frames_it = self._frames()
        buf = []
        for item in self._frames_it:
            buf.append(item)
            if len(buf) == max_batch:
                break
        else:
            self._ended = True
        return self._batch(buf) if buf else None

    def batches(self, max_batch: int) -> Iterator[FrameBatch]:
        """Yield FrameBatches of up to ``max_batch`` frames, in decode order."""
        while (b := self.read(max_batch)) is not None:
            yield b

    def _batch(self, buf: list) -> FrameBatch:
        shapes = {b[0].shape for b in buf}
        if len(shapes) > 1:  # mid-stream resolution change: resize to the first frame's size
            import cv2

            h, w = buf[0][0].shape[:2]
            buf = [(cv2.resize(b[0], (w, h), interpolation=cv2.INTER_AREA) if b[0].shape[:2] != (h, w) else b[0], *b[1:]) for b in buf]
        self._stats["emitted"] += len(buf)
        tb = self._info["time_base"]
        return FrameBatch(
            frames=np.stack([b[0] for b in buf]),
            frame_index=np.array([b[1] for b in buf], dtype=np.int64),
            pts=np.array([b[2] for b in buf], dtype=np.int64),
            time=np.array([b[3] for b in buf], dtype=np.float64),
            wallclock=np.array([b[4] for b in buf], dtype=np.float64),
            segment=np.zeros(len(buf), dtype=np.uint16),
            time_base=(tb[0], tb[1]),
            source_id=self.source_id,
        )
