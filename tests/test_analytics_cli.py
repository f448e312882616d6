"""inspect, OME-Zarr image-label metadata, and the output-safety table of the analytics commands
(render, report, export-labels): each refuses, in one line with exit 2, every path it did not create."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import zarr

from faults import snapshot
from streamparse.categories import CIHP
from streamparse.store.ome import ome_image_label
from streamparse.store.synthetic import synthetic_people, write_store, write_v1_store, write_video
from test_outputs import FOREIGN, make_kind
from videos import make_video

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "streamparse", *args], capture_output=True, text=True, env=ENV, timeout=timeout)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    src = synthetic_people(10, (48, 64), 3, seed=10)
    write_video(src, d / "cam.mp4")
    write_store(d / "v2.zarr", {"cam": src}, chunk_frames=4, uncommitted=2)
    write_v1_store(d / "v1.zarr", {"cam": src}, chunk_frames=4)
    return d


def test_inspect_text_and_json(case):
    r = cli("inspect", str(case / "v2.zarr"))
    assert r.returncode == 0, r.stderr
    assert "schema v2" in r.stdout and "8 frames" in r.stdout and "2 frames past the commit marker" in r.stdout
    assert "tracks 4" in r.stdout and "people/frame min/median/max 3/3/3" in r.stdout
    s = json.loads(cli("inspect", str(case / "v1.zarr"), "--json").stdout)
    cam = s["sources"]["cam"]
    assert s["schema_version"] == 1 and cam["frames"] == 10 and cam["tracks"] is None and cam["complete"]
    assert cam["people_per_frame"] == {"min": 3, "median": 3.0, "max": 3} and cam["duration_s"] == pytest.approx(1.0)
    assert "n/a (schema v1)" in cli("inspect", str(case / "v1.zarr")).stdout
    r = cli("inspect", str(case / "cam.mp4"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "not a zarr store" in r.stderr
    foreign = case / "foreign.zarr"
    zarr.create_group(str(foreign), zarr_format=3)
    r = cli("inspect", str(foreign))
    assert r.returncode == 2 and "did not write" in r.stderr


def test_ome_image_label_meets_ngff_05():
    from ome_zarr_models.v05.image_label import Label

    meta = ome_image_label(CIHP.names, CIHP.palette)
    assert meta["version"] == "0.5"
    label = Label.model_validate(meta["image-label"])  # the OME-Zarr models' own validation
    assert [c.label_value for c in label.colors] == list(range(20))
    il = meta["image-label"]
    assert il["colors"][0]["rgba"] == [0, 0, 0, 0] and il["colors"][2]["rgba"] == [255, 0, 0, 255]
    assert il["properties"][13] == {"label-value": 13, "name": "Face", "class": "Face"}
    assert json.loads(json.dumps(meta)) == meta
    fixed = ome_image_label(["bg", "a", "b"])
    Label.model_validate(fixed["image-label"])
    with pytest.raises(ValueError, match="palette"):
        ome_image_label(["bg", "a"], np.zeros((3, 3)))


def test_store_part_array_carries_ome_metadata(case):
    g = zarr.open_group(str(case / "v2.zarr" / "cam"), mode="r")
    assert g["part"].attrs["ome"] == ome_image_label(CIHP.names, CIHP.palette)
    for name, arr in g.arrays():
        assert arr.metadata.dimension_names is not None, name  # every array: xarray-readable


# ------------------------------------------------------------------ output safety, table-driven
def commands(case, out):
    store, video = str(case / "v2.zarr"), str(case / "cam.mp4")
    return {
        "render": (["render", store, "--video", video, "--out", str(out), "--no-progress"], "out.mp4"),
        "render --overwrite": (["render", store, "--video", video, "--out", str(out), "--no-progress", "--overwrite"], "out.mp4"),
        "report": (["report", store, "--video", video, "--out", str(out)], "out.html"),
        "report --overwrite": (["report", store, "--video", video, "--out", str(out), "--overwrite"], "out.html"),
        "export-labels coco": (["export-labels", store, "--format", "coco", "--out", str(out)], "out"),
        "export-labels cihp --overwrite": (["export-labels", store, "--format", "cihp", "--video", video, "--out", str(out),
                                            "--overwrite"], "out"),
    }


FILE_KINDS = ["dir-with-files", "regular-file", "symlink-to-dir", "foreign-video", "foreign-html"]


def make_kind2(kind, path, tmp):
    if kind == "foreign-video":  # a real video without streamparse's comment (bytes of an .mp4, whatever the name)
        path.write_bytes(make_video(tmp / "other_program.mp4", n=2).read_bytes())
        (tmp / "other_program.mp4").unlink()
    elif kind == "foreign-html":
        path.write_text("<html><head><title>my page</title></head><body>mine</body></html>")
    else:
        make_kind(kind, path, tmp)


CASES = [(c, k) for c in ("render", "render --overwrite", "report", "report --overwrite") for k in FILE_KINDS] + \
        [(c, k) for c in ("export-labels coco", "export-labels cihp --overwrite") for k in FOREIGN]


@pytest.mark.parametrize("cmd,kind", CASES)
def test_writing_command_refuses_what_it_did_not_create(case, tmp_path, cmd, kind):
    name = commands(case, tmp_path / "x")[cmd][1]
    out = tmp_path / name
    make_kind2(kind, out, tmp_path)
    before = {p: snapshot(p) for p in tmp_path.iterdir()}
    argv, _ = commands(case, out)[cmd]
    r = cli(*argv)
    assert r.returncode == 2, (cmd, kind, r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and str(out) in lines[0] and "Traceback" not in r.stderr, r.stderr
    assert {p: snapshot(p) for p in tmp_path.iterdir()} == before  # nothing touched, nothing added


def test_bench_analytics_smoke(tmp_path):
    out = tmp_path / "bench.json"
    r = cli("bench", "analytics", "--frames", "200", "--render-frames", "8", "--reps", "1", "--json", str(out), timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert res["generator"].startswith("streamparse") and res["render_fps"] > 0 and res["instances_s"] > 0
    assert "target < 1000 ms" in r.stdout
