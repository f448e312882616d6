"""Archive inputs and the resume decisions, without Ray: INPUT expansion (files, folders, globs,
manifests, unique ids), input identity, index.jsonl parsing and appends (atomic whole lines, last line
wins), ``plan_videos`` (skip / continue / fresh / quarantined) and the model key."""

from __future__ import annotations

import json
import multiprocessing as mp
import os

import pytest

from streamparse.archive.resume import model_key, plan_videos, record
from streamparse.store.index import IndexState, parse_index
from streamparse.archive.outdir import INDEX, LocalOutdir
from streamparse.archive.inputs import InputError, expand_inputs, input_identity, same_input, stat_identity


def touch(p, data=b"x"):
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


@pytest.fixture
def tree(tmp_path):
    d = tmp_path / "arc"
    for rel in ("a.mp4", "sub/b.mkv", "sub/deeper/c.MOV", "sub/notes.txt", ".hidden/h.mp4", "other/a.mp4", "sub/.d.mp4"):
        touch(d / rel)
    return d


def ids(videos):
    return [v.video_id for v in videos]


def test_expand_files_dirs_globs_and_unique_ids(tree, tmp_path):
    vids = expand_inputs([str(tree)])
    assert [os.path.relpath(v.uri, tree) for v in vids] == ["a.mp4", "other/a.mp4", "sub/b.mkv", "sub/deeper/c.MOV"]
    assert ids(vids) == ["a", "a_2", "b", "c"]  # stems, numbered on collision, hidden files and folders skipped
    assert all(os.path.isabs(v.uri) for v in vids)
    # a glob, a file named twice (once through a glob): taken once
    vids = expand_inputs([str(tree / "sub" / "**" / "*.m*"), str(tree / "sub" / "b.mkv"), str(tree / "a.mp4")])
    assert ids(vids) == ["b", "a"]
    with pytest.raises(InputError, match="no video matches"):
        expand_inputs([str(tree / "*.avi")])
    with pytest.raises(InputError, match="input not found"):
        expand_inputs([str(tmp_path / "missing.mp4")])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no video files"):
        expand_inputs([str(empty)])


def test_manifests(tree, tmp_path):
    txt = tmp_path / "list.txt"
    txt.write_text(f"# my videos\n{tree}/a.mp4\n\nfile://{tree}/sub/b.mkv\narc/other/a.mp4\n")
    assert ids(expand_inputs([str(txt)])) == ["a", "b", "a_2"]  # relative lines: relative to the manifest
    jl = tmp_path / "list.jsonl"
    jl.write_text("\n".join(json.dumps(x) for x in [{"uri": f"{tree}/a.mp4", "id": "cam 1/day 2"},
                                                     {"uri": f"{tree}/other/a.mp4"},
                                                     {"uri": f"{tree}/sub/b.mkv", "id": "a"}]) + "\n")
    vids = expand_inputs([str(jl)])
    assert ids(vids) == ["cam_1_day_2", "a_2", "a"]  # manifest ids are sanitized and reserved first
    for bad, msg in [('{"id": "x"}', "uri"), ("not json", "not a JSON object"), (json.dumps({"uri": "nope.mp4"}), "file not found"),
                     (json.dumps({"uri": f"{tree}/a.mp4", "id": 3}), "id")]:
        jl.write_text(bad + "\n")
        with pytest.raises(InputError, match=msg):
            expand_inputs([str(jl)])
    jl.write_text(json.dumps({"uri": f"{tree}/a.mp4", "id": "x"}) + "\n" + json.dumps({"uri": f"{tree}/sub/b.mkv", "id": "x"}) + "\n")
    with pytest.raises(InputError, match="also used"):
        expand_inputs([str(jl)])
    with pytest.raises(InputError, match="URLs"):
        expand_inputs(["s3://bucket/video.mp4"])


def test_input_identity(tmp_path):
    p = touch(tmp_path / "v.mp4", b"a" * (2 << 20))
    a = input_identity(str(p))
    assert set(a) == {"size", "mtime", "sha256_1mb"} and a["size"] == 2 << 20
    assert same_input(a, input_identity(str(p)))
    with open(p, "r+b") as f:  # same size, same mtime, other content in the first MiB
        f.write(b"b")
    os.utime(p, ns=(a["mtime"], a["mtime"]))
    b = input_identity(str(p))
    assert same_input(a, b, head=False) and not same_input(a, b)
    assert input_identity(str(tmp_path / "missing")) == {} and stat_identity(str(tmp_path / "missing")) == {}
    assert not same_input({}, a)


