"""`streamparse archive` / `submit` / `status` on a real two-node Ray cluster on loopback (the head with
the job server, a second node with its own CPUs; ``raycluster.LoopbackCluster``, stopped by the fixture
by killing only its own processes).

- submit 6 short videos of different sizes + a corrupt and a zero-byte file: the good stores equal
  `streamparse run` on each video, the bad ones are failed in the index and the report, exit code 1;
- stop the job (the Job SDK's ``stop_job``, what ``ray job stop`` calls) and SIGKILL its driver
  mid-way, resubmit: the final stores equal the uninterrupted run, and every video continued from its
  commit marker (none processed twice past it); a second job on the same OUTDIR is refused meanwhile;
- kill the second node while it holds videos: they finish on the head, nothing lost or duplicated.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zarr

from archive_helpers import ENV, TINY, assert_groups_equal, open_group, set_args
from videos import make_video

# ~4 min together on 2 shared cores (a cluster start, 4 archive jobs): slow; tests/test_archive_cli.py
# covers the same pipeline on the local Ray in the default run
pytestmark = [pytest.mark.ray, pytest.mark.slow]

CFG = TINY + ["model.input_size=[96,96]"]
GOOD = {"a": (60, 48, 64), "b": (90, 64, 80), "c": (40, 32, 48), "d": (120, 48, 64), "e": (75, 72, 96), "f": (50, 40, 56)}
BAD = {"zz_bad": "not a video", "zz_zero": "empty file"}


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "streamparse", *args], capture_output=True, text=True, env=ENV, timeout=timeout)


@pytest.fixture(scope="module")
def cluster():
    from raycluster import LoopbackCluster

    c = LoopbackCluster(head_cpus=2, node_cpus=1)
    yield c
    c.stop()


@pytest.fixture(scope="module")
def vids(tmp_path_factory):
    d = tmp_path_factory.mktemp("vids")
    for name, (n, h, w) in GOOD.items():
        make_video(d / f"{name}.mp4", n=n, h=h, w=w)
    (d / "zz_bad.mp4").write_bytes(b"\x1a\x45\xdf\xa3 this is not a video" * 40)
    (d / "zz_zero.mp4").write_bytes(b"")
    return d


def archive_args(vids, out, *extra):
    return ["--", "archive", str(vids), "--out", str(out), "--checkpoint", "none", "--no-progress", *set_args(CFG), *extra]


def submit(cluster, vids, out, *extra, follow=True, timeout=300):
    return cli("submit", "--address", cluster.address, "--python", sys.executable, *(["--follow"] if follow else []),
               *archive_args(vids, out, *extra), timeout=timeout)


def last_lines(out: Path) -> dict:
    recs = [json.loads(x) for x in (out / "index.jsonl").read_text().splitlines() if x.strip()]
    return {r["video_id"]: r for r in recs}


def markers(out: Path) -> dict:
    """video_id -> (frames committed, complete) of every store in OUTDIR now."""
    res = {}
    for name in GOOD:
        try:
            st = dict(zarr.open_group(str(out / f"{name}.zarr" / name), mode="r").attrs)["status"]
            res[name] = (int(st["frames_written"]), bool(st.get("complete")))
        except Exception:  # noqa: BLE001 - not created yet
            res[name] = (0, False)
    return res


@pytest.fixture(scope="module")
def reference(cluster, vids, tmp_path_factory):
    """The uninterrupted archive, submitted as a Ray job, and `streamparse run` of the good videos."""
    d = tmp_path_factory.mktemp("ref")
    out = d / "arc"
    r = submit(cluster, vids, out, "--report", str(out / "report.json"))
    run = cli("run", *[str(vids / f"{n}.mp4") for n in GOOD], "--out", str(d / "run.zarr"), "--checkpoint", "none",
              "--no-progress", *set_args(CFG))
    return {"out": out, "submit": r, "run": d / "run.zarr", "run_proc": run}


def test_submit_equals_run_and_reports_bad_videos(reference):
    r = reference["submit"]
    assert r.returncode == 1, (r.stdout[-3000:], r.stderr[-3000:])  # two videos failed
    job_id = r.stdout.splitlines()[0].strip()
    assert job_id.startswith("raysubmit_") and "6 complete" in r.stdout and "2 failed" in r.stdout
    assert reference["run_proc"].returncode == 0, reference["run_proc"].stderr[-2000:]
    out = reference["out"]
    for name in GOOD:
        assert_groups_equal(open_group(out / f"{name}.zarr", name), open_group(reference["run"], name), what=name)
        assert not (out / f"{name}.zarr" / ".streamparse.lock").exists()
    last = last_lines(out)
    rep = json.loads((out / "report.json").read_text())
    rows = {x["video_id"]: x for x in rep["videos"]}
    for name, msg in BAD.items():
        assert last[name]["state"] == "failed" and msg in last[name]["errors"][0], last[name]
        assert rows[name]["state"] == "failed" and msg in rows[name]["errors"][0]
        assert not (out / f"{name}.zarr").exists()
    for name, (n, _, _) in GOOD.items():
        assert last[name]["state"] == "complete" and last[name]["frames"] == n and last[name]["input"]["sha256_1mb"]
        assert rows[name]["frames"] == n and rows[name]["fps"] > 0
    assert rep["generator"].startswith("streamparse") and rep["counts"]["complete"] == 6 and rep["pool"]["actors"] == 3
    from streamparse.results import open_archive

    arc = open_archive(out)
    assert len(arc) == 8 and arc["b"].num_frames("b") == GOOD["b"][0]
    st = cli("status", str(out))
    assert st.returncode == 0 and "complete 6" in st.stdout and "failed 2" in st.stdout and "not running" in st.stdout, st.stdout


def wait_for(cond, timeout_s=120.0, step=0.02):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(step)
    return None


def mid_video(out: Path, done_before: set) -> str | None:
    """A video that has committed frames but is not complete, while another one is complete."""
    m = markers(out)
    if not any(c for _, c in m.values() if c) and not done_before:
        return None
    return next((k for k, (n, c) in m.items() if n >= 1 and not c), None)


def wait_unlocked(out: Path) -> None:
    """Until no store lock in OUTDIR names a live process (the killed job's tasks are gone)."""
    from streamparse.store.lock import _pid_alive

    def free():
        for lk in out.glob("*.zarr/.streamparse.lock"):
            try:
                if _pid_alive(int(json.loads(lk.read_text())["pid"])):
                    return False
            except (OSError, ValueError, KeyError):
                pass
        return True

    assert wait_for(free, 60, 0.2)


def test_stop_and_sigkill_then_resubmit_continue_from_commit_markers(cluster, vids, reference, tmp_path):
    out = tmp_path / "arc"
    client = cluster.client()
    slow = ["--concurrency", "1", "--workers", "1"]
    kills = []  # (index lines before the next run, markers after the kill)
    for how in ("stop", "sigkill"):
        r = submit(cluster, vids, out, "--resume", *slow, follow=False)
        assert r.returncode == 0, r.stderr
        jid = r.stdout.splitlines()[0].strip()
        done_before = {k for k, (_, c) in markers(out).items() if c}
        vid = wait_for(lambda: mid_video(out, done_before), 180)
        assert vid, f"the job never was mid-way: {client.get_job_logs(jid)[-2000:]}"
        if how == "stop":
            # a second archive job on the same OUTDIR is refused with one line while this one writes
            second = cli("archive", str(vids), "--out", str(out), "--resume", "--checkpoint", "none", *set_args(CFG))
            assert second.returncode == 2 and "being written by another archive job" in second.stderr, second.stderr
            assert len(second.stderr.strip().splitlines()) == 1
            live = cli("status", str(out))
            assert "job: running" in live.stdout, live.stdout
            client.stop_job(jid)
        else:
            pid = wait_for(lambda: getattr(client.get_job_info(jid).driver_info, "pid", None), 30)
            os.kill(int(pid), signal.SIGKILL)
        assert wait_for(lambda: client.get_job_status(jid).is_terminal(), 60)
        wait_unlocked(out)
        kills.append((len((out / "index.jsonl").read_text().splitlines()), markers(out)))
        assert not all(c for _, c in kills[-1][1].values()), "the archive finished before it was killed"
    r = submit(cluster, vids, out, "--resume", "--report", str(tmp_path / "rep.json"))
    assert r.returncode == 1, (r.stdout[-2000:], r.stderr[-2000:])
    for name in GOOD:  # identical to the uninterrupted archive
        assert_groups_equal(open_group(out / f"{name}.zarr", name), open_group(reference["out"] / f"{name}.zarr", name), what=name)
    recs = [json.loads(x) for x in (out / "index.jsonl").read_text().splitlines()]
    (_, first), (_, second) = kills
    for name in GOOD:  # a commit marker never goes back: no attempt restarted a video from scratch
        assert second[name][0] >= first[name][0], (name, first[name], second[name])
    for i, ((start, marks), end) in enumerate(zip(kills, [kills[1][0], len(recs)])):
        later = recs[start:end]
        for name, (n, complete) in marks.items():
            mine = [x for x in later if x["video_id"] == name]
            if complete:  # finished before the kill: never dispatched again
                assert not [x for x in mine if x["state"] == "running"], (name, mine)
                continue
            # continued exactly from its commit marker, nothing before it parsed again; an attempt
            # SIGKILLed itself mid-video (the second run) leaves only its 'running' line
            starts = [x["start_frame"] for x in mine if x["state"] in ("complete", "pending") and "start_frame" in x]
            if starts or i == len(kills) - 1:
                assert starts and starts[0] == n, (name, n, mine)
    rows = {x["video_id"]: x for x in json.loads((tmp_path / "rep.json").read_text())["videos"]}
    assert sum(1 for x in rows.values() if x["action"] == "skipped") >= 1


def test_lost_node_videos_finish_on_the_head(cluster, vids, reference, tmp_path):
    out = tmp_path / "arc"
    proc = subprocess.Popen([sys.executable, "-m", "streamparse", "submit", "--address", cluster.address, "--python",
                             sys.executable, "--follow", *archive_args(vids, out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        def on_node2():  # a store being written by a worker of the second node, with committed frames
            for lk in out.glob("*.zarr/.streamparse.lock"):
                try:
                    pid = int(json.loads(lk.read_text())["pid"])
                except (OSError, ValueError, KeyError):
                    continue
                name = lk.parent.name[:-5]
                n, c = markers(out).get(name, (0, False))
                if cluster.on_node2(pid) and n >= 1 and not c:
                    return name
            return None

        held = wait_for(on_node2, 240, 0.01)
        assert held, "no video ever ran on the second node"
        at = markers(out)[held][0]
        cluster.kill_node2()
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, (stdout[-2000:], stderr[-2000:])
    last = last_lines(out)
    for name in GOOD:  # nothing lost, nothing duplicated
        assert_groups_equal(open_group(out / f"{name}.zarr", name), open_group(reference["out"] / f"{name}.zarr", name), what=name)
        assert last[name]["state"] == "complete" and last[name]["node"] != cluster.node2_id
    assert last[held]["start_frame"] >= at > 0  # the retry continued from the commit marker
