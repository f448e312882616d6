"""FileSource (real PyAV decoding) and URI handling."""

from __future__ import annotations

import numpy as np
import pytest

from streamparse.sources import FileSource, SourceError, open_source, redact_uri, source_id
from videos import make_empty_video, make_video


@pytest.mark.parametrize("uri,expected", [
    ("rtsp://user:secret@cam.local:554/live", "rtsp://***@cam.local:554/live"),
    ("rtsp://cam.local/live?token=abc&ch=1", "rtsp://cam.local/live?token=***&ch=1"),
    ("https://u:p@host/x.m3u8?password=pw", "https://***@host/x.m3u8?password=***"),
    ("/data/videos/a.mp4", "/data/videos/a.mp4"),
])
def test_redact_uri(uri, expected):
    assert redact_uri(uri) == expected


def test_source_ids_are_sanitized_and_unique():
    taken: set[str] = set()
    a = source_id("/x/my clip.mp4", taken)
    b = source_id("/y/my clip.mp4", taken)
    c = source_id("rtsp://admin:hunter2@10.0.0.1/stream1", taken)
    assert a == "my_clip" and b == "my_clip_2"
    assert "hunter2" not in c and "admin" not in c


@pytest.mark.parametrize("container,codec", [("mp4", "libx264"), ("mkv", "libx264"), ("avi", "mpeg4"), ("mov", "libx264")])
def test_file_source_decodes_every_frame_in_order(tmp_path, container, codec):
    path = make_video(tmp_path / f"v.{container}", n=13, codec=codec)
    with FileSource(path) as src:
        info = src.info()
        batches = list(src.batches(4))
    assert (info["width"], info["height"]) == (64, 48)
    assert [len(b) for b in batches] == [4, 4, 4, 1]
    idx = np.concatenate([b.frame_index for b in batches])
    assert idx.tolist() == list(range(13))
    pts = np.concatenate([b.pts for b in batches])
    t = np.concatenate([b.time for b in batches])
    assert np.all(np.diff(pts) > 0) and np.all(np.diff(t) > 0) and t[0] == 0.0
    assert np.allclose(np.diff(t), 0.1, atol=1e-6)
    assert batches[0].frames.dtype == np.uint8 and batches[0].frames.shape == (4, 48, 64, 3)
    assert src.stats()["complete"] and src.stats()["errors"] == []


def test_start_and_max_frames(tmp_path):
    path = make_video(tmp_path / "v.mp4", n=10)
    with FileSource(path, start_frame=4, max_frames=8) as src:
        idx = np.concatenate([b.frame_index for b in src.batches(3)])
    assert idx.tolist() == [4, 5, 6, 7]


def test_clear_errors(tmp_path):
    with pytest.raises(SourceError, match="file not found"):
        FileSource(tmp_path / "missing.mp4").open()
    txt = tmp_path / "notes.mp4"
    txt.write_text("this is not a video\n" * 50)
    with pytest.raises(SourceError, match="not a video"):
        FileSource(txt).open()
    for ext in ("avi", "mkv"):
        empty = make_empty_video(tmp_path / f"empty.{ext}")
        with pytest.raises(SourceError, match="zero frames"):
            with FileSource(empty) as src:
                list(src.batches(4))
    with pytest.raises(SourceError, match="unknown URI scheme"):
        open_source("gopher://example/video")


def test_truncated_file_keeps_earlier_frames(tmp_path):
    path = make_video(tmp_path / "v.avi", n=40, codec="mpeg4", h=96, w=128)
    data = path.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    with FileSource(cut) as src:
        n = sum(len(b) for b in src.batches(8))
        st = src.stats()
    assert 5 < n < 40  # the frames before the damage are kept
    assert not st["complete"] and any("truncated" in e or "decode error" in e for e in st["errors"])


def test_corrupt_bytes_mid_file_are_recorded(tmp_path):
    path = make_video(tmp_path / "v.mp4", n=40, h=96, w=128)
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 4000] = b"\x00" * 4000
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    with FileSource(bad) as src:
        n = sum(len(b) for b in src.batches(8))
    assert n >= 10  # the frames before the damage are kept


def test_real_videos_decode(real_data):
    for f in sorted((real_data / "videos").iterdir()):
        with FileSource(f, max_frames=3) as src:
            info = src.info()
            b = next(src.batches(3))
        assert b.frames.shape[1:3] == (info["height"], info["width"]), f.name
