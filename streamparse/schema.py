"""The store layout (README "Output"): schema version and the arrays of a source group, by axis.

A leaf module: the sink writes this layout, ``verify_store`` and the readers check and read it.
"""

from __future__ import annotations

SCHEMA_VERSION = 1
MAPS = {"part": "uint8", "instance": "uint16"}  # (time, y, x)
PER_FRAME = {"frame_index": "int64", "pts": "int64", "time": "float64", "segment": "uint16", "wallclock": "float64",
             "inst_offset": "int64"}  # (time,)
PER_INSTANCE = {"inst_id": "uint16", "inst_score": "float32", "inst_bbox": "int32", "inst_area": "int64"}  # (inst, ...)
V2_ARRAYS: tuple[str, ...] = ()  # arrays added by schema v2 (none yet)
