"""`streamparse bench model --runtime torch,openvino,onnxruntime`: the dense heads on each runtime and
precision, against torch (channels_last, inference_mode: the default CPU path).

Per (runtime, precision) and input (batch x H x W): ms per batch of the dense network (the engine's
call: the raw network outputs, no post-processing), rounds alternating between the runtimes, the
minimum per runtime, and the ratio torch min / runtime min. Per input size: the label maps' agreement
with torch on the parity frames (``streamparse.runtime.parity``: part map, foreground, people per
frame), through the whole predictor (post-processing in torch).
"""

from __future__ import annotations

import os
import time

DEFAULT_SIZES = ((512, 512), (256, 448))
DEFAULT_BATCHES = (1, 4)


def _predictor(overrides: list[str], checkpoint: str | None, size: tuple[int, int]):
    from streamparse.config import load_config
    from streamparse.engine.factory import build_predictor

    cfg = load_config(overrides=overrides + [f"model.input_size=[{min(size)},{max(size)}]"])
    return build_predictor(cfg, checkpoint=checkpoint, device="cpu")


def combos(runtimes: list[str], precisions: list[str] | None) -> list[tuple[str, str]]:
    """(runtime, precision) pairs to measure: every precision each runtime runs here (OpenVINO bf16 only
    where the CPU has it), or those of ``precisions``; torch fp32 (the reference) always first."""
    from streamparse.runtime import SUPPORTED, check_installed

    out = [("torch", "fp32")]
    for rt in runtimes:
        if rt == "torch":
            continue
        if rt not in SUPPORTED:
            raise ValueError(f"unknown runtime {rt!r} (torch, openvino, onnxruntime)")
        check_installed(rt, "int8" if precisions and "int8" in precisions and rt == "openvino" else "auto")
        precs = list(SUPPORTED[rt])
        if rt == "openvino" and not precisions:
            from streamparse.runtime.openvino_engine import has_bf16

            precs = [p for p in precs if p != "bf16" or has_bf16()]
        out += [(rt, p) for p in precs if not precisions or p in precisions]
    return out


def run_runtime_bench(runtimes: list[str], precisions: list[str] | None = None, sizes=DEFAULT_SIZES,
                      batches=DEFAULT_BATCHES, rounds: int = 5, checkpoint: str | None = "default",
                      overrides: list[str] | None = None, threads: int = 0, parity: int = 4, progress: bool = True) -> dict:
    """The table's numbers (see the module docstring); ``overrides`` are config ``--set`` values (e.g.
    another model). The engines are built once, through the export cache, at the last size."""
    import torch

    from streamparse.runtime.parity import agreement, parity_frames
    from streamparse.runtime.select import cpu_flags, time_engines

    if threads:
        torch.set_num_threads(threads)
    overrides = list(overrides or [])
    sizes = [tuple(int(v) for v in s) for s in sizes]
    pairs = combos(runtimes, precisions)
    name, flags = cpu_flags()
    res = {"cpu": name, "cpu_flags": flags, "cpus": os.cpu_count(), "loadavg_start": list(os.getloadavg()),
           "threads": torch.get_num_threads(), "torch": torch.__version__,
           "versions": _versions(), "checkpoint": checkpoint, "rounds": rounds, "rows": [], "agreement": [], "engines": []}
    engines, build_s = {}, {}
    for rt, prec in pairs:  # the engines, at the run default size (OpenVINO's graph takes any size)
        t0 = time.perf_counter()
        p = _predictor(overrides + [f"model.runtime={rt}", f"model.precision={prec}"], checkpoint, sizes[-1])
        build_s[(rt, prec)] = time.perf_counter() - t0
        engines[(rt, prec)] = p.engine
        res["engines"].append({"runtime": rt, "precision": prec, "ran": [p.engine.runtime, p.engine.precision],
                               "note": p.engine.note, "cache": p.engine.cache, "build_s": round(build_s[(rt, prec)], 2)})
        if progress:
            print(f"bench model: {rt} {prec} ready ({p.engine.cache or 'no export'}, {build_s[(rt, prec)]:.1f} s)", flush=True)
    for size in sizes:
        ref = _predictor(overrides + ["model.runtime=torch"], checkpoint, size)
        frames = parity_frames(size, max(max(batches), parity))
        with torch.inference_mode():
            x_all, _ = ref.preprocess(torch.from_numpy(frames))
        for b in batches:
            x = x_all[:b].contiguous(memory_format=torch.channels_last)
            for e in engines.values():  # sessions / compiled models of this shape exist before timing
                if hasattr(e, "prepare"):
                    e.prepare(tuple(x.shape))
            ms = time_engines(engines, x, rounds)
            for (rt, prec), v in ms.items():
                res["rows"].append({"runtime": rt, "precision": prec, "batch": b, "size": list(size), "ms": round(v, 2),
                                    "vs_torch": round(ms[("torch", "fp32")] / v, 3)})
            if progress:
                print(f"bench model: {b}x{size[0]}x{size[1]} " + ", ".join(f"{k[0]} {k[1]} {v:.1f} ms" for k, v in ms.items()),
                      flush=True)
        part_ref, _, counts_ref = ref.label_maps(frames[:parity])
        for (rt, prec), e in engines.items():
            part, _, counts = ref.label_maps(frames[:parity], e)
            res["agreement"].append({"runtime": rt, "precision": prec, "size": list(size),
                                     **agreement(part_ref, part, counts_ref, counts).to_dict()})
    res["loadavg_end"] = list(os.getloadavg())  # a shared machine: other processes' load during the run
    return res


