"""`streamparse bench model` with --device/--amp (the GPU check's model bench, run here on the CPU) and
the archive bench's start-up figures."""

import json
import subprocess
import sys

import pytest
import torch

from streamparse.bench.archive import _startup, after_decode_median
from streamparse.bench.model import PAPER_IMG_PER_S, run_model_bench


def test_model_bench_with_bf16_autocast_reports_images_per_second_against_the_paper():
    res = run_model_bench(variants=["uniparser_r18_fpn_light"], sizes=[(64, 96)], reps=1, amp="bf16", maskrcnn=False,
                          progress=False)
    assert (res["device"], res["amp"], res["maskrcnn"]) == ("cpu", "bf16", [])
    (row,) = res["rows"]
    assert row["amp"] == "bf16" and row["input"] == [64, 96]
    assert row["img_per_s@3"] == pytest.approx(1000.0 / row["total_ms@3"])
    assert row["vs_paper@3"] == pytest.approx(row["img_per_s@3"] / PAPER_IMG_PER_S)
    assert row["vs_maskrcnn@3"] is None


def test_bad_amp_and_a_missing_gpu_are_refused():
    with pytest.raises(ValueError, match="amp"):
        run_model_bench(variants=["uniparser_r18_fpn_light"], sizes=[(64, 96)], reps=1, amp="fp8", progress=False)
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: nothing to refuse")
    r = subprocess.run([sys.executable, "-m", "streamparse", "bench", "model", "--device", "cuda",
                        "--variants", "uniparser_r18_fpn_light", "--sizes", "64x96"], capture_output=True, text=True)
    assert r.returncode == 2
    assert "no CUDA device" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_archive_startup_is_spawn_to_the_first_written_frame_and_the_rest_is_steady():
    rep = {"_spawned": 100.0, "dispatch_started": 106.0,
           "videos": [{"queued_s": 0.0, "first_write_s": 2.0}, {"queued_s": 0.5, "first_write_s": 1.0},
                      {"queued_s": 3.0, "first_write_s": None}]}
    res = {"frames": 404, "batch_size": 4}
    _startup(res, rep, arc_s=48.0, fps_a=20.0)
    assert res["archive_startup_s"] == pytest.approx(7.5)  # 106 + 0.5 + 1.0 - 100
    assert res["archive_steady_fps"] == pytest.approx(400 / 40.5, abs=0.01)
    assert res["archive_steady_vs_model_only"] == pytest.approx(400 / 40.5 / 20.0, abs=1e-3)
    json.dumps(res)


def test_first_write_after_decode_is_per_video_and_skips_the_first_dispatched():
    rows = [{"queued_s": 0.0, "first_decoded_s": 1.0, "first_write_s": 3.0},  # (the first dispatched: the pool's warm-up)
            {"queued_s": 0.5, "first_decoded_s": 0.3, "first_write_s": 0.7},
            {"queued_s": 1.0, "first_decoded_s": 0.2, "first_write_s": 0.8},
            {"queued_s": 2.0, "first_decoded_s": None, "first_write_s": 0.5},  # (never decoded: not counted)
            {"queued_s": 3.0, "first_decoded_s": 0.4, "first_write_s": 0.6}]
    assert after_decode_median(rows) == pytest.approx(0.4)  # median of 0.4, 0.6, 0.2
    assert after_decode_median(rows[:1]) == pytest.approx(2.0)  # one video: its own
    assert after_decode_median([]) is None
