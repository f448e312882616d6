"""The store layout (README "Output"): schema version and the arrays of a source group, by axis.

A leaf module: the sink writes this layout, ``verify_store`` and the readers check and read it.
Schema v2 (this version) adds per-person tracks, embeddings, part areas and part colours to v1;
v1 stores stay readable (without those), but are not continued (``--resume`` refuses them).
"""

from __future__ import annotations

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
MAPS = {"part": "uint8", "instance": "uint16"}  # (time, y, x)
PER_FRAME = {"frame_index": "int64", "pts": "int64", "time": "float64", "segment": "uint16", "wallclock": "float64",
             "inst_offset": "int64"}  # (time,)
V1_INSTANCE = {"inst_id": "uint16", "inst_score": "float32", "inst_bbox": "int32", "inst_area": "int64"}
V2_INSTANCE = {"inst_track": "uint32", "inst_embedding": "float16", "inst_part_area": "int32", "inst_part_rgb": "uint8"}
# Added to schema v2 by streamparse 0.3 (issue 29), compatibly: a v2 store written before has none of
# these and reads as if every row were detected and no frame had candidates.
ORIGIN = {"inst_origin": "uint8"}  # (inst,): 0 detected, 1 recovered, 2 interpolated
ORIGINS = {"detected": 0, "recovered": 1, "interpolated": 2}
RETRACK_JOURNAL = ".streamparse-retrack.json"  # in a source group while `streamparse track` rewrites it
CAND_MAPS = {"cand_part": "uint8", "cand_instance": "uint8"}  # (time, y, x): low-score candidates (candidate k, 1..)
CAND_PER_FRAME = {"cand_offset": "int64"}  # (time,): frame t's candidates are rows cand_offset[t] .. of cand_*
CAND_TABLE = {"cand_score": "float32", "cand_bbox": "int32", "cand_embedding": "float16", "cand_part_area": "int32",
              "cand_part_rgb": "uint8"}  # (cand, ...)
PER_INSTANCE = {**V1_INSTANCE, **V2_INSTANCE, **ORIGIN}  # (inst, ...)
V2_ARRAYS: tuple[str, ...] = tuple(V2_INSTANCE)
V2_LATER: tuple[str, ...] = (*ORIGIN, *CAND_MAPS, *CAND_PER_FRAME, *CAND_TABLE)  # optional in a v2 store
# dimension names of the per-instance arrays (xarray reads them); the part-class axis is not "part",
# which is the name of the label-map variable
INST_DIMS = {"inst_bbox": ("inst", "corner"), "inst_embedding": ("inst", "emb"), "inst_part_area": ("inst", "part_class"),
             "inst_part_rgb": ("inst", "part_class", "rgb"), "cand_score": ("cand",), "cand_bbox": ("cand", "corner"),
             "cand_embedding": ("cand", "emb"), "cand_part_area": ("cand", "part_class"),
             "cand_part_rgb": ("cand", "part_class", "rgb")}


def inst_dims(name: str) -> tuple[str, ...]:
    return INST_DIMS.get(name, ("inst",))


def instance_arrays(version: int) -> tuple[str, ...]:
    """The per-instance arrays every store of ``version`` holds (not the optional ``V2_LATER``)."""
    return tuple(V1_INSTANCE) + (V2_ARRAYS if version >= 2 else ())


def rows_axis(name: str) -> str:
    """What the first axis of an array counts: 'frames', 'instances' or 'candidates'."""
    if name in PER_INSTANCE:
        return "instances"
    return "candidates" if name in CAND_TABLE else "frames"
