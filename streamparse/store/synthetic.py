"""Synthetic result stores for tests, benchmarks and examples: people as coloured part boxes walking
across a frame, the matching H.264 video, and a store of schema v2 (``write_store``, the layout of the
phase-2 design: tracks, embeddings, part areas and colours) or v1 (``write_v1_store``, through the real
``ZarrSink``).

Everything is a pure function of the seed. The real writer of runs is ``streamparse.store.sink``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from streamparse.categories import CIHP
from streamparse.labelstats import instance_stats

# (part name, y0, y1, x0, x1) as fractions of the person's box; drawn in this order
_LAYOUT = (("Hair", 0.0, 0.09, 0.25, 0.75), ("Face", 0.09, 0.2, 0.3, 0.7), ("UpperClothes", 0.2, 0.55, 0.15, 0.85),
           ("Left-arm", 0.2, 0.5, 0.85, 1.0), ("Right-arm", 0.2, 0.5, 0.0, 0.15), ("Pants", 0.55, 0.7, 0.2, 0.8),
           ("Left-leg", 0.7, 0.92, 0.5, 0.8), ("Right-leg", 0.7, 0.92, 0.2, 0.5), ("Left-shoe", 0.92, 1.0, 0.5, 0.85),
           ("Right-shoe", 0.92, 1.0, 0.15, 0.5))


@dataclass
class SyntheticSource:
    """One source's label maps and per-instance values (rows in frame order, then instance id order).

    part uint8 (T,H,W); instance uint16 (T,H,W); counts (T,) people per frame; track (N,) uint32;
    score (N,) float32; images uint8 (T,H,W,3) RGB frames (the video's content); fps; pts (T,) int64
    and time_base once a video was written (``write_video``)."""

    part: np.ndarray
    instance: np.ndarray
    counts: np.ndarray
    track: np.ndarray
    score: np.ndarray
    images: np.ndarray
    fps: float
    pts: np.ndarray | None = None
    time_base: tuple[int, int] = (1, 1000)
    info: dict = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(self.part.shape[0])

    @property
    def time(self) -> np.ndarray:
        if self.pts is not None:
            return (self.pts - self.pts[0]) * self.time_base[0] / self.time_base[1]
        return np.arange(self.num_frames) / self.fps


def synthetic_people(num_frames: int, size: tuple[int, int] = (48, 64), num_people: int = 3, *, seed: int = 0,
                     fps: float = 10.0, churn: bool = True, with_images: bool = True) -> SyntheticSource:
    """People walking left/right across a (H, W) frame, CIHP part labels.

    ``churn``: the first person leaves half way and a new one enters (a new track); otherwise everyone
    stays in view. Instance ids per frame follow descending score (as the model's), tracks start at 1.
    """
    H, W = size
    rng = np.random.default_rng(seed)
    ids = {n: i for i, n in enumerate(CIHP.names)}
    n_tracks = num_people + (1 if churn else 0)
    ph = rng.uniform(0.45, 0.9, n_tracks) * H
    pw = np.maximum(4, ph * 0.4)
    top = rng.uniform(0, 1, n_tracks) * np.maximum(H - ph, 0)
    x0 = rng.uniform(0, 1, n_tracks) * np.maximum(W - pw, 1)
    vx = rng.uniform(0.3, 1.5, n_tracks) * rng.choice([-1, 1], n_tracks) * W / 64
    score = np.sort(rng.uniform(0.3, 0.99, n_tracks))[::-1].astype(np.float32)
    t_in = np.zeros(n_tracks, int)
    t_out = np.full(n_tracks, num_frames)
    if churn:
        t_out[0] = num_frames // 2
        t_in[-1] = num_frames // 2
    colours = rng.integers(30, 255, (n_tracks, len(CIHP.names), 3)).astype(np.uint8)
    bg = np.zeros((H, W, 3), np.uint8)
    bg[..., 0] = np.linspace(20, 120, W, dtype=np.uint8)[None]
    bg[..., 1] = np.linspace(40, 90, H, dtype=np.uint8)[:, None]
    bg[..., 2] = 60
    part = np.zeros((num_frames, H, W), np.uint8)
    inst = np.zeros((num_frames, H, W), np.uint16)
    images = np.empty((num_frames, H, W, 3), np.uint8) if with_images else np.zeros((num_frames, 0, 0, 3), np.uint8)
    counts, tracks, scores = np.zeros(num_frames, np.int64), [], []
    order = np.argsort(top + ph)  # farther (higher foot) first: nearer people occlude them
    for t in range(num_frames):
        tm = np.zeros((H, W), np.int32)  # track index + 1
        pm = part[t]
        for k in order:
            if not t_in[k] <= t < t_out[k]:
                continue
            span = max(W - pw[k], 1)
            x = (x0[k] + vx[k] * t) % (2 * span)
            x = x if x < span else 2 * span - x  # bounce off the borders
            for name, a0, a1, b0, b1 in _LAYOUT:
                ya, yb = int(top[k] + a0 * ph[k]), int(top[k] + a1 * ph[k])
                xa, xb = int(x + b0 * pw[k]), int(x + b1 * pw[k])
                if yb > ya and xb > xa:
                    pm[ya:yb, xa:xb] = ids[name]
                    tm[ya:yb, xa:xb] = k + 1
        present = np.flatnonzero(np.bincount(tm.ravel(), minlength=n_tracks + 1)[1:])  # track indices, score order
        lut = np.zeros(n_tracks + 1, np.uint16)
        lut[present + 1] = np.arange(1, len(present) + 1)
        inst[t] = lut[tm]
        counts[t] = len(present)
        tracks.append(present + 1)
        scores.append(score[present])
        if with_images:
            img = images[t]
            img[:] = bg
            on = tm > 0
            img[on] = colours[tm[on] - 1, pm[on]]
    return SyntheticSource(part=part, instance=inst, counts=counts,
                           track=np.concatenate(tracks).astype(np.uint32) if tracks else np.zeros(0, np.uint32),
                           score=np.concatenate(scores).astype(np.float32) if scores else np.zeros(0, np.float32),
                           images=images, fps=float(fps))


def write_video(src: SyntheticSource, path: str | Path, *, crf: int = 12) -> Path:
    """Encode ``src.images`` as H.264 yuv420p (size must be even) and record the decoded pts in ``src``."""
    import av

    path = Path(path)
    T, H, W = src.part.shape
    with av.open(str(path), "w") as c:
        st = c.add_stream("libx264", rate=Fraction(src.fps).limit_denominator(1001))
        st.width, st.height, st.pix_fmt = W, H, "yuv420p"
        st.options = {"preset": "ultrafast", "crf": str(crf), "bf": "0"}
        for t in range(T):
            for p in st.encode(av.VideoFrame.from_ndarray(src.images[t], format="rgb24")):
                c.mux(p)
        for p in st.encode():
            c.mux(p)
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        pts = sorted(p.pts for p in c.demux(vs) if p.pts is not None)
        tb = vs.time_base
    src.pts = np.asarray(pts, np.int64)
    src.time_base = (tb.numerator, tb.denominator)
    src.info = {"uri": str(path), "source_id": path.stem, "kind": "file", "width": W, "height": H, "codec": "h264",
                "time_base": [tb.numerator, tb.denominator], "avg_fps": src.fps, "frames_hint": T, "container": "mp4"}
    return path


def _frame_values(src: SyntheticSource) -> dict:
    T = src.num_frames
    pts = src.pts if src.pts is not None else np.arange(T, dtype=np.int64) * int(round(1000 / src.fps))
    return {"frame_index": np.arange(T, dtype=np.int64), "pts": pts.astype(np.int64), "time": src.time.astype(np.float64),
            "segment": np.zeros(T, np.uint16), "wallclock": 1.7e9 + np.arange(T) / src.fps}


def _info(src: SyntheticSource, sid: str) -> dict:
    T, H, W = src.part.shape
    return src.info or {"uri": f"synthetic://{sid}", "source_id": sid, "kind": "file", "width": W, "height": H,
                        "codec": "h264", "time_base": list(src.time_base), "avg_fps": src.fps, "frames_hint": T}


def _batch(src: SyntheticSource, st, emb: np.ndarray, t0: int, t1: int):
    from streamparse.structures import ParsingBatch

    fv = _frame_values(src)
    a, b = int(st.offset[t0]), int(st.offset[t1])
    return ParsingBatch(part=src.part[t0:t1], instance=src.instance[t0:t1], **{k: v[t0:t1] for k, v in fv.items()},
                        inst_offset=st.offset[t0 : t1 + 1] - a, inst_id=st.inst_id[a:b], inst_score=src.score[a:b],
                        inst_bbox=st.bbox[a:b], inst_area=st.area[a:b], inst_embedding=emb[a:b],
                        inst_part_area=st.part_area[a:b], inst_part_rgb=st.part_rgb[a:b],
                        inst_track=src.track[a:b].astype(np.uint32))


def write_store(path: str | Path, sources: dict[str, SyntheticSource], *, chunk_frames: int = 16, emb_dim: int = 8,
                uncommitted: int = 0, class_names=CIHP.names, palette=CIHP.palette, seed: int = 0,
                status: dict | None = None, store=None) -> Path:
    """A schema-v2 store of the given sources, written by the real ``ZarrSink`` (tracks as given).
    ``uncommitted``: extra frames (and their instances) written past the commit marker, as a crash leaves
    them; readers must ignore them."""
    import zarr

    from streamparse.store.sink import ZarrSink

    C = len(class_names)
    attrs = {"model_name": "synthetic", "checkpoint_sha256": None, "class_names": list(class_names),
             "palette": np.asarray(palette).tolist(), "config": {}, "sources": [_info(s, sid)["uri"] for sid, s in sources.items()],
             "tracker": {"name": "synthetic", "params": {}}}
    rng = np.random.default_rng(seed)
    stats, embs = {}, {}
    with ZarrSink(path, root_attrs=attrs, chunk_frames=chunk_frames, store=store) as sink:
        for sid, src in sources.items():
            T, H, W = src.part.shape
            st = instance_stats(src.part, src.instance, C, src.images if src.images.shape[1:3] == (H, W) else None,
                                counts=src.counts)
            N = len(st.area)
            track_emb = rng.normal(size=(int(src.track.max(initial=0)) + 1, emb_dim))
            emb = track_emb[src.track] + 0.1 * rng.normal(size=(N, emb_dim))
            emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float16) if N else np.zeros((0, emb_dim), np.float16)
            stats[sid], embs[sid] = st, emb
            w = sink.source(sid, _info(src, sid), (H, W), list(class_names), np.asarray(palette), embedding_dim=emb_dim)
            keep = T - uncommitted
            if keep:
                w.add_batch(0, _batch(src, st, emb, 0, keep))
            w.flush()
            w.set_status(state="complete" if not uncommitted else "running", complete=not uncommitted, segments=1,
                         **(status or {}))
    if uncommitted:  # the rows a crash mid-chunk leaves past the commit marker
        root = zarr.open_group(store if store is not None else str(path), mode="r+")
        for sid, src in sources.items():
            g, st, T = root[sid], stats[sid], src.num_frames
            keep = T - uncommitted
            b = _batch(src, st, embs[sid], keep, T)
            n0 = int(st.offset[keep])
            for name in ("part", "instance", "frame_index", "pts", "time", "segment", "wallclock", "inst_offset"):
                a = g[name]
                a.resize((T, *a.shape[1:]))
                a[keep:T] = (n0 + b.inst_offset[:-1]) if name == "inst_offset" else getattr(b, name)
            for name in ("cand_part", "cand_instance", "cand_offset"):  # no candidates
                a = g[name]
                a.resize((T, *a.shape[1:]))
                a[keep:T] = 0
            for name in ("inst_id", "inst_score", "inst_bbox", "inst_area", "inst_track", "inst_embedding",
                         "inst_part_area", "inst_part_rgb", "inst_origin"):
                a = g[name]
                a.resize((n0 + b.num_instances, *a.shape[1:]))
                a[n0:] = getattr(b, name)
    return Path(path)


def write_v1_store(path: str | Path, sources: dict[str, SyntheticSource], *, chunk_frames: int = 16,
                   class_names=CIHP.names, palette=CIHP.palette) -> Path:
    """A schema-v1 store of the given sources: what the real ``ZarrSink`` writes, less the v2 arrays and
    attributes (the layout of streamparse 0.1)."""
    import zarr

    from streamparse.store.schema import V2_ARRAYS, V2_LATER

    write_store(path, sources, chunk_frames=chunk_frames, class_names=class_names, palette=palette)
    root = zarr.open_group(str(path), mode="r+")
    for sid in sources:
        for name in (*V2_ARRAYS, *V2_LATER):
            del root[sid][name]
        root[sid]["part"].attrs.pop("ome", None) if hasattr(root[sid]["part"].attrs, "pop") else None
    attrs = dict(root.attrs)
    attrs.pop("tracker", None)
    attrs["streamparse_schema_version"] = 1
    root.attrs.clear()
    root.attrs.update(attrs)
    return Path(path)
