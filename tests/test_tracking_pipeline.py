"""Tracks through the real pipeline: `streamparse run` tracks writer-side, meets an IDF1 floor on a
synthetic tracking video with the shipped weights, and a run killed with SIGKILL and resumed assigns
exactly the ids of an uninterrupted run."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import zarr
from faults import run_and_sigkill

pytestmark = pytest.mark.ray

ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
V2 = ("part", "instance", "inst_offset", "inst_id", "inst_score", "inst_track", "inst_embedding", "inst_part_area",
      "inst_part_rgb", "inst_origin", "cand_offset", "cand_score", "cand_bbox", "cand_instance", "cand_part")


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "streamparse", "run", *args], capture_output=True, text=True, env=ENV,
                          timeout=timeout)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    from streamparse.data.synth import generate_video

    d = tmp_path_factory.mktemp("trackvid")
    generate_video(d / "walk.mp4", d / "gt", 60, seed=(77, 1), size=(256, 384), min_people=3, max_people=4,
                   scenario="tracking")
    return d


def test_run_tracks_meet_a_floor_and_resume_gives_the_same_ids(video, tmp_path):
    pytest.importorskip("trackeval")
    from streamparse.evaluation.tracks import evaluate_store

    common = [str(video / "walk.mp4"), "--no-progress", "--batch-size", "4", "--set", "pipeline.chunk_frames=8"]
    ref = tmp_path / "ref.zarr"
    r = run_cli(*common, "--out", str(ref))
    assert r.returncode == 0, r.stderr
    g = zarr.open_group(str(ref / "walk"), mode="r")
    tracks = g["inst_track"][:]
    assert tracks.max() >= 2 and set(np.unique(tracks[tracks > 0])) == set(range(1, tracks.max() + 1))
    assert zarr.open_group(str(ref), mode="r").attrs["tracker"]["name"].endswith("Tracker")
    res = evaluate_store(video / "gt", ref)
    assert res["overall"]["IDF1"] >= 0.5, res["overall"]  # a floor with the synthetic weights at 256 px
    # SIGKILL mid-run, then --resume: the same ids as the uninterrupted run (tracker state in the marker)
    out = tmp_path / "killed.zarr"
    killed = run_and_sigkill([*common, "--out", str(out)], out / "walk", 1, ENV)  # after the first commit
    assert killed is not None and killed < 60, "the run was not killed mid-way"
    r = run_cli(*common, "--out", str(out), "--resume")
    assert r.returncode == 0, r.stderr
    a = zarr.open_group(str(out / "walk"), mode="r")
    for name in V2:
        np.testing.assert_array_equal(a[name][:], g[name][:], err_msg=name)


def test_resume_with_other_track_settings_is_refused(video, tmp_path):
    out = tmp_path / "o.zarr"
    common = [str(video / "walk.mp4"), "--no-progress", "--max-frames", "8", "--checkpoint", "none",
              "--set", "model.name=uniparser_tiny", "--set", "model.input_size=[64,64]"]
    assert run_cli(*common, "--out", str(out)).returncode == 0
    r = run_cli(*common, "--out", str(out), "--resume", "--set", "track.w_col=1.5")
    assert r.returncode == 2 and "track.*" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
