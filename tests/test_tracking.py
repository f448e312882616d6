"""Person tracker (issue 19): hand-made tables with expected ids, state round trip, offline re-tracking,
the features, the metrics on a case computed by hand, eval-tracks / track errors, and one synthetic
video through the predictor with an IDF1 floor."""

from __future__ import annotations

import json
import os

import numpy as np
import zarr
import pytest

from streamparse.config import ConfigError, TrackConfig
from streamparse.labelstats import instance_features
from streamparse.plan import build_tracker, track_kwargs as tracker_kwargs
from streamparse.tracking.tracker import Tracker

from trackframes import C, W, frame, person, run  # noqa: F401


def crossing(n: int = 30) -> list[dict]:
    """A (red/blue) walks right, B (green/yellow) walks left; they cross mid-way, B in front."""
    fr = []
    for t in range(n):
        a = person(5 + 3 * t)
        b = person(100 - 3 * t, upper=(30, 200, 30), pants=(220, 220, 30), hair=(120, 80, 40))
        fr.append(frame([a, b], t=t))
    return fr


def test_two_people_crossing_keep_their_ids():
    frames = crossing()
    ids = run(Tracker(confirm_frames=2), frames)
    assert ids[0] == [0, 0]  # tentative in the first frame
    assert ids[1] == [1, 2]
    for f, got in zip(frames, ids):
        want = [[1, 2][p - 1] for p in f["_present"]]
        if len(f["_present"]) == 2 or 2 not in f["_present"]:  # full overlap: only B visible
            assert got == want or f["frame_index"] < 1
    # after the crossing A is still 1 and B still 2
    assert ids[-1] == [1, 2]
    # IoU only (no appearance): the crossing swaps or splits ids, appearance is what keeps them
    iou_only = run(Tracker(w_emb=0, w_col=0, reid_cost=0), crossing())
    assert iou_only[-1] != [1, 2]


def test_leave_and_reenter_gets_the_old_id():
    frames = []
    for t in range(40):
        people = [person(5 + 2 * t, upper=(30, 200, 30))]  # B walks along the whole time
        if t < 10:
            people.append(person(70 + 2 * t))  # A walks out on the right ...
        elif t >= 25:
            people.append(person(W - 2 * (t - 25)))  # ... and comes back 15 frames later
        frames.append(frame(people, t=t))
    ids = run(Tracker(), frames)
    assert ids[5] == [1, 2]
    a_back = [r[1] for r in ids[26:] if len(r) == 2]
    assert a_back and set(a_back) == {2}  # re-identified, no new id
    assert max(max(r) for r in ids if r) == 2


def test_reid_speed_limits_where_a_lost_track_can_come_back():
    frames = []
    for t in range(30):
        people = [person(40 + t, upper=(30, 200, 30))]  # B stands around in the middle
        if t < 8:
            people.append(person(90 + 2 * t))  # A walks out on the right ...
        elif t >= 18:
            people.append(person(2))  # ... and appears at the far left one second later
        frames.append(frame(people, t=t))
    assert run(Tracker(), frames)[-1] == [1, 2]  # anywhere: the old id
    assert run(Tracker(reid_speed=0.2), frames)[-1] == [1, 3]  # 0.25 + 0.2 x 1 s of the width: a new person


def test_missed_detection_for_three_frames():
    frames = []
    for t in range(20):
        a = person(5 + 2 * t)
        b = person(90 - t, upper=(30, 200, 30))
        frames.append(frame([a] if 8 <= t < 11 else [a, b], t=t))  # B missed in frames 8, 9, 10
    ids = run(Tracker(), frames)
    assert all(r == [1, 2] for r in ids[1:8]) and all(r == [1] for r in ids[8:11])
    assert all(r == [1, 2] for r in ids[11:])  # B keeps its id, no number skipped


def test_new_segment_reidentifies_by_appearance():
    frames = crossing(8)
    later = []
    for t in range(8, 14):  # a reconnect: segment 1, everyone has moved
        later.append(frame([person(60, upper=(30, 200, 30), pants=(220, 220, 30), hair=(120, 80, 40)), person(10)], t=t, segment=1))
    ids = run(Tracker(), frames + later)
    assert ids[7] == [1, 2] and ids[8] == [2, 1] and ids[-1] == [2, 1]


