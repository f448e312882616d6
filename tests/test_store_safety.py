"""Safety of outputs, rules 3-6: full disks and I/O errors, damaged stores, config errors before
anything starts, interrupts at any point. Real files, real processes, a real small file system."""

from __future__ import annotations

import errno
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from faults import faulty_local
from parsing import DIM, batch_of
from streamparse.store.outputs import RESERVE_NAME
from streamparse.store.sink import SinkError, SinkWriteError, ZarrSink, verify_store
from videos import make_video

ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
       "OMP_NUM_THREADS": "1"}
NAMES = ["background", "hair", "face"]
ARRAYS = ("part", "instance", "frame_index", "pts", "time", "inst_offset", "inst_id", "inst_score", "inst_bbox", "inst_area")


def frame(seq: int, h: int = 12, w: int = 16) -> dict:
    rng = np.random.default_rng(seq)
    k = seq % 3
    inst = np.zeros((h, w), np.uint16)
    for j in range(k):
        inst[:, j * 4 : j * 4 + 4] = j + 1
    return {"part": (rng.integers(0, 3, (h, w)) * (inst > 0)).astype(np.uint8), "instance": inst, "frame_index": seq,
            "pts": seq * 100, "time": seq * 0.1, "segment": 0, "wallclock": 1000.0 + seq,
            "inst_score": np.linspace(0.9, 0.5, k).astype(np.float32),
            "inst_bbox": np.array([[j * 4, 0, j * 4 + 4, h] for j in range(k)], np.int32).reshape(-1, 4),
            "inst_area": np.full(k, 4 * h, np.int64)}


def write(path, frames, mode="create", store=None, chunk=4):
    with ZarrSink(path, mode=mode, root_attrs={"model_name": "m", "class_names": NAMES}, chunk_frames=chunk, store=store) as sink:
        w = sink.source("cam", {"uri": "x"}, (12, 16), NAMES, embedding_dim=DIM)
        for seq in frames:
            w.add_batch(seq, batch_of([frame(seq)]))


def assert_same_arrays(a_path, b_path, sid="cam"):
    a, b = zarr.open_group(str(a_path / sid), mode="r"), zarr.open_group(str(b_path / sid), mode="r")
    for name in ARRAYS:
        np.testing.assert_array_equal(a[name][:], b[name][:], err_msg=name)
    sa, sb = dict(a.attrs)["status"], dict(b.attrs)["status"]
    assert (sa["frames_written"], sa["instances_written"]) == (sb["frames_written"], sb["instances_written"])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    ref = tmp_path_factory.mktemp("ref") / "ref.zarr"
    write(ref, range(22))
    return ref


# ----------------------------------------------------------------- rule 3: a write fails mid-run
FAULTS = [
    {"fail_on_chunk": 3, "match": "part/c/"},          # the 3rd chunk of the part map
    {"fail_on_chunk": 2, "match": "instance/c/"},      # part written, instance fails: marker must not move
    {"fail_on_chunk": 2, "match": "inst_score/c/"},    # the instance table
    {"fail_after_bytes": 30000},                       # a full disk after N bytes
    {"fail_on_key": "cam/zarr.json", "err": errno.EIO},  # the commit marker itself (group attributes)
    {"fail_on_chunk": 4, "match": "/c/", "err": errno.EACCES},  # permission lost
]


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items()))
def test_failed_write_keeps_commit_marker_and_resume_equals_uninterrupted(tmp_path, reference, fault):
    out = tmp_path / "o.zarr"
    store = faulty_local(out, reserve=out / RESERVE_NAME, **fault)
    with pytest.raises(SinkWriteError) as e:
        write(out, range(22), store=store)
    assert store.tripped
    msg = str(e.value)
    assert os.strerror(fault.get("err", errno.ENOSPC)) in msg and "\n" not in msg
    st = dict(zarr.open_group(str(out / "cam"), mode="r").attrs)["status"]
    n = st["frames_written"]
    # the end of the last write whose arrays were all written: the first write (frame 0, written at once)
    # or a whole number of chunks
    assert (n == 1 or n % 4 == 0) and n < 22
    assert st["state"] == "error" and any(os.strerror(fault.get("err", errno.ENOSPC)) in x for x in st["errors"])
    rep = verify_store(out)
    assert rep.ok, rep.first_problem()  # what is committed can be trusted
    write(out, range(n, 22), mode="resume")  # "space freed": no more faults
    assert_same_arrays(out, reference)
    st = dict(zarr.open_group(str(out / "cam"), mode="r").attrs)["status"]
    assert st["errors"] == [] and st["previous_errors"]


