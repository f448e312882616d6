"""`streamparse bench archive`, run tiny (2 videos x 6 frames, the tiny model): it completes, and its
JSON figures are there and sane (the full-size run is the lead's, on a quiet machine)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from archive_helpers import ENV, TINY, set_args

pytestmark = [pytest.mark.ray, pytest.mark.slow]  # ~60 s: three processes (model-only, run per video, archive)


def test_bench_archive_tiny(tmp_path):
    js = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, "-m", "streamparse", "bench", "archive", "--videos", "2", "--frames", "6", "--size", "64x64",
                        "--checkpoint", "none", "--no-progress", "--json", str(js), *set_args(TINY)],
                       capture_output=True, text=True, env=ENV, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(js.read_text())
    assert res["generator"].startswith("streamparse")
    assert (res["videos"], res["frames_per_video"], res["frames"], res["size"], res["model"]) == (2, 6, 12, [64, 64], "uniparser_tiny")
    for k in ("model_only_fps", "run_fps", "archive_fps", "run_s", "archive_s", "archive_ray_start_s", "store_bytes_per_frame"):
        assert res[k] > 0, k
    assert res["archive_vs_run"] == pytest.approx(res["run_s"] / res["archive_s"], rel=0.01, abs=1e-4)
    assert res["archive_vs_model_only"] == pytest.approx(res["archive_fps"] / res["model_only_fps"], rel=0.01, abs=1e-4)
    assert len(res["first_write_s"]) == 2 and all(0 < x < res["archive_s"] for x in res["first_write_s"])
    assert 0 < res["first_write_median_s"] < res["archive_s"]
    assert res["rss_at_video"] == 2 and res["rss_mb_at_video_k"] > 100 and res["rss_mb_at_end"] > 100  # a driver + Ray, in MiB
    assert abs(res["rss_growth_pct"]) < 100
    assert 0 < res["first_write_after_decode_median_s"] <= res["first_write_median_s"]  # (per video: decoded, then written)
    assert 0 < res["video_first_decoded_s_median"] < res["video_wall_s_median"]
    assert set(res["met"]) == set(res["targets"]) == {"archive_vs_run", "archive_vs_model_only", "first_write_median_s",
                                                      "first_write_after_decode_median_s", "rss_growth_pct"}
    assert all(isinstance(v, bool) for v in res["met"].values())
    assert "(c)/(b)" in r.stdout and "(c)/(a)" in r.stdout and "first written frame" in r.stdout and "after its first decoded frame" in r.stdout
