"""``make_engine``: the engine a predictor runs its dense heads on.

- ``runtime="torch"``, or a CUDA device with ``auto``: the torch engine (today's path).
- an explicit runtime and precision: that engine, exported through the cache; a model the runtime
  cannot take (export, compile or the int8 check fails) -> torch, with one warning line.
- ``auto`` (runtime and/or precision) on CPU: every installed candidate (torch fp32, OpenVINO fp32,
  OpenVINO bf16 where the CPU has it, ONNX Runtime fp32; never int8) runs the parity frames; the
  fastest whose label maps agree with torch (``parity.AUTO_BOUND`` of the part map, same people per
  frame) wins. The decision is cached with the exports (keyed also by the CPU and the thread count).

The predictor is passed in (duck-typed: ``model``, ``device``, ``preprocess``, ``input_size``,
``model_name``, ``checkpoint_sha256``, ``label_maps(frames, engine)``); this package never imports the
engine room above it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from streamparse.runtime import SUPPORTED, available_runtimes, missing_modules
from streamparse.runtime.cache import ExportCache, read_json_entry, write_json_file
from streamparse.runtime.engines import Engine, TorchEngine
from streamparse.runtime.parity import AUTO_BOUND, agreement, nominal_frame_size, parity_frames

log = logging.getLogger("streamparse.runtime")

AUTO_ENV = "STREAMPARSE_AUTO_RUNTIME"
EXPORT_FORMAT = 1
CALIBRATION_SEED = 2801
TIMING_ROUNDS = 3


class EngineRefused(RuntimeError):
    """A runtime that cannot take this model (or an int8 model that loses people): one line."""


@dataclass
class _Ctx:
    pred: object
    cache: ExportCache
    threads: int
    calibration: str
    calibration_frames: int
    base: dict = field(default_factory=dict)
    _ref: tuple | None = None

    @property
    def model(self):
        return self.pred.model

    def frames(self) -> np.ndarray:
        return parity_frames(nominal_frame_size(self.pred.input_size))

    def reference(self) -> tuple[np.ndarray, list[int]]:
        """torch's part maps and people counts on the parity frames (computed once)."""
        if self._ref is None:
            part, _, counts = self.pred.label_maps(self.frames(), TorchEngine(self.model))
            self._ref = (part, counts)
        return self._ref


def make_engine(pred, *, runtime: str, precision: str, cache_dir: str | None, calibration: str,
                calibration_frames: int) -> Engine:
    """The engine for ``pred`` (see the module docstring). Never raises for a runtime that fails at
    export: that is a warning line and the torch engine."""
    if runtime == "torch":
        return TorchEngine(pred.model)
    if pred.device.type != "cpu":
        if runtime == "auto":
            return TorchEngine(pred.model)
        return _fallback(pred, f"model.runtime={runtime} runs on the CPU only; device {pred.device}: running torch")
    cands = candidates(runtime, precision)
    if not cands:
        return _fallback(pred, f"no installed runtime runs model.runtime={runtime} model.precision={precision}: running torch fp32")
    if cands == [("torch", "fp32")]:
        return TorchEngine(pred.model)
    ctx = _Ctx(pred=pred, cache=ExportCache(cache_dir or None), threads=torch.get_num_threads(), calibration=calibration,
               calibration_frames=int(calibration_frames))
    # what every export depends on; the OpenVINO IR has a dynamic size, the int8 model (calibrated at the
    # input size), ONNX files (one per padded size) and auto decisions add the size to their keys
    ctx.base = {"format": EXPORT_FORMAT, "weights": _weights_id(pred), "model": pred.model_name,
                "torch": torch.__version__, "streamparse": _version()}
    what = f"{cands[0][0]} {cands[0][1]}" if len(cands) == 1 else f"model.runtime={runtime} model.precision={precision}"
    try:
        return build_engine(ctx, *cands[0]) if len(cands) == 1 else _auto(ctx, runtime, precision, cands)
    except Exception as exc:  # noqa: BLE001 - any export/compile/cache failure: torch, one line
        return _fallback(pred, f"{what} cannot run {pred.model_name} ({_one_line(exc)}): running torch")


