"""OpenVINO: the dense graph converted once (``ov.convert_model``, dynamic batch and size; torchvision's
deform_conv2d becomes DeformableConvolution) and stored as fp32 IR; compiled at fp32
(``INFERENCE_PRECISION_HINT=f32``) or bf16 (the CPU's bf16 units: avx512_bf16 / AMX), or quantised to
int8 with NNCF on calibration frames (the L2-normalisation and the einsum kept in float).

Imported only when OpenVINO is used.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

import openvino as ov

from streamparse.runtime.engines import DenseGraph, ExportedEngine, to_numpy_input

# op types kept out of quantisation: F.normalize (ReduceL2, Maximum = clamp_min of the norm, Divide) and
# the category einsum (Q_cate = K_cate . F_cate). Quantising both inputs of the normalising divide gives NaN.
INT8_IGNORED_TYPES = ("Divide", "ReduceL2", "Maximum", "Einsum")
HINT = {"fp32": "f32", "bf16": "bf16"}
_core: ov.Core | None = None


def core() -> ov.Core:
    global _core
    if _core is None:
        _core = ov.Core()
    return _core


def version() -> str:
    return ov.__version__


def has_bf16() -> bool:
    """True when the CPU plugin runs bf16 natively (avx512_bf16 or AMX)."""
    return "BF16" in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@contextlib.contextmanager
def _no_cuda_probe_line():
    """Without the warning torch logs when NNCF (imported by OpenVINO's PyTorch frontend too) probes for
    CUDA extensions on a machine without CUDA: the terminal stays streamparse's."""
    lg = logging.getLogger("torch.utils.cpp_extension")
    level = lg.level
    lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        lg.setLevel(level)


def import_nncf():
    with _no_cuda_probe_line():
        import nncf
    return nncf


def export_ir(model: torch.nn.Module, dest: Path, example_hw: tuple[int, int] = (64, 64)) -> None:
    """``DenseGraph(model)`` -> ``dest/model.xml`` + ``model.bin`` (fp32 weights, dynamic N, H, W)."""
    graph = DenseGraph(model).eval()
    example = torch.zeros(1, 3, *example_hw)
    with warnings.catch_warnings(), torch.no_grad(), _no_cuda_probe_line():
        warnings.simplefilter("ignore")  # tracer warnings on the shape checks
        m = ov.convert_model(graph, example_input=example, input=[ov.PartialShape([-1, 3, -1, -1])])
    ov.save_model(m, str(dest / "model.xml"), compress_to_fp16=False)


def quantize_ir(fp32_dir: Path, dest: Path, calibration: list[np.ndarray]) -> None:
    """int8 IR in ``dest`` from the fp32 IR in ``fp32_dir``: NNCF post-training quantisation on
    ``calibration`` (arrays (1,3,H,W) float32, preprocessed as inference preprocesses), with
    ``INT8_IGNORED_TYPES`` left in float."""
    nncf = import_nncf()
    m = core().read_model(str(fp32_dir / "model.xml"))
    nncf_log = logging.getLogger("nncf")
    level = nncf_log.level
    nncf_log.setLevel(logging.ERROR)  # the terminal stays streamparse's: no NNCF info lines ...
    try:  # ... and no progress bars (rich, on stdout)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            q = nncf.quantize(m, nncf.Dataset(calibration), subset_size=len(calibration),
                              ignored_scope=nncf.IgnoredScope(types=list(INT8_IGNORED_TYPES), validate=False))
    finally:
        nncf_log.setLevel(level)
    ov.save_model(q, str(dest / "model.xml"), compress_to_fp16=False)


def compile_config(precision: str, threads: int) -> dict:
    """The CPU plugin's settings: one stream, ``threads`` threads, latency, no CPU pinning; fp32 and bf16 set
    the inference precision, int8 leaves the non-quantised layers at the CPU's default (bf16 where it has it).

    Pinning (the plugin's default on Linux) is off because inference actors share a node: each process pins
    its inference threads from the first core without knowing the others, so two single-threaded actors on
    2 cores ran on one core (2 processes x 1 thread: 26 frames/s each with pinning, 48-49 without, 256x256
    batch 4; ``docs/performance.md``)."""
    cfg = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": int(threads),
           "ENABLE_CPU_PINNING": False}
    if precision in HINT:
        cfg["INFERENCE_PRECISION_HINT"] = HINT[precision]
    return cfg


def read_ir(entry: Path) -> ov.Model:
    """The IR in ``entry`` (dynamic N, H, W), read into this process."""
    return core().read_model(str(entry / "model.xml"))


class OpenVINOEngine(ExportedEngine):
    """The dense heads on OpenVINO. The IR keeps dynamic shapes. bf16 and int8 compile one model per input
    shape (B,3,H,W), reshaped to it (static shapes run 15-25 % faster here than the dynamic model at
    4x512x512 and 4x256x448), made on first use (~0.3 s), the ``max_shapes`` most recent kept. fp32
    compiles the dynamic model once: its kernels give torch's label maps on the test videos, where the
    static ones changed one pixel. Outputs are copied out of the request."""

    def __init__(self, model: torch.nn.Module, ir: ov.Model, config: dict, *, precision: str, cache: str,
                 max_shapes: int = 8):
        super().__init__(model, runtime="openvino", precision=precision, cache=cache)
        self.ir, self.config, self.max_shapes = ir, dict(config), int(max_shapes)
        self.static_shapes = precision != "fp32"
        self.requests: OrderedDict[tuple[int, ...], ov.InferRequest] = OrderedDict()

    def prepare(self, shape: tuple[int, ...]) -> ov.InferRequest:
        """The infer request of input shape ``shape`` (compiled now if new); raises if it cannot compile."""
        if not self.static_shapes:
            if not self.requests:
                self.requests[()] = core().compile_model(self.ir, "CPU", self.config).create_infer_request()
            return self.requests[()]
        shape = tuple(int(v) for v in shape)
        req = self.requests.get(shape)
        if req is None:
            m = self.ir.clone()
            m.reshape({m.inputs[0]: ov.PartialShape(list(shape))})
            req = core().compile_model(m, "CPU", self.config).create_infer_request()
            self.requests[shape] = req
            while len(self.requests) > self.max_shapes:
                self.requests.popitem(last=False)
        else:
            self.requests.move_to_end(shape)
        return req

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        req = self.prepare(tuple(x.shape))
        res = req.infer({0: to_numpy_input(x)}, share_inputs=True, share_outputs=False)
        return tuple(torch.from_numpy(np.asarray(res[o])) for o in req.model_outputs)
