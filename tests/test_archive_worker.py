"""One archive video, worker side, without Ray: ``process_video`` with the in-process executor writes
the store a run writes; its store modes (create, resume from the commit marker, already complete,
fresh on a changed input or model, a damaged store replaced); per-video failures (zero bytes, not a
video, truncated, a foreign store at its path) are results, never exceptions."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import zarr

from archive_helpers import TINY, assert_groups_equal, open_group
from streamparse import plan
from streamparse.engine.factory import build_predictor
from streamparse.archive.worker import make_context, process_video
from streamparse.config import load_config
from streamparse.engine.decoders import InProcessExecutor
from streamparse.engine.scheduler import Scheduler, Slot, file_policy
from videos import make_video


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("w")
    cfg = load_config(overrides=TINY)
    meta = plan.resolve_model_meta(cfg, "none")
    pred = build_predictor(cfg, checkpoint="none", device="cpu")
    video = make_video(d / "clip.mp4", n=18, h=48, w=64)
    ref = d / "ref.zarr"  # what `streamparse run` writes, in process: the same build functions, the same scheduler
    with plan.build_sink(cfg, ref, mode="create", attrs=plan.root_attrs(cfg, meta, [str(video)])) as sink:
        slot = Slot(uri=str(video), sid="clip", policy=file_policy(cfg.pipeline.max_in_flight))

        def open_writer(s):
            s.writer = plan.open_source_writer(sink, cfg, meta, s.sid, s.info)
            s.next_seq = s.writer.next_seq

        sched = Scheduler([slot], executor(plan.make_plan(cfg, "none", load_weights=False), pred), open_writer=open_writer)
        sched.start()
        sched.run()
    return {"dir": d, "cfg": cfg, "meta": meta, "pred": pred, "video": video, "ref": ref}


def executor(p, pred):
    return InProcessExecutor(lambda s: p.source(s.uri, source_id=s.sid, start_frame=s.start_frame), pred,
                             batch_size=p.batch_size)


def go(setup, store, video=None, vid="clip", cfg=None):
    cfg = cfg or setup["cfg"]
    ctx = make_context(plan.make_plan(cfg, "none", load_weights=False), lock_token="tok")
    job = {"video_id": vid, "uri": str(video or setup["video"]), "store": str(store), "attempt": 1}
    return process_video(job, ctx, lambda c: executor(c, setup["pred"]))


def test_store_equals_run_then_resume_modes(setup, tmp_path):
    store = tmp_path / "clip.zarr"
    r = go(setup, store)
    assert r["state"] == "complete" and r["frames"] == r["frames_new"] == 18 and r["errors"] == [] and r["start_frame"] == 0
    assert r["first_write_s"] is not None and r["first_write_s"] <= r["wall_s"]
    assert r["first_decoded_s"] is not None and 0 <= r["first_decoded_s"] <= r["first_write_s"]
    assert_groups_equal(open_group(store, "clip"), open_group(setup["ref"], "clip"), what="archive vs run")
    root = dict(zarr.open_group(str(store), mode="r").attrs)
    assert root["archive"]["input"]["sha256_1mb"] and root["archive"]["model_key"] and root["model_name"] == "uniparser_tiny"
    assert not (store / ".streamparse.lock").exists()
    # the same video again: already complete, nothing decoded
    r = go(setup, store)
    assert r["state"] == "complete" and r["note"] == "already complete" and r["frames_new"] == 0 and r["frames"] == 18
    # a partial store (a killed attempt: the marker at 8, data past it) continues from its commit marker
    g = zarr.open_group(str(store / "clip"), mode="r+")
    st = dict(g.attrs["status"])
    off = g["inst_offset"][:]
    st.update(frames_written=8, instances_written=int(off[8]), complete=False, state="interrupted")
    st.pop("tracker_state", None)
    g.attrs["status"] = st
    r = go(setup, store)
    assert r["state"] == "complete" and r["start_frame"] == 8 and r["frames_new"] == 10, r
    assert_groups_equal(open_group(store, "clip"), open_group(setup["ref"], "clip"), what="resumed")


def test_changed_model_or_input_gets_a_fresh_store(setup, tmp_path):
    store = tmp_path / "clip.zarr"
    assert go(setup, store)["state"] == "complete"
    other = load_config(overrides=TINY + ["model.mask_thresh=0.3"])
    r = go(setup, store, cfg=other)
    assert r["state"] == "complete" and r["start_frame"] == 0 and r["frames_new"] == 18 and "model" in r["note"]
    assert dict(zarr.open_group(str(store), mode="r").attrs)["config"]["model"]["mask_thresh"] == 0.3
    video = make_video(tmp_path / "clip.mp4", n=11, h=48, w=64)  # another file at the same video id
    r = go(setup, store, video=video, cfg=other)
    assert r["state"] == "complete" and r["frames"] == 11 and "input changed" in r["note"]
    assert zarr.open_group(str(store / "clip"), mode="r")["part"].shape[0] == 11  # never mixed


def test_damaged_store_is_replaced(setup, tmp_path):
    store = tmp_path / "clip.zarr"
    assert go(setup, store)["state"] == "complete"
    g = zarr.open_group(str(store / "clip"), mode="r+")
    st = dict(g.attrs["status"])
    st.update(complete=False, state="interrupted")
    g.attrs["status"] = st
    (store / "clip" / "part" / "c" / "0" / "0" / "0").unlink()  # a committed chunk lost
    r = go(setup, store)
    assert r["state"] == "complete" and "damaged" in r["note"] and r["start_frame"] == 0
    assert_groups_equal(open_group(store, "clip"), open_group(setup["ref"], "clip"), what="replaced")


def test_bad_videos_are_failed_results(setup, tmp_path):
    zero = tmp_path / "zero.mp4"
    zero.write_bytes(b"")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00not a video" * 50)
    full = make_video(tmp_path / "full.avi", n=40, h=48, w=64, codec="mpeg4")
    cut = tmp_path / "cut.avi"
    cut.write_bytes(full.read_bytes()[: int(full.stat().st_size * 0.6)])
    cases = [(zero, "empty file"), (junk, "not a video"), (tmp_path / "gone.mp4", "file not found")]
    for path, msg in cases:
        store = tmp_path / f"{path.stem}.zarr"
        r = go(setup, store, video=path, vid=path.stem)
        assert r["state"] == "failed" and len(r["errors"]) == 1 and msg in r["errors"][0], r
        assert not store.exists()  # nothing committed: no store left behind
    r = go(setup, tmp_path / "cut.zarr", video=cut, vid="cut")
    assert r["state"] == "failed" and 0 < r["frames"] < 40 and r["errors"], r
    assert dict(zarr.open_group(str(tmp_path / "cut.zarr" / "cut"), mode="r").attrs)["status"]["frames_written"] == r["frames"]
    foreign = tmp_path / "f.zarr"
    zarr.open_group(str(foreign), mode="w").attrs["owner"] = "someone"
    r = go(setup, foreign)
    assert r["state"] == "failed" and "did not write" in r["errors"][0] and json.loads((foreign / "zarr.json").read_text())
    shutil.rmtree(foreign)


def test_a_store_is_born_whole(setup, tmp_path):
    """The root zarr.json is written once, with every attribute: a worker killed while creating a
    store (a lost node) leaves a store its retry recognises, never one without the schema version
    (zarr's attrs.update rewrote it once per key)."""
    from zarr.storage import LocalStore

    from streamparse.store.sink import ZarrSink

    keys = []

    class Recording(LocalStore):
        async def set(self, key, value):
            keys.append(key)
            await super().set(key, value)

    cfg, meta = setup["cfg"], setup["meta"]
    attrs = plan.root_attrs(cfg, meta, [str(setup["video"])])
    path = tmp_path / "born.zarr"
    sink = ZarrSink(path, mode="create", root_attrs=attrs, store=Recording(str(path)))
    try:
        assert keys.count("zarr.json") == 1, keys
        root = json.loads((path / "zarr.json").read_text())["attributes"]
        assert root["streamparse_schema_version"] and root["checkpoint_sha256"] == meta["checkpoint_sha256"]
    finally:
        sink.close()
