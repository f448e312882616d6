"""Typed containers that cross stage boundaries (and, as plain numpy dicts, Ray actors).

``FrameBatch``   -- decoded frames of one source: what a source yields and the predictor takes.
``ParsingBatch`` -- the parsings of those frames: label maps + a CSR instance table; what the
                    predictor returns and the sink writes, whole (the one representation from the
                    predictor to the store; ``frame(i)`` gives one frame's view).
``FrameParsing`` -- one image's parsing (the single-image API: ``predict``, evaluation).
All validate shapes and dtypes when built (``__post_init__``, ``from_dict`` at every Ray boundary)
and convert to/from ``dict[str, ndarray]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def _as(arr, dtype, name: str, ndim: int | None = None) -> np.ndarray:
    out = np.asarray(arr)
    if ndim is not None and out.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {out.shape}")
    if out.dtype != dtype:
        if out.size and np.issubdtype(out.dtype, np.floating) and np.issubdtype(dtype, np.integer):
            raise ValueError(f"{name}: expected {np.dtype(dtype)}, got {out.dtype}")
        out = out.astype(dtype)
    return out


@dataclass
class FrameBatch:
    """B decoded frames of one source.

    Attributes:
        frames: uint8[B, H, W, 3] RGB.
        frame_index: int64[B] decode-order index within the source (gaps = dropped frames).
        pts: int64[B] presentation timestamps in ``time_base`` units.
        time: float64[B] seconds since the start of the source (monotonic across segments).
        wallclock: float64[B] unix seconds when the frame was grabbed.
        segment: uint16[B] reconnect counter (0 for files).
        time_base: (num, den) of the stream's time base.
        source_id: id of the source the frames belong to.
    """

    frames: np.ndarray
    frame_index: np.ndarray
    pts: np.ndarray
    time: np.ndarray
    wallclock: np.ndarray
    segment: np.ndarray
    time_base: tuple[int, int] = (1, 1)
    source_id: str = ""

    def __post_init__(self) -> None:
        self.frames = np.asarray(self.frames)
        if self.frames.ndim != 4 or self.frames.shape[-1] != 3 or self.frames.dtype != np.uint8:
            raise ValueError(
                f"frames must be uint8[B, H, W, 3], got {self.frames.dtype}{list(self.frames.shape)}"
            )
        b = self.frames.shape[0]
        self.frame_index = _as(self.frame_index, np.int64, "frame_index", 1)
        self.pts = _as(self.pts, np.int64, "pts", 1)
        self.time = _as(self.time, np.float64, "time", 1)
        self.wallclock = _as(self.wallclock, np.float64, "wallclock", 1)
        self.segment = _as(self.segment, np.uint16, "segment", 1)
        for name in ("frame_index", "pts", "time", "wallclock", "segment"):
            if getattr(self, name).shape[0] != b:
                raise ValueError(f"{name} has {getattr(self, name).shape[0]} entries for {b} frames")
        self.time_base = (int(self.time_base[0]), int(self.time_base[1]))

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def to_dict(self) -> dict:
        return {
            "frames": self.frames,
            "frame_index": self.frame_index,
            "pts": self.pts,
            "time": self.time,
            "wallclock": self.wallclock,
            "segment": self.segment,
            "time_base": np.asarray(self.time_base, dtype=np.int64),
            "source_id": self.source_id,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "FrameBatch":
        tb = d.get("time_base", (1, 1))
        return cls(
            frames=d["frames"],
            frame_index=d["frame_index"],
            pts=d["pts"],
            time=d["time"],
            wallclock=d["wallclock"],
            segment=d["segment"],
            time_base=(int(tb[0]), int(tb[1])),
            source_id=str(d.get("source_id", "")),
        )


def _label_maps(part, instance, dims: str) -> tuple[np.ndarray, np.ndarray]:
    """``part`` as uint8[``dims``] and ``instance`` as uint16 of the same shape (``dims``: "H, W" or
    "B, H, W"); ``ValueError`` otherwise."""
    part, instance = np.asarray(part), np.asarray(instance)
    if part.ndim != len(dims.split(", ")) or part.dtype != np.uint8:
        raise ValueError(f"part must be uint8[{dims}], got {part.dtype}{list(part.shape)}")
    if instance.shape != part.shape or instance.dtype != np.uint16:
        raise ValueError(f"instance must be uint16{list(part.shape)}, got {instance.dtype}{list(instance.shape)}")
    return part, instance


@dataclass
class FrameParsing:
    """Multi-human parsing of one image at the image's resolution.

    Attributes:
        part: uint8[H, W] part category per pixel (0 = background).
        instance: uint16[H, W] person id per pixel (0 = background, 1..K).
        scores: float32[K] score of person k+1 (centre-heatmap confidence).
        bboxes: int32[K, 4] (x0, y0, x1, y1) of person k+1, x1/y1 exclusive; zeros if empty.
        areas: int64[K] pixel count of person k+1.
        part_areas: int64[K, num_classes] pixel count of each category inside person k+1.
        embeddings: float16[K, D] unit instance kernel of person k+1 (None when not computed).
    """

    part: np.ndarray
    instance: np.ndarray
    scores: np.ndarray
    bboxes: np.ndarray = field(default=None)  # type: ignore[assignment]
    areas: np.ndarray = field(default=None)  # type: ignore[assignment]
    part_areas: np.ndarray = field(default=None)  # type: ignore[assignment]
    embeddings: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.part, self.instance = _label_maps(self.part, self.instance, "H, W")
        self.scores = _as(self.scores, np.float32, "scores", 1)
        k = self.scores.shape[0]
        if self.bboxes is None or self.areas is None:
            self.bboxes, self.areas = instance_boxes_areas(self.instance, k)
        self.bboxes = _as(self.bboxes, np.int32, "bboxes", 2).reshape(k, 4)
        self.areas = _as(self.areas, np.int64, "areas", 1)
        if self.part_areas is None:
            self.part_areas = np.zeros((k, 0), dtype=np.int64)
        self.part_areas = _as(self.part_areas, np.int64, "part_areas", 2)
        if self.areas.shape[0] != k or self.part_areas.shape[0] != k:
            raise ValueError("scores, bboxes, areas and part_areas must have one row per instance")
        if self.embeddings is not None:
            self.embeddings = _as(self.embeddings, np.float16, "embeddings", 2)
            if self.embeddings.shape[0] != k:
                raise ValueError("embeddings must have one row per instance")

    @property
    def num_instances(self) -> int:
        return int(self.scores.shape[0])

    def person_masks(self) -> list[np.ndarray]:
        """K part-label maps uint8[H, W], one per person (parts outside the person set to 0)."""
        return [np.where(self.instance == k + 1, self.part, 0).astype(np.uint8) for k in range(self.num_instances)]

    def to_dict(self) -> dict[str, np.ndarray]:
        return {
            "part": self.part,
            "instance": self.instance,
            "scores": self.scores,
            "bboxes": self.bboxes,
            "areas": self.areas,
            "part_areas": self.part_areas,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "FrameParsing":
        return cls(**{k: d[k] for k in ("part", "instance", "scores", "bboxes", "areas", "part_areas")})


PER_FRAME_FIELDS = ("frame_index", "pts", "time", "wallclock", "segment")
_FRAME_DTYPES = {"frame_index": np.int64, "pts": np.int64, "time": np.float64, "wallclock": np.float64, "segment": np.uint16}
_INST_DTYPES = {"inst_id": np.uint16, "inst_score": np.float32, "inst_bbox": np.int32, "inst_area": np.int64,
                "inst_track": np.uint32, "inst_embedding": np.float16, "inst_part_area": np.int32, "inst_part_rgb": np.uint8,
                "inst_origin": np.uint8}
_CAND_KEYS = ("cand_offset", "cand_score", "cand_bbox", "cand_embedding", "cand_part_area", "cand_part_rgb", "cand_crop")
_INST_NDIM = {"inst_bbox": 2, "inst_embedding": 2, "inst_part_area": 2, "inst_part_rgb": 3}


@dataclass
class ParsingBatch:
    """The parsings of B frames of one source, at the frames' resolution.

    Attributes:
        part: uint8[B, H, W] part category per pixel (0 = background).
        instance: uint16[B, H, W] person per pixel (0 = background, 1..K_b in frame b).
        frame_index, pts: int64[B]; time, wallclock: float64[B]; segment: uint16[B] (as ``FrameBatch``).
        inst_offset: int64[B+1] CSR offsets: frame b's people are rows inst_offset[b]:inst_offset[b+1].
        inst_id: uint16[N] the person's value in ``instance`` (1..K_b, in descending score order).
        inst_score: float32[N] centre score; inst_bbox: int32[N, 4] (x0, y0, x1, y1; x1/y1 exclusive);
        inst_area: int64[N] pixels.
        inst_embedding: float16[N, D] the person's unit instance kernel (schema v2).
        inst_part_area: int32[N, C] pixels of each part class inside the person.
        inst_part_rgb: uint8[N, C, 3] mean RGB of each part of the person in the frame (0 where absent).
        inst_track: uint32[N] track id per source (1..; 0 = none yet): assigned by the writer's tracker.
        inst_origin: uint8[N] where the row comes from: 0 detected, 1 recovered (the tracker's second
            stage took a candidate), 2 interpolated (offline ``streamparse track``); the parser gives 0.
        cand: the frames' low-score candidates, the compact CSR table of ``streamparse.candidates``
            (``cand_offset`` (B+1,), ``cand_*`` (Nc, ...), ``cand_crop`` (P,)); None = none.
        time_base: (num, den); source_id: the source's id.
    """

    part: np.ndarray
    instance: np.ndarray
    frame_index: np.ndarray
    pts: np.ndarray
    time: np.ndarray
    wallclock: np.ndarray
    segment: np.ndarray
    inst_offset: np.ndarray
    inst_id: np.ndarray
    inst_score: np.ndarray
    inst_bbox: np.ndarray
    inst_area: np.ndarray
    inst_embedding: np.ndarray
    inst_part_area: np.ndarray
    inst_part_rgb: np.ndarray
    inst_track: np.ndarray | None = None
    inst_origin: np.ndarray | None = None
    cand: dict | None = None
    time_base: tuple[int, int] = (1, 1)
    source_id: str = ""

    def __post_init__(self) -> None:
        self.part, self.instance = _label_maps(self.part, self.instance, "B, H, W")
        b = self.part.shape[0]
        for name, dt in _FRAME_DTYPES.items():
            setattr(self, name, _as(getattr(self, name), dt, name, 1))
            if getattr(self, name).shape[0] != b:
                raise ValueError(f"{name} has {getattr(self, name).shape[0]} entries for {b} frames")
        self.inst_offset = _as(self.inst_offset, np.int64, "inst_offset", 1)
        if self.inst_track is None:
            self.inst_track = np.zeros(np.asarray(self.inst_id).shape[0], np.uint32)
        if self.inst_origin is None:
            self.inst_origin = np.zeros(np.asarray(self.inst_id).shape[0], np.uint8)
        for name, dt in _INST_DTYPES.items():
            arr = getattr(self, name)
            if name == "inst_embedding" and np.asarray(arr).dtype != np.float16:  # float kernels become float16
                arr = np.asarray(arr, dtype=np.float16)
            setattr(self, name, _as(arr, dt, name, _INST_NDIM.get(name, 1)))
        n = self.inst_id.shape[0]
        off = self.inst_offset
        if off.shape[0] != b + 1 or off[0] != 0 or off[-1] != n or (b and np.any(off[1:] < off[:-1])):
            raise ValueError(f"inst_offset must be {b + 1} non-decreasing offsets from 0 to {n}, got {off.tolist()[:8]}")
        for name in _INST_DTYPES:
            if getattr(self, name).shape[0] != n:
                raise ValueError(f"{name} has {getattr(self, name).shape[0]} rows for {n} instances")
        if self.inst_bbox.shape[1:] != (4,):
            raise ValueError(f"inst_bbox must be int32[N, 4], got {list(self.inst_bbox.shape)}")
        if self.inst_part_rgb.shape[1:] != (self.inst_part_area.shape[1], 3):
            raise ValueError(f"inst_part_rgb must be uint8[N, C, 3] with C = {self.inst_part_area.shape[1]}, got "
                             f"{list(self.inst_part_rgb.shape)}")
        self.cand = _check_cand(self.cand, b, self.inst_embedding.shape[1], self.inst_part_area.shape[1])
        self.time_base = (int(self.time_base[0]), int(self.time_base[1]))

    def __len__(self) -> int:
        return int(self.part.shape[0])

    @property
    def num_instances(self) -> int:
        return int(self.inst_id.shape[0])

    def frame(self, i: int) -> FrameParsing:
        """Frame i as a ``FrameParsing`` (views, no copy of the maps)."""
        a, b = int(self.inst_offset[i]), int(self.inst_offset[i + 1])
        return FrameParsing(part=self.part[i], instance=self.instance[i], scores=self.inst_score[a:b],
                            bboxes=self.inst_bbox[a:b], areas=self.inst_area[a:b], part_areas=self.inst_part_area[a:b],
                            embeddings=self.inst_embedding[a:b])

    def slice(self, start: int, stop: int) -> "ParsingBatch":
        """Frames [start, stop) as a ParsingBatch (views; instance rows re-based)."""
        a, b = int(self.inst_offset[start]), int(self.inst_offset[stop])
        return ParsingBatch(part=self.part[start:stop], instance=self.instance[start:stop],
                            **{k: getattr(self, k)[start:stop] for k in PER_FRAME_FIELDS},
                            inst_offset=self.inst_offset[start : stop + 1] - a,
                            **{k: getattr(self, k)[a:b] for k in _INST_DTYPES}, cand=_slice_cand(self.cand, start, stop),
                            time_base=self.time_base, source_id=self.source_id)

    @staticmethod
    def concat(batches: list["ParsingBatch"]) -> "ParsingBatch":
        if len(batches) == 1:
            return batches[0]
        counts = np.concatenate([np.diff(b.inst_offset) for b in batches])
        return ParsingBatch(part=np.concatenate([b.part for b in batches]), instance=np.concatenate([b.instance for b in batches]),
                            **{k: np.concatenate([getattr(b, k) for b in batches]) for k in PER_FRAME_FIELDS},
                            inst_offset=np.concatenate([[0], np.cumsum(counts)]),
                            **{k: np.concatenate([getattr(b, k) for b in batches]) for k in _INST_DTYPES},
                            cand=_concat_cand([b.cand for b in batches]),
                            time_base=batches[0].time_base, source_id=batches[0].source_id)

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("part", "instance", *PER_FRAME_FIELDS, "inst_offset", *_INST_DTYPES)}
        d.update(self.cand)
        d["time_base"] = np.asarray(self.time_base, dtype=np.int64)
        d["source_id"] = self.source_id
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ParsingBatch":
        tb = d.get("time_base", (1, 1))
        cand = {k: d[k] for k in _CAND_KEYS} if "cand_offset" in d else None
        return cls(**{k: d[k] for k in ("part", "instance", *PER_FRAME_FIELDS, "inst_offset", *_INST_DTYPES) if k in d},
                   cand=cand, time_base=(int(tb[0]), int(tb[1])), source_id=str(d.get("source_id", "")))


def instance_table(instance: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes int32[N, 4], areas int64[N] and ids uint16[N] of the people of a batch of instance maps
    (B, H, W) with ``counts[b]`` people in frame b (ids 1..counts[b]) (``labelstats.instance_stats``)."""
    from streamparse.labelstats import instance_stats

    instance = np.asarray(instance)
    st = instance_stats(np.zeros(instance.shape, np.uint8), instance, 1, counts=counts)
    return st.bbox, st.area, st.inst_id


