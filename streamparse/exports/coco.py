"""COCO instance annotations: one ``person`` annotation per person and frame (compressed RLE), and with
``parts`` one annotation per (person, part) (category 100 + part class, ``person_annotation_id``).

``annotations.json`` (COCO JSON, read by pycocotools' ``COCO``), with ``--video`` also
``images/<source>/<frame id>.jpg``. Extra keys per image: source, frame_index, time; per annotation:
score, instance_id, track_id (schema v2, tracked people).
"""

from __future__ import annotations

import numpy as np

from streamparse.exports import frame_id
from streamparse.exports._common import PART_CATEGORY_OFFSET, person_masks, person_rows, rle_encode, write_jpeg, xywh


def export(ctx) -> dict:
    from streamparse.store.outputs import write_json

    res = ctx.result
    names = res.class_names
    cats = [{"id": 1, "name": "person", "supercategory": "person"}]
    if ctx.parts:
        cats += [{"id": PART_CATEGORY_OFFSET + c, "name": names[c], "supercategory": "person_part"} for c in range(1, len(names))]
    images, anns = [], []
    C = len(names)
    for source in ctx.sources:
        H, W = ctx.size(source)
        pr = person_rows(res, source, ctx.origin)
        rows = ctx.rows(source)
        imgs = dict(ctx.images(source, rows)) if ctx.video else {}
        for f in res.iter_frames(source, rows, origin=ctx.origin):
            fid = frame_id(source, f.frame_index)
            image_id = len(images) + 1
            images.append({"id": image_id, "file_name": f"{source}/{fid}.jpg", "width": W, "height": H,
                           "source": source, "frame_index": f.frame_index, "time": f.time})
            if f.row in imgs:
                write_jpeg(ctx.out / "images" / source / f"{fid}.jpg", imgs.pop(f.row))
            s, k = int(pr["offset"][f.row]), int(pr["count"][f.row])
            ids = pr["id"][s:s + k]
            for j, rle in enumerate(rle_encode(person_masks(f.instance, ids))):
                r = s + j
                ann = {"id": len(anns) + 1, "image_id": image_id, "category_id": 1, "segmentation": rle,
                       "area": int(pr["area"][r]), "bbox": xywh(pr["bbox"][r]), "iscrowd": 0,
                       "score": float(pr["score"][r]), "instance_id": int(ids[j])}
                if pr["track"] is not None and pr["track"][r]:
                    ann["track_id"] = int(pr["track"][r])
                anns.append(ann)
                person_ann = ann["id"]
                if ctx.parts:
                    anns.extend(_part_annotations(f, int(ids[j]), C, image_id, person_ann, len(anns)))
    write_json(ctx.out / "annotations.json", {
        "info": {"description": f"streamparse labels of {res.path}", "model_name": res.attrs.get("model_name"),
                 "schema_version": res.schema_version},
        "licenses": [], "images": images, "annotations": anns, "categories": cats})
    return {"images": len(images), "annotations": len(anns), "files": ["annotations.json"]}


def _part_annotations(f, inst_id: int, C: int, image_id: int, person_ann: int, n0: int) -> list[dict]:
    from pycocotools import mask as mask_utils

    on = f.instance == inst_id
    present = np.flatnonzero(np.bincount(f.part[on], minlength=C)[1:]) + 1
    if not len(present):
        return []
    key = np.where(on, f.part, 0)
    masks = (key[:, :, None] == present.astype(np.uint8)[None, None, :]).view(np.uint8)
    out = []
    for i, (c, rle) in enumerate(zip(present, rle_encode(masks))):
        area = int(mask_utils.area({"size": rle["size"], "counts": rle["counts"].encode()}))
        box = mask_utils.toBbox({"size": rle["size"], "counts": rle["counts"].encode()}).tolist()
        out.append({"id": n0 + i + 1, "image_id": image_id, "category_id": PART_CATEGORY_OFFSET + int(c),
                    "segmentation": rle, "area": area, "bbox": [int(round(v)) for v in box], "iscrowd": 0,
                    "person_annotation_id": person_ann, "instance_id": inst_id})
    return out
