"""The video pipeline end to end: real PyAV decoding, a real Ray runtime, real zarr stores."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import zarr

from streamparse.config import load_config
from streamparse.engine.factory import build_predictor
from streamparse.sources import FileSource
from faults import run_and_sigkill
from videos import make_video

pytestmark = pytest.mark.ray

# a random-init tiny model with thresholds low enough that every frame has people and parts
MODEL = ["model.name=uniparser_tiny", "model.input_size=[64,64]", "model.center_thresh=0.0", "model.max_instances=4",
         "model.mask_thresh=0.2", "model.merge_cos=1.01"]
ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
       "OMP_NUM_THREADS": "1"}


def cfg_with(*extra):
    return load_config(overrides=MODEL + list(extra))


def reference(cfg, video, batch_size):
    """What the batched model API returns for the same decoded frames, batch by batch, with the
    inference actors' thread count: with another count the conv reductions round differently
    (~1e-7), which can flip a threshold decision (a pixel at theta_mask, a category at
    cate_score_thresh) of this random-init model."""
    import torch

    pc = cfg.pipeline
    threads = pc.torch_threads or max(1, (os.cpu_count() or 2) // pc.workers)
    before = torch.get_num_threads()
    try:
        pred = build_predictor(cfg, checkpoint="none")
        torch.set_num_threads(threads)
        out = []
        with FileSource(video) as src:
            for b in src.batches(batch_size):
                out += pred.predict(b.frames)
    finally:
        torch.set_num_threads(before)
    return out


def assert_store_equals(group, ref):
    n = len(ref)
    assert group["frame_index"][:].tolist() == list(range(n))  # every frame exactly once, in order
    part, inst = group["part"][:], group["instance"][:]
    assert part.shape[0] == n
    off, score = group["inst_offset"][:], group["inst_score"][:]
    for t, r in enumerate(ref):
        np.testing.assert_array_equal(part[t], r.part, err_msg=f"part of frame {t}")
        np.testing.assert_array_equal(inst[t], r.instance, err_msg=f"instance of frame {t}")
        # scores to float32 precision: a different intra-op thread count may reorder a reduction (~1e-8)
        np.testing.assert_allclose(score[off[t] : off[t] + r.num_instances], r.scores, rtol=1e-5, atol=1e-7)
    assert any(r.num_instances for r in ref)


@pytest.mark.parametrize("batch_size,workers", [(1, 1), (4, 2)])
def test_store_equals_batched_model_api(ray_runtime, tmp_path, batch_size, workers):
    from streamparse.pipelines.video import run

    video = make_video(tmp_path / "clip.mp4", n=14, h=48, w=64)
    cfg = cfg_with(f"pipeline.batch_size={batch_size}", f"pipeline.workers={workers}", "pipeline.chunk_frames=4")
    summary = run(cfg, [str(video)], tmp_path / "out.zarr", checkpoint="none", progress=False)
    assert summary["sources"]["clip"]["frames_written"] == 14 and not summary["interrupted"]
    g = zarr.open_group(str(tmp_path / "out.zarr" / "clip"), mode="r")
    assert g["part"].shape == (14, 48, 64) and g["instance"].dtype == np.uint16  # source resolution
    assert_store_equals(g, reference(cfg, video, batch_size))
    st = dict(g.attrs)["status"]
    assert st["complete"] and st["state"] == "complete" and st["errors"] == []
    root = dict(zarr.open_group(str(tmp_path / "out.zarr"), mode="r").attrs)
    assert root["model_name"] == "uniparser_tiny" and len(root["class_names"]) == 20
    assert root["config"]["pipeline"]["batch_size"] == batch_size


def test_every_real_video_runs_through(ray_runtime, tmp_path, real_data):
    from streamparse.pipelines.video import run

    videos = sorted(str(p) for p in (real_data / "videos").iterdir())
    cfg = cfg_with("pipeline.batch_size=2", "pipeline.max_frames=3", "pipeline.chunk_frames=2")
    summary = run(cfg, videos, tmp_path / "real.zarr", checkpoint="none", progress=False)
    root = zarr.open_group(str(tmp_path / "real.zarr"), mode="r")
    assert len(summary["sources"]) == len(videos)
    for sid, s in summary["sources"].items():
        g = root[sid]
        info = dict(g.attrs)["source"]
        assert g["part"].shape[1:] == (info["height"], info["width"])
        assert s["frames_written"] == g["part"].shape[0] == min(3, info["frames_hint"] or 3), sid
        assert s["errors"] == []


def test_killed_inference_actor_loses_and_duplicates_nothing(ray_runtime, tmp_path):
    from streamparse.pipelines.video import run

    video = make_video(tmp_path / "long.mp4", n=48, h=96, w=128)
    cfg = cfg_with("pipeline.batch_size=2", "pipeline.workers=2", "pipeline.chunk_frames=4", "model.input_size=[256,256]")
    killed = {}
    out = tmp_path / "k.zarr"

    def hook(workers):
        def killer():
            pid = ray_runtime.get(workers[0].pid.remote())
            deadline = time.time() + 60
            while time.time() < deadline:
                try:
                    n = dict(zarr.open_group(str(out / "long"), mode="r").attrs)["status"]["frames_written"]
                except Exception:  # noqa: BLE001 - not created yet
                    n = 0
                if n >= 1:  # after the first commit (the first batch, written at once)
                    os.kill(pid, signal.SIGKILL)
                    killed["at"] = n
                    return
                time.sleep(0.05)

        threading.Thread(target=killer, daemon=True).start()

    summary = run(cfg, [str(video)], out, checkpoint="none", progress=False, on_actors=hook)
    assert 1 <= killed.get("at", -1) < 48, "the actor was not killed mid-run"
    assert summary["sources"]["long"]["frames_written"] == 48
    g = zarr.open_group(str(out / "long"), mode="r")
    assert_store_equals(g, reference(cfg, video, 2))


def test_truncated_file_keeps_frames_and_records_error(ray_runtime, tmp_path):
    from streamparse.pipelines.video import run

    video = make_video(tmp_path / "v.avi", n=40, h=96, w=128, codec="mpeg4")
    cut = tmp_path / "cut.avi"
    cut.write_bytes(video.read_bytes()[: int(video.stat().st_size * 0.6)])
    summary = run(cfg_with("pipeline.batch_size=4", "pipeline.chunk_frames=4"), [str(cut)], tmp_path / "t.zarr",
                  checkpoint="none", progress=False)
    s = summary["sources"]["cut"]
    assert 5 < s["frames_written"] < 40 and s["errors"]
    st = dict(zarr.open_group(str(tmp_path / "t.zarr" / "cut"), mode="r").attrs)["status"]
    assert st["state"] == "error" and not st["complete"] and st["frames_written"] == s["frames_written"]


# ----------------------------------------------------------------------------- the CLI


def cli(*args, timeout=180, **kw):
    return subprocess.run([sys.executable, "-m", "streamparse", *args], capture_output=True, text=True, env=ENV,
                          timeout=timeout, **kw)


def test_cli_bad_input_is_one_clear_line(tmp_path):
    video = make_video(tmp_path / "ok.mp4", n=4)
    txt = tmp_path / "notes.mp4"
    txt.write_text("not a video")
    existing = tmp_path / "exists.zarr"
    existing.mkdir()
    from streamparse.checkpoint import save_checkpoint
    from streamparse.models import build_model

    wrong = save_checkpoint(tmp_path / "wrong.pt", build_model("uniparser_tiny", num_classes=59), model_name="uniparser_tiny",
                            model_kwargs={"num_classes": 59}, class_names=[f"c{i}" for i in range(59)])
    cases = [
        ((str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "a.zarr")), "file not found"),
        ((str(txt), "--out", str(tmp_path / "b.zarr")), "not a video"),
        (("gopher://host/x", "--out", str(tmp_path / "c.zarr")), "unknown URI scheme"),
        ((str(video), "--out", str(existing)), "--resume"),
        ((str(video), "--out", str(tmp_path / "d.zarr"), "--checkpoint", str(wrong), "--set", "model.name=uniparser_tiny"), "classes"),
        ((str(video), "--out", str(tmp_path / "e.zarr"), "--set", "pipeline.bogus=1"), "unknown config key"),
    ]
    for args, msg in cases:
        r = cli("run", *args)
        assert r.returncode == 2, (args, r.stderr)
        lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
        assert len(lines) == 1 and msg in lines[0], (args, r.stderr)
        assert "Traceback" not in r.stderr
    assert not (tmp_path / "a.zarr").exists() and list(existing.iterdir()) == []  # nothing written, nothing lost


def test_cli_sigkill_then_resume_equals_uninterrupted_run(tmp_path):
    video = make_video(tmp_path / "clip.mp4", n=64, h=96, w=128)
    common = [str(video), "--no-progress", "--set", "pipeline.chunk_frames=8", "--batch-size", "4", "--checkpoint", "none"]
    for o in MODEL + ["model.input_size=[256,256]"]:
        common += ["--set", o]
    out = tmp_path / "run.zarr"
    killed_at = run_and_sigkill([*common, "--out", str(out)], out / "clip", 1, ENV, timeout=150)  # after the first commit
    assert killed_at is not None and killed_at < 64, "the run was not killed mid-way"
    r = cli("run", *common, "--out", str(out), timeout=300)
    assert r.returncode == 2 and "--resume" in r.stderr  # refuses to clobber the partial store
    r = cli("run", *common, "--out", str(out), "--resume", timeout=300)
    assert r.returncode == 0, r.stderr
    ref = tmp_path / "ref.zarr"
    r = cli("run", *common, "--out", str(ref), timeout=300)
    assert r.returncode == 0, r.stderr
    a, b = zarr.open_group(str(out / "clip"), mode="r"), zarr.open_group(str(ref / "clip"), mode="r")
    assert a["frame_index"][:].tolist() == list(range(64))
    for name in ("part", "instance", "pts", "time", "inst_offset", "inst_id", "inst_score", "inst_bbox", "inst_area",
                 "inst_track", "inst_embedding", "inst_part_area", "inst_part_rgb"):  # schema v2: tracks resume exactly
        np.testing.assert_array_equal(a[name][:], b[name][:], err_msg=name)
