"""ONNX Runtime (fp32): the dense graph exported with the dynamo exporter (opset 19; torchvision's
deform_conv2d becomes DeformConv, which the legacy exporter refuses). The batch is dynamic; the
padded input size is not (``torch.export`` specialises the heads' coordinate channels, a
``linspace`` over the feature size), so there is one export per (H, W), made on first use.

Imported only when ONNX Runtime is used.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch

import onnxruntime as ort

from streamparse.runtime.engines import OUTPUT_NAMES, DenseGraph, ExportedEngine, to_numpy_input

OPSET = 19
log = logging.getLogger("streamparse.runtime")


def version() -> str:
    import onnx
    import onnxscript

    return f"onnxruntime-{ort.__version__}+onnx-{onnx.__version__}+onnxscript-{onnxscript.__version__}"


def export_onnx(model: torch.nn.Module, dest: Path, hw: tuple[int, int]) -> None:
    """``DenseGraph(model)`` at padded size ``hw`` -> ``dest/model.onnx`` (dynamic batch)."""
    import logging

    graph = DenseGraph(model).eval()
    example = torch.zeros(2, 3, *hw)
    quiet = [logging.getLogger(n) for n in ("torch.onnx", "onnxscript", "torch.export", "torch._dynamo")]
    levels = [lg.level for lg in quiet]
    try:
        for lg in quiet:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            prog = torch.onnx.export(graph, (example,), dynamo=True, opset_version=OPSET, input_names=["images"],
                                     output_names=list(OUTPUT_NAMES), dynamic_shapes={"x": {0: torch.export.Dim.DYNAMIC}},
                                     verbose=False, report=False)
    finally:
        for lg, lv in zip(quiet, levels):
            lg.setLevel(lv)
    prog.save(str(dest / "model.onnx"))


def session(entry: Path, threads: int) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(str(entry / "model.onnx"), so, providers=["CPUExecutionProvider"])


class OnnxEngine(ExportedEngine):
    """The dense heads on ONNX Runtime sessions, one per padded (H, W), made on first use by
    ``load(hw) -> session`` (which exports through the cache)."""

    def __init__(self, model: torch.nn.Module, load, *, cache: str):
        super().__init__(model, runtime="onnxruntime", precision="fp32", cache=cache)
        self._load = load
        self.sessions: dict[tuple[int, int], ort.InferenceSession | None] = {}  # None: that size runs on torch
        self._graph = DenseGraph(model)

    def prepare(self, shape: tuple[int, ...]) -> None:
        """The session of input shape ``shape`` (B,3,H,W; one per H, W), exported through the cache on
        first use; raises if that fails."""
        hw = (int(shape[-2]), int(shape[-1]))
        if hw not in self.sessions:
            self.sessions[hw] = self._load(hw)

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        hw = (int(x.shape[-2]), int(x.shape[-1]))
        if hw not in self.sessions:
            try:
                self.prepare(tuple(x.shape))
            except Exception as exc:  # noqa: BLE001 - a size the export fails at runs on torch, said once
                text = (str(exc).strip().splitlines() or [""])[0][:200]
                self.note = f"onnxruntime cannot run size {hw[0]}x{hw[1]} ({type(exc).__name__}: {text}): torch runs it"
                log.warning(self.note)
                self.sessions[hw] = None
        sess = self.sessions[hw]
        if sess is None:
            return self._graph(x)
        outs = sess.run(list(OUTPUT_NAMES), {"images": to_numpy_input(x)})
        return tuple(torch.from_numpy(np.asarray(o)) for o in outs)
