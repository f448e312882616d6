"""Synthetic data generator: determinism, statistics, layouts, videos and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from streamparse.categories import CIHP
from streamparse.data import CIHPDataset, MHPv2Dataset, generate_dataset, generate_video, render_sample

READERS = {"cihp": CIHPDataset, "mhpv2": MHPv2Dataset}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("fmt", ["cihp", "mhpv2"])
def test_same_seed_identical_files_other_seed_differs(tmp_path, fmt):
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        generate_dataset(tmp_path / name, fmt, 3, seed=seed, size=(40, 56))
    a, b, c = (_files(tmp_path / n) for n in "abc")
    assert a == b and len(a) >= 3 * (4 if fmt == "cihp" else 2)
    labels = [k for k in a if k.endswith(".png")]
    assert any(a[k] != c.get(k) for k in labels)


def test_statistics_over_32_images(tmp_path):
    generate_dataset(tmp_path, "cihp", 32, seed=0, size=(96, 96), split="val")
    ds = CIHPDataset(tmp_path, "val")
    counts, present, heights = [], set(), []
    for i in range(len(ds)):
        _, persons = ds.load_gt(i)
        counts.append(len(persons))
        for p in persons:
            assert p.any()
            present |= set(np.unique(p).tolist())
            rows = np.flatnonzero(p.any(axis=1))
            heights.append((rows[-1] - rows[0] + 1) / 96)
    assert set(range(1, 9)) <= set(counts) and max(counts) <= 8
    for left, right in CIHP.flip_pairs:
        assert left in present and right in present
    assert {2, 5, 13} <= present  # hair, upper clothes, face
    assert min(heights) < 0.3 and max(heights) > 0.7


def test_occlusion_and_nonempty_persons():
    occluded = 0
    for i in range(30):
        s = render_sample(np.random.default_rng(i), (96, 96), "mhpv2", num_people=1 + i % 8)
        assert all(p.any() for p in s.persons) and len(s.persons) <= 1 + i % 8
        assert all(v == np.count_nonzero(p) for v, p in zip(s.visible_areas, s.persons))
        occluded += sum(f > v for f, v in zip(s.full_areas, s.visible_areas))
        owner = np.stack([p > 0 for p in s.persons]).sum(0) if s.persons else np.zeros(1)
        assert owner.max() <= 1  # each pixel belongs to at most one person
    assert occluded >= 10


def test_cihp_instance_ids_and_sidecar(tmp_path):
    generate_dataset(tmp_path, "cihp", 2, seed=1, size=(64, 64), min_people=3, max_people=4)
    for image_id in (tmp_path / "train_id.txt").read_text().split():
        cat = np.asarray(Image.open(tmp_path / "Category_ids" / f"{image_id}.png"))
        hum = np.asarray(Image.open(tmp_path / "Human_ids" / f"{image_id}.png"))
        inst = np.asarray(Image.open(tmp_path / "Instance_ids" / f"{image_id}.png"))
        assert np.array_equal(inst, np.where(hum > 0, (hum.astype(int) - 1) * 20 + cat, 0))
        rows = [tuple(map(int, line.split())) for line in (tmp_path / "Instance_ids" / f"{image_id}.txt").read_text().splitlines()]
        assert sorted(v for v, _, _ in rows) == sorted(set(np.unique(inst).tolist()) - {0})
        assert all(v == (h - 1) * 20 + c and 1 <= c <= 19 for v, c, h in rows)


def test_mhpv2_annotation_files(tmp_path):
    generate_dataset(tmp_path, "mhpv2", 2, seed=1, size=(64, 64), min_people=2, max_people=3)
    files = sorted((tmp_path / "parsing_annos").glob("train_000000_*.png"))
    assert files and all(f.name.endswith(f"_{len(files):02d}_{k:02d}.png") for k, f in enumerate(files, 1))
    arr = np.asarray(Image.open(files[0]))
    assert arr.shape == (64, 64, 3) and 0 < arr[..., 0].max() < 59


@pytest.mark.parametrize("fmt", ["cihp", "mhpv2"])
def test_video_decodes_and_has_per_frame_gt(tmp_path, fmt):
    av = pytest.importorskip("av")
    info = generate_video(tmp_path / "clip.mp4", tmp_path / "gt", 12, seed=5, size=(48, 64), fps=10, format=fmt)
    with av.open(str(tmp_path / "clip.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(frames) == 12 and frames[0].shape == (48, 64, 3)
    ds = READERS[fmt](tmp_path / "gt", "clip")
    assert ds.ids == [f"clip_{t:06d}" for t in range(12)]
    saved = json.loads((tmp_path / "gt" / "clip.json").read_text())
    assert saved == json.loads(json.dumps(info)) and len(saved["num_people"]) == 12
    assert [len(ds.load_gt(t)[1]) for t in range(12)] == saved["num_people"]
    assert max(saved["num_people"]) >= 1
    # smooth motion: consecutive frames are close, the clip is not static
    diffs = [np.abs(frames[t + 1].astype(int) - frames[t]).mean() for t in range(11)]
    assert max(diffs) < 40 and np.abs(frames[-1].astype(int) - frames[0]).mean() > 0.5


def test_bad_arguments():
    with pytest.raises(ValueError, match="max_people"):
        generate_dataset("unused", "cihp", 1, seed=0, max_people=13)
    with pytest.raises(ValueError, match="format"):
        render_sample(np.random.default_rng(0), (32, 32), "lip")
    with pytest.raises(ValueError, match="even"):
        generate_video("unused.mp4", "unused", 2, seed=0, size=(33, 32))


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "streamparse.cli", "synth", *args], capture_output=True, text=True, env=env, timeout=300)


def test_cli_synth(tmp_path):
    res = _cli(str(tmp_path), "--format", "mhpv2", "--num-images", "3", "--split", "val", "--seed", "2",
               "--size", "64x48", "--min-people", "2", "--max-people", "3", "--videos", "1", "--video-frames", "4",
               "--no-progress")
    assert res.returncode == 0, res.stderr
    ds = MHPv2Dataset(tmp_path, "val")
    assert len(ds) == 3 and ds[0]["image"].shape == (48, 64, 3)
    assert (tmp_path / "videos" / "video_000.mp4").is_file()
    assert len(MHPv2Dataset(tmp_path / "videos_gt", "video_000")) == 4


@pytest.mark.parametrize("args,message", [
    (["--size", "63x48", "--videos", "1", "--num-images", "0"], "video size must be even"),
    (["--max-people", "20", "--num-images", "1"], "max_people"),
])
def test_cli_synth_errors(tmp_path, capsys, args, message):
    from streamparse.cli import main

    assert main(["synth", str(tmp_path / "x"), "--no-progress", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("streamparse synth: error:") and message in err


def test_tracking_scenario_has_persistent_identities(tmp_path):
    """--scenario tracking: same seed -> same files; 3-5 identities, a re-entry with the same id, a pillar
    occluder; the default scenario's GT json keeps its keys."""
    pytest.importorskip("av")
    a = generate_video(tmp_path / "a" / "v.mp4", tmp_path / "a" / "gt", 120, seed=(0, 0), size=(48, 72), min_people=3,
                       max_people=5, scenario="tracking")
    b = generate_video(tmp_path / "b" / "v.mp4", tmp_path / "b" / "gt", 120, seed=(0, 0), size=(48, 72), min_people=3,
                       max_people=5, scenario="tracking")
    # GT byte-identical (the mp4 bytes are not: multi-threaded x264 varies from run to run, in every scenario)
    assert _files(tmp_path / "a" / "gt") == _files(tmp_path / "b" / "gt")
    assert a["scenario"] == "tracking" and 3 <= a["identities"] <= 5
    seen, reentered = {}, set()
    for t, ids in enumerate(a["track_ids"]):
        assert len(set(ids)) == len(ids) and all(1 <= i <= a["identities"] for i in ids)
        for i in ids:
            if i in seen and t - seen[i] > 5:
                reentered.add(i)
            seen[i] = t
    assert reentered  # someone left and came back with the same id
    default = generate_video(tmp_path / "c" / "v.mp4", tmp_path / "c" / "gt", 4, seed=(0, 0), size=(48, 72))
    assert set(default) == {"video", "num_frames", "fps", "size", "format", "num_people", "track_ids"}
    with pytest.raises(ValueError, match="scenario"):
        generate_video(tmp_path / "d.mp4", tmp_path / "d", 2, seed=0, size=(48, 72), scenario="crowd")


def test_cli_synth_tracking_scenario(tmp_path):
    res = _cli(str(tmp_path), "--num-images", "0", "--videos", "1", "--video-frames", "6", "--size", "72x48",
               "--scenario", "tracking", "--min-people", "3", "--max-people", "3", "--no-progress")
    assert res.returncode == 0, res.stderr
    info = json.loads((tmp_path / "videos_gt" / "video_000.json").read_text())
    assert info["scenario"] == "tracking" and info["identities"] == 3