def candidates(runtime: str, precision: str) -> list[tuple[str, str]]:
    """(runtime, precision) pairs to consider for a request, among the installed runtimes; auto
    precision never means int8, and bf16 only where the CPU has it. ``$STREAMPARSE_AUTO_RUNTIME``
    (a runtime name) restricts ``auto`` to that runtime (CI, the test suite: ``torch``)."""
    rts = available_runtimes() if runtime == "auto" else [runtime]
    pin = os.environ.get(AUTO_ENV, "")
    if runtime == "auto" and pin:
        rts = [r for r in rts if r == pin]
    if runtime != "auto" and runtime != "torch" and missing_modules(runtime, precision):
        return []
    out = []
    for rt in rts:
        if precision == "auto":
            precs = [p for p in SUPPORTED[rt] if p != "int8"]
            if "bf16" in precs and not _has_bf16():
                precs.remove("bf16")
        else:
            precs = [precision] if precision in SUPPORTED[rt] else []
            if precision == "int8" and missing_modules(rt, "int8"):
                precs = []
        out += [(rt, p) for p in precs]
    return out


def build_engine(ctx: _Ctx, rt: str, prec: str) -> Engine:
    """One concrete engine, its export taken from (or written to) the cache."""
    if rt == "torch":
        return TorchEngine(ctx.model)
    if rt == "openvino":
        return _openvino(ctx, prec)
    if rt == "onnxruntime":
        return _onnx(ctx)
    raise ValueError(f"unknown runtime {rt!r}")


# ----------------------------------------------------------------------------- OpenVINO
def _openvino(ctx: _Ctx, prec: str) -> Engine:
    from streamparse.runtime import openvino_engine as ove

    model, name = ctx.model, ctx.pred.model_name
    ir_key = {**ctx.base, "runtime": "openvino", "version": ove.version(), "precision": "fp32", "artifact": "ir"}
    with ctx.cache.lock(ir_key):
        ir, built = ctx.cache.get(ir_key, lambda tmp: ove.export_ir(model, tmp), f"openvino-fp32-{name}")
        if prec != "int8":
            engine = ove.OpenVINOEngine(model, ove.read_ir(ir), ove.compile_config(prec, ctx.threads), precision=prec,
                                        cache="built" if built else "hit")
            engine.prepare(_nominal_shape(ctx))  # compiles now: a failure falls back before anything runs
            if prec == "bf16" and not ove.has_bf16():
                engine.note = "this CPU has no native bf16 (avx512_bf16 or AMX): OpenVINO emulates it or runs f32, slower than fp32 may be"
            return engine
    nncf = ove.import_nncf()
    calib, calib_id = _calibration(ctx)
    q_key = {**ir_key, "precision": "int8", "artifact": "ir-int8", "nncf": nncf.__version__, "calibration": calib_id,
             "input_size": [int(v) for v in ctx.pred.input_size], "ignored_types": list(ove.INT8_IGNORED_TYPES)}

    def quantize(tmp: Path) -> None:
        ove.quantize_ir(ir, tmp, calib)
        eng = ove.OpenVINOEngine(model, ove.read_ir(tmp), ove.compile_config("int8", ctx.threads), precision="int8", cache="built")
        check = _int8_check(ctx, eng)
        write_json_file(tmp / "check.json", check)

    with ctx.cache.lock(ir_key), ctx.cache.lock(q_key):  # the fp32 IR is read while quantising
        qdir, built = ctx.cache.get(q_key, quantize, f"openvino-int8-{name}")
        check = read_json_entry(qdir, "check.json")
        engine = ove.OpenVINOEngine(model, ove.read_ir(qdir), ove.compile_config("int8", ctx.threads), precision="int8",
                                    cache="built" if built else "hit")
    engine.prepare(_nominal_shape(ctx))
    engine.check = check
    return engine


def _int8_check(ctx: _Ctx, engine: Engine) -> dict:
    """Refuse (``EngineRefused``) an int8 model that finds no people on a parity frame where torch does."""
    ref, counts_ref = ctx.reference()
    part, _, counts = ctx.pred.label_maps(ctx.frames(), engine)
    ag = agreement(ref, part, counts_ref, counts)
    if ag.lost_people_frames:
        raise EngineRefused(f"the int8 model finds no people on {ag.lost_people_frames} parity frame(s) where float finds "
                            f"{[c for c, d in zip(counts_ref, counts) if c and not d]}")
    return {"agreement": ag.to_dict()}


