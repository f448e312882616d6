"""Reading one streamparse store: ``open_result(path_or_url) -> Result`` (``open_archive`` is in ``results.archive``).

A ``Result`` reads only what the writer committed: frames ``< status.frames_written`` and instance rows
``< status.instances_written`` (a crash or a running writer leaves more; it is ignored). Tables come from
the per-frame and per-instance arrays, each read once as a whole and vectorised; label maps are read
chunk-wise, only by ``frame``, ``person_mask``, ``iter_frames`` and ``dataset``.

Schema v2 stores are read fully. Schema v1 stores have no tracks, embeddings, part areas or part colours:
``instances()`` gives ``track`` = <NA> and no part-area columns, ``tracks()`` and
``part_areas(by="track")`` raise ``SchemaError`` (one line naming schema v1); per-frame or per-person part
areas of a v1 store can be computed from the label maps with ``from_maps=True`` (slow: every label map
is decoded, about 1-2 ms a 640x480 frame here).

Frames are addressed by frame index (an ``int``: the stored ``frame_index``) or by time in seconds (a
``float``: the nearest frame within half a frame interval).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterator

import numpy as np

from streamparse.labelstats import instance_stats
from streamparse.store.schema import ORIGINS

log = logging.getLogger(__name__)

__all__ = ["open_result", "Result", "Frame", "SchemaError"]


class SchemaError(ValueError):
    """What the store's schema version does not hold (one line)."""


def origin_codes(origin) -> list[int]:
    """Origin names or codes (one or a list) -> codes; ``ValueError`` naming the known ones otherwise."""
    out = []
    for o in ([origin] if isinstance(origin, (str, int, np.integer)) else list(origin)):
        code = ORIGINS.get(o) if isinstance(o, str) else (int(o) if int(o) in ORIGINS.values() else None)
        if code is None:
            raise ValueError(f"unknown origin {o!r} (known: {', '.join(ORIGINS)} or {sorted(ORIGINS.values())})")
        out.append(code)
    return out


def _is_url(p) -> bool:
    s = str(p)
    return "://" in s and not s.startswith("file://")


def _open_store(path_or_url, storage_options: dict | None):
    from zarr.storage import FsspecStore, LocalStore

    s = str(path_or_url)
    if _is_url(s):
        return FsspecStore.from_url(s, storage_options=storage_options or {}, read_only=True)
    p = Path(s[len("file://"):] if s.startswith("file://") else s)
    if not (p / "zarr.json").is_file():
        raise FileNotFoundError(f"{p}: not a zarr store (no zarr.json)")
    return LocalStore(str(p), read_only=True)


def open_result(path_or_url, *, storage_options: dict | None = None) -> "Result":
    """Open a streamparse store read-only: a local path, ``file://`` or an fsspec URL (``s3://bucket/x.zarr``,
    ``storage_options`` passed to fsspec, e.g. ``{"endpoint_url": ...}``)."""
    import zarr

    store = _open_store(path_or_url, storage_options)
    try:
        root = zarr.open_group(store, mode="r", zarr_format=3)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path_or_url}: not a zarr store") from None
    attrs = dict(root.attrs)
    if "streamparse_schema_version" not in attrs:
        raise ValueError(f"{path_or_url}: a zarr store that streamparse did not write (no streamparse_schema_version)")
    return Result(str(path_or_url), store, root, attrs)


@dataclass(frozen=True)
class Frame:
    """One committed frame: part uint8 (H,W), instance uint16 (H,W); ``row`` is its position in the store."""

    source: str
    row: int
    frame_index: int
    time: float
    segment: int
    part: np.ndarray
    instance: np.ndarray