def _versions() -> dict:
    out = {}
    for m in ("openvino", "nncf", "onnxruntime", "onnx", "onnxscript"):
        try:
            mod = __import__(m)
            out[m] = getattr(mod, "__version__", "?")
        except ImportError:
            pass
    return out


def format_runtime_table(res: dict) -> str:
    sizes = []
    for r in res["rows"]:
        k = (r["batch"], tuple(r["size"]))
        if k not in sizes:
            sizes.append(k)
    head = " | ".join(f"{b}x{h}x{w} ms (vs torch)" for b, (h, w) in sizes)
    agree_sizes = []
    for a in res["agreement"]:
        if tuple(a["size"]) not in agree_sizes:
            agree_sizes.append(tuple(a["size"]))
    ahead = " | ".join(f"part map / foreground / same people @{h}x{w}" for h, w in agree_sizes)
    load = f"; load average {res['loadavg_start'][0]:.1f} -> {res['loadavg_end'][0]:.1f} on {res['cpus']} cores" if "loadavg_end" in res else ""
    lines = [f"CPU: {res['cpu']} ({res['threads']} threads{load}); flags: {' '.join(res['cpu_flags'])}",
             f"torch {res['torch']}; " + ", ".join(f"{k} {v}" for k, v in res["versions"].items()),
             f"| runtime | precision | {head} | {ahead} |",
             "|---|---|" + "---|" * (len(sizes) + len(agree_sizes))]
    combos_seen = []
    for r in res["rows"]:
        if (r["runtime"], r["precision"]) not in combos_seen:
            combos_seen.append((r["runtime"], r["precision"]))
    for rt, prec in combos_seen:
        cells = []
        for b, s in sizes:
            r = next(x for x in res["rows"] if (x["runtime"], x["precision"], x["batch"], tuple(x["size"])) == (rt, prec, b, s))
            cells.append(f"{r['ms']:.1f} ({r['vs_torch']:.2f}x)")
        for s in agree_sizes:
            a = next(x for x in res["agreement"] if (x["runtime"], x["precision"], tuple(x["size"])) == (rt, prec, s))
            cells.append(f"{100 * a['part_map']:.2f} % / {100 * a['foreground']:.2f} % / {100 * a['same_people']:.0f} %")
        eng = next((e for e in res["engines"] if (e["runtime"], e["precision"]) == (rt, prec)), None)
        note = f" (ran {eng['ran'][0]} {eng['ran'][1]})" if eng and tuple(eng["ran"]) != (rt, prec) else ""
        lines.append(f"| {rt} | {prec}{note} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_list(text: str | None) -> list[str] | None:
    if not text:
        return None
    return [t.strip() for t in text.split(",") if t.strip()]

