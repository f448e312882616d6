"""MOTS, as TrackEval (MOTSChallenge) and CVAT (MOTS PNG) read it. Needs tracks (schema v2).

Per source: ``<source>.txt`` with one line per person and frame,
``time_frame id class_id img_height img_width rle`` (time_frame = frame_index + 1, class 2 = pedestrian,
id = class_id * 1000 + track id, rle = COCO compressed RLE); ``<source>/instances/<frame id>.png``
(16-bit, pixel = the same id, 0 = background); ``<source>/seqinfo.ini``; with ``--video``
``<source>/images/<frame id>.jpg``. ``instance_labels.txt`` lists the classes (background, car,
pedestrian) so that class 2 is a pedestrian for CVAT too. Track ids must be < 1000.
"""

from __future__ import annotations

import numpy as np

from streamparse.exports import ExportError, frame_id
from streamparse.exports._common import person_masks, person_rows, rle_encode, write_jpeg, write_png

PEDESTRIAN = 2


def export(ctx) -> dict:
    ctx.need_tracks("mots")
    res = ctx.result
    (ctx.out / "instance_labels.txt").write_text("background\ncar\npedestrian\n")
    lines_total = 0
    for source in ctx.sources:
        H, W = ctx.size(source)
        pr = person_rows(res, source, ctx.origin)
        if pr["track"] is not None and len(pr["track"]) and int(pr["track"].max()) >= 1000:
            raise ExportError(f"source {source}: track id {int(pr['track'].max())} does not fit a MOTS id "
                              "(class * 1000 + track needs track < 1000)")
        rows = ctx.rows(source)
        imgs = dict(ctx.images(source, rows)) if ctx.video else {}
        lines = []
        for f in res.iter_frames(source, rows, origin=ctx.origin):
            fid = frame_id(source, f.frame_index)
            if f.row in imgs:
                write_jpeg(ctx.out / source / "images" / f"{fid}.jpg", imgs.pop(f.row))
            s, k = int(pr["offset"][f.row]), int(pr["count"][f.row])
            ids, tracks = pr["id"][s:s + k], pr["track"][s:s + k].astype(np.int64)
            lut = np.zeros(int(f.instance.max(initial=0)) + 1, np.uint16)
            for j in range(k):
                if tracks[j] and ids[j] < len(lut):
                    lut[ids[j]] = PEDESTRIAN * 1000 + tracks[j]
            write_png(ctx.out / source / "instances" / f"{fid}.png", lut[f.instance])
            for j, rle in enumerate(rle_encode(person_masks(f.instance, ids))):
                if tracks[j]:
                    lines.append(f"{f.frame_index + 1} {PEDESTRIAN * 1000 + tracks[j]} {PEDESTRIAN} {H} {W} {rle['counts']}")
        (ctx.out / f"{source}.txt").write_text("".join(ln + "\n" for ln in lines))
        fps = res.info(source).get("avg_fps") or 25
        (ctx.out / source / "seqinfo.ini").write_text(
            f"[Sequence]\nname={source}\nimDir=images\nframeRate={fps:g}\nseqLength={int(res.num_frames(source))}\n"
            f"imWidth={W}\nimHeight={H}\nimExt=.jpg\n")
        lines_total += len(lines)
    return {"lines": lines_total}