def test_ids_never_skip_numbers_and_false_positives_stay_0():
    frames = []
    for t in range(12):
        people = [person(10 + t)]
        if t in (3, 7):  # one-frame false positives
            people.append(person(90, upper=(0, 0, 255)))
        frames.append(frame(people, t=t))
    ids = run(Tracker(confirm_frames=2), frames)
    assert ids[3] == [1, 0] and ids[7] == [1, 0]
    people = [person(10 + t) for t in range(1)]
    assert max(max(r) for r in ids) == 1


def test_embeddings_separate_look_alikes():
    """Same clothes, different embeddings: after a long occlusion only the embedding tells them apart."""
    ea, eb = np.eye(8)[0], np.eye(8)[1]
    frames = []
    for t in range(30):
        people = []
        if t < 5 or t >= 20:
            people.append(person(20 if t < 5 else 80))  # A, seen left, later right
        if t < 5 or t >= 20:
            people.append(person(80 if t < 5 else 20))  # B, seen right, later left
        embs = [ea, eb]
        frames.append(frame(people, emb=embs, t=t))
    ids = run(Tracker(), frames)
    assert ids[4] == [1, 2] and ids[-1] == [1, 2]


def test_state_round_trip_continues_identically():
    frames = crossing(30)
    ref = run(Tracker(), frames)
    tr = Tracker()
    first = run(tr, frames[:13])
    state = json.loads(json.dumps(tr.state()))  # through JSON, as stored with a commit marker
    rest = run(Tracker.from_state(state), frames[13:])
    assert first + rest == ref
    assert Tracker.from_state(state).state() == state


def test_update_batch_equals_frame_by_frame():
    frames = [{k: v for k, v in f.items() if not k.startswith("_")} for f in crossing(6)]
    tr0 = Tracker()
    ref = np.concatenate([tr0.update(**f) for f in frames])
    batch = {"instance": np.stack([f["instance"] for f in frames]),
             "inst_offset": np.concatenate([[0], np.cumsum([len(f["inst_id"]) for f in frames])]),
             **{k: np.concatenate([f[k] for f in frames]) for k in ("inst_id", "inst_score", "inst_bbox", "inst_area",
                                                                  "inst_embedding", "inst_part_area", "inst_part_rgb")},
             **{k: np.array([f[k] for f in frames]) for k in ("frame_index", "time", "segment")}}
    tr = Tracker()
    got = np.concatenate([tr.update_batch({k: (v[:3] if k in ("instance", "frame_index", "time", "segment") else v) for k, v in
                                           {**batch, "inst_offset": batch["inst_offset"][:4]}.items()}),
                          tr.update_batch({**{k: v[3:] for k, v in batch.items() if k in ("instance", "frame_index", "time", "segment")},
                                           **{k: v[batch["inst_offset"][3]:] for k, v in batch.items() if k.startswith("inst_") and k != "inst_offset"},
                                           "inst_offset": batch["inst_offset"][3:] - batch["inst_offset"][3]})])
    assert got.dtype == np.uint32 and np.array_equal(got, ref)


def test_config_validation_and_builder():
    cfg = TrackConfig(w_emb=0.25)
    tr = build_tracker(cfg)
    assert tr.params() == tracker_kwargs(cfg) and "enabled" not in tr.params()
    for bad in ({"iou_mode": "kalman"}, {"max_cost": 1.5}, {"confirm_frames": 0}, {"w_iou": 0, "w_emb": 0, "w_col": 0}):
        with pytest.raises(ConfigError):
            TrackConfig(**bad)
    with pytest.raises(ValueError):
        Tracker(nonsense=1)


def test_bad_input_is_refused():
    tr = Tracker()
    f = {k: v for k, v in crossing(2)[0].items() if not k.startswith("_")}
    with pytest.raises(ValueError, match="uint16"):
        tr.update(**{**f, "instance": f["instance"].astype(np.int32)})
    tr.update(**f)
    with pytest.raises(ValueError, match="in order"):
        tr.update(**f)


