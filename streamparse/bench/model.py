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

import contextlib
import statistics
import time

import torch

DEFAULT_VARIANTS = ("uniparser_r50_fpn", "uniparser_r50_fpn_light", "uniparser_r101_fpn", "uniparser_r18_fpn", "uniparser_r18_fpn_light")
PAPER_IMG_PER_S = 1000.0 / 102.0  # the paper's speed: 102 ms/img (R50, 800x1333, an RTX 3090)
PAPER_PARAMS_M = {"uniparser_r101_fpn_dcn": 36.73, "uniparser_r101_fpn_light_dcn": 30.54}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, amp: str):
    """Autocast at ``amp`` ('none' | 'fp16' | 'bf16') on ``device``'s type."""
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.float16 if amp == "fp16" else torch.bfloat16)


def _as_float32(out):
    """A ``UniParserOutput`` with its floating-point tensors (and lists of them) in float32."""
    import dataclasses

    def f32(v):
        if torch.is_tensor(v) and v.is_floating_point():
            return v.float()
        return [f32(u) for u in v] if isinstance(v, list) else v

    return dataclasses.replace(out, **{f.name: f32(getattr(out, f.name)) for f in dataclasses.fields(out)})


def _time(fn, reps: int, warmup: int = 1, device: torch.device = torch.device("cpu")) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        ts.append((time.perf_counter() - t0) * 1000)
    return statistics.median(ts)


