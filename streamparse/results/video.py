"""Overlay videos of a store on its source video: H.264 yuv420p MP4 (PyAV libx264, ``+faststart``), which
browsers and notebooks play. The video must be the one the store was made from: ``check_video`` compares
size, frame count and pts before anything is written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from streamparse.results.overlay import Overlay


class RenderError(ValueError):
    """The video does not match the store, or nothing can be rendered (one line)."""


@dataclass(frozen=True)
class VideoCheck:
    width: int
    height: int
    pts: np.ndarray          # (F,) int64 sorted packet pts of the video
    time_base: Fraction
    fps: float


def _packet_pts(path: str):
    import av

    try:
        c = av.open(path)
    except (av.error.FFmpegError, OSError) as exc:
        raise RenderError(f"cannot open video {path}: {getattr(exc, 'strerror', None) or exc}") from None
    with c:
        if not c.streams.video:
            raise RenderError(f"{path} has no video stream")
        st = c.streams.video[0]
        pts = np.sort(np.asarray([p.pts for p in c.demux(st) if p.pts is not None and p.size], np.int64))
        fps = float(st.average_rate or st.guessed_rate or 25)
        return st.codec_context.width, st.codec_context.height, pts, st.time_base or Fraction(1, 1000), fps


def check_video(result, source: str, video: str | Path) -> VideoCheck:
    """Refuse (``RenderError``, one line) a video whose size, frame count or pts differ from the store's."""
    video = str(video)
    if not Path(video).is_file():
        raise RenderError(f"video not found: {video}")
    W, H, pts, tb, fps = _packet_pts(video)
    g = result.group(source)
    sh, sw = g["part"].shape[1:]
    if (W, H) != (sw, sh):
        raise RenderError(f"{video} is {W}x{H} but source {source} of {result.path} is {sw}x{sh}: not the video this store was made from")
    pf = result._per_frame(source)
    T = len(pf["pts"])
    complete = bool(result.status(source).get("complete"))
    limit = int((((result.attrs.get("config") or {}).get("pipeline") or {}).get("max_frames")) or 0)
    cut = bool(limit) and T == limit  # a run told to stop after max_frames: the video goes on
    if len(pts) < T or (complete and len(pts) != T and not cut):
        raise RenderError(f"{video} has {len(pts)} frames but source {source} of {result.path} has {T} committed"
                          f"{' (complete)' if complete else ''}: not the video this store was made from")
    bad = np.flatnonzero(pts[:T] != pf["pts"])
    if len(bad):
        i = int(bad[0])
        raise RenderError(f"{video}: frame {i} has pts {int(pts[i])} but source {source} of {result.path} has "
                          f"{int(pf['pts'][i])}: not the video this store was made from")
    return VideoCheck(W, H, pts, tb, fps)


def select_rows(result, source: str, start: float | None, end: float | None) -> np.ndarray:
    tm = result._per_frame(source)["time"]
    keep = np.ones(len(tm), bool)
    if start is not None:
        keep &= tm >= start - 1e-9
    if end is not None:
        keep &= tm < end - 1e-9
    rows = np.flatnonzero(keep)
    if not len(rows):
        raise RenderError(f"no committed frame of {source} in [{start or 0}, {end if end is not None else 'end'}) s "
                          f"(the source spans {tm[0]:.3f}..{tm[-1]:.3f} s)" if len(tm) else f"source {source} has no committed frame")
    return rows


def frame_labels(result, source: str) -> tuple:
    """Per-frame label lists for ``Overlay.draw``: (inst_offset, counts, ids, texts, boxes, keys). A person
    the tracker recovered or interpolated is marked ``#3 r`` / ``#3 i``."""
    pf = result._per_frame(source)
    d = result._per_instance(source, ("inst_id", "inst_bbox", "inst_track"))
    tr = d["inst_track"]
    keys = tr.astype(np.int64) if tr is not None else d["inst_id"].astype(np.int64)
    mark = np.array(["", " r", " i"])[np.minimum(result.origins(source), 2)]
    texts = ([f"#{int(t)}{m}" if t else "" for t, m in zip(tr, mark)] if tr is not None
             else [f"p{int(i)}" for i in d["inst_id"]])
    return pf["inst_offset"], pf["count"], d["inst_id"], texts, d["inst_bbox"].reshape(-1, 4), keys


