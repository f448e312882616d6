"""`streamparse bench analytics`: the reading side's speed on synthetic stores (issue 20 targets).

- ``.instances()`` and ``.part_areas(by="track")`` on a schema-v2 store of ``frames`` frames with
  ``people`` people each (target: < 1 s for 10,000 frames), each timed on a freshly opened ``Result``
  (imports warm, no cached arrays), median of ``reps``;
- ``streamparse render`` throughput at 640x480 with 8 people (target: >= 30 fps): the whole loop (decode,
  label maps from the store, overlay, H.264 encode) and the overlay drawing alone.
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def _median_time(fn, reps: int) -> float:
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def run_analytics_bench(frames: int = 10000, people: int = 8, render_frames: int = 150, size=(480, 640),
                        reps: int = 3, workdir: str | None = None) -> dict:
    from streamparse.results.overlay import Overlay
    from streamparse.results import open_result
    from streamparse.store.synthetic import synthetic_people, write_store, write_video
    from streamparse.results.video import render_video

    res = {"machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                       "python": platform.python_version(), "loadavg_at_start": list(os.getloadavg())},
           "frames": frames, "people": people}
    with tempfile.TemporaryDirectory(prefix="sp-bench-analytics-", dir=workdir) as d:
        d = Path(d)
        src = synthetic_people(frames, (16, 16), people, seed=0, churn=False, with_images=False)
        write_store(d / "big.zarr", {"big": src}, chunk_frames=256)
        warm = open_result(d / "big.zarr")  # imports (pandas, xarray) and the first file reads
        warm.instances("big"), warm.part_areas("big"), warm.tracks("big")
        res["instances_rows"] = int(src.counts.sum())
        res["instances_s"] = _median_time(lambda: open_result(d / "big.zarr").instances("big"), reps)
        res["part_areas_s"] = _median_time(lambda: open_result(d / "big.zarr").part_areas("big", by="track"), reps)
        res["tracks_s"] = _median_time(lambda: open_result(d / "big.zarr").tracks("big"), reps)

        def both():
            r = open_result(d / "big.zarr")
            r.instances("big")
            r.part_areas("big", by="track")
        res["instances_plus_part_areas_s"] = _median_time(both, reps)

        H, W = size
        vga = synthetic_people(render_frames, (H, W), people, seed=5, churn=False)
        write_video(vga, d / "vga.mp4", crf=23)
        write_store(d / "vga.zarr", {"vga": vga}, chunk_frames=16)
        r = open_result(d / "vga.zarr")
        res["render_people_per_frame"] = float(np.mean(vga.counts))
        runs = [render_video(r, "vga", d / "vga.mp4", d / f"o{i}.mp4", legend=True) for i in range(reps)]
        res["render_fps"] = statistics.median(x["fps"] for x in runs)
        res["render_size"] = [W, H]
        ov = Overlay(r.palette, legend=r.class_names)
        frames_ = list(r.iter_frames("vga"))
        labels = [[(k, f"#{k}", (0, 0, 10, 10), k) for k in range(1, int(f.instance.max()) + 1)] for f in frames_]
        t0 = time.perf_counter()
        for f, lab, img in zip(frames_, labels, vga.images):
            ov.draw(img, f.part, f.instance, lab)
        res["overlay_only_fps"] = round(len(frames_) / (time.perf_counter() - t0), 1)
    res["machine"]["loadavg_at_end"] = list(os.getloadavg())
    return res


def format_analytics(res: dict) -> str:
    return "\n".join([
        f"machine: {res['machine']['cpus']} CPUs, load avg {res['machine']['loadavg_at_start'][0]:.2f} at start "
        f"(a shared machine: other jobs may run)",
        f"{res['frames']} frames x {res['people']} people ({res['instances_rows']} rows):",
        f"  instances()            {res['instances_s'] * 1000:7.1f} ms",
        f"  part_areas(by=track)   {res['part_areas_s'] * 1000:7.1f} ms",
        f"  both, fresh Result     {res['instances_plus_part_areas_s'] * 1000:7.1f} ms   (target < 1000 ms)",
        f"  tracks()               {res['tracks_s'] * 1000:7.1f} ms",
        f"render {res['render_size'][0]}x{res['render_size'][1]}, {res['render_people_per_frame']:.1f} people/frame:",
        f"  whole loop (decode + maps + overlay + x264)  {res['render_fps']:6.1f} fps   (target >= 30)",
        f"  overlay drawing alone                        {res['overlay_only_fps']:6.1f} fps",
    ])
