"""`streamparse archive` / `status` on the local Ray, each a real process on real videos and stores.

One OUTDIR goes through a user's sequence: the first archive (a folder, a glob and a .jsonl manifest;
status polled while it runs; a second archive on it refused meanwhile) -> `--resume` (finished videos skipped, the same failure twice ->
quarantined) -> `--resume` with another checkpoint (every video reprocessed into a fresh store, never
mixed; said in the report). Then: an archive to ``s3://`` on a local moto server read back by xarray
through fsspec, and a foreign OUTDIR refused untouched.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from archive_helpers import ENV, TINY, assert_groups_equal, open_group, set_args
from videos import make_video

pytestmark = pytest.mark.ray

CFG = TINY + ["model.input_size=[96,96]"]
VIDS = {"a": 24, "b": 36, "c": 20, "x": 28}  # x comes through the manifest, as id "xid"


def cli(*args, timeout=300, env=None):
    return subprocess.run([sys.executable, "-m", "streamparse", *args], capture_output=True, text=True, env=env or ENV,
                          timeout=timeout)


def save_tiny(path: Path, seed: int) -> Path:
    import torch

    from streamparse.checkpoint import save_checkpoint
    from streamparse.models import build_model

    torch.manual_seed(seed)
    return save_checkpoint(path, build_model("uniparser_tiny", num_classes=20), model_name="uniparser_tiny",
                           model_kwargs={"num_classes": 20}, class_names=[f"c{i}" for i in range(20)])


def last_lines(out: Path) -> dict:
    recs = [json.loads(x) for x in (out / "index.jsonl").read_text().splitlines() if x.strip()]
    return {r["video_id"]: r for r in recs}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    (d / "folder" / "sub").mkdir(parents=True)
    make_video(d / "folder" / "a.mp4", n=VIDS["a"], h=48, w=64)
    make_video(d / "folder" / "sub" / "b.mp4", n=VIDS["b"], h=64, w=80)
    (d / "folder" / "bad.mp4").write_bytes(b"\x00\x00 not a video at all" * 30)
    (d / "folder" / "notes.txt").write_text("not a video: ignored by the folder walk")
    (d / "globbed").mkdir()
    make_video(d / "globbed" / "c.mp4", n=VIDS["c"], h=48, w=64)
    make_video(d / "x.mp4", n=VIDS["x"], h=40, w=56)
    (d / "list.jsonl").write_text(json.dumps({"uri": str(d / "x.mp4"), "id": "xid"}) + "\n")
    ck1, ck2 = save_tiny(d / "ck1.pt", 1), save_tiny(d / "ck2.pt", 2)
    inputs = [str(d / "folder"), str(d / "globbed" / "*.mp4"), str(d / "list.jsonl")]
    return {"dir": d, "inputs": inputs, "ck1": ck1, "ck2": ck2, "out": d / "arc"}


def archive_cmd(assets, *extra, checkpoint="ck1"):
    return ["archive", *assets["inputs"], "--out", str(assets["out"]), "--checkpoint", str(assets[checkpoint]),
            "--no-progress", "--quarantine-after", "2", *set_args(CFG), *extra]


@pytest.fixture(scope="module")
def first(assets):
    """The first archive, one video at a time, its status read while it runs; and `streamparse run`
    of the same videos (the reference)."""
    from streamparse.commands.status import archive_status, format_status

    out = assets["out"]
    proc = subprocess.Popen([sys.executable, "-m", "streamparse", *archive_cmd(assets, "--concurrency", "1", "--report",
                                                                              str(assets["dir"] / "r1.json"))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    live, second = [], None
    try:
        while proc.poll() is None:
            try:
                s = archive_status(str(out))
            except (FileNotFoundError, ValueError):
                s = None
            if s and s["live"]:
                live.append((s, format_status(s)))
                if second is None:  # a second archive on the same OUTDIR while this one writes
                    second = cli(*archive_cmd(assets, "--resume"))
            time.sleep(0.1)
        stdout, stderr = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    d = assets["dir"]
    run = cli("run", str(d / "folder" / "a.mp4"), str(d / "folder" / "sub" / "b.mp4"), str(d / "globbed" / "c.mp4"),
              str(d / "x.mp4"), "--out", str(d / "run.zarr"), "--checkpoint", str(assets["ck1"]), "--no-progress", *set_args(CFG))
    done = cli("status", str(out))
    return {"proc": proc, "stdout": stdout, "stderr": stderr, "live": live, "second": second, "run": run, "status": done,
            "report": json.loads((d / "r1.json").read_text())}


def test_archive_of_folder_glob_manifest_equals_run(assets, first):
    assert first["proc"].returncode == 1, first["stderr"][-3000:]  # bad.mp4 failed
    assert first["run"].returncode == 0, first["run"].stderr[-2000:]
    out = assets["out"]
    for vid, src in (("a", "a"), ("b", "b"), ("c", "c"), ("xid", "x")):
        assert_groups_equal(open_group(out / f"{vid}.zarr", vid), open_group(assets["dir"] / "run.zarr", src), what=vid)
    rows = {r["video_id"]: r for r in first["report"]["videos"]}
    assert sorted(rows) == ["a", "b", "bad", "c", "xid"]  # notes.txt is no video
    assert rows["bad"]["state"] == "failed" and rows["bad"]["errors"] and not (out / "bad.zarr").exists()
    assert "1 failed" in first["stdout"] and "4 complete" in first["stdout"] and "bad" in first["stdout"]
    assert sorted(json.loads((out / ".streamparse-output.json").read_text())["files"]) == ["archive.json", "index.jsonl"]
    arc = json.loads((out / "archive.json").read_text())
    assert arc["generator"].startswith("streamparse") and arc["checkpoint_sha256"] == first["report"]["checkpoint_sha256"]


def test_status_while_running_and_after(first):
    live = first["live"]
    assert live, "status never saw the job running"
    s, text = next(((s, t) for s, t in live if s["counts"]["complete"] >= 1 and s["counts"]["running"] == 1
                    and s["counts"]["pending"] >= 1 and s["eta_s"] is not None), (None, None))
    assert s, [x[1] for x in live][-3:]
    assert "job: running" in text and "pending" in text and "ETA" in text and "running: " in text
    assert s["fps"] is None or s["fps"] > 0
    done = first["status"]
    assert done.returncode == 0, done.stderr
    assert "not running" in done.stdout and "complete 4" in done.stdout and "failed 1" in done.stdout and "pending 0" in done.stdout
    assert "fps in the last session" in done.stdout and "failed: bad:" in done.stdout


def test_second_live_job_on_the_same_outdir_refused(first):
    r = first["second"]
    assert r is not None, "the first archive was never seen running"
    assert r.returncode == 2 and "being written by another archive job" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def second(assets, first):
    """--resume: the 4 finished videos are skipped (their stores untouched); bad.mp4 fails the same
    way again and is quarantined (--quarantine-after 2)."""
    out = assets["out"]
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.zarr/*/zarr.json")}
    r = cli(*archive_cmd(assets, "--resume", "--report", str(assets["dir"] / "r2.json")))
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("*.zarr/*/zarr.json")}
    return {"proc": r, "report": json.loads((assets["dir"] / "r2.json").read_text()), "same_mtimes": before == after}


def test_resume_skips_complete_and_quarantines_repeated_failure(assets, second):
    r, rep = second["proc"], second["report"]
    assert r.returncode == 1, r.stderr[-2000:]
    rows = {x["video_id"]: x for x in rep["videos"]}
    for vid in ("a", "b", "c", "xid"):
        assert rows[vid]["action"] == "skipped" and rows[vid]["frames_new"] == 0, rows[vid]
    assert second["same_mtimes"]
    assert rows["bad"]["state"] == "quarantined" and rows["bad"]["errors"] and "quarantined" in rows["bad"]["note"]
    assert rep["counts"]["quarantined"] == 1 and "quarantined: bad:" in r.stdout
    assert last_lines(assets["out"])["bad"]["state"] == "quarantined"
    # a third --resume leaves the quarantined video alone (listed, not retried)
    again = cli(*archive_cmd(assets, "--resume"))
    assert again.returncode == 1 and "quarantined: bad:" in again.stdout and "0 frame(s) parsed" in again.stdout, again.stdout


def test_changed_checkpoint_reprocesses_into_fresh_stores(assets, second):
    out = assets["out"]
    old = {v: np.asarray(open_group(out / f"{v}.zarr", v)["part"][:]) for v in ("a", "b")}
    rep_path = assets["dir"] / "r3.json"
    r = cli(*archive_cmd(assets, "--resume", "--report", str(rep_path), checkpoint="ck2"))
    assert r.returncode == 1, r.stderr[-2000:]  # bad.mp4 fails again (a new model: tried again)
    rep = json.loads(rep_path.read_text())
    from streamparse.checkpoint import sha256_file

    sha2 = sha256_file(assets["ck2"])
    assert any("model or its config changed" in n for n in rep["notes"]) and "model or its config changed" in r.stdout
    rows = {x["video_id"]: x for x in rep["videos"]}
    for vid, src in (("a", "a"), ("b", "b"), ("c", "c"), ("xid", "x")):
        row = rows[vid]
        assert row["action"] == "processed" and row["start_frame"] == 0 and row["frames_new"] == VIDS[src], row
        assert "fresh store" in row["note"] and "model" in row["note"]
        root = dict(zarr.open_group(str(out / f"{vid}.zarr"), mode="r").attrs)
        assert root["checkpoint_sha256"] == sha2
        g = open_group(out / f"{vid}.zarr", vid)
        assert g["frame_index"][: VIDS[src]].tolist() == list(range(VIDS[src])) and g["part"].shape[0] == VIDS[src]
    assert any(not np.array_equal(old[v], open_group(out / f"{v}.zarr", v)["part"][:]) for v in old)  # the new weights' output
    arc = json.loads((out / "archive.json").read_text())
    assert arc["checkpoint_sha256"] == sha2 and arc["history"][-1]["checkpoint_sha256"] == sha256_file(assets["ck1"])


def test_outputs_on_s3_read_by_xarray(assets, first):
    xr = pytest.importorskip("xarray")
    pytest.importorskip("moto", reason="S3 tests need moto[server]")
    pytest.importorskip("s3fs", reason="S3 tests need s3fs")
    import fsspec

    from s3local import moto_server

    with moto_server() as so:
        env = {**ENV, "AWS_ACCESS_KEY_ID": so["key"], "AWS_SECRET_ACCESS_KEY": so["secret"], "AWS_ENDPOINT_URL_S3": so["endpoint_url"],
               "AWS_DEFAULT_REGION": "us-east-1"}
        fs = fsspec.filesystem("s3", **{k: so[k] for k in ("key", "secret")}, endpoint_url=so["endpoint_url"])
        fs.mkdir("bkt")
        url = "s3://bkt/runs/arc1"
        d = assets["dir"]
        r = cli("archive", str(d / "folder" / "a.mp4"), str(d / "globbed" / "c.mp4"), "--out", url, "--checkpoint",
                str(assets["ck1"]), "--no-progress", *set_args(CFG), env=env)
        assert r.returncode == 0, r.stderr[-3000:]
        assert sorted(n.rsplit("/", 1)[1] for n in fs.ls("bkt/runs/arc1")) == [".streamparse-output.json", "a.zarr", "archive.json",
                                                                             "c.zarr", "index.jsonl"]
        opts = {"key": so["key"], "secret": so["secret"], "endpoint_url": so["endpoint_url"]}
        for vid in ("a", "c"):
            # through fsspec by URL (zarr 3.1 refuses group= with an FSMap)
            ds = xr.open_zarr(f"{url}/{vid}.zarr", group=vid, consolidated=False, zarr_format=3, storage_options=opts)
            ref = open_group(assets["out"].parent / "run.zarr", vid)  # the local run of the same video (ck1)
            assert ds.sizes["time"] == VIDS[vid] and np.array_equal(ds["part"].values, ref["part"][: VIDS[vid]])
        st = cli("status", url, env=env)
        assert st.returncode == 0 and "complete 2" in st.stdout, st.stdout + st.stderr
        again = cli("archive", str(d / "folder" / "a.mp4"), "--out", url, "--checkpoint", str(assets["ck1"]), "--no-progress",
                    *set_args(CFG), env=env)
        assert again.returncode == 2 and "pass --resume" in again.stderr and len(again.stderr.strip().splitlines()) == 1


def test_foreign_outdir_refused_untouched(assets, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    (out / "old.zarr").mkdir()
    before = sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in out.rglob("*"))
    r = cli("archive", str(assets["dir"] / "x.mp4"), "--out", str(out), "--checkpoint", "none", "--no-progress", *set_args(CFG))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "streamparse did not create" in r.stderr, r.stderr
    assert sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in out.rglob("*")) == before
    r = cli("archive", str(assets["dir"] / "x.mp4"), "--out", str(out), "--resume", "--checkpoint", "none", "--no-progress",
            *set_args(CFG))
    assert r.returncode == 2 and sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in out.rglob("*")) == before
