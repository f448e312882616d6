"""`streamparse bench gpu`: the whole GPU path in one command (run it wherever a GPU exists).

Feeds batches of synthetic 1080p frames through ``Predictor.predict_many`` with CUDA streams on
and off, fp32 and fp16 autocast, and reports frames/s and peak GPU memory. The outputs of the
streamed and the plain path are compared (they must be identical).
"""

from __future__ import annotations

import time

import numpy as np
import torch


def run_gpu_bench(args) -> dict:
    from streamparse.config import load_config
    from streamparse.engine.factory import build_predictor

    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA device")
    n_frames = int(getattr(args, "frames", 300) or 300)
    overrides = list(getattr(args, "set", []) or [])
    rng = np.random.default_rng(0)
    batch = 8
    frames = rng.integers(0, 255, (batch, 1080, 1920, 3), dtype=np.uint8)
    res = {"device": torch.cuda.get_device_name(0), "frames": n_frames, "batch": batch, "runs": []}
    reference = None
    for amp in ("none", "fp16"):
        for streams in (False, True):
            cfg = load_config(overrides=overrides + [f"pipeline.amp={amp}", f"pipeline.cuda_streams={streams}", "pipeline.device=cuda"])
            pred = build_predictor(cfg, checkpoint="none")
            torch.cuda.reset_peak_memory_stats()
            list(pred.predict_many([frames] * 2))  # warm-up
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            n = 0
            outs = None
            for outs in pred.predict_many([frames] * (n_frames // batch)):
                n += len(outs)
            torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            if amp == "none":
                if reference is None:
                    reference = outs
                else:
                    same = all(np.array_equal(a.part, b.part) and np.array_equal(a.instance, b.instance) for a, b in zip(reference, outs))
                    res["streams_output_identical"] = bool(same)
            res["runs"].append({"amp": amp, "cuda_streams": streams, "fps": n / dt,
                                "peak_mem_GiB": torch.cuda.max_memory_allocated() / 2**30})
    return res
