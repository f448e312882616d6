"""The arrays of one source group (schema v2, README "Output"): creating them, writing a run of frames,
truncating to the commit marker. ``streamparse.store.sink.SourceWriter`` decides when; this says what.

Three row counters: frames (label maps, per-frame arrays), instance rows (``inst_*``) and candidate
rows (``cand_*`` table); the commit marker holds all three (``frames_written``, ``instances_written``,
``candidates_written``).
"""

from __future__ import annotations

import asyncio
import json

import numpy as np

from streamparse.store.ome import ome_image_label
from streamparse.store.schema import CAND_MAPS, CAND_PER_FRAME, CAND_TABLE, MAPS, PER_FRAME, PER_INSTANCE, inst_dims, rows_axis
from streamparse.structures import ParsingBatch

ALL_ARRAYS = (*MAPS, *CAND_MAPS, *PER_FRAME, *CAND_PER_FRAME, *PER_INSTANCE, *CAND_TABLE)


def missing_arrays(group) -> list[str]:
    """The arrays a writer needs that ``group`` lacks (a store from an earlier streamparse, or a group
    whose creation was cut short)."""
    return [n for n in ALL_ARRAYS if n not in group]


def create_source_group(root, source_id: str, info: dict, size: tuple[int, int], class_names: list[str], palette,
                        dim: int, *, chunk_frames: int, compressors):
    """A new source group with every array empty and the status of a source that committed nothing."""
    H, W = size
    g = root.create_group(source_id)
    ch = chunk_frames
    flag_values = list(range(len(class_names)))
    g.create_array("part", shape=(0, H, W), chunks=(ch, H, W), dtype="uint8", fill_value=0, compressors=compressors,
                   dimension_names=("time", "y", "x"),
                   attributes={"flag_values": flag_values, "flag_meanings": " ".join(n.replace(" ", "_") for n in class_names),
                               "class_names": list(class_names),
                               "palette": (np.asarray(palette).tolist() if palette is not None else None),
                               "long_name": "part category per pixel (0 = background)",
                               "ome": ome_image_label(class_names, palette)})
    g.create_array("instance", shape=(0, H, W), chunks=(ch, H, W), dtype="uint16", fill_value=0, compressors=compressors,
                   dimension_names=("time", "y", "x"),
                   attributes={"long_name": "person id per pixel (0 = background, 1..K)"})
    for name, dt in CAND_MAPS.items():
        g.create_array(name, shape=(0, H, W), chunks=(ch, H, W), dtype=dt, fill_value=0, compressors=compressors,
                       dimension_names=("time", "y", "x"),
                       attributes={"long_name": "low-score candidates: " + ("candidate k of the frame (1..)" if name == "cand_instance"
                                                                            else "part of the candidate per pixel")})
    for name, dt in {**PER_FRAME, **CAND_PER_FRAME}.items():
        g.create_array(name, shape=(0,), chunks=(max(1024, ch),), dtype=dt, fill_value=0, dimension_names=("time",))
    n_cls = len(class_names)
    inner = {"bbox": (4,), "embedding": (int(dim),), "part_area": (n_cls,), "part_rgb": (n_cls, 3)}
    for name, dt in {**PER_INSTANCE, **CAND_TABLE}.items():
        rest = inner.get(name.split("_", 1)[1], ())
        g.create_array(name, shape=(0, *rest), chunks=(4096, *rest), dtype=dt, fill_value=0, dimension_names=inst_dims(name))
    g.attrs["source"] = json.loads(json.dumps(info))
    g.attrs["status"] = {"state": "running", "complete": False, "frames_written": 0, "instances_written": 0,
                         "candidates_written": 0, "dropped": 0, "errors": []}
    return g


def truncate(arrays: dict, t: int, n: int, nc: int) -> None:
    """Every array cut to the commit marker (t frames, n instance rows, nc candidate rows)."""
    rows = {"frames": t, "instances": n, "candidates": nc}
    for name, a in arrays.items():
        want = rows[rows_axis(name)]
        if a.shape[0] != want:
            a.resize((want, *a.shape[1:]))


def grow_and_write(grow: list, writes: list) -> None:
    """Every array of a chunk at once: ``grow`` [(array, new length)], then ``writes`` [(array, first row,
    values)], each step in one pass of zarr's event loop (one wait instead of one per array). The first
    failure is raised once every write has ended, so the commit marker that follows is never ahead of the
    data."""
    from zarr.core.sync import sync

    async def go() -> None:
        for step in (lambda: [a.async_array.resize((n, *a.shape[1:])) for a, n in grow],
                     lambda: [a.async_array.setitem(slice(r, r + len(v)), v) for a, r, v in writes]):
            for res in await asyncio.gather(*step(), return_exceptions=True):  # (made only when the step runs)
                if isinstance(res, BaseException):
                    raise res

    sync(go())


def write_rows(arrays: dict, b: ParsingBatch, t0: int, i0: int, c0: int) -> tuple[int, int]:
    """Write batch ``b`` as frames t0.., instance rows i0.., candidate rows c0.. (``grow_and_write``). Returns
    the new (instances, candidates) counts; the caller writes the commit marker after."""
    from streamparse.candidates import CAND_FIELDS, to_maps

    a = arrays
    t1 = t0 + len(b)
    cpart, cinst = to_maps(b.cand, b.part.shape[1:])
    i1, c1 = i0 + b.num_instances, c0 + len(b.cand["cand_score"])
    grow = [(a[name], t1) for name in (*MAPS, *CAND_MAPS, *PER_FRAME, *CAND_PER_FRAME)]
    writes = [(a["part"], t0, b.part), (a["instance"], t0, b.instance), (a["cand_part"], t0, cpart),
              (a["cand_instance"], t0, cinst), (a["inst_offset"], t0, i0 + b.inst_offset[:-1]),
              (a["cand_offset"], t0, c0 + b.cand["cand_offset"][:-1])]
    writes += [(a[name], t0, getattr(b, name)) for name in ("frame_index", "pts", "time", "segment", "wallclock")]
    if i1 > i0:
        grow += [(a[name], i1) for name in PER_INSTANCE]
        writes += [(a[name], i0, getattr(b, name)) for name in PER_INSTANCE]
    if c1 > c0:
        grow += [(a[name], c1) for name in CAND_FIELDS]
        writes += [(a[name], c0, b.cand[name]) for name in CAND_FIELDS]
    grow_and_write(grow, writes)
    return i1, c1
