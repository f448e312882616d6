"""Shared pytest fixtures."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Ray's token authentication stays on in every test (local runtimes, the loopback clusters, the CLI in
# subprocesses): one token for the session in a file of its own (never ~/.ray/auth_token), set before
# anything imports Ray. A test that needs a wrong token points RAY_AUTH_TOKEN_PATH elsewhere.
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_AUTH_TOKEN_PATH", os.path.join(tempfile.mkdtemp(prefix="sp-test-token-"), "auth_token"))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
if os.environ["RAY_AUTH_MODE"] == "token":
    from streamparse.engine.raystart import ensure_token

    ensure_token()

# The suite checks today's torch path (golden bytes, pipeline behaviour): ``model.runtime=auto`` stays on
# torch here unless a test says otherwise (tests/test_runtime.py), and nothing is exported to ~/.cache.
os.environ.setdefault("STREAMPARSE_AUTO_RUNTIME", "torch")


@pytest.fixture(scope="session", autouse=True)
def _export_cache(tmp_path_factory):
    """A session-wide export cache (streamparse.runtime.cache) in pytest's temporary folder."""
    old = os.environ.get("STREAMPARSE_CACHE_DIR")
    os.environ["STREAMPARSE_CACHE_DIR"] = str(tmp_path_factory.mktemp("export-cache"))
    yield
    if old is None:
        os.environ.pop("STREAMPARSE_CACHE_DIR", None)
    else:
        os.environ["STREAMPARSE_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def real_data() -> Path:
    """Folder of real third-party test data ($STREAMPARSE_REAL_DATA, default <repo>/../shared/data/real)."""
    path = Path(os.environ.get("STREAMPARSE_REAL_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"))
    if not path.is_dir():
        pytest.skip(f"real data folder absent: {path}")
    return path


@pytest.fixture(scope="module")
def gst():
    """Skip (with the reason) unless Debian's GStreamer RTSP server packages are installed."""
    from streamparse.bench.rtsp_server import gst_rtsp_available

    ok, why = gst_rtsp_available()
    if not ok:
        pytest.skip(why)


@pytest.fixture(scope="module")
def ray_runtime():
    """A local Ray runtime (2 CPUs, 512 MB object store) for one test module."""
    import ray

    from streamparse.engine.raystart import init_ray

    started = init_ray(object_store_mb=512, num_cpus=2)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """75 flat grey 160x120 H.264 frames at 25 fps; frame i has grey level 10 + 3 i."""
    import av
    import numpy as np

    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 160, 120, "yuv420p"
        s.options = {"g": "25", "bf": "0", "preset": "ultrafast", "tune": "zerolatency"}
        for i in range(75):
            for p in s.encode(av.VideoFrame.from_ndarray(np.full((120, 160, 3), 10 + 3 * i, np.uint8), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path
