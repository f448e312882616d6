"""`streamparse bench model`: UniParser variants vs torchvision Mask R-CNN on this machine.

Per variant and input size: ms/image split into backbone+FPN, heads (neck compression,
Center Locator, IFSB, CFSB, kernels and similarity maps) and post-processing at 3 and at 20
people per image (the centres are forced so the cost does not depend on random weights),
plus parameter counts. Mask R-CNN (``weights=None, weights_backbone=None``) runs at the same
input size, thread count and memory format. A size that is not a multiple of 32 (e.g. the authors'
800x1333) is zero-padded up to one, as the preprocessing does. The authors' variants
(``*_official``) time their own post-processing (``models.postprocess_official``), every forced
person covering the whole image with every category (a worst case).
"""

from __future__ import annotations

import statistics
import time

import torch

DEFAULT_VARIANTS = ("uniparser_r50_fpn", "uniparser_r50_fpn_light", "uniparser_r101_fpn", "uniparser_r18_fpn", "uniparser_r18_fpn_light")
PAPER_PARAMS_M = {"uniparser_r101_fpn_dcn": 36.73, "uniparser_r101_fpn_light_dcn": 30.54}


def _time(fn, reps: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1000)
    return statistics.median(ts)


def _forced_cells(grid: int, k: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(k)
    return torch.randperm(grid * grid, generator=g)[:k].sort().values


@torch.inference_mode()
def bench_uniparser(name: str, size: tuple[int, int], reps: int, num_classes: int = 20, people=(3, 20)) -> dict:
    """Medians over ``reps`` rounds; each round times every stage once, in turn (backbone, then
    heads and post-processing per people count), so slow drifts of the machine hit every stage
    alike and the heads+post / backbone ratio stays meaningful."""
    from streamparse.models import build_model
    from streamparse.config import ModelConfig
    from streamparse.models.postprocess import parse_image
    from streamparse.models.postprocess_official import OfficialParams, parse_official

    torch.manual_seed(0)
    model = build_model(name, num_classes=num_classes).eval().to(memory_format=torch.channels_last)
    official = getattr(model, "kernel_sampling", "bilinear") == "cell_top_left"
    padded = tuple(-(-int(v) // 32) * 32 for v in size)
    x = torch.randn(1, 3, *padded).contiguous(memory_format=torch.channels_last)
    neck = model.neck
    levels = neck.backbone_fpn(x)
    stages = {"backbone_fpn_ms": lambda: neck.backbone_fpn(x)}
    for k in people:
        cells = [_forced_cells(model.grid, k)]
        out = model(x, centers=cells, compute_parsing=False, keep_grid_pad=official)

        def heads(cells=cells):
            return model.forward_heads(neck.compress_levels(levels), cells, compute_parsing=False, keep_grid_pad=official)

        def post(out=out):  # every forced person covers its region: worst case for post-processing
            if official:
                return parse_official(center_logits=out.center_logits[0, 0], ins_feats=out.ins_feats[0],
                                      cate_maps=out.cate_maps[0, 1:], grid=model.grid, valid_hw=size, out_hw=size,
                                      params=OfficialParams(mask_thr=0.0, cate_score_thr=0.0), cells=out.centers[0])
            return parse_image(heat=out.heatmap[0, 0], cells=out.centers[0], ins_kernels=out.ins_kernels[0],
                               ins_maps=out.ins_maps[0], cate_maps=out.cate_maps[0], parsing=None, stride=model.stride,
                               out_size=size, merge_cos=1.01, mask_thresh=0.0,
                               cate_score_thresh=ModelConfig().cate_score_thresh)

        stages[f"heads_ms@{k}"] = heads
        stages[f"post_ms@{k}"] = post
    for fn in stages.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {key: [] for key in stages}
    for _ in range(reps):
        for key, fn in stages.items():
            t0 = time.perf_counter()
            fn()
            times[key].append((time.perf_counter() - t0) * 1000)
    med = {key: statistics.median(v) for key, v in times.items()}
    t_backbone = med["backbone_fpn_ms"]
    res = {"model": name, "input": list(size), "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
           "backbone_fpn_ms": t_backbone}
    for k in people:
        t_heads, t_post = med[f"heads_ms@{k}"], med[f"post_ms@{k}"]
        res[f"heads_ms@{k}"] = t_heads
        res[f"post_ms@{k}"] = t_post
        res[f"total_ms@{k}"] = t_backbone + t_heads + t_post
        res[f"overhead@{k}"] = (t_heads + t_post) / t_backbone
    return res


@torch.inference_mode()
def bench_maskrcnn(size: tuple[int, int], reps: int) -> dict:
    import torchvision

    torch.manual_seed(0)
    m = torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, min_size=min(size), max_size=max(size)
    ).eval().to(memory_format=torch.channels_last)
    x = [torch.rand(3, *size)]
    t = _time(lambda: m(x), reps)
    n_det = len(m(x)[0]["boxes"])
    return {"model": "maskrcnn_resnet50_fpn", "input": list(size), "params_M": sum(p.numel() for p in m.parameters()) / 1e6,
            "total_ms": t, "detections": n_det}


def run_model_bench(variants=DEFAULT_VARIANTS, sizes=((512, 512), (800, 1344)), reps: int = 3, threads: int = 0,
                    num_classes: int = 20, progress: bool = True) -> dict:
    if threads:
        torch.set_num_threads(threads)
    out = {"threads": torch.get_num_threads(), "torch": torch.__version__, "rows": [], "maskrcnn": []}
    from tqdm import tqdm

    jobs = [(v, s) for s in sizes for v in variants]
    for v, s in tqdm(jobs, desc="bench model", disable=not progress):
        out["rows"].append(bench_uniparser(v, tuple(s), reps, num_classes))
    for s in sizes:
        out["maskrcnn"].append(bench_maskrcnn(tuple(s), reps))
    for r in out["rows"]:
        mr = next(m for m in out["maskrcnn"] if m["input"] == r["input"])
        r["vs_maskrcnn@3"] = r["total_ms@3"] / mr["total_ms"]
    return out


def format_table(res: dict) -> str:
    lines = [f"threads={res['threads']} torch={res['torch']}",
             "| model | input | params (M) | backbone+FPN ms | heads ms @3 | post ms @3 / @20 | total ms @3 / @20 | heads+post over backbone @3 / @20 | vs Mask R-CNN @3 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(
            f"| {r['model']} | {r['input'][0]}x{r['input'][1]} | {r['params_M']:.2f} | {r['backbone_fpn_ms']:.0f} | "
            f"{r['heads_ms@3']:.0f} | {r['post_ms@3']:.0f} / {r['post_ms@20']:.0f} | {r['total_ms@3']:.0f} / {r['total_ms@20']:.0f} | "
            f"{100 * r['overhead@3']:.0f}% / {100 * r['overhead@20']:.0f}% | {r['vs_maskrcnn@3']:.2f}x |"
        )
    for m in res["maskrcnn"]:
        lines.append(f"| maskrcnn_resnet50_fpn | {m['input'][0]}x{m['input'][1]} | {m['params_M']:.2f} | | | | {m['total_ms']:.0f} | | 1.00x ({m['detections']} dets) |")
    return "\n".join(lines)