# ------------------------------------------------------------------------------------ features
def test_instance_features_mean_colours():
    frames = np.zeros((2, 4, 4, 3), np.uint8)
    frames[0, :2] = (10, 20, 30)
    frames[0, 2:] = (100, 110, 120)
    frames[0, 0, 0] = (40, 50, 60)
    part = np.zeros((2, 4, 4), np.uint8)
    part[0, :2] = 5
    part[0, 2:] = 9
    inst = np.zeros((2, 4, 4), np.uint16)
    inst[0, :, :2] = 1
    inst[0, :, 2:] = 2
    inst[1, 1, 1] = 1
    part[1, 1, 1] = 2
    frames[1, 1, 1] = (7, 8, 9)
    area, rgb = instance_features(frames, part, inst, np.array([0, 2, 3]), 10)
    assert area.dtype == np.int32 and rgb.dtype == np.uint8 and area.shape == (3, 10) and rgb.shape == (3, 10, 3)
    assert area[0, 5] == 4 and area[0, 9] == 4 and area[1, 5] == 4 and area[2, 2] == 1 and area.sum() == 17
    assert rgb[0, 5].tolist() == [18, 28, 38]  # (3 * (10,20,30) + (40,50,60)) / 4 = 17.5.. -> rounded
    assert rgb[1, 5].tolist() == [10, 20, 30] and rgb[0, 9].tolist() == [100, 110, 120]
    assert rgb[2, 2].tolist() == [7, 8, 9] and rgb[0, 0].tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="inst_offset"):
        instance_features(frames, part, inst, np.array([0, 2]), 10)
    with pytest.raises(ValueError, match="num_classes"):
        instance_features(frames, part, inst, np.array([0, 2, 3]), 9)


# ------------------------------------------------------------------------------------ metrics
def test_metrics_on_a_case_computed_by_hand():
    pytest.importorskip("trackeval")
    """GT 1 in frames 0-3 is tracked as 1, 1, 2, 2 (one switch); GT 2 as 3, 3, -, 3 (one miss, one
    fragmentation). CLEAR: TP 7, FN 1, FP 0, IDSW 1 -> MOTA = 1 - 2/8 = 0.75. Identity: GT1<->1 (2),
    GT2<->3 (3): IDTP 5, IDFP 2, IDFN 3 -> IDF1 = 10/15."""
    from streamparse.evaluation.tracks import _pairwise_iou, score_sequence, sequence_data, summarize

    gt_ids = [[1, 2]] * 4
    pred = [[1, 3], [1, 3], [2], [2, 3]]
    sims = [np.eye(2), np.eye(2), np.array([[1.0], [0.0]]), np.eye(2)]
    r = summarize(score_sequence(sequence_data(gt_ids, [np.array(p) for p in pred], sims)))
    assert (r["CLR_TP"], r["CLR_FN"], r["CLR_FP"], r["IDSW"], r["Frag"]) == (7, 1, 0, 1, 1)
    assert r["MOTA"] == pytest.approx(0.75) and r["IDF1"] == pytest.approx(10 / 15)
    assert (r["IDTP"], r["IDFP"], r["IDFN"]) == (5, 2, 3)
    # mask IoU from two label maps: GT person 1 = 4 px, predicted person 2 covers 2 of them + 2 more
    gt = np.zeros((4, 4), np.uint8)
    gt[0, :] = 1
    pr = np.zeros((4, 4), np.uint16)
    pr[0, 2:], pr[1, 2:] = 2, 2
    assert _pairwise_iou(gt, pr, 1, np.array([2])).tolist() == [[pytest.approx(2 / 6)]]


# ------------------------------------------------------------------------ stores through the writer
class GTPredictor:
    """Stands in for ``Predictor`` in ``write_v2_store``: the video's GT masks as detections, embeddings
    from the GT identity (+ noise), so store tests need no model."""

    model_name, checkpoint_sha256, num_classes, embedding_dim = "gt", None, C, 16

    def __init__(self, gt_dir, video):
        self.class_names = [f"c{i}" for i in range(C)]
        self.palette = np.zeros((C, 3), np.uint8)
        self.gt_dir, self.video, self.t = gt_dir, video, 0
        self.info = json.loads((gt_dir / f"{video}.json").read_text())
        self.rng = np.random.default_rng(0)

    def predict(self, frames):
        from streamparse.data.cihp import read_label_png
        from streamparse.structures import FrameParsing

        out = []
        for _ in frames:
            t, self.t = self.t, self.t + 1
            inst = read_label_png(self.gt_dir / "Human_ids" / f"{self.video}_{t:06d}.png").astype(np.uint16)
            part = read_label_png(self.gt_dir / "Category_ids" / f"{self.video}_{t:06d}.png")
            ids = self.info["track_ids"][t]
            emb = np.eye(16)[np.array(ids, int) % 16] + 0.1 * self.rng.standard_normal((len(ids), 16))
            out.append(FrameParsing(part=part, instance=inst, scores=np.full(len(ids), 0.9, np.float32),
                                    embeddings=emb.astype(np.float16)))
        return out


