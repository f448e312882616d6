"""Tracks through missed detections (issue 29): the second stage on low-score candidates, gap bridging,
the offline passes (backward join, tentative frames, interpolation), and the rows they add (``inst_origin``)
in the sink and the label maps. Tiny hand-made masks (``trackframes``)."""

from __future__ import annotations

import numpy as np
import pytest

from streamparse.store.schema import ORIGINS
from streamparse.tracking.offline import Pass, _join, offline_plan, online_plan
from streamparse.tracking.tracker import Tracker
from trackframes import frame, person

KEYS = ("instance", "inst_id", "inst_score", "inst_bbox", "inst_area", "inst_embedding", "inst_part_area", "inst_part_rgb",
        "frame_index", "time", "segment")


def with_candidates(det: list[dict], cand: list[dict], t: int, score: float = 0.05) -> dict:
    """A frame whose detections are ``det`` and whose low-score candidates are ``cand`` (on the pixels no
    detection holds), as ``Tracker.update`` takes them."""
    f = {k: v for k, v in frame(det, t=t).items() if k in KEYS}
    if cand:
        c = frame(cand, t=t)
        cinst = np.where(f["instance"] == 0, c["instance"], 0).astype(np.uint8)
        f["cand_instance"] = cinst
        f["candidates"] = {"cand_score": np.full(len(c["inst_id"]), score, np.float32), "cand_bbox": c["inst_bbox"],
                           "cand_embedding": c["inst_embedding"], "cand_part_area": c["inst_part_area"],
                           "cand_part_rgb": c["inst_part_rgb"]}
    return f


def walk(t: int, **kw) -> dict:
    return person(10 + 3 * t, **kw)


RED = {}
GREEN = {"upper": (30, 200, 30), "pants": (220, 220, 30), "hair": (120, 80, 40)}


# (case, the candidate of frames 4-6 (None: no candidate), tracker params, expected: recovered in frames 4, 5, 6)
SECOND_STAGE = [
    ("on the track's path", lambda t: walk(t), {}, [True, True, True]),
    ("far from the predicted mask", lambda t: person(100), {}, [False, False, False]),
    ("other clothes", lambda t: walk(t, **GREEN), {}, [False, False, False]),
    ("second stage off", lambda t: walk(t), {"recover_iou": 0.0}, [False, False, False]),
    ("at most recover_frames in a row", lambda t: walk(t), {"recover_frames": 2}, [True, True, False]),
    ("tentative tracks take none", lambda t: walk(t), {"confirm_frames": 6}, [False, False, False]),
]


@pytest.mark.parametrize("case,cand,params,expect", SECOND_STAGE, ids=[c[0] for c in SECOND_STAGE])
def test_second_stage_takes_candidates_that_continue_a_track(case, cand, params, expect):
    tr = Tracker(**params)
    got, ids = [], []
    for t in range(10):
        if 4 <= t <= 6:  # the person is not detected, a low-score candidate may be there
            ids.append(tr.update(**with_candidates([], [cand(t)], t)).tolist())
            got.append(len(tr.recovered) == 1)
            if got[-1]:
                assert tr.recovered.tolist() == [[0, 1]]  # candidate 0 continues track 1
        else:
            ids.append(tr.update(**with_candidates([walk(t)], [], t)).tolist())
            assert len(tr.recovered) == 0
    assert got == expect
    if params.get("confirm_frames", 2) <= 4:
        assert ids[9] == [1]  # the person keeps their id after the gap either way (gap bridging)


def test_candidates_never_start_tracks():
    tr = Tracker(confirm_frames=1)
    for t in range(5):
        tr.update(**with_candidates([], [walk(t)], t))
        assert len(tr.recovered) == 0 and not tr.tracks


# (frames missed, iou_max_gap, the same id afterwards) -- colour and re-identification off: only the
# predicted mask (the last one moved by the track's velocity) can bridge the gap
BRIDGING = [(3, 5, True), (5, 5, False), (5, 8, True), (2, 1, False)]


