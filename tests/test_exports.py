"""export-labels round trips: export, re-read with the format's own reader, equal label maps."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from streamparse.results import open_result
from streamparse.store.synthetic import synthetic_people, write_store, write_v1_store, write_video

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "streamparse", *args], capture_output=True, text=True, env=ENV, timeout=timeout)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    d = tmp_path_factory.mktemp("exports")
    src = synthetic_people(12, (48, 64), 3, seed=6)
    write_video(src, d / "cam.mp4")
    write_store(d / "v2.zarr", {"cam": src}, chunk_frames=4)
    write_v1_store(d / "v1.zarr", {"cam": src}, chunk_frames=4)
    return d


def export(case, tmp_path, fmt, *extra, store="v2.zarr"):
    out = tmp_path / fmt
    r = cli("export-labels", str(case / store), "--format", fmt, "--out", str(out), *extra)
    assert r.returncode == 0, r.stderr
    assert (out / ".streamparse-output.json").is_file()
    return out, open_result(case / store)


@pytest.mark.parametrize("store", ["v2.zarr", "v1.zarr"])
def test_coco_round_trip_with_parts(case, tmp_path, store):
    from pycocotools.coco import COCO

    out, res = export(case, tmp_path, "coco", "--parts", "--every", "2", "--video", str(case / "cam.mp4"), store=store)
    coco = COCO(str(out / "annotations.json"))
    assert len(coco.getImgIds()) == 6
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    assert names[1] == "person" and names[100 + res.class_names.index("Face")] == "Face"
    for img in coco.loadImgs(coco.getImgIds()):
        f = res.frame("cam", img["frame_index"])
        assert f.row % 2 == 0 and (out / "images" / img["file_name"]).is_file()
        inst = np.zeros_like(f.instance)
        part = np.zeros_like(f.part)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=img["id"])):
            m = coco.annToMask(ann).astype(bool)
            if ann["category_id"] == 1:
                inst[m] = ann["instance_id"]
                assert ann["area"] == m.sum() and ("track_id" in ann) == (store == "v2.zarr")
            else:
                part[m] = ann["category_id"] - 100
        np.testing.assert_array_equal(inst, f.instance)
        np.testing.assert_array_equal(part, np.where(f.instance > 0, f.part, 0))


def test_youtube_vis_round_trip(case, tmp_path):
    from pycocotools import mask as mask_utils

    out, res = export(case, tmp_path, "youtube-vis")
    data = json.loads((out / "annotations.json").read_text())
    (video,) = data["videos"]
    assert video["length"] == 12 and len(video["file_names"]) == 12
    tracks = res.tracks("cam")
    assert sorted(a["track_id"] for a in data["annotations"]) == tracks["track"].tolist()
    for t in range(12):
        f = res.frame("cam", t)
        want = np.zeros(f.instance.shape, np.int64)
        for k, tr in enumerate(res.instances("cam").query("frame == @t")["track"], 1):
            want[f.instance == k] = int(tr)
        got = np.zeros_like(want)
        for a in data["annotations"]:
            seg = a["segmentations"][t]
            if seg is not None:
                got[mask_utils.decode({"size": seg["size"], "counts": seg["counts"].encode()}).astype(bool)] = a["track_id"]
        np.testing.assert_array_equal(got, want)


def test_mots_txt_and_png_round_trip(case, tmp_path):
    from pycocotools import mask as mask_utils

    out, res = export(case, tmp_path, "mots", "--video", str(case / "cam.mp4"))
    lines = [ln.split() for ln in (out / "cam.txt").read_text().splitlines()]
    df = res.instances("cam")
    assert len(lines) == len(df)
    assert "seqLength=12" in (out / "cam" / "seqinfo.ini").read_text()
    for t in range(12):
        f = res.frame("cam", t)
        want = np.zeros(f.instance.shape, np.int64)
        for k, tr in enumerate(df[df["frame"] == t]["track"], 1):
            want[f.instance == k] = 2000 + int(tr)
        got = np.zeros_like(want)
        for time_frame, oid, cls, h, w, rle in lines:  # TrackEval's MOTS reader: pycocotools RLE
            if int(time_frame) == t + 1:
                assert int(cls) == 2 and int(oid) // 1000 == 2
                got[mask_utils.decode({"size": [int(h), int(w)], "counts": rle.encode()}).astype(bool)] = int(oid)
        np.testing.assert_array_equal(got, want)
        png = np.asarray(Image.open(out / "cam" / "instances" / f"cam_{t:06d}.png"))
        np.testing.assert_array_equal(png.astype(np.int64), want)  # CVAT MOTS PNG: 16-bit ids
        assert (out / "cam" / "images" / f"cam_{t:06d}.jpg").is_file()


def test_cihp_round_trip_with_our_reader(case, tmp_path):
    from streamparse.data.cihp import CIHPDataset

    out, res = export(case, tmp_path, "cihp", "--video", str(case / "cam.mp4"), "--every", "3")
    ds = CIHPDataset(out, split="cam")
    assert len(ds) == 4
    for i in range(len(ds)):
        image_id, persons = ds.load_gt(i)
        f = res.frame("cam", int(image_id.rsplit("_", 1)[1]))
        want = [np.where(f.instance == k, f.part, 0) for k in range(1, int(f.instance.max()) + 1)]
        assert len(persons) == len(want)
        for p, w in zip(persons, want):
            np.testing.assert_array_equal(p, w)
        assert ds[i]["image"].shape == (48, 64, 3)


@pytest.mark.parametrize("fmt,extra,why", [("youtube-vis", [], "schema v1"), ("mots", [], "schema v1"),
                                           ("cihp", [], "--video")])
def test_export_refusals(case, tmp_path, fmt, extra, why):
    r = cli("export-labels", str(case / "v1.zarr"), "--format", fmt, "--out", str(tmp_path / "o"), *extra)
    assert r.returncode == 2 and why in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_export_overwrite_replaces_only_its_own_folder(case, tmp_path):
    out = tmp_path / "o"
    assert cli("export-labels", str(case / "v2.zarr"), "--format", "coco", "--out", str(out)).returncode == 0
    r = cli("export-labels", str(case / "v2.zarr"), "--format", "coco", "--out", str(out))
    assert r.returncode == 2 and "--overwrite" in r.stderr
    assert cli("export-labels", str(case / "v2.zarr"), "--format", "mots", "--out", str(out), "--overwrite").returncode == 0
    assert not (out / "annotations.json").exists() and (out / "cam.txt").is_file()
    (out / "mine.txt").write_text("x")
    r = cli("export-labels", str(case / "v2.zarr"), "--format", "coco", "--out", str(out), "--overwrite")
    assert r.returncode == 2 and "mine.txt" in r.stderr and (out / "mine.txt").read_text() == "x"
