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
PER_INSTANCE = {**V1_INSTANCE, **V2_INSTANCE}  # (inst, ...)
V2_ARRAYS: tuple[str, ...] = tuple(V2_INSTANCE)
# dimension names of the per-instance arrays (xarray reads them); the part-class axis is not "part",
# which is the name of the label-map variable
INST_DIMS = {"inst_bbox": ("inst", "corner"), "inst_embedding": ("inst", "emb"), "inst_part_area": ("inst", "part_class"),
             "inst_part_rgb": ("inst", "part_class", "rgb")}


def inst_dims(name: str) -> tuple[str, ...]:
    return INST_DIMS.get(name, ("inst",))


def instance_arrays(version: int) -> tuple[str, ...]:
    """The per-instance arrays a store of ``version`` holds."""
    return tuple(V1_INSTANCE) + (V2_ARRAYS if version >= 2 else ())