def _calibration(ctx: _Ctx) -> tuple[list[np.ndarray], str]:
    """int8 calibration inputs (1,3,H,W) float32, preprocessed as inference preprocesses, from
    ``model.calibration`` (a video file, or a folder of images) or synthetic frames; and their id."""
    n = max(1, ctx.calibration_frames)
    frames = load_calibration_frames(ctx.calibration, n, nominal_frame_size(ctx.pred.input_size))
    h = hashlib.sha256()
    inputs = []
    for f in frames:
        h.update(np.asarray(f.shape, np.int64).tobytes())
        h.update(np.ascontiguousarray(f).tobytes())
        with torch.inference_mode():
            x, _ = ctx.pred.preprocess(torch.from_numpy(np.ascontiguousarray(f[None])).to(ctx.pred.device))
        inputs.append(x.contiguous().cpu().numpy())
    return inputs, h.hexdigest()


def load_calibration_frames(source: str, n: int, size: tuple[int, int]) -> list[np.ndarray]:
    """Up to ``n`` RGB frames uint8 (H,W,3): evenly spaced frames of a video file, the first ``n`` images
    (sorted) of a folder, or (``source`` empty) ``n`` synthetic frames of ``size``."""
    if not source:
        from streamparse.data.synth_scene import render_sample

        return [render_sample(np.random.default_rng([CALIBRATION_SEED, i]), tuple(size), "cihp", 1 + i % 8).image
                for i in range(n)]
    p = Path(source)
    if p.is_dir():
        import cv2

        files = sorted(f for f in p.iterdir() if f.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".webp"))[:n]
        out = [cv2.cvtColor(img, cv2.COLOR_BGR2RGB) for img in (cv2.imread(str(f), cv2.IMREAD_COLOR) for f in files) if img is not None]
    elif p.is_file():
        import av

        with av.open(str(p)) as c:
            st = c.streams.video[0]
            total = int(st.frames or 0)
            step = max(1, total // n) if total else 1
            out = [fr.to_ndarray(format="rgb24") for i, fr in enumerate(c.decode(st)) if i % step == 0][:n]
    else:
        raise EngineRefused(f"model.calibration: {source} is neither a video file nor a folder of images")
    if not out:
        raise EngineRefused(f"model.calibration: no frames read from {source}")
    return out


# ----------------------------------------------------------------------------- ONNX Runtime
def _onnx(ctx: _Ctx) -> Engine:
    from streamparse.runtime import onnx_engine as oxe

    model, name = ctx.model, ctx.pred.model_name
    key0 = {**ctx.base, "runtime": "onnxruntime", "version": oxe.version(), "precision": "fp32", "opset": oxe.OPSET}
    status = {}

    def load(hw: tuple[int, int]):
        key = {**key0, "input_hw": list(hw)}
        with ctx.cache.lock(key):
            d, built = ctx.cache.get(key, lambda tmp: oxe.export_onnx(model, tmp, hw), f"onnxruntime-fp32-{name}-{hw[0]}x{hw[1]}")
            status.setdefault("cache", "built" if built else "hit")
            return oxe.session(d, ctx.threads)

    engine = oxe.OnnxEngine(model, load, cache="")
    engine.prepare(_nominal_shape(ctx))  # the nominal size now: a failure falls back before anything runs
    engine.cache = status.get("cache", "")
    return engine


def _nominal_shape(ctx: _Ctx) -> tuple[int, int, int, int]:
    """(1, 3, H, W): the padded network input of a frame of the nominal size."""
    h, w = ctx.pred.preprocess.size_of(*nominal_frame_size(ctx.pred.input_size))
    return 1, 3, -(-h // 32) * 32, -(-w // 32) * 32


# ----------------------------------------------------------------------------- auto
def _auto(ctx: _Ctx, runtime: str, precision: str, cands: list[tuple[str, str]]) -> Engine:
    """The fastest candidate that agrees with torch on the parity frames; the decision is cached."""
    versions = {rt: _runtime_version(rt) for rt, _ in cands}
    key = {**ctx.base, "decision": [runtime, precision], "input_size": [int(v) for v in ctx.pred.input_size],
           "candidates": [list(c) for c in cands], "versions": versions,
           "cpu": cpu_id(), "threads": ctx.threads, "bound": AUTO_BOUND}
    engines: dict[tuple[str, str], Engine] = {}

    def decide(tmp: Path) -> None:
        write_json_file(tmp / "decision.json", select(ctx, cands, engines))

    with ctx.cache.lock(key):
        d, built = ctx.cache.get(key, decide, f"decision-{ctx.pred.model_name}")
        decision = read_json_entry(d, "decision.json")
    choice = (decision["runtime"], decision["precision"])
    engine = engines.get(choice) or build_engine(ctx, *choice)
    engine.decision = decision
    return engine


def select(ctx: _Ctx, cands: list[tuple[str, str]], engines: dict | None = None) -> dict:
    """Time every candidate on the parity frames (rounds alternate between candidates; min per
    candidate) and check its label maps against torch's; -> {runtime, precision, table}."""
    engines = {} if engines is None else engines
    frames = ctx.frames()
    ref, counts_ref = ctx.reference()
    table = []
    for c in cands:
        try:
            engines[c] = build_engine(ctx, *c)
        except Exception as exc:  # noqa: BLE001 - a candidate that cannot run is left out
            log.info("auto runtime: %s %s left out (%s)", c[0], c[1], _one_line(exc))
            table.append({"runtime": c[0], "precision": c[1], "error": _one_line(exc)})
    with torch.inference_mode():
        x, _ = ctx.pred.preprocess(torch.from_numpy(frames).to(ctx.pred.device))
    ms = time_engines({c: e for c, e in engines.items()}, x, TIMING_ROUNDS)
    for c, e in engines.items():
        part, _, counts = ctx.pred.label_maps(frames, e)
        ag = agreement(ref, part, counts_ref, counts)
        table.append({"runtime": c[0], "precision": c[1], "ms": ms[c], "agreement": ag.to_dict(), "passes": ag.passes(AUTO_BOUND)})
    ok = [r for r in table if r.get("passes")]
    best = min(ok, key=lambda r: r["ms"]) if ok else {"runtime": "torch", "precision": "fp32"}
    return {"runtime": best["runtime"], "precision": best["precision"], "table": table, "frames": [int(v) for v in frames.shape]}


def time_engines(engines: dict, x: torch.Tensor, rounds: int, pause_s: float = 0.05) -> dict:
    """ms per call of each engine on ``x``: one warm-up each, then ``rounds`` rounds that alternate
    between the engines; the minimum per engine. A pause before each call lets the previous runtime's
    worker threads (OpenMP, TBB) stop spinning: on a few cores they would slow the next one down."""
    best = {k: float("inf") for k in engines}
    with torch.inference_mode():
        for e in engines.values():
            e(x)
        for _ in range(rounds):
            for k, e in engines.items():
                time.sleep(pause_s)
                t0 = time.perf_counter()
                e(x)
                best[k] = min(best[k], (time.perf_counter() - t0) * 1000)
    return best


# ----------------------------------------------------------------------------- helpers
def _fallback(pred, message: str) -> Engine:
    log.warning(message)
    return TorchEngine(pred.model, note=message)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def _version() -> str:
    from streamparse import __version__

    return __version__


def _weights_id(pred) -> str:
    """The checkpoint's sha256, or (no checkpoint: random init, a model being trained) the sha256 of the
    state dict's bytes."""
    if getattr(pred, "checkpoint_sha256", None):
        return pred.checkpoint_sha256
    h = hashlib.sha256()
    for k, v in sorted(pred.model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return "state:" + h.hexdigest()


def _has_bf16() -> bool:
    try:
        from streamparse.runtime import openvino_engine as ove
    except ImportError:
        return False
    return ove.has_bf16()


def _runtime_version(rt: str) -> str:
    if rt == "openvino":
        from streamparse.runtime import openvino_engine as ove

        return ove.version()
    if rt == "onnxruntime":  # (the installed versions, without importing onnx: ~0.5 s; oxe.version()'s string)
        from importlib.metadata import version

        return f"onnxruntime-{version('onnxruntime')}+onnx-{version('onnx')}+onnxscript-{version('onnxscript')}"
    return torch.__version__


def _cpuinfo() -> tuple[str, list[str]]:
    """(model name, flags) of the first CPU in /proc/cpuinfo; the platform's name and no flags elsewhere."""
    name, flags = "", []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            k, _, v = line.partition(":")
            if k.strip() == "model name" and not name:
                name = v.strip()
            elif k.strip() == "flags" and not flags:
                flags = v.split()
    except OSError:
        import platform

        name = platform.processor() or platform.machine()
    return name, flags


def cpu_id() -> dict:
    """The CPU's model name and a hash of its flags (from /proc/cpuinfo), for the auto decision's key."""
    name, flags = _cpuinfo()
    return {"name": name, "flags_sha256": hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest()[:16]}


def cpu_flags() -> tuple[str, list[str]]:
    """(model name, the SIMD flags that matter to the runtimes) from /proc/cpuinfo."""
    name, flags = _cpuinfo()
    keep = [f for f in flags if f.startswith(("avx", "amx")) or f in ("fma", "f16c")]
    return name, keep