def instance_boxes_areas(instance: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Boxes int32[k, 4] (x0, y0, x1, y1; exclusive ends) and areas int64[k] of ids 1..k of one map."""
    boxes, areas, _ = instance_table(np.asarray(instance)[None], np.array([k]))
    return boxes, areas


def _check_cand(cand: dict | None, b: int, dim: int, num_classes: int) -> dict:
    """The compact candidate table of B frames (``streamparse.candidates``), checked; None -> empty."""
    from streamparse.candidates import CAND_FIELDS, CAND_NDIM, crop_sizes, empty

    if cand is None:
        return empty(b, dim, num_classes)
    out = {"cand_offset": _as(cand["cand_offset"], np.int64, "cand_offset", 1), "cand_crop": _as(cand["cand_crop"], np.uint8, "cand_crop", 1)}
    for k, dt in CAND_FIELDS.items():
        out[k] = _as(np.asarray(cand[k], dtype=dt) if k == "cand_embedding" else cand[k], dt, k, CAND_NDIM[k])
    off, n = out["cand_offset"], out["cand_score"].shape[0]
    if off.shape[0] != b + 1 or off[0] != 0 or off[-1] != n or (b and np.any(off[1:] < off[:-1])):
        raise ValueError(f"cand_offset must be {b + 1} non-decreasing offsets from 0 to {n}, got {off.tolist()[:8]}")
    want = {"cand_bbox": (4,), "cand_embedding": (dim,), "cand_part_area": (num_classes,), "cand_part_rgb": (num_classes, 3)}
    for k in CAND_FIELDS:
        if out[k].shape[0] != n or out[k].shape[1:] != want.get(k, ()):
            raise ValueError(f"{k} must have shape ({n}, {', '.join(map(str, want.get(k, ())))}), got {list(out[k].shape)}")
    if int(crop_sizes(out["cand_bbox"]).sum()) != out["cand_crop"].shape[0]:
        raise ValueError("cand_crop does not hold one crop per candidate box")
    return out


def _slice_cand(cand: dict, start: int, stop: int) -> dict:
    from streamparse.candidates import CAND_FIELDS, crop_sizes

    a, b = int(cand["cand_offset"][start]), int(cand["cand_offset"][stop])
    sizes = np.concatenate([[0], np.cumsum(crop_sizes(cand["cand_bbox"]))])
    return {"cand_offset": cand["cand_offset"][start:stop + 1] - a, **{k: cand[k][a:b] for k in CAND_FIELDS},
            "cand_crop": cand["cand_crop"][sizes[a]:sizes[b]]}


def _concat_cand(cands: list[dict]) -> dict:
    from streamparse.candidates import CAND_FIELDS

    counts = np.concatenate([np.diff(c["cand_offset"]) for c in cands])
    return {"cand_offset": np.concatenate([[0], np.cumsum(counts)]), **{k: np.concatenate([c[k] for c in cands]) for k in CAND_FIELDS},
            "cand_crop": np.concatenate([c["cand_crop"] for c in cands])}