@pytest.mark.parametrize("gap,max_gap,same", BRIDGING)
def test_gap_bridging_with_the_predicted_mask(gap, max_gap, same):
    tr = Tracker(iou_max_gap=max_gap, w_col=0.0, w_emb=0.0, reid_cost=0.0, iou_gate=0.3)
    out = []
    for t in range(6 + gap + 4):
        missed = 6 <= t < 6 + gap
        out.append(tr.update(**with_candidates([] if missed else [walk(t)], [], t)).tolist())
    assert out[5] == [1]
    assert (out[-1] == [1]) is same


def test_recovered_rows_are_painted_on_background_only():
    from streamparse.structures import ParsingBatch
    from streamparse.tracking.rows import insert_rows

    f = frame([person(10), person(40, **GREEN)], t=0)
    b = ParsingBatch(part=(f["instance"] > 0).astype(np.uint8)[None] * 5, instance=f["instance"][None], frame_index=[0], pts=[0],
                     time=[0.0], wallclock=[0.0], segment=[0], inst_offset=[0, 2],
                     **{k: f[k] for k in KEYS if k.startswith("inst_")})
    # a recovered person overlapping the first detected one: only its background pixels are painted
    crop = np.full((40, 14), 7, np.uint8)
    rows = [{"bbox": (15, 10, 29, 50), "crop": crop.ravel(), "score": 0.05, "embedding": np.zeros(0, np.float16),
             "part_rgb": np.full((20, 3), 9, np.uint8), "track": 3, "origin": ORIGINS["recovered"]}]
    nb = insert_rows(b, [rows])
    assert nb.inst_offset.tolist() == [0, 3] and nb.inst_id.tolist() == [1, 2, 3] and nb.inst_origin.tolist() == [0, 0, 1]
    assert nb.inst_track.tolist() == [0, 0, 3]
    det = b.instance[0] > 0
    assert np.array_equal(nb.instance[0][det], b.instance[0][det]) and np.array_equal(nb.part[0][det], b.part[0][det])
    new = nb.instance[0] == 3
    assert new.sum() == nb.inst_area[2] == 40 * 14 - (det[10:50, 15:29]).sum() and not (new & det).any()
    assert (nb.part[0][new] == 7).all() and nb.inst_part_area[2, 7] == nb.inst_area[2]
    assert insert_rows(b, [[]]) is b


# ------------------------------------------------------------------------------------------ offline
def gap_frames(n: int = 12, missing=(5, 6)) -> list[dict]:
    return [with_candidates([] if t in missing else [walk(t)], [], t) for t in range(n)]


@pytest.mark.parametrize("interp,expect_rows", [(10, 2), (2, 2), (1, 0), (0, 0)])
def test_offline_interpolates_short_gaps(interp, expect_rows):
    frames = gap_frames()
    plan = offline_plan(frames, {**Tracker().params(), "interp_frames": interp, "offline_backward": False})
    added = [e for ex in plan.extra for e in ex]
    assert len(added) == expect_rows and all(e["kind"] == "interp" and e["track"] == 1 for e in added)
    if added:
        e5, e6 = plan.extra[5][0], plan.extra[6][0]
        assert e5["src"] == (4, "det", 0) and e6["src"] == (7, "det", 0)  # the nearer row's mask ...
        assert (e5["dx"], e6["dx"]) == (3, -3) and e5["dy"] == e6["dy"] == 0  # ... moved along the line between them
    assert not any(online_plan(frames, {**Tracker().params(), "interp_frames": interp}).extra)  # online: never


def test_offline_gives_tentative_frames_their_track_id():
    frames = gap_frames(missing=())
    params = {**Tracker().params(), "confirm_frames": 3}
    assert [d.tolist() for d in online_plan(frames, params).det_track[:3]] == [[0], [0], [1]]
    assert [d.tolist() for d in offline_plan(frames, params).det_track[:3]] == [[1], [1], [1]]


