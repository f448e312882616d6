"""streamparse.results: open_result / open_archive on schema v2 (fixture writer) and v1 (the real sink and
the real pipeline) stores, local and over S3 (a moto server on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from streamparse.labelstats import instance_stats
from streamparse.results import SchemaError, open_archive, open_result
from streamparse.store.synthetic import synthetic_people, write_store, write_v1_store, write_video

ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
       "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    d = tmp_path_factory.mktemp("stores")
    src = synthetic_people(20, (48, 64), 3, seed=1)
    write_video(src, d / "cam.mp4")
    other = synthetic_people(6, (32, 32), 2, seed=2, churn=False)
    write_store(d / "v2.zarr", {"cam": src, "other": other}, chunk_frames=8, uncommitted=3)
    write_v1_store(d / "v1.zarr", {"cam": src}, chunk_frames=8)
    return {"dir": d, "src": src, "v2": d / "v2.zarr", "v1": d / "v1.zarr"}


def committed(src, T):
    st = instance_stats(src.part[:T], src.instance[:T], 20, src.images[:T], counts=src.counts[:T])
    return st, int(st.offset[-1])


def test_v2_instances_are_the_committed_rows_with_tracks_and_part_areas(stores):
    r = open_result(stores["v2"])
    src = stores["src"]
    assert r.schema_version == 2 and r.sources == ["cam", "other"]
    T = r.num_frames("cam")
    assert T == 17  # 3 frames past the commit marker are ignored
    st, N = committed(src, T)
    df = r.instances("cam")
    assert len(df) == N
    np.testing.assert_array_equal(df["frame"], st.frame)
    np.testing.assert_allclose(df["time"], src.time[st.frame])
    np.testing.assert_array_equal(df["instance"], st.inst_id)
    np.testing.assert_array_equal(df["track"].to_numpy(np.int64), src.track[:N])
    np.testing.assert_array_equal(df[["x0", "y0", "x1", "y1"]].to_numpy(), st.bbox)
    np.testing.assert_array_equal(df["area"], st.area)
    np.testing.assert_array_equal(df[[f"area_{n}" for n in r.class_names[1:]]].to_numpy(), st.part_area[:, 1:])
    np.testing.assert_allclose(df["score"], src.score[:N])


def test_v2_part_areas_by_track_equal_the_maps(stores):
    r = open_result(stores["v2"])
    src = stores["src"]
    pa = r.part_areas("cam", by="track")
    T = r.num_frames("cam")
    assert pa.dims == ("time", "track", "part") and pa.shape[0] == T
    np.testing.assert_allclose(pa["time"], src.time[:T])
    hair = r.class_names.index("Hair")
    for t in (0, 5, T - 1):
        for j, tr in enumerate(pa["track"].values):
            k = np.flatnonzero(src.track[src.counts[:t].sum():src.counts[:t + 1].sum()] == tr)
            want = 0 if not len(k) else int(((src.instance[t] == k[0] + 1) & (src.part[t] == hair)).sum())
            assert int(pa.sel(part="Hair")[t, j]) == want
    by_frame = r.part_areas("cam", by="frame")
    np.testing.assert_array_equal(by_frame.values, pa.values.sum(axis=1))
    np.testing.assert_array_equal(by_frame.values, r.part_areas("cam", by="frame", from_maps=True).values)
    sub = r.part_areas("cam", tracks=[2])
    np.testing.assert_array_equal(sub.values[:, 0], pa.sel(track=2).values)


def test_v2_tracks_table(stores):
    r = open_result(stores["v2"])
    src = stores["src"]
    T = r.num_frames("cam")
    _, N = committed(src, T)
    tr = r.tracks("cam")
    assert tr["track"].tolist() == sorted(set(src.track[:N].tolist()))
    for _, row in tr.iterrows():
        frames = np.repeat(np.arange(T), src.counts[:T])[src.track[:N] == row.track]
        assert (row.first_frame, row.last_frame, row.frames) == (frames.min(), frames.max(), len(frames))
        # each synthetic person has one flat colour per part: the mean colour is that colour
        k = np.flatnonzero(src.track[src.counts[:frames[0]].sum():src.counts[:frames[0] + 1].sum()] == row.track)[0]
        m = (src.instance[frames[0]] == k + 1) & (src.part[frames[0]] == r.class_names.index("UpperClothes"))
        if m.any():
            rgb = src.images[frames[0]][m][0]
            assert row["colour_UpperClothes"] == "#%02x%02x%02x" % tuple(int(v) for v in rgb)
    assert len(tr.top_parts[0]) == 3 and tr.top_colours[0][0].startswith("#")


def test_frames_masks_and_addressing(stores):
    r = open_result(stores["v2"])
    src = stores["src"]
    f = r.frame("cam", 4)
    np.testing.assert_array_equal(f.part, src.part[4])
    np.testing.assert_array_equal(f.instance, src.instance[4])
    assert r.frame("cam", float(src.time[4])).row == 4 and r.frame("cam", float(src.time[4]) + 0.02).row == 4
    k = int(src.track[src.counts[:4].sum()])  # the first person of frame 4
    np.testing.assert_array_equal(r.person_mask("cam", 4, k), src.instance[4] == 1)
    np.testing.assert_array_equal(r.person_mask("cam", 4, instance=2), src.instance[4] == 2)
    assert not r.person_mask("cam", 4, 999).any()
    for bad, err in ((17, ValueError), (-1, ValueError), (99.0, ValueError), ("3", TypeError), (True, TypeError)):
        with pytest.raises(err) as e:
            r.frame("cam", bad)
        assert "\n" not in str(e.value)
    rows = [fr.row for fr in r.iter_frames("cam", [1, 9, 10, 16])]
    assert rows == [1, 9, 10, 16]
    with pytest.raises(KeyError, match="no source 'nope'"):
        r.frame("nope", 0)


def test_dataset_is_lazy_and_committed_only(stores):
    import dask.array as da

    r = open_result(stores["v2"])
    ds = r.dataset("cam")
    assert isinstance(ds["part"].data, da.Array)
    assert ds.sizes["time"] == 17 and ds.sizes["inst"] == committed(stores["src"], 17)[1]
    assert "frame_index" in ds.coords and "segment" in ds.coords and "time" in ds.coords
    np.testing.assert_allclose(ds["time"].values, stores["src"].time[:17])
    assert ds["part"].dims == ("time", "y", "x") and ds["inst_part_area"].dims == ("inst", "part_class")
    assert list(ds["part_class"].values[:3]) == ["Background", "Hat", "Hair"]
    np.testing.assert_array_equal(ds["part"].sel(time=stores["src"].time[3]).values, stores["src"].part[3])


def test_v1_store_reads_without_tracks(stores):
    r1, r2 = open_result(stores["v1"]), open_result(stores["v2"])
    assert r1.schema_version == 1 and r1.num_frames("cam") == 20
    df = r1.instances("cam")
    assert df["track"].isna().all() and not any(c.startswith("area_") for c in df.columns)
    with pytest.raises(SchemaError, match="schema v1") as e:
        r1.tracks("cam")
    assert "\n" not in str(e.value)
    for call in (lambda: r1.part_areas("cam"), lambda: r1.part_areas("cam", by="frame"),
                 lambda: r1.person_mask("cam", 0, 1)):
        with pytest.raises(SchemaError, match="schema v1"):
            call()
    slow = r1.instances("cam", from_maps=True)  # part areas decoded from the label maps
    cols = [c for c in slow.columns if c.startswith("area_")]
    np.testing.assert_array_equal(slow[cols].to_numpy()[: len(r2.instances("cam"))], r2.instances("cam")[cols].to_numpy())
    assert r1.part_areas("cam", by="frame", from_maps=True).shape == (20, 19)
    assert r1.person_mask("cam", 2, instance=1).sum() == df["area"].iloc[int(r1.frames_table("cam")["people"][:2].sum())]


def test_open_archive_last_line_wins(stores, tmp_path):
    out = tmp_path / "archive"
    out.mkdir()
    src = stores["src"]
    for vid in ("a", "b"):
        write_store(out / f"{vid}.zarr", {vid: src}, chunk_frames=8)
    lines = [{"video_id": "a", "state": "running", "store": "a.zarr", "frames": 0},
             {"video_id": "b", "state": "running", "store": "b.zarr", "frames": 0},
             {"video_id": "a", "state": "complete", "store": "a.zarr", "frames": 20},
             {"video_id": "c", "state": "failed", "store": "c.zarr", "frames": 0, "errors": ["boom"]}]
    (out / "index.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"video_id": "b", "sta')
    (out / "archive.json").write_text(json.dumps({"generator": "streamparse x", "model_name": "m"}))
    arc = open_archive(out)
    assert list(arc) == ["a", "b", "c"] and arc.attrs["model_name"] == "m"
    assert arc.index.set_index("video_id").loc["a", "state"] == "complete"
    assert arc.index.set_index("video_id").loc["b", "state"] == "running"  # the truncated line is skipped
    assert len(arc["a"].instances("a")) == len(open_result(out / "a.zarr").instances("a"))
    with pytest.raises(FileNotFoundError):
        arc["c"]
    with pytest.raises(KeyError):
        arc["zz"]


def test_ten_thousand_frames_tables_fast(tmp_path):
    src = synthetic_people(10000, (8, 8), 8, seed=3, churn=False, with_images=False)
    write_store(tmp_path / "big.zarr", {"big": src}, chunk_frames=512)
    open_result(tmp_path / "big.zarr").instances("big")  # imports, first reads
    r = open_result(tmp_path / "big.zarr")
    t0 = time.perf_counter()
    df = r.instances("big")
    pa = r.part_areas("big", by="track")
    dt = time.perf_counter() - t0
    assert len(df) == int(src.counts.sum()) and pa.shape == (10000, 8, 19)
    assert dt < 2.0, f"instances + part_areas took {dt:.2f}s on 10,000 frames (target < 1 s on a quiet machine)"


# --------------------------------------------------------------------------- the real pipeline (v1)
def test_real_pipeline_store(tmp_path):
    from videos import make_video

    video = make_video(tmp_path / "clip.mp4", n=6, h=48, w=64)
    out = tmp_path / "out.zarr"
    model = ["--set", "model.name=uniparser_tiny", "--set", "model.input_size=[64,64]", "--set", "model.center_thresh=0.0",
             "--set", "model.max_instances=4", "--set", "model.mask_thresh=0.2", "--set", "model.merge_cos=1.01"]
    r = subprocess.run([sys.executable, "-m", "streamparse", "run", str(video), "--out", str(out), "--checkpoint", "none",
                        "--no-progress", *model], capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr
    res = open_result(out)
    assert res.sources == ["clip"] and res.num_frames("clip") == 6
    df = res.instances("clip")
    ft = res.frames_table("clip")
    assert len(df) == ft["people"].sum() > 0
    for f in res.iter_frames("clip"):
        rows = df[df["frame"] == f.frame_index]
        counts = np.bincount(f.instance.ravel(), minlength=len(rows) + 1)[1:]
        np.testing.assert_array_equal(counts[: len(rows)], rows["area"].to_numpy())
    assert res.dataset("clip").sizes["time"] == 6


# --------------------------------------------------------------------------- S3 (moto server on loopback)
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    try:
        import s3fs  # noqa: F401
        import moto  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"S3 test needs s3fs and moto[server]: {exc}")
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    exe = Path(sys.executable).with_name("moto_server")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "moto.server"]
    with open(log, "w") as lf:
        proc = subprocess.Popen([*cmd, "-H", "127.0.0.1", "-p", str(port)], stdout=lf, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.2)
    else:
        proc.kill()
    if proc.poll() is not None:
        pytest.skip(f"moto server did not start: {log.read_text()[-300:]}")
    opts = {"endpoint_url": url, "key": "testing", "secret": "testing"}
    yield opts
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_s3_store_and_archive(stores, s3, tmp_path):
    import s3fs

    fs = s3fs.S3FileSystem(**s3)
    fs.mkdir("bucket")
    fs.put(str(stores["v2"]), "bucket/v2.zarr", recursive=True)
    r = open_result("s3://bucket/v2.zarr", storage_options=s3)
    local = open_result(stores["v2"])
    assert r.sources == local.sources and r.num_frames("cam") == 17
    assert r.instances("cam").equals(local.instances("cam"))
    np.testing.assert_array_equal(r.frame("cam", 3).part, local.frame("cam", 3).part)
    assert r.dataset("cam").sizes["time"] == 17
    fs.put(str(stores["v2"]), "bucket/arc/cam.zarr", recursive=True)
    fs.pipe("bucket/arc/index.jsonl", (json.dumps({"video_id": "cam", "state": "complete", "store": "cam.zarr"}) + "\n").encode())
    arc = open_archive("s3://bucket/arc", storage_options=s3)
    assert list(arc) == ["cam"] and arc["cam"].num_frames("cam") == 17
