"""`streamparse report`: a self-contained page, checked in a real headless Chromium."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from streamparse.store.outputs import file_is_ours, generator_mark
from streamparse.store.synthetic import synthetic_people, write_store, write_v1_store, write_video

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def cli(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "streamparse", *args], capture_output=True, text=True, env=ENV, timeout=timeout)


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    src = synthetic_people(30, (96, 128), 4, seed=8)
    write_video(src, d / "cam.mp4")
    write_store(d / "v2.zarr", {"cam": src}, chunk_frames=8)
    write_v1_store(d / "v1.zarr", {"cam": src}, chunk_frames=8)
    out = {}
    for v in ("v2", "v1"):
        r = cli("report", str(d / f"{v}.zarr"), "--video", str(d / "cam.mp4"), "--out", str(d / f"{v}.html"),
                "--clip-seconds", "2")
        assert r.returncode == 0, r.stderr
        out[v] = d / f"{v}.html"
    return d, out


def test_page_is_self_contained_and_marked(pages):
    _, out = pages
    for v, path in out.items():
        text = path.read_text()
        assert f'<meta name="generator" content="{generator_mark()}">' in text[:2000] and file_is_ours(path)
        assert not re.search(r'(src|href)="(?!data:)', text), "every resource is embedded"
        assert "<script" not in text and "<link" not in text
        assert text.count('src="data:video/mp4;base64,') == 1
        assert "People on screen" in text
    v2, v1 = out["v2"].read_text(), out["v1"].read_text()
    assert "Part areas per track" in v2 and v2.count('class="thumb"') == 5 and 'alt="part areas of track 5"' in v2
    assert "Schema v1 store: no tracks" in v1 and "Part areas (from the label maps)" in v1


def _need_chromium():
    from browser import chromium_available

    ok, why = chromium_available()
    if not ok:
        pytest.skip(why)


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_page_in_headless_chromium(pages, version):
    _need_chromium()
    from browser import chromium

    d, out = pages
    shot = d / f"{version}.png"
    with chromium() as drv:
        drv.set_window_size(1200, 2400)
        drv.get(out[version].as_uri())
        deadline = time.monotonic() + 20
        state = 0
        while time.monotonic() < deadline:
            state = drv.execute_script('return document.getElementById("overlay").readyState')
            if state >= 2:
                break
            time.sleep(0.2)
        assert state >= 2, "the overlay video did not load"
        w, h, err = drv.execute_script('var v = document.getElementById("overlay"); '
                                       "return [v.videoWidth, v.videoHeight, v.error && v.error.code]")
        assert (w, h, err) == (128, 96, None)
        # the H.264 frames really decode: draw one into a canvas and look at its pixels
        mean = drv.execute_async_script(
            'var v = document.getElementById("overlay"), done = arguments[arguments.length - 1];'
            'v.addEventListener("seeked", function () { var c = document.createElement("canvas");'
            "c.width = v.videoWidth; c.height = v.videoHeight; var x = c.getContext('2d'); x.drawImage(v, 0, 0);"
            "var p = x.getImageData(0, 0, c.width, c.height).data, s = 0;"
            "for (var i = 0; i < p.length; i += 4) s += p[i] + p[i + 1] + p[i + 2]; done(s / (p.length / 4) / 3); },"
            "{once: true}); v.currentTime = 1.0;")
        assert 20 < mean < 240, mean
        n_img = drv.execute_script("return Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0).length")
        assert n_img == drv.execute_script("return document.images.length") >= 1  # every embedded PNG decoded
        errors = [e for e in drv.get_log("browser") if e.get("level") == "SEVERE"]
        assert not errors, errors
        assert drv.save_screenshot(str(shot))
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[1] == 1200 and img.std() > 10  # not a blank page


def test_report_refusals(pages):
    d, out = pages
    other = synthetic_people(12, (96, 128), 2, seed=9)
    write_video(other, d / "other.mp4")
    r = cli("report", str(d / "v2.zarr"), "--video", str(d / "other.mp4"), "--out", str(d / "x.html"))
    assert r.returncode == 2 and "frames" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (d / "x.html").exists()
    r = cli("report", str(d / "v2.zarr"), "--video", str(d / "cam.mp4"), "--out", str(out["v2"]))
    assert r.returncode == 2 and "--overwrite" in r.stderr
    r = cli("report", str(d / "v2.zarr"), "--video", str(d / "cam.mp4"), "--out", str(out["v2"]), "--overwrite",
            "--clip-seconds", "1")
    assert r.returncode == 0, r.stderr