def test_full_disk_while_creating_a_source(tmp_path):
    out = tmp_path / "o.zarr"
    store = faulty_local(out, fail_after_bytes=3000)
    with pytest.raises(SinkWriteError, match="cannot create source cam"):
        write(out, range(4), store=store)
    write(out, range(4), mode="resume")  # the half-made group (nothing committed) is redone
    assert verify_store(out).sources["cam"].frames_written == 4


def test_disk_that_stays_full_still_leaves_a_trusted_marker(tmp_path, reference):
    """No room even for the status: the store keeps its last commit marker (state still 'running'), the
    error reaches the caller, and the store resumes."""
    out = tmp_path / "o.zarr"
    # no reserve: the disk stays full from the part chunk of frames 8-11 on (frame 0 is written alone first)
    store = faulty_local(out, fail_on_chunk=4, match="cam/part/c/")
    with pytest.raises(SinkWriteError, match="No space left"):
        write(out, range(22), store=store)
    st = dict(zarr.open_group(str(out / "cam"), mode="r").attrs)["status"]
    assert st["frames_written"] == 8 and verify_store(out).ok
    write(out, range(8, 22), mode="resume")
    assert_same_arrays(out, reference)


def _can_mount() -> str | None:
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    if shutil.which("mount") is None:
        return "no mount command"
    return None


@pytest.fixture
def small_fs(tmp_path):
    why = _can_mount()
    if why:
        pytest.skip(why)
    mnt = Path(f"/tmp/sp-tmpfs-{os.getpid()}-{random.randrange(1 << 30)}")
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        mnt.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
    mnt.rmdir()