def render_video(result, source: str, video: str | Path, out: str | Path, *, start: float | None = None,
                 end: float | None = None, legend: bool = False, alpha: float = 0.5, crf: int = 23,
                 preset: str = "veryfast", max_width: int | None = None, progress: bool = False) -> dict:
    """Render the overlay of ``source`` on ``video`` into the MP4 file ``out`` (written to ``out.partial``
    then renamed: a failed render leaves no half file). The caller checked ``out`` (``prepare_output``).
    ``max_width``: downscale wider frames (report clips). Returns {"frames", "seconds", "fps", "out"}."""
    import time

    import av
    from tqdm import tqdm

    chk = check_video(result, source, video)
    rows = select_rows(result, source, start, end)
    pts = result._per_frame(source)["pts"]
    ov = _overlay(result, source, legend, alpha)
    labels = frame_labels(result, source)
    W, H = chk.width, chk.height
    scale = min(1.0, max_width / W) if max_width else 1.0
    ow, oh = (int(round(W * scale)) // 2 * 2, int(round(H * scale)) // 2 * 2)  # yuv420p needs even sizes
    out = Path(out)
    tmp = out.with_name(out.name + ".partial")
    t0 = time.perf_counter()
    n = 0
    maps = result.iter_frames(source, rows)
    bar = tqdm(total=len(rows), desc=f"render {source}", unit="frame", disable=not progress)
    try:
        with av.open(str(video)) as inp, av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as oc:
            ost = _h264_stream(oc, chk, (ow, oh), crf, preset)
            first_pts = int(pts[rows[0]])
            for row, fr in _decode_at(inp, pts, rows):
                f = next(maps)
                if f.row != row:
                    raise RenderError(f"{video}: decoded frame pts {fr.pts} out of order (expected store row {f.row})")
                drawn = _draw(ov, fr.to_ndarray(format="rgb24"), f, labels, (ow, oh))
                vf = av.VideoFrame.from_ndarray(drawn, format="rgb24")
                vf.pts, vf.time_base = fr.pts - first_pts, chk.time_base
                for p in ost.encode(vf):
                    oc.mux(p)
                n += 1
                bar.update(1)
            for p in ost.encode():
                oc.mux(p)
        if n != len(rows):
            raise RenderError(f"{video}: decoded {n} of the {len(rows)} frames to render (a damaged video?)")
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        bar.close()
    dt = time.perf_counter() - t0
    return {"frames": n, "seconds": round(dt, 3), "fps": round(n / max(dt, 1e-9), 1), "out": str(out),
            "size": [ow, oh]}


def _overlay(result, source: str, legend: bool, alpha: float) -> Overlay:
    """The drawer of ``source``'s frames; its legend lists the classes the source has pixels of
    (schema v2; every class in a v1 store)."""
    legend_ids = None
    if legend and result.schema_version >= 2:
        tot = result._per_instance(source, ("inst_part_area",))["inst_part_area"].sum(axis=0)
        legend_ids = [int(c) for c in np.flatnonzero(tot) if c > 0] or None
    return Overlay(result.palette, alpha=alpha, legend=result.class_names if legend else None, legend_ids=legend_ids)


def _h264_stream(oc, chk: VideoCheck, size: tuple[int, int], crf: int, preset: str):
    """The libx264 yuv420p stream of (W, H) ``size`` in the output ``oc``, at the input's rate and time base;
    the file is marked as streamparse's."""
    from streamparse.store.outputs import generator_mark

    oc.metadata["comment"] = generator_mark()
    ost = oc.add_stream("libx264", rate=Fraction(chk.fps).limit_denominator(1001))
    ost.width, ost.height, ost.pix_fmt = size[0], size[1], "yuv420p"
    ost.time_base = chk.time_base
    ost.options = {"crf": str(crf), "preset": preset}
    return ost


def _decode_at(inp, pts: np.ndarray, rows: np.ndarray) -> Iterator[tuple[int, object]]:
    """Yield (row, decoded frame) of the open input at the store ``rows`` (whose pts are ``pts[rows]``),
    in order: seek to the first (when it is not the video's first), stop after the last."""
    ist = inp.streams.video[0]
    ist.thread_type = "AUTO"
    want = {int(pts[r]): int(r) for r in rows}
    if rows[0] > 0:
        inp.seek(int(pts[rows[0]]), stream=ist, backward=True, any_frame=False)
    n = 0
    for fr in inp.decode(ist):
        if fr.pts is None or fr.pts not in want:
            if fr.pts is not None and fr.pts > int(pts[rows[-1]]):
                break
            continue
        yield want[fr.pts], fr
        n += 1
        if n == len(rows):
            break


def _draw(ov: Overlay, img: np.ndarray, f, labels: tuple, size: tuple[int, int]) -> np.ndarray:
    """One frame's overlay (its people labelled from ``frame_labels``), resized to (W, H) ``size``."""
    import cv2

    offs, counts, ids, texts, boxes, keys = labels
    s = int(offs[f.row])
    people = [(int(ids[s + j]), texts[s + j], boxes[s + j], keys[s + j]) for j in range(int(counts[f.row]))]
    drawn = ov.draw(img, f.part, f.instance, people)
    if (drawn.shape[1], drawn.shape[0]) != tuple(size):
        drawn = cv2.resize(drawn, size, interpolation=cv2.INTER_AREA)
    return drawn


def decode_rows(result, source: str, video: str | Path, rows) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (row, RGB uint8 (H,W,3)) of ``video`` at the given store rows, in order (the video is checked
    against the store first)."""
    import av

    check_video(result, source, video)
    pts = result._per_frame(source)["pts"]
    want = {int(pts[r]): int(r) for r in rows}
    left = len(want)
    if not left:
        return
    with av.open(str(video)) as c:
        st = c.streams.video[0]
        st.thread_type = "AUTO"
        for fr in c.decode(st):
            if fr.pts in want:
                yield want[fr.pts], fr.to_ndarray(format="rgb24")
                left -= 1
                if not left:
                    return
    raise RenderError(f"{video}: {left} of the requested frames could not be decoded")
