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
