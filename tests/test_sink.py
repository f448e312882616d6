"""ZarrSink: schema v1, reordering, commit markers, readers (zarr, xarray, tensorstore)."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from parsing import DIM, batch_of
from streamparse.store.sink import SinkError, ZarrSink

NAMES = ["background", "hair", "face"]


def frame(seq: int, h: int = 6, w: int = 8) -> dict:
    k = seq % 3
    inst = np.zeros((h, w), np.uint16)
    for j in range(k):
        inst[:, j * 2 : j * 2 + 2] = j + 1
    return {"part": (inst > 0).astype(np.uint8) * (1 + seq % 2), "instance": inst, "frame_index": seq, "pts": seq * 100,
            "time": seq * 0.1, "segment": 0, "wallclock": 1000.0 + seq, "inst_score": np.linspace(0.9, 0.5, k).astype(np.float32),
            "inst_bbox": np.array([[j * 2, 0, j * 2 + 2, h] for j in range(k)], np.int32).reshape(-1, 4),
            "inst_area": np.full(k, 2 * h, np.int64)}


def write(path, order, chunk=4, mode="create"):
    with ZarrSink(path, mode=mode, root_attrs={"model_name": "m", "class_names": NAMES}, chunk_frames=chunk) as sink:
        w = sink.source("cam", {"uri": "x", "width": 8, "height": 6}, (6, 8), NAMES, embedding_dim=DIM)
        for seq in order:
            w.add_batch(seq, batch_of([frame(seq)]))


def test_reorders_and_writes_every_frame_once(tmp_path):
    out = tmp_path / "o.zarr"
    write(out, [2, 0, 1, 5, 3, 4, 6, 9, 8, 7])
    g = zarr.open_group(str(out / "cam"), mode="r")
    assert g["frame_index"][:].tolist() == list(range(10))
    for t in range(10):
        np.testing.assert_array_equal(g["instance"][t], frame(t)["instance"])
        np.testing.assert_array_equal(g["part"][t], frame(t)["part"])
    off, ids = g["inst_offset"][:], g["inst_id"][:]
    counts = np.diff(np.append(off, len(ids)))
    assert counts.tolist() == [t % 3 for t in range(10)]
    t = 5  # frame 5 has 2 people
    assert ids[off[t] : off[t] + 2].tolist() == [1, 2]
    assert g["inst_score"][off[t]] == pytest.approx(0.9)
    st = dict(g.attrs)["status"]
    assert st["frames_written"] == 10 and st["instances_written"] == int(counts.sum())
    assert g["part"].chunks == (4, 6, 8)
    assert dict(g["part"].attrs)["flag_meanings"] == "background hair face"
    root = zarr.open_group(str(out), mode="r")
    assert dict(root.attrs)["streamparse_schema_version"] == 2  # schema v2 (issue 19: tracks, embeddings, part areas)


@pytest.mark.parametrize("commit_frames,expected", [(4, [1, 1, 1, 4, 4, 4, 4, 8, 8, 8]),   # each chunk when complete
                                                     (8, [1, 1, 1, 1, 1, 1, 1, 8, 8, 8])])  # two chunks a write
def test_first_rows_are_committed_at_once_then_whole_chunks(tmp_path, commit_frames, expected):
    """The first batch a writer gets is written (and committed) at once, before its chunk is full; later
    writes end on chunk boundaries, ``commit_frames`` at a time (counted from the chunk the first write
    began); the store holds every frame as one written in whole chunks would."""
    out = tmp_path / "o.zarr"
    with ZarrSink(out, mode="create", root_attrs={"model_name": "m", "class_names": NAMES}, chunk_frames=4,
                  commit_frames=commit_frames) as sink:
        w = sink.source("cam", {"uri": "x", "width": 8, "height": 6}, (6, 8), NAMES, embedding_dim=DIM)
        w.commit_s = 1e9  # no write for time's sake: only the frame counts decide
        seen = []
        for seq in range(10):
            w.add_batch(seq, batch_of([frame(seq)]))
            seen.append(w.committed)
    assert seen == expected  # the tail (frames 8-9) at close
    g = zarr.open_group(str(out / "cam"), mode="r")
    assert dict(g.attrs)["status"]["frames_written"] == 10
    for t in range(10):
        np.testing.assert_array_equal(g["instance"][t], frame(t)["instance"])
    assert np.diff(np.append(g["inst_offset"][:], len(g["inst_id"][:]))).tolist() == [t % 3 for t in range(10)]


def test_duplicate_frame_is_refused(tmp_path):
    with pytest.raises(SinkError, match="twice"):
        write(tmp_path / "o.zarr", [0, 1, 1])


def test_existing_output_needs_resume_or_overwrite(tmp_path):
    out = tmp_path / "o.zarr"
    write(out, [0, 1])
    with pytest.raises(SinkError, match="--resume"):
        write(out, [0])
    write(out, [0, 1, 2], mode="overwrite")
    assert zarr.open_group(str(out / "cam"), mode="r")["part"].shape[0] == 3


def test_resume_truncates_uncommitted_frames(tmp_path):
    out = tmp_path / "o.zarr"
    with ZarrSink(out, root_attrs={"model_name": "m"}, chunk_frames=4) as sink:
        w = sink.source("cam", {"uri": "x"}, (6, 8), NAMES, embedding_dim=DIM)
        w.commit_s = 0.0  # each whole chunk written when ready (no grouping): frames 0-3 are committed
        for seq in range(6):
            w.add_batch(seq, batch_of([frame(seq)]))
        assert w.committed == 4
        # simulate a crash: frames 4-5 half-written (data beyond the commit marker)
        g = sink.root["cam"]
        g["part"].resize((6, 6, 8))
        g["part"][4:6] = 99
        sink.writers.clear()  # no flush on close
    with ZarrSink(out, mode="resume", root_attrs={"model_name": "m"}, chunk_frames=4) as sink:
        assert sink.committed("cam") == 4
        w = sink.source("cam", {"uri": "x"}, (6, 8), NAMES, embedding_dim=DIM)
        assert w.next_seq == 4 and sink.root["cam"]["part"].shape[0] == 4
        for seq in range(4, 8):
            w.add_batch(seq, batch_of([frame(seq)]))
    ref = tmp_path / "ref.zarr"
    write(ref, range(8))
    a, b = zarr.open_group(str(out / "cam"), mode="r"), zarr.open_group(str(ref / "cam"), mode="r")
    for name in ("part", "instance", "frame_index", "inst_offset", "inst_id", "inst_score"):
        np.testing.assert_array_equal(a[name][:], b[name][:])
    with pytest.raises(SinkError, match="model_name"):
        ZarrSink(out, mode="resume", root_attrs={"model_name": "other"})


def test_readers_xarray_dask_and_tensorstore(tmp_path):
    xr = pytest.importorskip("xarray")
    ts = pytest.importorskip("tensorstore")
    out = tmp_path / "o.zarr"
    write(out, range(7))
    ds = xr.open_zarr(str(out), group="cam", consolidated=False, zarr_format=3)
    assert ds["part"].dims == ("time", "y", "x") and ds["instance"].dtype == np.uint16
    assert type(ds["part"].data).__module__.startswith("dask")  # lazy
    np.testing.assert_array_equal(ds["instance"].isel(time=5).values, frame(5)["instance"])
    assert ds["inst_score"].dims == ("inst",)
    arr = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(out / "cam" / "instance")}}).result()
    np.testing.assert_array_equal(arr[4].read().result(), frame(4)["instance"])
