"""Inference runtimes for UniParser's dense heads (issue 28).

The predictor calls an ``Engine`` instead of ``model(x)``: preprocessed images (B,3,H,W) float32 ->
``UniParserOutput`` holding the dense heads (centre logits, F_ins, F_cate, K_cate, Q_cate). What
depends on the picked centres (``UniParser.instances``, post-processing) stays in torch.

- ``engines``: the interface, the torch engine (today's path, unchanged) and the exportable graph.
- ``openvino_engine`` / ``onnx_engine``: OpenVINO (fp32, bf16, int8 through NNCF) and ONNX Runtime (fp32).
- ``cache``: the export cache (atomic entries, a manifest of sha256 per file, a file lock).
- ``parity``: deterministic parity frames and label-map agreement with torch.
- ``select``: ``make_engine``: explicit choice or ``auto`` (fastest runtime/precision that agrees with
  torch), falls back to torch with one warning line.

Importing this package imports neither openvino nor onnxruntime (nor torch).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from streamparse.config_types import PRECISIONS, RUNTIMES, SUPPORTED, check_combination  # noqa: F401 (re-exported)

# runtime -> (modules it needs, the extra that installs them)
_NEEDS = {"openvino": (("openvino",), "openvino"), "onnxruntime": (("onnxruntime", "onnx", "onnxscript"), "onnx")}
_NEEDS_INT8 = ("nncf",)


class RuntimeUnavailable(ValueError):
    """A runtime asked for by name whose package is not installed (one line naming the extra)."""


def missing_modules(runtime: str, precision: str = "auto") -> list[str]:
    """The modules ``runtime`` (at ``precision``) needs that are not installed here ([] for torch/auto).

    Looked up without being imported (``importlib.util.find_spec``: importing onnx alone takes ~0.5 s, and
    every inference actor asks). An installed package that fails to load is an export failure
    (``select.make_engine`` falls back to torch with one warning line); ``doctor`` imports each to say so."""
    mods = list(_NEEDS.get(runtime, ((), ""))[0])
    if runtime == "openvino" and precision == "int8":
        mods += list(_NEEDS_INT8)
    return [m for m in mods if importlib.util.find_spec(m) is None]


def check_installed(runtime: str, precision: str = "auto") -> None:
    """Raise ``RuntimeUnavailable`` (one line naming the extra to install) when a runtime asked for by
    name cannot run here; torch and auto always can (auto only considers installed runtimes)."""
    missing = missing_modules(runtime, precision)
    if missing:
        extra = _NEEDS[runtime][1]
        raise RuntimeUnavailable(f"model.runtime={runtime} needs {', '.join(missing)}, which is not installed: "
                                 f"pip install 'streamparse[{extra}]'")


def available_runtimes() -> list[str]:
    """Concrete runtimes that can run here, torch first."""
    return ["torch"] + [r for r in ("openvino", "onnxruntime") if not missing_modules(r)]


@dataclass(frozen=True)
class RuntimeSpec:
    """What the predictor is asked to run its dense heads on (plain values from ``streamparse.plan``).

    runtime: auto | torch | openvino | onnxruntime; precision: auto | fp32 | bf16 | int8; cache_dir: the
    export cache ('' = the default, see ``cache.default_cache_dir``); calibration: int8 calibration
    frames (a video file or a folder of images; '' = synthetic frames); calibration_frames: how many."""

    runtime: str
    precision: str
    cache_dir: str
    calibration: str
    calibration_frames: int

    def __post_init__(self) -> None:
        why = check_combination(self.runtime, self.precision)
        if why:
            raise ValueError(why)


def describe() -> dict:
    """What can run here, for ``doctor``: each runtime's package versions (None: not installed) and
    whether the CPU has native bf16 (avx512_bf16 / AMX, as OpenVINO reports it). Imports the runtimes."""
    out: dict = {"torch": True}
    for rt, (mods, extra) in _NEEDS.items():
        vers = {}
        for m in mods + (_NEEDS_INT8 if rt == "openvino" else ()):
            try:
                vers[m] = getattr(importlib.import_module(m), "__version__", "?")
            except ImportError:
                vers[m] = None
        out[rt] = {"versions": vers, "extra": extra}
    if out["openvino"]["versions"].get("openvino"):
        from streamparse.runtime.openvino_engine import has_bf16

        out["cpu_bf16"] = has_bf16()
    return out
