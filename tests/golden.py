"""Golden outputs: deterministic synthetic videos and the checksums of what the pipeline stores for them.

The videos are encoded with FFmpeg's mpeg4 encoder at a fixed quantiser (x264 with threads is not
byte-reproducible), from ``streamparse.data.synth.render_sample`` frames. ``tests/golden_v1.json``
holds the checksums that the code before the inference-path redesign (commit a1ee539) stored; the test
``test_golden.py`` checks that the current code stores exactly the same bytes. Re-record (only when a
change of outputs is intended, and say why in the CHANGELOG) with ``python tests/golden.py record``.
The checksums are of the detected people (``detected_view``): people the tracker recovers from low-score
candidates are added rows and pixels on background, not a change of the parser's output.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
RECORD = HERE / "golden_v1.json"
VIDEOS = {"g240x320": ((240, 320), 12, 3), "g256x256": ((256, 256), 12, 2)}  # size, frames, people
TINY = ["model.name=uniparser_tiny", "model.input_size=[64,64]", "model.center_thresh=0.0", "model.max_instances=4",
        "model.mask_thresh=0.2", "model.merge_cos=1.01"]
CASES = {  # name -> (config overrides, checkpoint)
    "shipped_default": ([], None),
    "shipped_quality": (["model.input_size=[512,896]", "model.cate_score_thresh=0.275"], None),
    "tiny_random": (TINY, "none"),
}
# one inference actor of 2 threads: the layout the record was made with (the CPU default was 1 actor until
# 0.3.0; the default now is one single-threaded actor per core, whose reductions round the scores
# differently in the last bits: test_golden.test_default_cpu_layout)
COMMON = ["pipeline.batch_size=4", "pipeline.chunk_frames=8", "pipeline.workers=1", "pipeline.torch_threads=2"]
ARRAYS = ("part", "instance", "inst_offset", "inst_id", "inst_bbox", "inst_area", "inst_score")


def sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def make_videos(d: Path) -> list[str]:
    import av

    from streamparse.data.synth import render_sample

    out = []
    for name, ((h, w), n, people) in VIDEOS.items():
        path = d / f"{name}.avi"
        with av.open(str(path), "w") as c:
            s = c.add_stream("mpeg4", rate=10)
            s.width, s.height, s.pix_fmt = w, h, "yuv420p"
            s.codec_context.qmin = s.codec_context.qmax = 2
            for i in range(n):
                img = render_sample(np.random.default_rng([7, i]), size=(h, w), num_people=people).image
                for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    c.mux(p)
            for p in s.encode():
                c.mux(p)
        out.append(str(path))
    return out


def decoded_checksums(videos: list[str]) -> dict:
    from streamparse.sources import FileSource

    res = {}
    for v in videos:
        with FileSource(v) as src:
            res[Path(v).stem] = sha(np.concatenate([b.frames for b in src.batches(16)]))
    return res


def detected_view(g) -> dict:
    """The detected people of a source group: ``ARRAYS`` without the rows (and pixels) a tracker added
    (``inst_origin`` != 0: recovered candidates). The recorded checksums are of the parser's output, which
    the tracker never changes; it only adds people on background pixels."""
    out = {a: g[a][:] for a in ARRAYS}
    origin = g["inst_origin"][:] if "inst_origin" in g else np.zeros(len(out["inst_id"]), np.uint8)
    if not origin.any():
        return out
    n = len(origin)
    counts = np.diff(np.append(out["inst_offset"], n))
    frame = np.repeat(np.arange(len(counts)), counts)
    keep = origin == 0
    det = np.bincount(frame[keep], minlength=len(counts))
    inst = out["instance"]
    out["instance"] = np.where(inst <= det[:, None, None], inst, 0).astype(inst.dtype)
    out["part"] = np.where(out["instance"] > 0, out["part"], 0).astype(out["part"].dtype)
    for a in ("inst_id", "inst_bbox", "inst_area", "inst_score"):
        out[a] = out[a][keep]
    out["inst_offset"] = np.concatenate([[0], np.cumsum(det)[:-1]]).astype(out["inst_offset"].dtype)
    return out


def store_checksums(store: Path) -> dict:
    import zarr

    root = zarr.open_group(str(store), mode="r")
    return {sid: {a: sha(v) for a, v in detected_view(root[sid]).items()} for sid in VIDEOS}


def record(work: Path) -> dict:
    import torch

    from streamparse.config import load_config
    from streamparse.engine.raystart import init_ray
    from streamparse.pipelines.video import run

    work.mkdir(parents=True, exist_ok=True)
    videos = make_videos(work)
    init_ray(object_store_mb=512, num_cpus=2)
    res = {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "decoded": decoded_checksums(videos), "cases": {}}
    for name, (ov, ck) in CASES.items():
        cfg = load_config(overrides=ov + COMMON)
        store = work / f"{name}.zarr"
        run(cfg, videos, store, checkpoint=ck, progress=False)
        res["cases"][name] = store_checksums(store)
    return res


if __name__ == "__main__" and sys.argv[1:2] == ["record"]:
    import tempfile

    RECORD.write_text(json.dumps(record(Path(tempfile.mkdtemp(prefix="sp-golden-"))), indent=1) + "\n")
    print(f"wrote {RECORD}")