def _forced_cells(grid: int, k: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(k)
    return torch.randperm(grid * grid, generator=g)[:k].sort().values


@torch.inference_mode()
def bench_uniparser(name: str, size: tuple[int, int], reps: int, num_classes: int = 20, people=(3, 20),
                    device: str = "cpu", amp: str = "none") -> dict:
    """Medians over ``reps`` rounds; each round times every stage once, in turn (backbone, then
    heads and post-processing per people count), so slow drifts of the machine hit every stage
    alike and the heads+post / backbone ratio stays meaningful. On CUDA every stage ends with a
    device synchronisation; ``amp`` autocasts the network (post-processing in float32)."""
    from streamparse.models import build_model
    from streamparse.config import ModelConfig
    from streamparse.models.postprocess import parse_image
    from streamparse.models.postprocess_official import OfficialParams, parse_official

    dev = torch.device(device)
    torch.manual_seed(0)
    model = build_model(name, num_classes=num_classes).eval().to(dev, memory_format=torch.channels_last)
    official = getattr(model, "kernel_sampling", "bilinear") == "cell_top_left"
    padded = tuple(-(-int(v) // 32) * 32 for v in size)
    x = torch.randn(1, 3, *padded, device=dev).contiguous(memory_format=torch.channels_last)
    neck = model.neck
    with _autocast(dev, amp):
        levels = neck.backbone_fpn(x)

    def backbone():
        with _autocast(dev, amp):
            return neck.backbone_fpn(x)

    stages = {"backbone_fpn_ms": backbone}
    for k in people:
        cells = [_forced_cells(model.grid, k).to(dev)]
        with _autocast(dev, amp):
            out = model(x, centers=cells, compute_parsing=False, keep_grid_pad=official)
        out = _as_float32(out) if amp != "none" else out  # the post-processing runs in float32

        def heads(cells=cells):
            with _autocast(dev, amp):
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
    _sync(dev)
    times: dict[str, list[float]] = {key: [] for key in stages}
    for _ in range(reps):
        for key, fn in stages.items():
            t0 = time.perf_counter()
            fn()
            _sync(dev)
            times[key].append((time.perf_counter() - t0) * 1000)
    med = {key: statistics.median(v) for key, v in times.items()}
    t_backbone = med["backbone_fpn_ms"]
    res = {"model": name, "input": list(size), "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
           "backbone_fpn_ms": t_backbone, "device": str(dev), "amp": amp}
    for k in people:
        t_heads, t_post = med[f"heads_ms@{k}"], med[f"post_ms@{k}"]
        res[f"heads_ms@{k}"] = t_heads
        res[f"post_ms@{k}"] = t_post
        res[f"total_ms@{k}"] = t_backbone + t_heads + t_post
        res[f"overhead@{k}"] = (t_heads + t_post) / t_backbone
        res[f"img_per_s@{k}"] = 1000.0 / res[f"total_ms@{k}"]
    res["vs_paper@3"] = res["img_per_s@3"] / PAPER_IMG_PER_S  # the paper: 102 ms/img on an RTX 3090
    return res


@torch.inference_mode()
def bench_maskrcnn(size: tuple[int, int], reps: int, device: str = "cpu") -> dict:
    import torchvision

    dev = torch.device(device)
    torch.manual_seed(0)
    m = torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, min_size=min(size), max_size=max(size)
    ).eval().to(dev, memory_format=torch.channels_last)
    x = [torch.rand(3, *size, device=dev)]
    t = _time(lambda: m(x), reps, device=dev)
    n_det = len(m(x)[0]["boxes"])
    return {"model": "maskrcnn_resnet50_fpn", "input": list(size), "params_M": sum(p.numel() for p in m.parameters()) / 1e6,
            "total_ms": t, "detections": n_det}


def run_model_bench(variants=DEFAULT_VARIANTS, sizes=((512, 512), (800, 1344)), reps: int = 3, threads: int = 0,
                    num_classes: int = 20, progress: bool = True, device: str = "cpu", amp: str = "none",
                    maskrcnn: bool = True) -> dict:
    """Every variant at every size (``device`` cpu | cuda, ``amp`` none | fp16 | bf16), and Mask R-CNN
    at each size (float32) unless ``maskrcnn`` is False."""
    if amp not in ("none", "fp16", "bf16"):
        raise ValueError(f"amp must be none, fp16 or bf16, got {amp!r}")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("bench model --device cuda: no CUDA device is available")
    if threads:
        torch.set_num_threads(threads)
    out = {"threads": torch.get_num_threads(), "torch": torch.__version__, "device": str(device), "amp": amp,
           "gpu": torch.cuda.get_device_name(torch.device(device)) if str(device).startswith("cuda") else None,
           "rows": [], "maskrcnn": []}
    from tqdm import tqdm

    jobs = [(v, s) for s in sizes for v in variants]
    for v, s in tqdm(jobs, desc="bench model", disable=not progress):
        out["rows"].append(bench_uniparser(v, tuple(s), reps, num_classes, device=device, amp=amp))
    for s in sizes if maskrcnn else ():
        out["maskrcnn"].append(bench_maskrcnn(tuple(s), reps, device=device))
    for r in out["rows"]:
        mr = next((m for m in out["maskrcnn"] if m["input"] == r["input"]), None)
        r["vs_maskrcnn@3"] = r["total_ms@3"] / mr["total_ms"] if mr else None
    return out


def format_table(res: dict) -> str:
    lines = [f"threads={res['threads']} torch={res['torch']} device={res.get('device', 'cpu')}"
             + (f" ({res['gpu']})" if res.get("gpu") else "") + f" amp={res.get('amp', 'none')}",
             "| model | input | params (M) | backbone+FPN ms | heads ms @3 | post ms @3 / @20 | total ms @3 / @20 | heads+post over backbone @3 / @20 | vs Mask R-CNN @3 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(
            f"| {r['model']} | {r['input'][0]}x{r['input'][1]} | {r['params_M']:.2f} | {r['backbone_fpn_ms']:.0f} | "
            f"{r['heads_ms@3']:.0f} | {r['post_ms@3']:.0f} / {r['post_ms@20']:.0f} | {r['total_ms@3']:.0f} / {r['total_ms@20']:.0f} | "
            f"{100 * r['overhead@3']:.0f}% / {100 * r['overhead@20']:.0f}% | "
            + (f"{r['vs_maskrcnn@3']:.2f}x |" if r.get("vs_maskrcnn@3") is not None else "- |")
        )
    for m in res["maskrcnn"]:
        lines.append(f"| maskrcnn_resnet50_fpn | {m['input'][0]}x{m['input'][1]} | {m['params_M']:.2f} | | | | {m['total_ms']:.0f} | | 1.00x ({m['detections']} dets) |")
    lines.append("img/s @3 (batch 1): " + ", ".join(f"{r['model']} {r['input'][0]}x{r['input'][1]} {r['img_per_s@3']:.1f} "
                                                    f"({r['vs_paper@3']:.1f}x the paper's 9.8)" for r in res["rows"]))
    return "\n".join(lines)
