"""The redesigned inference path stores exactly the bytes the previous one did (issue 17 acceptance).

``golden_v1.json`` was recorded by the code before the redesign (commit a1ee539) on the deterministic
videos of ``golden.py``: three configurations (the shipped weights at the pipeline default and at their
quality preset, a random-init tiny model at threshold 0 where every rounding shows) x two sizes.
"""

from __future__ import annotations

import json

import pytest

from golden import CASES, COMMON, RECORD, decoded_checksums, make_videos, store_checksums

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def golden_videos(tmp_path_factory):
    import torch

    rec = json.loads(RECORD.read_text())
    if torch.backends.cpu.get_cpu_capability() != rec["cpu_capability"]:
        pytest.skip(f"recorded on a {rec['cpu_capability']} CPU; this one is {torch.backends.cpu.get_cpu_capability()} "
                    "(other SIMD kernels round differently)")
    d = tmp_path_factory.mktemp("golden")
    videos = make_videos(d)
    assert decoded_checksums(videos) == rec["decoded"], "the synthetic golden videos decode to other pixels here"
    return rec, videos


@pytest.mark.parametrize("case", list(CASES))
def test_pipeline_stores_the_recorded_bytes(ray_runtime, tmp_path, golden_videos, case):
    from streamparse.config import load_config
    from streamparse.pipelines.video import run

    rec, videos = golden_videos
    ov, ck = CASES[case]
    run(load_config(overrides=ov + COMMON), videos, tmp_path / "o.zarr", checkpoint=ck, progress=False)
    got = store_checksums(tmp_path / "o.zarr")
    for sid, arrays in rec["cases"][case].items():
        for name, digest in arrays.items():
            assert got[sid][name] == digest, f"{case}/{sid}/{name} differs from the recorded output"


def test_default_cpu_layout(ray_runtime, tmp_path, golden_videos):
    """The default CPU layout (``pipeline.workers=0``: one single-threaded actor per core here) stores the
    recorded label maps, people, boxes and areas; only the scores round differently (< 1e-6) than with
    the recorded layout (one actor of 2 threads), and the kernels by at most one float16 step."""
    import numpy as np
    import zarr

    from streamparse.config import load_config
    from streamparse.pipelines.video import run

    rec, videos = golden_videos
    ov, ck = CASES["tiny_random"]  # threshold 0: every rounding shows
    base = [o for o in COMMON if not o.startswith(("pipeline.workers", "pipeline.torch_threads"))]
    for name, extra in (("default", []), ("recorded", ["pipeline.workers=1", "pipeline.torch_threads=2"])):
        run(load_config(overrides=ov + base + extra), videos, tmp_path / f"{name}.zarr", checkpoint=ck, progress=False)
    got = store_checksums(tmp_path / "default.zarr")
    for sid, arrays in rec["cases"]["tiny_random"].items():
        for name, digest in arrays.items():
            if name != "inst_score":
                assert got[sid][name] == digest, f"default layout: {sid}/{name} differs from the recorded output"
        a, b = (zarr.open_group(str(tmp_path / f"{n}.zarr"), mode="r")[sid] for n in ("default", "recorded"))
        assert np.abs(a["inst_score"][:].astype(np.float64) - b["inst_score"][:]).max() < 1e-6
        assert np.abs(a["inst_embedding"][:].astype(np.float64) - b["inst_embedding"][:]).max() <= 2.0 ** -12