def _pass(tids: list[list[int]]) -> Pass:
    """A tracker pass over frames whose detections carry these track ids (0 = none; key = id)."""
    keys = [np.array([t if t else -1 for t in fr], np.int64) for fr in tids]
    return Pass(keys, [np.zeros((0, 2), np.int64)] * len(tids), {t: t for fr in tids for t in fr if t})


# (forward ids per frame, backward ids per frame, the forward ids joined)
JOIN = [
    ("fragments the backward pass continues", [[1], [1], [2], [2]], [[7], [7], [7], [7]], {2: 1}),
    ("one step is no evidence", [[1], [2], [3], [3]], [[7], [7], [8], [8]], {}),
    ("tracks seen together stay apart", [[1, 2], [1, 2], [2], [1]], [[7, 8], [8, 7], [7], [7]], {}),
    ("three fragments", [[1], [1], [2], [2], [3], [3]], [[7]] * 6, {2: 1, 3: 1}),
]


@pytest.mark.parametrize("case,fwd,bwd,joined", JOIN, ids=[c[0] for c in JOIN])
def test_backward_pass_joins_forward_fragments(case, fwd, bwd, joined):
    parent: dict[int, int] = {}
    _join(_pass(fwd), _pass(bwd), parent)

    def root(t):
        while parent.get(t, t) != t:
            t = parent[t]
        return t

    assert {t: root(t) for t in {t for fr in fwd for t in fr} if root(t) != t} == joined


def test_candidates_never_change_the_detected_people():
    """A random-init tiny model whose centres above 0.0105 are people and those in (0, 0.0105] candidates:
    the people's maps and rows are the same bytes with candidates on or off, candidates hold only pixels
    no person holds, and they cross Ray as the compact table (round trip through to_dict / slice / concat)."""
    from streamparse.engine.factory import make_predictor
    from streamparse.candidates import to_maps
    from streamparse.structures import FrameBatch, ParsingBatch

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (3, 64, 80, 3), dtype=np.uint8)
    fb = FrameBatch(frames=frames, frame_index=np.arange(3), pts=np.arange(3), time=np.arange(3) / 10.0,
                    wallclock=np.zeros(3), segment=np.zeros(3, np.uint16))

    def predictor(cand_thresh):
        pp = {"center_thresh": 0.0105, "center_pool": 3, "max_instances": 8, "mask_thresh": 0.2, "merge_cos": 1.01,
              "cate_score_thresh": 0.0, "candidate_thresh": cand_thresh, "max_candidates": 8}
        return make_predictor(model_name="uniparser_tiny", model_kwargs={}, weights=None, class_names=[f"c{i}" for i in range(20)],
                              palette=None, flip_perm=None, input_size=(64, 80), device="cpu", postprocess=pp,
                              test_scales=[1.0], amp="none", cuda_streams=False, preprocess="default", protocol="default",
                              checkpoint_sha256=None, checkpoint_path=None)

    off, on = predictor(1.0).parse_batch(fb), predictor(0.0).parse_batch(fb)
    for name in ("part", "instance", "inst_offset", "inst_id", "inst_score", "inst_bbox", "inst_area", "inst_embedding",
                 "inst_part_area", "inst_part_rgb"):
        np.testing.assert_array_equal(getattr(on, name), getattr(off, name), err_msg=name)
    assert off.cand["cand_offset"][-1] == 0 and on.cand["cand_offset"][-1] > 0
    cpart, cinst = to_maps(on.cand, on.part.shape[1:])
    assert not ((cinst > 0) & (on.instance > 0)).any() and ((cinst > 0) == (cpart > 0)).all()
    assert (on.cand["cand_score"] <= 0.0105).all() and on.cand["cand_embedding"].shape[1] == on.inst_embedding.shape[1]
    back = ParsingBatch.from_dict(on.to_dict())
    again = ParsingBatch.concat([back.slice(0, 1), back.slice(1, 3)])
    for k, v in on.cand.items():
        np.testing.assert_array_equal(again.cand[k], v, err_msg=k)
