"""A quiet terminal: a successful `run` and `archive` print only streamparse's own lines (no Ray log line:
no `core_worker`, `(raylet)`, `(pid=...)`, Ray's logging or token notices); `-v` shows Ray's lines (the
workers' lines behind Ray's `(task pid=N)` prefix); a Ray that cannot start is one line naming where its
full log is."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from videos import make_video

pytestmark = pytest.mark.ray

TINY = ["--set", "model.name=uniparser_tiny", "--set", "model.input_size=[64,64]", "--set", "pipeline.torch_threads=1"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
OURS = re.compile(r"^(\S+: \d+ frames written|store: |archive |  \d+ frame\(s\) parsed|streamparse (run|archive): (error|interrupted))")


def cli(*args, timeout=300):
    r = subprocess.run([sys.executable, "-m", "streamparse", *map(str, args)], capture_output=True, text=True, env=ENV,
                       timeout=timeout)
    return r, [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("q") / "clip.mp4", n=12, h=48, w=64)


def test_successful_run_and_archive_print_only_our_lines(video, tmp_path):
    r, lines = cli("run", video, "--out", tmp_path / "o.zarr", "--checkpoint", "none", "--no-progress", *TINY)
    assert r.returncode == 0, r.stderr
    assert lines and all(OURS.match(ln) for ln in lines), lines
    r, lines = cli("archive", video, "--out", tmp_path / "arc", "--checkpoint", "none", "--no-progress", *TINY)
    assert r.returncode == 0, r.stderr
    assert lines and all(OURS.match(ln) for ln in lines), lines


def test_verbose_shows_rays_own_lines(video, tmp_path):
    r, lines = cli("run", video, "--out", tmp_path / "o.zarr", "--checkpoint", "none", "--no-progress", "-v", *TINY)
    assert r.returncode == 0, r.stderr
    assert any(not OURS.match(ln) and "pid=" in ln for ln in lines), lines  # Ray's worker-log prefix "(run_task pid=N)"


def test_a_ray_that_cannot_start_is_one_line_naming_its_log(video, tmp_path):
    r, lines = cli("run", video, "--out", tmp_path / "o.zarr", "--checkpoint", "none", "--no-progress", *TINY,
                   "--set", "pipeline.object_store_memory_mb=100000000")
    assert r.returncode == 1
    assert len(lines) == 1 and "could not start a local Ray" in lines[0] and "full log:" in lines[0], lines
    assert not (tmp_path / "o.zarr").exists()
