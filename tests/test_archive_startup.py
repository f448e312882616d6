"""An archive's start: the plan (torch, the checkpoint) is made on a thread while Ray starts when some input
still has work; a plan that fails then stops the Ray it started, and nothing is written."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from archive_helpers import ENV, TINY
from videos import make_video


@pytest.mark.ray
def test_a_wrong_checkpoint_stops_the_ray_it_started_and_writes_nothing(tmp_path):
    make_video(tmp_path / "v.mp4", n=8)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    out = tmp_path / "out"
    code = textwrap.dedent(f"""
        import sys, ray
        import streamparse.engine.raystart as rs
        import streamparse.pipelines.archive as arc
        from streamparse.checkpoint import CheckpointError
        from streamparse.config import load_config
        assert 'torch' not in sys.modules  # the plan imports it, on its thread
        starts = []
        real = rs.start_ray
        rs.start_ray = lambda *a: starts.append(1) or real(*a)  # (what plan_while_ray_starts calls)
        try:
            arc.run_archive(load_config(overrides={TINY!r}), [{str(tmp_path / "v.mp4")!r}], {str(out)!r},
                            checkpoint={str(bad)!r}, progress=False)
        except CheckpointError as exc:
            print("ERROR", exc)
        assert starts == [1], starts  # Ray was started early, beside the plan
        assert not ray.is_initialized()  # ... and stopped when the plan failed
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("ERROR")]
    assert line and "cannot load checkpoint" in line[0] and str(bad) in line[0], r.stdout
    assert not out.exists() or not any(out.iterdir()), sorted(p.name for p in out.iterdir())