class Result:
    """A streamparse store opened for reading (see the module docstring)."""

    def __init__(self, path: str, store, root, attrs: dict):
        self.path, self.store, self._root, self.attrs = path, store, root, attrs
        self.schema_version = int(attrs.get("streamparse_schema_version") or 0)
        self._cache: dict = {}

    def __repr__(self) -> str:
        return f"<Result {self.path} schema v{self.schema_version} sources={self.sources}>"

    # ------------------------------------------------------------------ metadata
    @cached_property
    def sources(self) -> list[str]:
        """Source groups (a group whose creation was cut short, without its arrays, is left out)."""
        return sorted(name for name, g in self._root.groups() if "part" in g and "inst_score" in g)

    @property
    def class_names(self) -> list[str]:
        return list(self.attrs.get("class_names") or [])

    @property
    def palette(self) -> np.ndarray:
        """(C,3) uint8 part colours (the store's palette, else a fixed one)."""
        pal = self.attrs.get("palette")
        if pal is not None:
            return np.asarray(pal, np.uint8)
        from streamparse.store.ome import ome_image_label

        return np.asarray([c["rgba"][:3] for c in ome_image_label(self.class_names)["image-label"]["colors"]], np.uint8)

    def group(self, source: str):
        if source not in self.sources:
            raise KeyError(f"{self.path}: no source {source!r} (sources: {', '.join(self.sources) or 'none'})")
        return self._root[source]

    def info(self, source: str) -> dict:
        """The source's attributes: uri (redacted), width, height, fps, time_base, codec, kind, ..."""
        return dict(self.group(source).attrs.get("source") or {})

    def status(self, source: str) -> dict:
        return dict(self.group(source).attrs.get("status") or {})

    def num_frames(self, source: str) -> int:
        """Committed frames."""
        return self._committed(source)[0]

    def _committed(self, source: str) -> tuple[int, int]:
        st = self.status(source)
        g = self.group(source)
        T = min(int(st.get("frames_written", 0)), g["part"].shape[0])
        N = min(int(st.get("instances_written", 0)), g["inst_score"].shape[0])
        return T, N

    def _need_v2(self, what: str) -> None:
        if self.schema_version < 2:
            raise SchemaError(f"{what} need schema v2 (tracks, per-instance part areas); {self.path} is a schema "
                              f"v{self.schema_version} store")

    # ------------------------------------------------------------------ whole arrays, committed rows only
    def _per_frame(self, source: str) -> dict:
        key = ("frame", source)
        if key not in self._cache:
            g, (T, N) = self.group(source), self._committed(source)
            d = {n: np.asarray(g[n][:T]) for n in ("frame_index", "time", "segment", "pts", "inst_offset")}
            start = d["inst_offset"].astype(np.int64)
            end = np.append(start[1:], N) if T else start
            d["count"] = (end - start).astype(np.int64)
            self._cache[key] = d
        return self._cache[key]

    def _per_instance(self, source: str, names: tuple[str, ...]) -> dict:
        g, (_, N) = self.group(source), self._committed(source)
        out = {}
        for n in names:
            key = (n, source)
            if key not in self._cache:
                self._cache[key] = np.asarray(g[n][:N]) if n in g else None
            out[n] = self._cache[key]
        return out

    def origins(self, source: str) -> np.ndarray:
        """(N,) uint8 where each committed row comes from: 0 detected, 1 recovered (the tracker's second
        stage), 2 interpolated (offline ``streamparse track``); all 0 in a store written before the column."""
        o = self._per_instance(source, ("inst_origin",))["inst_origin"]
        return o if o is not None else np.zeros(self._committed(source)[1], np.uint8)

    def origin_mask(self, source: str, origin=None) -> np.ndarray:
        """bool (N,): the committed rows whose origin is ``origin``: None (all rows), a name ("detected",
        "recovered", "interpolated"), its code, or a list of them."""
        o = self.origins(source)
        return np.ones(len(o), bool) if origin is None else np.isin(o, origin_codes(origin))

    def _row_frame(self, source: str) -> np.ndarray:
        """(N,) int64: the store row (frame position) of each committed instance row."""
        pf = self._per_frame(source)
        return np.repeat(np.arange(len(pf["count"]), dtype=np.int64), pf["count"])

    # ------------------------------------------------------------------ addressing frames
    def row(self, source: str, t) -> int:
        """The store row of frame ``t``: an int = frame index, a float = time in seconds (nearest frame)."""
        pf = self._per_frame(source)
        if isinstance(t, (bool, np.bool_)) or not isinstance(t, (int, float, np.integer, np.floating)):
            raise TypeError(f"t must be a frame index (int) or a time in seconds (float), got {t!r}")
        fi, tm = pf["frame_index"], pf["time"]
        if not len(fi):
            raise ValueError(f"{self.path}/{source}: no committed frame")
        if isinstance(t, (int, np.integer)):
            i = int(np.searchsorted(fi, t)) if np.all(np.diff(fi) >= 0) else int(np.argmax(fi == t))
            if i >= len(fi) or fi[i] != t:
                raise ValueError(f"{self.path}/{source}: frame index {t} is not a committed frame "
                                 f"(frames {int(fi[0])}..{int(fi[-1])}, {len(fi)} committed)")
            return i
        i = int(np.argmin(np.abs(tm - float(t))))
        dt = float(np.median(np.diff(tm))) if len(tm) > 1 else 0.0
        if abs(tm[i] - float(t)) > max(dt / 2, 1e-6) + 1e-9:
            raise ValueError(f"{self.path}/{source}: no frame at t={float(t):.3f}s (committed frames span "
                             f"{tm[0]:.3f}..{tm[-1]:.3f}s)")
        return i

    def frame(self, source: str, t, *, origin=None) -> Frame:
        """Label maps of one frame (reads one chunk of each map); ``origin``: only the people of these
        origins (see ``origin_mask``), the others' pixels background."""
        i = self.row(source, t)
        g, pf = self.group(source), self._per_frame(source)
        f = Frame(source, i, int(pf["frame_index"][i]), float(pf["time"][i]), int(pf["segment"][i]),
                  np.asarray(g["part"][i]), np.asarray(g["instance"][i]))
        return f if origin is None else self.only(f, origin)

    def only(self, f: Frame, origin) -> Frame:
        """``f`` with the pixels of the people whose origin is not ``origin`` set to background."""
        pf = self._per_frame(f.source)
        s, n = int(pf["inst_offset"][f.row]), int(pf["count"][f.row])
        keep = self.origin_mask(f.source, origin)[s:s + n]
        if keep.all():
            return f
        lut = np.zeros(max(int(f.instance.max(initial=0)), n) + 1, np.uint16)
        ids = self._per_instance(f.source, ("inst_id",))["inst_id"][s:s + n]
        lut[ids[keep]] = ids[keep]
        inst = lut[f.instance]
        return Frame(f.source, f.row, f.frame_index, f.time, f.segment, np.where(inst > 0, f.part, 0).astype(f.part.dtype), inst)

    def person_mask(self, source: str, t, track: int | None = None, *, instance: int | None = None) -> np.ndarray:
        """bool (H,W) mask of one person at frame ``t``: by ``track`` (schema v2) or by per-frame ``instance``
        id. A track that is not on screen at ``t`` gives an all-False mask."""
        if (track is None) == (instance is None):
            raise ValueError("give exactly one of track or instance")
        f = self.frame(source, t)
        if track is not None:
            self._need_v2("tracks")
            pf = self._per_frame(source)
            s = int(pf["inst_offset"][f.row])
            d = self._per_instance(source, ("inst_track", "inst_id"))
            hit = np.flatnonzero(d["inst_track"][s:s + int(pf["count"][f.row])] == track)
            if not len(hit):
                return np.zeros(f.instance.shape, bool)
            instance = int(d["inst_id"][s + hit[0]])
        return f.instance == instance

    def iter_frames(self, source: str, rows=None, *, origin=None) -> Iterator[Frame]:
        """Frames at the given store rows (default: all committed), in order, reading each chunk once;
        ``origin`` as in ``frame``."""
        g, pf = self.group(source), self._per_frame(source)
        T = len(pf["frame_index"])
        rows = np.arange(T) if rows is None else np.asarray(rows, np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= T):
            raise ValueError(f"rows must be within 0..{T - 1}")
        ch = g["part"].chunks[0]
        for c0 in np.unique(rows // ch) * ch:
            sel = rows[(rows >= c0) & (rows < c0 + ch)]
            c1 = min(int(c0) + ch, T)
            part, inst = np.asarray(g["part"][int(c0):c1]), np.asarray(g["instance"][int(c0):c1])
            for i in sel:
                i = int(i)
                f = Frame(source, i, int(pf["frame_index"][i]), float(pf["time"][i]), int(pf["segment"][i]),
                          part[i - int(c0)], inst[i - int(c0)])
                yield f if origin is None else self.only(f, origin)

    # ------------------------------------------------------------------ tables
    def frames_table(self, source: str):
        """pandas DataFrame, one row per committed frame: frame, time, segment, pts, people."""
        import pandas as pd

        pf = self._per_frame(source)
        return pd.DataFrame({"frame": pf["frame_index"], "time": pf["time"], "segment": pf["segment"],
                             "pts": pf["pts"], "people": pf["count"]})

    def _part_columns(self) -> list[str]:
        return [f"area_{n}" for n in self.class_names[1:]]

    def instances(self, source: str, *, from_maps: bool = False, origin=None):
        """pandas DataFrame, one row per committed person: frame, time, instance, track, origin (detected,
        recovered, interpolated: ``origins``), score, x0, y0, x1, y1, area, then one ``area_<part>`` column
        per part class. ``origin``: only rows of these origins (``origin_mask``; default all). Schema v1:
        track <NA>, part areas only with ``from_maps=True`` (slow: decodes every label map)."""
        import pandas as pd

        pf = self._per_frame(source)
        d = self._per_instance(source, ("inst_id", "inst_score", "inst_bbox", "inst_area", "inst_track", "inst_part_area"))
        rf = self._row_frame(source)
        track = d["inst_track"]
        cols = {"frame": pf["frame_index"][rf], "time": pf["time"][rf], "instance": d["inst_id"],
                "track": pd.array(np.zeros(len(rf), np.int64) if track is None else track.astype(np.int64), dtype="Int64")}
        if track is None:
            cols["track"][:] = pd.NA
        else:
            cols["track"][track == 0] = pd.NA
        bbox = d["inst_bbox"].reshape(-1, 4)
        cols["origin"] = pd.Categorical.from_codes(self.origins(source).astype(np.int8), categories=list(ORIGINS))
        cols.update({"score": d["inst_score"], "x0": bbox[:, 0], "y0": bbox[:, 1], "x1": bbox[:, 2], "y1": bbox[:, 3],
                     "area": d["inst_area"]})
        pa = d["inst_part_area"]
        if from_maps or pa is None:
            pa = self._part_area_from_maps(source) if from_maps else None
        df = pd.DataFrame(cols)
        if pa is not None:
            df = pd.concat([df, pd.DataFrame(pa[:, 1:], columns=self._part_columns())], axis=1)
        return df if origin is None else df[self.origin_mask(source, origin)].reset_index(drop=True)

    def _part_area_from_maps(self, source: str) -> np.ndarray:
        """(N,C) int32 part areas of every committed instance, from the label maps (slow)."""
        key = ("maps_part_area", source)
        if key not in self._cache:
            g, pf = self.group(source), self._per_frame(source)
            T, C = len(pf["count"]), len(self.class_names)
            log.info("%s/%s: computing part areas from %d label maps (slow)", self.path, source, T)
            ch, out = g["part"].chunks[0], []
            for c0 in range(0, T, ch):
                c1 = min(c0 + ch, T)
                st = instance_stats(np.asarray(g["part"][c0:c1]), np.asarray(g["instance"][c0:c1]), C,
                                    counts=pf["count"][c0:c1])
                out.append(st.part_area)
            self._cache[key] = np.concatenate(out) if out else np.zeros((0, C), np.int32)
        return self._cache[key]

    def tracks(self, source: str, *, origin=None):
        """pandas DataFrame, one row per track (schema v2): track, first_frame, last_frame, first_time,
        last_time, frames (seen), mean_area, mean_score, top_parts / top_colours (the three largest parts
        and their mean colours, '#rrggbb'), colour_<part> (area-weighted mean colour, None if never seen).
        ``origin``: only rows of these origins (see ``instances``; default all)."""
        from streamparse.results.tracks import tracks_table

        self._need_v2("tracks")
        return tracks_table(self, source, self.origin_mask(source, origin))

    def part_areas(self, source: str, by: str = "track", *, tracks=None, from_maps: bool = False, origin=None):
        """Part areas in pixels as an xarray DataArray (int32), no label map decoded (schema v2):

        - ``by="track"``: dims (time, track, part); 0 where the track is not on screen;
        - ``by="frame"``: dims (time, part), summed over the people of each frame.

        Coordinates: time (seconds), frame_index, track ids, part names (background excluded).
        ``tracks``: only these track ids. ``origin``: only rows of these origins (see ``instances``;
        default all). ``from_maps=True`` computes the areas from the label maps instead (the only way for
        a schema-v1 store, ``by="frame"`` only; slow)."""
        from streamparse.results.tracks import part_areas

        if by not in ("track", "frame"):
            raise ValueError(f"by must be 'track' or 'frame', got {by!r}")
        if by == "track":
            self._need_v2("part areas by track")
        elif not from_maps:
            self._need_v2("stored part areas (pass from_maps=True to decode the label maps, slow)")
        return part_areas(self, source, by, tracks, from_maps, self.origin_mask(source, origin))

    # ------------------------------------------------------------------ xarray
    def dataset(self, source: str):
        """The source as a lazy xarray Dataset (dask arrays), committed frames and rows only: dims time, y,
        x, inst, ...; coordinates time (seconds), frame_index and segment, and (schema v2) part_class, the
        class names of the per-instance part axis."""
        import xarray as xr

        T, N = self._committed(source)
        ds = xr.open_zarr(self.store, group=source, consolidated=False, zarr_format=3, mask_and_scale=False,
                          decode_times=False, chunks={})
        ds = ds.isel({k: slice(0, v) for k, v in (("time", T), ("inst", N)) if k in ds.dims})
        if "part_class" in ds.dims:
            ds = ds.assign_coords(part_class=self.class_names[:ds.sizes["part_class"]])
        ds = ds.set_coords([c for c in ("frame_index", "segment") if c in ds])
        ds.attrs.update({"class_names": self.class_names, "schema_version": self.schema_version})
        return ds