def test_full_disk_on_a_real_file_system(tmp_path, small_fs):
    """A 12 MB tmpfs, 8 MB of it taken by a ballast file: `streamparse run` fills the rest, stops the source
    with the OS error recorded, exit 1; after the ballast is deleted, --resume gives the same store as an
    uninterrupted run elsewhere."""
    video = make_video(tmp_path / "v.mp4", n=40, h=180, w=240)
    args = [str(video), "--no-progress", "--checkpoint", "none", "--batch-size", "4",
            "--set", "model.name=uniparser_tiny", "--set", "model.input_size=[64,64]", "--set", "model.center_thresh=0.0",
            "--set", "pipeline.chunk_frames=4", "--set", "pipeline.compressor=none"]
    ballast = small_fs / "ballast"
    with open(ballast, "wb") as f:
        f.write(os.urandom(8 * 2**20))
    out = small_fs / "o.zarr"
    r = subprocess.run([sys.executable, "-m", "streamparse", "run", *args, "--out", str(out)], capture_output=True,
                       text=True, env=ENV, timeout=300)
    assert r.returncode == 1, r.stderr
    assert "No space left on device" in r.stdout
    st = dict(zarr.open_group(str(out / "v"), mode="r").attrs)["status"]
    assert st["state"] == "error" and "No space left on device" in " ".join(st["errors"])
    assert 0 < st["frames_written"] < 40 and st["frames_written"] % 4 == 0
    assert verify_store(out).ok
    ballast.unlink()  # space freed
    r = subprocess.run([sys.executable, "-m", "streamparse", "run", *args, "--out", str(out), "--resume"],
                       capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr
    ref = tmp_path / "ref.zarr"
    r = subprocess.run([sys.executable, "-m", "streamparse", "run", *args, "--out", str(ref)], capture_output=True,
                       text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr
    assert_same_arrays(out, ref, "v")


# ----------------------------------------------------------------- rule 4: damaged stores
def _chunk(path: Path, array: str, i: int) -> Path:
    return next(path.glob(f"cam/{array}/c/{i}" + "/0" * (2 if array in ("part", "instance") else 0)))


DAMAGE = {
    "deleted chunk": (lambda p: _chunk(p, "part", 1).unlink(), "missing"),
    "truncated chunk": (lambda p: _chunk(p, "instance", 0).write_bytes(_chunk(p, "instance", 0).read_bytes()[:7]), "cannot be read"),
    "emptied chunk": (lambda p: _chunk(p, "part", 2).write_bytes(b""), "empty"),
    "shortened array": (lambda p: zarr.open_array(str(p / "cam" / "instance"), mode="r+").resize((5, 12, 16)), "commit marker says 20"),
    "instance table cut": (lambda p: zarr.open_array(str(p / "cam" / "inst_score"), mode="r+").resize((3,)), "inst_score has 3 rows"),
    "wrong schema version": (lambda p: zarr.open_group(str(p), mode="r+").attrs.update({"streamparse_schema_version": 99}),
                             "schema v99"),
    "offsets not monotonic": (lambda p: zarr.open_array(str(p / "cam" / "inst_offset"), mode="r+").__setitem__(3, 0),
                              "not monotonic"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_resume_refuses_a_damaged_store(tmp_path, damage):
    out = tmp_path / "o.zarr"
    write(out, range(20))
    do, expect = DAMAGE[damage]
    do(out)
    rep = verify_store(out)
    assert not rep.ok and expect in (rep.first_problem() or ""), rep.to_dict()
    with pytest.raises(SinkError) as e:
        write(out, range(20, 24), mode="resume")
    assert expect in str(e.value) and "cannot resume" in str(e.value) and "\n" not in str(e.value)


def test_damage_past_the_commit_marker_is_rewritten(tmp_path, reference, caplog):
    out = tmp_path / "o.zarr"
    write(out, range(12))
    g = zarr.open_group(str(out / "cam"), mode="r+")
    for name in ("part", "instance"):  # a crash mid-chunk: frames 12-15 half written, never committed
        a = g[name]
        a.resize((16, *a.shape[1:]))
        a[12:16] = 7
    (out / "cam" / "part" / "c" / "3" / "0" / "0").write_bytes(b"garbage")
    rep = verify_store(out)
    assert rep.ok and rep.sources["cam"].uncommitted_frames == 4
    with caplog.at_level("WARNING"):
        write(out, range(12, 22), mode="resume")
    assert "rewriting from the marker" in caplog.text
    assert_same_arrays(out, reference)


def test_verify_store_reports_a_good_store(tmp_path, reference):
    rep = verify_store(reference)
    assert rep.ok and rep.schema_version == 2
    s = rep.sources["cam"]
    assert (s.frames_written, s.instances_written) == (22, sum(t % 3 for t in range(22)))
    assert not verify_store(tmp_path).ok  # not a store


def test_cli_resume_of_damaged_store_is_one_line(tmp_path):
    out = tmp_path / "o.zarr"
    write(out, range(8))
    _chunk(out, "part", 0).unlink()
    video = make_video(tmp_path / "cam.mp4", n=4)
    r = subprocess.run([sys.executable, "-m", "streamparse", "run", str(video), "--out", str(out), "--resume",
                        "--checkpoint", "none", "--set", "model.name=uniparser_tiny"], capture_output=True, text=True,
                       env=ENV, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "damaged" in r.stderr and "part/c/0/0/0" in r.stderr


# ----------------------------------------------------------------- rule 5: config errors before anything
BAD = [("pipeline.amp=bogus", "pipeline.amp"), ("pipeline.compressor=lz4", "pipeline.compressor"),
       ("live.drop_policy=newest", "live.drop_policy"), ("model.mask_thresh=1.5", "model.mask_thresh"),
       ("model.center_thresh=-0.1", "model.center_thresh"), ("pipeline.batch_size=0", "pipeline.batch_size"),
       ("pipeline.chunk_frames=-4", "pipeline.chunk_frames"), ("live.queue_size=0", "live.queue_size"),
       ("model.input_size=[0,0]", "model.input_size"), ("live.transport=quic", "live.transport"),
       ("pipeline.device=tpu", "pipeline.device"), ("train.optimizer=adam", "train.optimizer")]


@pytest.mark.parametrize("override,key", BAD)
def test_config_errors_fail_fast_before_anything_starts(tmp_path, override, key):
    out = tmp_path / "o.zarr"
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "streamparse", "run", str(tmp_path / "any.mp4"), "--out", str(out),
                        "--set", override], capture_output=True, text=True, env=ENV, timeout=60)
    dt = time.perf_counter() - t0
    assert r.returncode == 2 and key in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert dt < 2.0, f"{dt:.2f} s"
    assert not out.exists()


# ----------------------------------------------------------------- rule 6: interrupts at any point
_WRITER = """
import sys, numpy as np
sys.path.insert(0, sys.argv[2])
from test_store_safety import write
write(sys.argv[1], range(int(sys.argv[3])), mode=sys.argv[4], chunk=2)
"""


def test_sigkill_of_a_writer_at_random_points_leaves_a_resumable_store(tmp_path, reference):
    rng = random.Random(7)
    tests_dir = str(Path(__file__).parent)
    for rep in range(6):
        out = tmp_path / f"k{rep}.zarr"
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(out), tests_dir, "400", "create"], env=ENV)
        time.sleep(rng.uniform(0.6, 2.5))
        proc.kill()
        proc.wait()
        if not out.exists() or not (out / "zarr.json").exists():
            continue  # killed before the store existed
        rep_ = verify_store(out)
        assert rep_.ok, rep_.first_problem()
        n = rep_.sources["cam"].frames_written if "cam" in rep_.sources else 0
        write(out, range(n, 22) if n < 22 else [], mode="resume", chunk=2)


def _committed(out: Path, sid: str) -> int:
    try:
        return int(dict(zarr.open_group(str(out / sid), mode="r").attrs)["status"]["frames_written"])
    except Exception:  # noqa: BLE001 - not there yet
        return 0


@pytest.mark.ray
def test_sigterm_at_random_points_leaves_no_store_or_a_resumable_one(tmp_path):
    """SIGTERM / Ctrl-C during start-up, model loading and the first frames, and mid-run (while chunks are
    written): either no store (nothing was committed and it did not exist before) or one that --resume
    accepts and completes."""
    video = make_video(tmp_path / "v.mp4", n=48, h=96, w=128)
    args = [str(video), "--no-progress", "--checkpoint", "none", "--batch-size", "2",
            "--set", "model.name=uniparser_tiny", "--set", "model.input_size=[128,128]", "--set", "pipeline.chunk_frames=2"]
    rng = random.Random(int(os.environ.get("SP_SIGTERM_SEED", "3")))
    # when to interrupt: (what must have happened, extra random delay)
    points = [("start", rng.uniform(0.3, 2.5)), ("lock", rng.uniform(0.0, 1.5)), ("frames", rng.uniform(0.0, 0.6))]
    outcomes = []
    for rep, (event, delay) in enumerate(points):
        out = tmp_path / f"t{rep}.zarr"
        proc = subprocess.Popen([sys.executable, "-m", "streamparse", "run", *args, "--out", str(out)], env=ENV,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if event == "start" or (event == "lock" and (out / ".streamparse.lock").exists()) or \
                    (event == "frames" and _committed(out, "v") >= 2):
                break
            time.sleep(0.02)
        time.sleep(delay)
        if proc.poll() is None:  # `kill PID` (the driver only), or Ctrl-C (SIGINT to the whole process group)
            if rep == 1:
                os.killpg(proc.pid, signal.SIGINT)
            else:
                os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            pytest.fail("the run did not stop within 90 s of the signal")
        if not out.exists():
            outcomes.append(f"{event}: no store")
            continue
        rep_ = verify_store(out)
        assert rep_.ok, rep_.first_problem()
        n = rep_.sources["v"].frames_written if "v" in rep_.sources else 0
        assert n > 0 or proc.returncode == 0, "an interrupted run left a store with nothing committed"
        r = subprocess.run([sys.executable, "-m", "streamparse", "run", *args, "--out", str(out), "--resume"],
                           capture_output=True, text=True, env=ENV, timeout=300)
        assert r.returncode == 0, r.stderr
        g = zarr.open_group(str(out / "v"), mode="r")
        assert g["frame_index"][:].tolist() == list(range(48))
        outcomes.append(f"{event}: resumed from {n}")
    print(outcomes)