@pytest.fixture(scope="module")
def tracked_store(tmp_path_factory):
    pytest.importorskip("trackeval")
    from streamparse.bench.track import write_v2_store
    from streamparse.data.synth import generate_video

    root = tmp_path_factory.mktemp("trk")
    generate_video(root / "clip.mp4", root / "gt", 40, seed=(3, 0), size=(96, 144), min_people=3, max_people=4,
                   scenario="tracking")
    store = root / "clip.zarr"
    status = write_v2_store(root / "clip.mp4", store, GTPredictor(root / "gt", "clip"), tracker=Tracker(), chunk_frames=16)
    assert status["frames_written"] == 40 and status["complete"]
    return root, store


def _cli(*args):
    from streamparse.cli import main

    return main(list(map(str, args)))


def test_store_is_schema_v2_and_track_reproduces_online_ids(tracked_store, capsys):
    import zarr

    root, store = tracked_store
    z = zarr.open_group(str(store), mode="r")
    assert z.attrs["streamparse_schema_version"] == 2 and z.attrs["tracker"]["name"].endswith("Tracker")
    g = z["clip"]
    for name, dims in (("part", ("time", "y", "x")), ("inst_embedding", ("inst", "emb")), ("inst_part_rgb", ("inst", "part_class", "rgb")),
                       ("inst_track", ("inst",)), ("inst_offset", ("time",))):
        assert tuple(g[name].metadata.dimension_names) == dims
    online = g["inst_track"][:]
    assert online.max() >= 3 and set(np.unique(online[online > 0])) == set(range(1, online.max() + 1))  # no skipped id
    # the online tracker replayed, same parameters: identical ids
    zarr.open_group(str(store), mode="r+")["clip"]["inst_track"][:] = 0
    assert _cli("track", store, "--online") == 0
    assert np.array_equal(zarr.open_group(str(store), mode="r")["clip"]["inst_track"][:], online)
    # other parameters change them; the store records them
    assert _cli("track", store, "--online", "--set", "track.confirm_frames=1", "--set", "track.w_col=0") == 0
    z = zarr.open_group(str(store), mode="r")
    assert z.attrs["tracker"]["params"]["confirm_frames"] == 1 and z.attrs["tracker"]["mode"] == "online"
    assert not np.array_equal(z["clip"]["inst_track"][:], online)
    assert _cli("track", store, "--online", "--set", "track.confirm_frames=2", "--set", "track.w_col=2.0") == 0
    assert np.array_equal(zarr.open_group(str(store), mode="r")["clip"]["inst_track"][:], online)
    # and the GT identities are recovered
    assert _cli("eval-tracks", "--data", root / "gt", "--store", store, "--json", root / "m.json") == 0
    res = json.loads((root / "m.json").read_text())
    assert res["overall"]["IDF1"] > 0.8 and res["overall"]["MOTA"] > 0.8


def test_resume_from_state_gives_identical_ids(tracked_store):
    from streamparse.tracking.store import iter_frames, open_store, read_tables

    _, store = tracked_store
    g = open_store(store)["clip"]
    frames = list(iter_frames(g, read_tables(g)))
    tr = Tracker()
    ref = [tr.update(**f) for f in frames]
    tr = Tracker()
    first = [tr.update(**f) for f in frames[:16]]  # "SIGKILL" after the first commit
    state = json.loads(json.dumps(tr.state()))
    tr = Tracker.from_state(state)
    rest = [tr.update(**f) for f in frames[16:]]
    assert all(np.array_equal(a, b) for a, b in zip(first + rest, ref))


def test_track_refuses_v1_locked_and_unknown_key(tracked_store, tmp_path, capsys):
    from streamparse.store.sink import ZarrSink

    _, store = tracked_store
    v1 = tmp_path / "v1.zarr"
    with ZarrSink(v1, mode="create", root_attrs={"model_name": "x"}):
        pass
    zarr.open_group(str(v1), mode="r+").attrs["streamparse_schema_version"] = 1  # a store of the previous schema
    assert _cli("track", v1) == 2
    assert "schema v1" in capsys.readouterr().err
    assert _cli("track", store, "--set", "track.bogus=1") == 2
    err = capsys.readouterr().err
    assert "unknown tracker key track.bogus" in err and err.count("\n") == 1
    lock = store / ".streamparse.lock"
    lock.write_text(json.dumps({"pid": os.getpid(), "host": __import__("socket").gethostname()}))
    try:
        before = (store / "clip" / "inst_track").stat().st_mtime_ns
        assert _cli("track", store) == 2
        assert "being written" in capsys.readouterr().err
        assert (store / "clip" / "inst_track").stat().st_mtime_ns == before
        lock.write_text(json.dumps({"pid": 2 ** 22 + 12345}))  # a dead writer: stale lock
        assert _cli("track", store) == 0
    finally:
        lock.unlink(missing_ok=True)  # (`track` removed it when it released the lock it took over)


