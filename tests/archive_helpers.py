"""Helpers of the archive tests: tiny model settings, store comparison, the worker context."""

from __future__ import annotations

import os

import numpy as np
import zarr

# a random-init tiny model with thresholds low enough that every frame has people and parts; one torch
# thread everywhere (the inference actors too), so stores compare equal bit for bit
TINY = ["model.name=uniparser_tiny", "model.input_size=[64,64]", "model.center_thresh=0.0", "model.max_instances=4",
        "model.mask_thresh=0.2", "model.merge_cos=1.01", "pipeline.torch_threads=1", "pipeline.chunk_frames=4",
        "pipeline.batch_size=4"]
ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
       "OMP_NUM_THREADS": "1"}
ARRAYS = ("part", "instance", "frame_index", "pts", "time", "inst_offset", "inst_id", "inst_score", "inst_bbox", "inst_area",
          "inst_track", "inst_part_area", "inst_part_rgb", "inst_embedding")


def set_args(overrides) -> list[str]:
    out = []
    for o in overrides:
        out += ["--set", o]
    return out


def committed(group) -> tuple[int, int]:
    st = dict(group.attrs)["status"]
    return int(st["frames_written"]), int(st["instances_written"])


def assert_groups_equal(a, b, *, what: str = "") -> None:
    """Two source groups hold the same committed frames and instances (every array, exactly)."""
    ta, na = committed(a)
    tb, nb = committed(b)
    assert (ta, na) == (tb, nb), f"{what}: committed {(ta, na)} != {(tb, nb)}"
    assert a["frame_index"][:ta].tolist() == list(range(ta)), f"{what}: frames not 0..{ta - 1} exactly once"
    for name in ARRAYS:
        n = na if name.startswith("inst_") and name != "inst_offset" else ta
        np.testing.assert_array_equal(a[name][:n], b[name][:n], err_msg=f"{what}: {name}")


def open_group(store, group: str):
    return zarr.open_group(str(store), path=group, mode="r")
