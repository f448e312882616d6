"""YouTube-VIS: one video per source, one annotation per track with a compressed RLE (or null) per
exported frame (``segmentations``, ``bboxes`` [x, y, w, h], ``areas``). Needs tracks (schema v2).

``annotations.json``; with ``--video`` also ``JPEGImages/<source>/<frame id>.jpg`` (the layout
YouTube-VIS ``file_names`` point into).
"""

from __future__ import annotations

import numpy as np

from streamparse.exports import frame_id
from streamparse.exports._common import person_masks, person_rows, rle_encode, write_jpeg, xywh


def export(ctx) -> dict:
    from streamparse.store.outputs import write_json

    ctx.need_tracks("youtube-vis")
    res = ctx.result
    videos, anns = [], []
    for vid, source in enumerate(ctx.sources, 1):
        H, W = ctx.size(source)
        pr = person_rows(res, source, ctx.origin)
        rows = ctx.rows(source)
        imgs = dict(ctx.images(source, rows)) if ctx.video else {}
        files, per_track = [], {}
        for n, f in enumerate(res.iter_frames(source, rows, origin=ctx.origin)):
            fid = frame_id(source, f.frame_index)
            files.append(f"{source}/{fid}.jpg")
            if f.row in imgs:
                write_jpeg(ctx.out / "JPEGImages" / source / f"{fid}.jpg", imgs.pop(f.row))
            s, k = int(pr["offset"][f.row]), int(pr["count"][f.row])
            tracks = pr["track"][s:s + k]
            for j, rle in enumerate(rle_encode(person_masks(f.instance, pr["id"][s:s + k]))):
                if not tracks[j]:
                    continue
                t = per_track.setdefault(int(tracks[j]), {})
                t[n] = (rle, xywh(pr["bbox"][s + j]), int(pr["area"][s + j]), float(pr["score"][s + j]))
        L = len(files)
        videos.append({"id": vid, "name": source, "width": W, "height": H, "length": L, "file_names": files})
        for tr, seen in sorted(per_track.items()):
            anns.append({"id": len(anns) + 1, "video_id": vid, "category_id": 1, "iscrowd": 0, "track_id": tr,
                         "height": H, "width": W, "length": 1,
                         "segmentations": [seen[i][0] if i in seen else None for i in range(L)],
                         "bboxes": [seen[i][1] if i in seen else None for i in range(L)],
                         "areas": [seen[i][2] if i in seen else None for i in range(L)],
                         "score": float(np.mean([v[3] for v in seen.values()]))})
    write_json(ctx.out / "annotations.json", {
        "info": {"description": f"streamparse tracks of {res.path}"}, "licenses": [], "videos": videos,
        "annotations": anns, "categories": [{"id": 1, "name": "person", "supercategory": "person"}]})
    return {"videos": len(videos), "annotations": len(anns), "files": ["annotations.json"]}