def test_bench_track_compares_methods_on_the_same_detections(tracked_store, tmp_path):
    pytest.importorskip("trackers")
    from streamparse.bench.track import ORACLE, format_track_table, run_track_bench

    root, store = tracked_store
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "videos_gt").symlink_to(root / "gt")
    (tmp_path / "gtdet").mkdir()
    (tmp_path / "gtdet" / "clip.zarr").symlink_to(store)
    res = run_track_bench(tmp_path / "data", {"gtdet": tmp_path / "gtdet"}, with_gt=False, with_cost=False)
    rows = res["presets"]["gtdet"]
    assert {"a_iou_only", "b_bytetrack", "c_embedding_only", "d_full", ORACLE} <= set(rows)
    assert rows[ORACLE]["overall"]["IDF1"] == pytest.approx(1.0) and rows[ORACLE]["overall"]["IDSW"] == 0
    assert rows["d_full"]["overall"]["IDF1"] >= rows["a_iou_only"]["overall"]["IDF1"]
    assert "d_full" in format_track_table(res)


def test_eval_tracks_errors(tracked_store, tmp_path, capsys):
    import shutil

    from streamparse.store.sink import ZarrSink

    root, store = tracked_store
    # GT of another video: fewer frames
    other = tmp_path / "gt"
    shutil.copytree(root / "gt", other)
    info = json.loads((other / "clip.json").read_text())
    short = {**info, "track_ids": info["track_ids"][:30], "num_people": info["num_people"][:30]}
    (other / "clip.json").write_text(json.dumps(short))
    assert _cli("eval-tracks", "--data", other, "--store", store) == 2
    assert "GT of another video" in capsys.readouterr().err
    (other / "clip.json").write_text(json.dumps({**info, "size": [48, 144]}))
    assert _cli("eval-tracks", "--data", other, "--store", store) == 2
    assert "GT of another video" in capsys.readouterr().err
    (other / "clip.json").write_text(json.dumps({k: v for k, v in info.items() if k != "track_ids"}))
    assert _cli("eval-tracks", "--data", other, "--store", store) == 2
    assert "without identities" in capsys.readouterr().err
    v1 = tmp_path / "v1.zarr"
    with ZarrSink(v1, mode="create", root_attrs={"model_name": "x"}):
        pass
    zarr.open_group(str(v1), mode="r+").attrs["streamparse_schema_version"] = 1  # a store of the previous schema
    assert _cli("eval-tracks", "--data", root / "gt", "--store", v1) == 2
    assert "without tracks" in capsys.readouterr().err


def test_tracker_on_a_synthetic_video_through_the_predictor(tmp_path):
    """The shipped weights at the 256-px default on a 60-frame tracking video: IDF1 floor."""
    pytest.importorskip("trackeval")
    import torch

    from streamparse.bench.track import write_v2_store
    from streamparse.config import load_config, to_dict
    from streamparse.data.synth import generate_video
    from streamparse.engine.factory import build_predictor
    from streamparse.evaluation.tracks import evaluate_store

    torch.set_num_threads(1)
    generate_video(tmp_path / "v.mp4", tmp_path / "gt", 60, seed=(99, 1), size=(256, 384), min_people=3, max_people=4,
                   scenario="tracking")
    cfg = load_config(None, ["pipeline.device=cpu"])
    pred = build_predictor(cfg, checkpoint="default", device="cpu")
    write_v2_store(tmp_path / "v.mp4", tmp_path / "v.zarr", pred, tracker=build_tracker(cfg.track), config=to_dict(cfg))
    res = evaluate_store(tmp_path / "gt", tmp_path / "v.zarr")
    print(res["overall"])
    assert res["overall"]["IDF1"] >= FLOOR_IDF1, res["overall"]


FLOOR_IDF1 = 0.5
