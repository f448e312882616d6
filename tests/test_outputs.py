"""Safety of outputs, rule 1 and 2: a command replaces only what streamparse wrote; one writer per store.

Table-driven: every kind of existing path x every writing command, through the real CLI; then the
library function every command calls (``prepare_output``) and the writer lock across real processes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from faults import snapshot
from parsing import DIM, batch_of
from streamparse.store.outputs import (
    DIR_MARKER,
    LOCK_NAME,
    OutputError,
    finish_dir,
    inspect_path,
    prepare_output,
    write_json,
)
from streamparse.store.lock import WriterLock
from streamparse.store.sink import ZarrSink
from videos import make_video

ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
       "OMP_NUM_THREADS": "1"}
NAMES = ["background", "hair", "face"]


def cli(*args, timeout=120, cwd=None):
    return subprocess.run([sys.executable, "-m", "streamparse", *args], capture_output=True, text=True, env=ENV,
                          timeout=timeout, cwd=cwd)


def our_store(path: Path) -> Path:
    with ZarrSink(path, root_attrs={"model_name": "m", "class_names": NAMES}, chunk_frames=2) as sink:
        w = sink.source("cam", {"uri": "x"}, (4, 4), NAMES, embedding_dim=DIM)
        for seq in range(3):
            w.add_batch(seq, batch_of([{"part": np.zeros((4, 4), np.uint8), "instance": np.zeros((4, 4), np.uint16), "frame_index": seq,
                        "pts": seq, "time": seq * 0.1, "segment": 0, "wallclock": 0.0, "inst_score": np.zeros(0, np.float32),
                        "inst_bbox": np.zeros((0, 4), np.int32), "inst_area": np.zeros(0, np.int64)}]))
    return path


# ------------------------------------------------------------------ the kinds of existing path
def make_kind(kind: str, path: Path, tmp: Path) -> None:
    if kind == "dir-with-files":
        path.mkdir()
        (path / "thesis.txt").write_text("years of work")
        (path / "sub").mkdir()
        (path / "sub" / "photo.jpg").write_bytes(b"\xff\xd8jpeg")
    elif kind == "regular-file":
        path.write_bytes(b"a user's file")
    elif kind == "foreign-zarr":
        g = zarr.open_group(str(path), mode="w", zarr_format=3)
        g.create_array("data", shape=(4,), dtype="uint8")[:] = 7
        g.attrs["owner"] = "another program"
    elif kind == "symlink-to-dir":
        target = tmp / "real_dir"
        target.mkdir()
        (target / "keep.txt").write_text("keep")
        path.symlink_to(target)
    elif kind == "symlink-to-our-store":
        our_store(tmp / "real.zarr")
        path.symlink_to(tmp / "real.zarr")
    elif kind == "our-store-plus-user-file":
        our_store(path)
        (path / "my_notes.txt").write_text("mine")
    elif kind == "foreign-json":
        path.write_text(json.dumps({"results": [1, 2, 3]}))
    elif kind == "foreign-checkpoint":
        import torch

        torch.save({"state_dict": {}}, path)
    else:
        raise ValueError(kind)


FOREIGN = ["dir-with-files", "regular-file", "foreign-zarr", "symlink-to-dir", "symlink-to-our-store", "our-store-plus-user-file"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("assets")
    video = make_video(d / "clip.mp4", n=4, h=48, w=64)
    image = d / "img.png"
    from PIL import Image

    Image.fromarray(np.full((48, 64, 3), 90, np.uint8)).save(image)
    from streamparse.checkpoint import save_checkpoint
    from streamparse.models import build_model

    ck = save_checkpoint(d / "tiny.pt", build_model("uniparser_tiny", num_classes=20), model_name="uniparser_tiny",
                         model_kwargs={"num_classes": 20}, class_names=[f"c{i}" for i in range(20)])
    return {"video": video, "image": image, "ckpt": ck}


def commands(assets, out: Path):
    """(name, argv, output kind) of every writing command, writing to ``out``."""
    tiny = ["--set", "model.name=uniparser_tiny", "--set", "model.input_size=[32,32]", "--checkpoint", "none"]
    return [
        ("run --overwrite", ["run", str(assets["video"]), "--out", str(out), "--overwrite", "--no-progress", *tiny], "store"),
        ("run --resume", ["run", str(assets["video"]), "--out", str(out), "--resume", "--no-progress", *tiny], "store"),
        ("synth", ["synth", str(out), "--num-images", "1", "--size", "64x64", "--no-progress"], "dir"),
        ("synth --overwrite", ["synth", str(out), "--num-images", "1", "--size", "64x64", "--no-progress", "--overwrite"], "dir"),
        ("export", ["export", str(assets["ckpt"]), str(out)], "file"),
        ("predict --json", ["predict", str(assets["image"]), "--json", str(out), *tiny], "file"),
        ("archive --resume", ["archive", str(assets["video"]), "--out", str(out), "--resume", "--no-progress", *tiny], "dir"),
    ]


CASES = [(cmd, kind) for cmd in ("run --overwrite", "run --resume", "synth", "synth --overwrite", "archive --resume")
         for kind in FOREIGN] + \
        [(cmd, kind) for cmd in ("export", "predict --json")
         for kind in ("dir-with-files", "regular-file", "symlink-to-dir", "foreign-json", "foreign-checkpoint")]


@pytest.mark.parametrize("cmd,kind", CASES)
def test_writing_command_refuses_what_it_did_not_create(assets, tmp_path, cmd, kind):
    out = tmp_path / ("out.json" if cmd == "predict --json" else "out.pt" if cmd == "export" else "out")
    make_kind(kind, out, tmp_path)
    before = {p: snapshot(p) for p in tmp_path.iterdir()}
    argv = next(a for name, a, _ in commands(assets, out) if name == cmd)
    r = cli(*argv)
    assert r.returncode == 2, (cmd, kind, r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and str(out) in lines[0] and "Traceback" not in r.stderr, r.stderr
    assert {p: snapshot(p) for p in tmp_path.iterdir()} == before  # nothing touched, nothing added


def test_overwrite_replaces_only_our_outputs(assets, tmp_path):
    # a store of ours is replaced by --overwrite; an empty directory is used
    out = our_store(tmp_path / "o.zarr")
    tiny = ["--set", "model.name=uniparser_tiny", "--set", "model.input_size=[32,32]", "--checkpoint", "none", "--no-progress"]
    r = cli("run", str(assets["video"]), "--out", str(out), "--overwrite", *tiny, timeout=240)
    assert r.returncode == 0, r.stderr
    g = zarr.open_group(str(out), mode="r")
    assert "cam" not in g and "clip" in g and g["clip"]["part"].shape[0] == 4
    assert not (out / LOCK_NAME).exists()  # the lock lives only while a writer runs
    # synth adds a second split to its own dataset folder, and refuses one a user added a file to
    d = tmp_path / "data"
    assert cli("synth", str(d), "--num-images", "1", "--size", "64x64", "--no-progress").returncode == 0
    assert cli("synth", str(d), "--num-images", "1", "--split", "val", "--size", "64x64", "--no-progress").returncode == 0
    assert (d / "train_id.txt").is_file() and (d / "val_id.txt").is_file()
    (d / "mine.txt").write_text("x")
    r = cli("synth", str(d), "--num-images", "1", "--size", "64x64", "--no-progress", "--overwrite")
    assert r.returncode == 2 and "mine.txt" in r.stderr and (d / "mine.txt").read_text() == "x"
    # files: predict --json replaces its own JSON
    j = tmp_path / "p.json"
    for _ in range(2):
        r = cli("predict", str(assets["image"]), "--json", str(j), *tiny[:-1])
        assert r.returncode == 0, r.stderr
    assert json.loads(j.read_text())["generator"].startswith("streamparse")


# ------------------------------------------------------------------ the library rule, every mode x kind
def test_prepare_output_table(tmp_path):
    ours_dir = tmp_path / "ours_dir"
    ours_dir.mkdir()
    (ours_dir / "a.txt").write_text("a")
    finish_dir(ours_dir, "export")
    ours_json = write_json(tmp_path / "ours.json", {"x": 1})
    empty = tmp_path / "empty"
    empty.mkdir()
    store = our_store(tmp_path / "s.zarr")
    foreign = tmp_path / "foreign"
    make_kind("dir-with-files", foreign, tmp_path)
    afile = tmp_path / "a.bin"
    afile.write_bytes(b"x")
    link = tmp_path / "link"
    link.symlink_to(store)
    ok, no = True, False
    table = [  # path, kind, {mode: allowed}
        (tmp_path / "absent", "store", {"create": ok, "overwrite": ok, "resume": ok}),
        (empty, "store", {"create": no, "overwrite": ok, "resume": no}),
        (store, "store", {"create": no, "overwrite": ok, "resume": ok}),
        (foreign, "store", {"create": no, "overwrite": no, "resume": no}),
        (afile, "store", {"create": no, "overwrite": no, "resume": no}),
        (link, "store", {"create": no, "overwrite": no, "resume": no}),
        (ours_dir, "dir", {"create": no, "overwrite": ok, "update": ok}),
        (foreign, "dir", {"create": no, "overwrite": no, "update": no}),
        (empty, "dir", {"update": ok}),
        (store, "dir", {"overwrite": no}),
        (ours_json, "file", {"create": no, "overwrite": ok}),
        (afile, "file", {"create": no, "overwrite": no}),
    ]
    for path, kind, modes in table:
        for mode, allowed in modes.items():
            before = snapshot(path)
            if allowed:
                prepare_output(path, mode=mode, kind=kind, remove=False)
            else:
                with pytest.raises(OutputError) as e:
                    prepare_output(path, mode=mode, kind=kind)
                assert str(path) in str(e.value) and "\n" not in str(e.value)
            assert snapshot(path) == before, (path, mode)
    # removal happens only for what is ours
    prepare_output(ours_dir, mode="overwrite", kind="dir")
    assert list(ours_dir.iterdir()) == []
    prepare_output(ours_json, mode="overwrite", kind="file")
    assert not ours_json.exists()
    assert inspect_path(foreign).what == "dir" and (foreign / "thesis.txt").exists()


def our_archive(path: Path) -> Path:
    """An archive OUTDIR as `streamparse archive` leaves it: marker, archive.json, index.jsonl, stores."""
    path.mkdir()
    write_json(path / "archive.json", {"model_name": "m"})
    (path / "index.jsonl").write_text(json.dumps({"video_id": "cam", "state": "complete", "store": "cam.zarr"}) + "\n")
    our_store(path / "cam.zarr")
    (path / "starting.zarr").mkdir()  # a store whose creation had only begun (its lock file only)
    (path / "starting.zarr" / LOCK_NAME).write_text("{}")
    finish_dir(path, "archive", extra={"stores": "*.zarr"})
    return path


ARCHIVE_KINDS = [  # (kind, archive may use it with --resume, without --resume, part of the message)
    ("absent", True, True, ""),
    ("empty-dir", True, True, ""),
    ("our-archive", True, False, "pass --resume"),
    ("our-archive-after-a-kill", True, False, "pass --resume"),  # index grew, a report was cut short via .tmp
    ("our-archive-plus-user-file", False, False, "notes.txt"),
    ("our-archive-plus-foreign-zarr", False, False, "x.zarr"),
    ("our-archive-plus-symlinked-store", False, False, "link.zarr"),
    ("our-export-folder", False, False, "not an archive"),
    ("our-run-store", False, False, "not an archive"),
    ("dir-with-files", False, False, "did not create"),
    ("regular-file", False, False, "not write"),
]


def make_archive_kind(kind: str, path: Path, tmp: Path) -> None:
    if kind == "absent":
        return
    if kind == "empty-dir":
        path.mkdir()
    elif kind == "our-archive":
        our_archive(path)
    elif kind == "our-archive-after-a-kill":
        our_archive(path)
        with open(path / "index.jsonl", "a") as f:
            f.write('{"video_id": "cam", "state": "runn')
        (path / "archive.json.tmp").write_text("{")
    elif kind == "our-archive-plus-user-file":
        our_archive(path)
        (path / "notes.txt").write_text("mine")
    elif kind == "our-archive-plus-foreign-zarr":
        our_archive(path)
        make_kind("foreign-zarr", path / "x.zarr", tmp)
    elif kind == "our-archive-plus-symlinked-store":
        our_archive(path)
        our_store(tmp / "elsewhere.zarr")
        (path / "link.zarr").symlink_to(tmp / "elsewhere.zarr")
    elif kind == "our-export-folder":
        path.mkdir()
        (path / "a.png").write_bytes(b"png")
        finish_dir(path, "export")
    elif kind == "our-run-store":
        our_store(path)
    else:
        make_kind(kind, path, tmp)


@pytest.mark.parametrize("kind,ok_resume,ok_new,msg", ARCHIVE_KINDS)
def test_archive_outdir_table(tmp_path, kind, ok_resume, ok_new, msg):
    """What `streamparse archive` may write into (the library check the command runs first)."""
    from streamparse.archive.outdir import LocalOutdir

    out = tmp_path / "out"
    make_archive_kind(kind, out, tmp_path)
    before = snapshot(out) if out.exists() or out.is_symlink() else None
    for resume, ok in ((True, ok_resume), (False, ok_new)):
        if ok:
            LocalOutdir(out).check(resume)
        else:
            with pytest.raises(OutputError) as e:
                LocalOutdir(out).check(resume)
            assert str(out) in str(e.value) and msg in str(e.value) and "\n" not in str(e.value), str(e.value)
        assert (snapshot(out) if out.exists() or out.is_symlink() else None) == before


def test_dir_marker_lists_files(tmp_path):
    d = tmp_path / "d"
    (d / "x").mkdir(parents=True)
    (d / "x" / "f.png").write_bytes(b"1")
    finish_dir(d, "export")
    assert json.loads((d / DIR_MARKER).read_text())["files"] == ["x/f.png"]
    assert inspect_path(d).ours
    (d / "x" / "g.png").write_bytes(b"2")
    st = inspect_path(d)
    assert not st.ours and "g.png" in st.why


# ------------------------------------------------------------------ rule 2: one writer per store
_HOLDER = """
import sys, time
from streamparse.store.lock import WriterLock
lock = WriterLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(120)
"""


def test_writer_lock_across_processes(tmp_path, caplog):
    store = tmp_path / "s.zarr"
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(store)], stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(OutputError, match=f"pid {proc.pid}"):
            WriterLock(store).acquire()
        with pytest.raises(Exception, match="being written"):  # the sink refuses too, for every mode
            ZarrSink(store, mode="resume")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert json.loads((store / LOCK_NAME).read_text())["pid"] == proc.pid  # left behind by the dead process
    with caplog.at_level("WARNING"):
        lock = WriterLock(store).acquire()
    assert lock.took_over["pid"] == proc.pid and "stale" in caplog.text
    lock.release()
    assert not (store / LOCK_NAME).exists()


def test_writer_lock_of_another_host(tmp_path):
    store = tmp_path / "s.zarr"
    store.mkdir()
    lockf = store / LOCK_NAME
    lockf.write_text(json.dumps({"pid": 1, "host": socket.gethostname() + "-elsewhere", "started": time.time()}))
    with pytest.raises(OutputError, match="another host"):
        WriterLock(store).acquire()
    old = time.time() - 3600
    os.utime(lockf, (old, old))  # no heartbeat for an hour: stale
    lock = WriterLock(store, stale_s=300).acquire()
    assert lock.took_over["host"].endswith("-elsewhere")
    lock.release()


def test_two_concurrent_runs_never_share_a_store(tmp_path):
    """Two real `streamparse run` processes on one --out: the second is refused while the first writes."""
    video = make_video(tmp_path / "long.mp4", n=120, h=96, w=128)
    out = tmp_path / "o.zarr"
    common = [str(video), "--out", str(out), "--no-progress", "--checkpoint", "none", "--batch-size", "2",
              "--set", "model.name=uniparser_tiny", "--set", "model.input_size=[128,128]", "--set", "pipeline.chunk_frames=4"]
    first = subprocess.Popen([sys.executable, "-m", "streamparse", "run", *common], env=ENV, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (out / LOCK_NAME).exists():
            time.sleep(0.05)
        assert (out / LOCK_NAME).exists(), first.stderr.read() if first.poll() is not None else "no lock"
        for flag in ("--resume", "--overwrite"):
            r = cli("run", *common, flag)
            assert r.returncode == 2 and "being written by another process" in r.stderr, r.stderr
            assert len(r.stderr.strip().splitlines()) == 1
        _, err = first.communicate(timeout=300)
        assert first.returncode == 0, err
    finally:
        if first.poll() is None:
            first.kill()
    from streamparse.store.sink import verify_store

    rep = verify_store(out)
    assert rep.ok and rep.sources["long"].frames_written == 120
    g = zarr.open_group(str(out / "long"), mode="r")
    assert g["frame_index"][:].tolist() == list(range(120))