def test_model_key_depends_on_model_not_on_batching():
    base = {"model_name": "m", "checkpoint_sha256": "abc", "config": {"model": {"input_size": [256, 448]}, "track": {"enabled": True},
                                                                       "pipeline": {"batch_size": 4, "max_frames": 0}}}
    k = model_key(base)
    other_batch = json.loads(json.dumps(base))
    other_batch["config"]["pipeline"]["batch_size"] = 8
    assert model_key(other_batch) == k
    for path, value in [(("checkpoint_sha256",), "def"), (("config", "model", "input_size"), [512, 896]),
                        (("config", "track", "enabled"), False), (("config", "pipeline", "max_frames"), 10)]:
        d = json.loads(json.dumps(base))
        tgt = d
        for p in path[:-1]:
            tgt = tgt[p]
        tgt[path[-1]] = value
        assert model_key(d) != k, path


def test_index_appends_whole_lines_and_last_line_wins(tmp_path):
    out = LocalOutdir(tmp_path / "o")
    out.path.mkdir()
    vids = expand_inputs([str(touch(tmp_path / "v" / "a.mp4")), str(touch(tmp_path / "v" / "b.mp4"))])

    def writer(i):
        od = LocalOutdir(tmp_path / "o")
        od.append_index([record(vids[i % 2], "running", attempt=i, note="x" * 3000) for _ in range(20)])
        od.close()

    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=writer, args=(i,)) for i in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    text = (tmp_path / "o" / INDEX).read_text()
    lines = text.splitlines()
    assert len(lines) == 120 and all(json.loads(ln)["note"] == "x" * 3000 for ln in lines)  # never interleaved
    out.append_index([record(vids[0], "complete", frames=7)])
    with open(tmp_path / "o" / INDEX, "a") as f:
        f.write('{"video_id": "b", "state": "comp')  # a writer killed mid-line
    st = parse_index((tmp_path / "o" / INDEX).read_text())
    assert st.last["a"]["state"] == "complete" and st.last["a"]["frames"] == 7
    assert st.last["b"]["state"] == "running" and st.bad_lines == 1
    assert st.attempts("a") == 60
    # the reader of the layout agrees
    from streamparse.results import open_archive

    (tmp_path / "o" / "archive.json").write_text("{}")
    arc = open_archive(tmp_path / "o")
    assert arc.index.set_index("video_id").loc["a", "state"] == "complete"


def _idx(*recs) -> IndexState:
    from streamparse.store.index import encode

    return parse_index(encode(list(recs)).decode())


def test_plan_videos(tmp_path):
    vids = expand_inputs([str(touch(tmp_path / f"{n}.mp4", n.encode())) for n in ("new", "done", "part", "moved", "remodel", "bad", "quar")])
    v = {x.video_id: x for x in vids}
    stats = {x.video_id: stat_identity(x.uri) for x in vids}
    key = "k1"
    touch(tmp_path / "moved.mp4", b"changed!")
    stale = dict(stats["moved"], size=1)
    idx = _idx(record(v["done"], "complete", input=stats["done"], model_key=key, frames=5),
               record(v["part"], "running", input=stats["part"], model_key=key),
               record(v["moved"], "complete", input=stale, model_key=key),
               record(v["remodel"], "complete", input=stats["remodel"], model_key="k0"),
               record(v["bad"], "failed", input=stats["bad"], model_key=key, errors=["boom"]),
               record(v["quar"], "quarantined", input=stats["quar"], model_key=key, errors=["bad codec"]))
    checked = []

    def verify(video, last):
        checked.append(video.video_id)
        return True

    ds = {d.video.video_id: d for d in plan_videos(vids, idx, key=key, stats=stats, verify_complete=verify)}
    got = {k: (d.action, d.reason) for k, d in ds.items()}
    assert got == {"new": ("process", "new"), "done": ("skip", "complete"), "part": ("process", "continue"),
                   "moved": ("process", "input changed"), "remodel": ("process", "model changed"),
                   "bad": ("process", "retry"), "quar": ("quarantined", "bad codec")}
    assert checked == ["done"]  # only a video about to be skipped pays the costly checks
    ds = plan_videos(vids, idx, key=key, stats=stats, verify_complete=lambda *a: False, retry_quarantined=True)
    assert {d.video.video_id: d.action for d in ds}["done"] == "process"
    assert {d.video.video_id: d.reason for d in ds}["quar"] == "retry"
    assert idx.same_failures("bad", "boom", key) == 1 and idx.same_failures("bad", "other", key) == 0
