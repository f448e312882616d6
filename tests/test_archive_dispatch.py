"""How many video tasks an archive runs at once: one while the inference actors build their models, then
two per actor up, then ``--concurrency`` (``streamparse.archive.balance.task_limit``), and every video
still completes."""

from __future__ import annotations

import json

import pytest

from archive_helpers import TINY
from streamparse.archive.balance import task_limit
from videos import make_video


def test_task_limit_rule():
    assert [task_limit(8, up, False) for up in range(6)] == [1, 2, 4, 6, 8, 8]
    assert task_limit(8, 0, True) == 8 and task_limit(8, 3, True) == 8
    assert task_limit(1, 0, False) == 1 and task_limit(3, 2, False) == 3


@pytest.mark.ray
def test_video_tasks_wait_for_the_models_then_run_at_concurrency(ray_runtime, tmp_path):
    from streamparse.config import load_config
    from streamparse.pipelines.archive import run_archive

    vids = tmp_path / "videos"
    vids.mkdir()
    for i in range(5):
        make_video(vids / f"v{i}.mp4", n=16, h=48, w=64)
    events = []
    report = run_archive(load_config(overrides=TINY), [str(vids)], str(tmp_path / "out"), checkpoint="none", concurrency=4,
                         progress=False, on_event=lambda name, data: events.append((name, dict(data))))
    dispatched = [d for name, d in events if name == "dispatched"]
    assert [d["video_id"] for d in dispatched] and len(dispatched) == 5
    first = dispatched[0]
    assert first["actors_up"] == 0 and not first["pool_up"] and first["running"] == 1, first
    for d in dispatched:  # never more tasks than the rule allows at the moment of the dispatch
        assert d["running"] <= task_limit(4, d["actors_up"], d["pool_up"]), d
    assert max(d["running"] for d in dispatched) >= 2, dispatched  # the limit opens once the models are up
    assert report["counts"]["complete"] == 5, json.dumps(report["counts"])
