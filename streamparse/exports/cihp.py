"""The CIHP folder layout that ``streamparse eval`` and ``CIHPDataset`` read, one split per source:

``Images/<id>.jpg`` (from ``--video``, required: the reader takes image sizes from them),
``Category_ids/<id>.png`` (uint8 part classes), ``Human_ids/<id>.png`` (uint8 person ids 1..K, K <= 255),
``Instance_ids/<id>.png`` ((human - 1) * 20 + category; uint8, 16-bit when it does not fit) with the
``<id>.txt`` side-car "value category human_id", ``<source>_id.txt`` (the split's ids).
"""

from __future__ import annotations

import numpy as np

from streamparse.exports import ExportError, frame_id
from streamparse.exports._common import write_jpeg, write_png


def export(ctx) -> dict:
    if not ctx.video:
        raise ExportError("the cihp layout needs the frames as Images/*.jpg: give the source's video with --video")
    res = ctx.result
    n = 0
    for source in ctx.sources:
        rows = ctx.rows(source)
        ids = []
        frames = res.iter_frames(source, rows, origin=ctx.origin)
        for row, rgb in ctx.images(source, rows):
            f = next(frames)
            assert f.row == row
            if int(f.instance.max(initial=0)) > 255:
                raise ExportError(f"{source} frame {f.frame_index}: {int(f.instance.max())} people do not fit CIHP's uint8 Human_ids")
            fid = frame_id(source, f.frame_index)
            hum = f.instance.astype(np.uint8)
            inst = np.where(hum > 0, (f.instance.astype(np.int32) - 1) * 20 + f.part, 0)
            inst = inst.astype(np.uint8 if inst.max(initial=0) <= 255 else np.uint16)
            write_jpeg(ctx.out / "Images" / f"{fid}.jpg", rgb)
            write_png(ctx.out / "Category_ids" / f"{fid}.png", f.part)
            write_png(ctx.out / "Human_ids" / f"{fid}.png", hum)
            write_png(ctx.out / "Instance_ids" / f"{fid}.png", inst)
            vals = np.unique(inst[hum > 0]).tolist()
            (ctx.out / "Instance_ids" / f"{fid}.txt").write_text("".join(f"{v} {v % 20} {v // 20 + 1}\n" for v in vals))
            ids.append(fid)
            n += 1
        (ctx.out / f"{source}_id.txt").write_text("".join(i + "\n" for i in ids))
    return {"images": n}
