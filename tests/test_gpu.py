"""The CUDA paths (copy stream, pinned memory, autocast, the pipeline on a GPU actor). They run only
where a CUDA device exists (`pytest -m gpu` on a GPU machine, next to `streamparse bench gpu`); here
they skip with the reason. CI has no GPU, so the CPU paths are what CI tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")]

TINY = ["model.name=uniparser_tiny", "model.input_size=[64,96]", "model.center_thresh=0.0", "model.max_instances=4",
        "model.mask_thresh=0.2", "model.merge_cos=1.01"]


def _pred(*extra):
    from streamparse.engine.factory import build_predictor
    from streamparse.config import load_config

    return build_predictor(load_config(overrides=TINY + ["pipeline.device=cuda", *extra]), checkpoint="none")


def test_copy_stream_gives_the_same_output_as_plain_copies():
    frames = np.random.default_rng(0).integers(0, 255, (4, 96, 128, 3), dtype=np.uint8)
    on, off = _pred("pipeline.cuda_streams=true"), _pred("pipeline.cuda_streams=false")
    assert on.use_streams and not off.use_streams and on.device.type == "cuda"
    a, b = on.predict(frames), off.predict(frames)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.part, y.part)
        np.testing.assert_array_equal(x.instance, y.instance)
    many = [p for batch in on.predict_many([frames, frames]) for p in batch]
    for x, y in zip(many[:4], a):
        np.testing.assert_array_equal(x.part, y.part)


def test_fp16_autocast_runs_and_agrees_mostly():
    frames = np.random.default_rng(1).integers(0, 255, (2, 96, 128, 3), dtype=np.uint8)
    fp32, fp16 = _pred(), _pred("pipeline.amp=fp16")
    a, b = fp32.predict(frames), fp16.predict(frames)
    for x, y in zip(a, b):  # fp16 rounding may move a few threshold decisions, not the picture
        assert x.part.shape == y.part.shape and abs(np.mean(x.instance > 0) - np.mean(y.instance > 0)) < 0.1


@pytest.mark.ray
def test_pipeline_runs_on_a_gpu_actor(tmp_path):
    from streamparse.config import load_config
    from streamparse.engine.raystart import init_ray
    from streamparse.pipelines.video import run
    from videos import make_video

    video = make_video(tmp_path / "v.mp4", n=12, h=96, w=128)
    started = init_ray(object_store_mb=512)
    try:
        s = run(load_config(overrides=TINY + ["pipeline.device=cuda"]), [str(video)], tmp_path / "o.zarr",
                checkpoint="none", progress=False)
    finally:
        if started:
            import ray

            ray.shutdown()
    assert s["sources"]["v"]["frames_written"] == 12 and not s["sources"]["v"]["errors"]
