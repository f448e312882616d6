"""The rows a tracker adds, in stores (issue 29): ``inst_origin`` written by the sink (recovered candidates)
and by ``streamparse track`` (interpolated), read and filtered by ``open_result``, exported (detected rows
by default), older v2 stores without the column, and the safety of the rewrite (bad input, an interrupted
swap)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

from faults import snapshot
from streamparse.candidates import from_maps
from streamparse.structures import ParsingBatch
from streamparse.tracking.tracker import Tracker
from trackframes import C, H, W, frame, person

KEYS = ("inst_id", "inst_score", "inst_bbox", "inst_area", "inst_embedding", "inst_part_area", "inst_part_rgb")
NAMES = [f"c{i}" for i in range(C)]


def walk(t: int) -> dict:
    return person(10 + 3 * t)


def batch(t0: int, t1: int, missing=(), as_candidate=()) -> ParsingBatch:
    """Frames t0..t1-1 of one walking person; not detected at ``missing``, a candidate at ``as_candidate``."""
    fr = [frame([] if t in missing else [walk(t)], t=t) for t in range(t0, t1)]
    cands = [frame([walk(t)] if t in as_candidate else [], t=t) for t in range(t0, t1)]
    counts = [len(f["inst_id"]) for f in fr]
    part = np.stack([np.where(f["instance"] > 0, 5, 0) for f in fr]).astype(np.uint8)
    cpart = np.stack([np.where(c["instance"] > 0, 9, 0) for c in cands]).astype(np.uint8)
    cinst = np.stack([c["instance"] for c in cands]).astype(np.uint8)
    cn = [len(c["inst_id"]) for c in cands]
    cand = from_maps(cpart, cinst, np.array(cn), np.full(sum(cn), 0.05, np.float32), np.zeros((sum(cn), 0), np.float16), C)
    cand["cand_part_rgb"] = np.concatenate([c["inst_part_rgb"] for c in cands])  # the colours the tracker compares
    cand["cand_part_area"] = np.concatenate([c["inst_part_area"] for c in cands])
    n = t1 - t0
    return ParsingBatch(part=part, instance=np.stack([f["instance"] for f in fr]), frame_index=np.arange(t0, t1), pts=np.arange(t0, t1),
                        time=np.arange(t0, t1) / 10, wallclock=np.zeros(n), segment=np.zeros(n, np.uint16),
                        inst_offset=np.concatenate([[0], np.cumsum(counts)]),
                        **{k: np.concatenate([f[k] for f in fr]) for k in KEYS}, cand=cand)


def write(path, batches, tracker=None):
    from streamparse.store.sink import ZarrSink

    attrs = {"model_name": "m", "class_names": NAMES}
    if tracker is not None:
        attrs["tracker"] = {"name": tracker.name, "params": tracker.params()}
    with ZarrSink(path, mode="create", root_attrs=attrs, chunk_frames=4) as sink:
        w = sink.source("cam", {"uri": "x"}, (H, W), NAMES, embedding_dim=0, tracker=tracker)
        seq = 0
        for b in batches:
            w.add_batch(seq, b)
            seq += len(b)
        w.flush()
        w.set_status(state="complete", complete=True)
    return path


@pytest.fixture
def recovered_store(tmp_path):
    """12 frames; the person is only a low-score candidate in frames 5 and 6: recovered online."""
    return write(tmp_path / "o.zarr", [batch(0, 6, missing=(5,), as_candidate=(5,)), batch(6, 12, missing=(6,), as_candidate=(6,))],
                 tracker=Tracker())


def test_the_sink_writes_recovered_rows_and_readers_filter_them(recovered_store, tmp_path):
    from streamparse.results import open_result
    from streamparse.store.sink import verify_store

    assert verify_store(recovered_store).ok
    g = zarr.open_group(str(recovered_store / "cam"), mode="r")
    assert g["inst_origin"][:].tolist() == [0] * 5 + [1, 1] + [0] * 5 and set(g["inst_track"][1:].tolist()) == {1}
    assert g["cand_offset"][:].tolist() == [0] * 6 + [1] + [2] * 5 and int(g["cand_instance"][5].max()) == 1  # candidates kept
    assert dict(g.attrs["status"])["candidates_written"] == 2
    assert (g["instance"][5] == 1).sum() == g["inst_area"][5] > 0 and (g["part"][5][g["instance"][5] == 1] == 9).all()
    res = open_result(recovered_store)
    df = res.instances("cam")
    assert df["origin"].tolist() == ["detected"] * 5 + ["recovered"] * 2 + ["detected"] * 5
    assert len(res.instances("cam", origin="detected")) == 10 and len(res.instances("cam", origin=["recovered", 2])) == 2
    assert res.frame("cam", 5, origin="detected").instance.max() == 0 and res.frame("cam", 5).instance.max() == 1
    assert res.tracks("cam", origin="detected")["frames"].tolist() == [9] and res.tracks("cam")["frames"].tolist() == [11]
    with pytest.raises(ValueError, match="unknown origin"):
        res.instances("cam", origin="guessed")
    # exports: the detected people by default, every row on request
    from streamparse.exports import export_labels

    for origin, n in (("detected", 10), (None, 12)):
        out = tmp_path / f"coco_{origin}"
        out.mkdir()
        export_labels(res, "coco", out, origin=origin)
        anns = json.loads((out / "annotations.json").read_text())["annotations"]
        assert len(anns) == n


def test_an_older_v2_store_reads_as_all_detected(tmp_path, capsys):
    from streamparse.results import open_result
    from streamparse.store.schema import V2_LATER
    from streamparse.store.sink import SinkError, ZarrSink, verify_store

    store = write(tmp_path / "old.zarr", [batch(0, 8)], tracker=Tracker())
    root = zarr.open_group(str(store), mode="r+")
    for name in V2_LATER:  # what streamparse wrote before inst_origin and the candidates
        del root["cam"][name]
    assert verify_store(store).ok
    res = open_result(store)
    assert res.origins("cam").tolist() == [0] * 8 and set(res.instances("cam")["origin"]) == {"detected"}
    from streamparse.cli import main

    assert main(["track", str(store)]) == 0  # re-tracking works (no candidates)
    with pytest.raises(SinkError, match="written by an earlier streamparse without (inst_origin|cand_)"):
        with ZarrSink(store, mode="resume", root_attrs={"model_name": "m", "class_names": NAMES}) as sink:
            sink.source("cam", {"uri": "x"}, (H, W), NAMES, embedding_dim=0)


def test_track_offline_adds_interpolated_rows_and_never_touches_the_detected(tmp_path, capsys):
    from streamparse.cli import main
    from streamparse.store.sink import verify_store

    store = write(tmp_path / "o.zarr", [batch(0, 12, missing=(5, 6))], tracker=Tracker())
    g = zarr.open_group(str(store / "cam"), mode="r")
    before = {k: g[k][:] for k in ("instance", "part", "inst_id", "inst_bbox", "inst_score")}
    assert main(["track", str(store), "--set", "track.interp_frames=4"]) == 0
    assert "2 interpolated" in capsys.readouterr().out
    g = zarr.open_group(str(store / "cam"), mode="r")
    origin = g["inst_origin"][:]
    assert origin.tolist() == [0] * 5 + [2, 2] + [0] * 5 and set(g["inst_track"][:].tolist()) == {1}
    assert zarr.open_group(str(store), mode="r").attrs["tracker"]["mode"] == "offline"
    det = origin == 0
    for k in ("inst_id", "inst_bbox", "inst_score"):
        np.testing.assert_array_equal(g[k][:][det], before[k])
    shown = before["instance"] > 0
    np.testing.assert_array_equal(g["instance"][:][shown], before["instance"][shown])
    assert (g["instance"][5] == 1).sum() > 0 and (g["part"][5][g["instance"][5] == 1] == 5).all()  # moved from frame 4
    assert verify_store(store).ok
    snap = snapshot(store)
    assert main(["track", str(store), "--set", "track.interp_frames=4"]) == 0  # idempotent
    assert {k: v for k, v in snapshot(store).items() if "zarr.json" not in k} == {k: v for k, v in snap.items() if "zarr.json" not in k}
    assert main(["track", str(store), "--online"]) == 0  # back to what the run gave
    assert zarr.open_group(str(store / "cam"), mode="r")["inst_origin"][:].tolist() == [0] * 10


@pytest.mark.parametrize("args", [["--set", "track.interp_frames=-1"], ["--set", "track.recover_iou=2"],
                                  ["--set", "track.nope=1"], ["--source", "nope"]])
def test_track_bad_input_is_one_line_and_rewrites_nothing(tmp_path, capsys, args):
    from streamparse.cli import main

    store = write(tmp_path / "o.zarr", [batch(0, 8, missing=(4,))], tracker=Tracker())
    snap = snapshot(store)
    assert main(["track", str(store), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert snapshot(store) == snap


def test_an_interrupted_rewrite_is_reported_and_finished_by_the_next_track(tmp_path, monkeypatch, capsys):
    import os

    from streamparse.cli import main
    from streamparse.store.sink import verify_store

    store = write(tmp_path / "o.zarr", [batch(0, 12, missing=(5, 6))], tracker=Tracker())
    real, calls = os.replace, []

    def dies_midway(a, b):  # SIGKILL after the first array of the table was swapped in
        calls.append(a)
        if len([c for c in calls if str(c).endswith(".next")]) == 2:
            raise KeyboardInterrupt
        return real(a, b)

    monkeypatch.setattr(os, "replace", dies_midway)
    assert main(["track", str(store), "--set", "track.interp_frames=4"]) == 130
    monkeypatch.setattr(os, "replace", real)
    (store / ".streamparse.lock").unlink(missing_ok=True)
    rep = verify_store(store)
    assert not rep.ok and "interrupted" in rep.first_problem()
    assert main(["track", str(store), "--set", "track.interp_frames=4"]) == 0
    assert "finished an interrupted" in capsys.readouterr().out
    assert verify_store(store).ok
    assert zarr.open_group(str(store / "cam"), mode="r")["inst_origin"][:].tolist() == [0] * 5 + [2, 2] + [0] * 5


def test_resume_from_the_marker_gives_the_same_recovered_rows(tmp_path):
    """A writer stopped after its first chunks (its tracker state in the commit marker) and resumed gives the
    same store as an uninterrupted one, the recovered rows and their pixels included."""
    from streamparse.store.sink import ZarrSink

    parts = [batch(0, 4), batch(4, 8, missing=(5, 6), as_candidate=(5, 6)), batch(8, 12)]
    ref = write(tmp_path / "ref.zarr", parts, tracker=Tracker())
    out = tmp_path / "cut.zarr"
    attrs = {"model_name": "m", "class_names": NAMES, "tracker": {"name": Tracker.name, "params": Tracker().params()}}
    with ZarrSink(out, mode="create", root_attrs=attrs, chunk_frames=4) as sink:  # the first chunk only
        sink.source("cam", {"uri": "x"}, (H, W), NAMES, embedding_dim=0, tracker=Tracker()).add_batch(0, parts[0])
    with ZarrSink(out, mode="resume", root_attrs=attrs, chunk_frames=4) as sink:
        w = sink.source("cam", {"uri": "x"}, (H, W), NAMES, embedding_dim=0, tracker=Tracker())
        assert w.next_seq == 4
        w.add_batch(4, parts[1])
        w.add_batch(8, parts[2])
    a, b = zarr.open_group(str(ref / "cam"), mode="r"), zarr.open_group(str(out / "cam"), mode="r")
    assert b["inst_origin"][:].tolist().count(1) == 2
    for name in ("part", "instance", "inst_offset", "inst_id", "inst_track", "inst_origin", "inst_area", "cand_offset",
                 "cand_instance"):
        np.testing.assert_array_equal(a[name][:], b[name][:], err_msg=name)
