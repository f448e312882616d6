"""The engine interface the predictor calls for the dense heads, the torch engine, and the graph
that other runtimes export.

An engine maps preprocessed images x (B,3,H,W) float32 (H, W multiples of 32) to a
``UniParserOutput`` with the dense fields only: ``center_logits`` (B,1,S,S), ``ins_feats`` and
``cate_feats`` (B,C,h,w), ``cate_kernels`` (N,C), ``cate_maps`` (B,N,h,w), and ``kernel_feats``
(B,C,h+2p,w+2p) for a neck with grid padding p. ``UniParser.instances`` (per-person kernels and maps
at the picked centres) stays in torch on these tensors.
"""

from __future__ import annotations

import torch
from torch import nn

from streamparse.models.uniparser import UniParserOutput

OUTPUT_NAMES = ("center_logits", "ins_feats", "cate_feats", "cate_maps")


class Engine:
    """Dense heads on some runtime. ``runtime``/``precision``: what actually runs; ``note``: why it
    differs from what was asked (a fallback), or ''; ``cache``: 'hit' | 'built' | '' (no export)."""

    runtime = "torch"
    precision = "fp32"
    note = ""
    cache = ""

    def __call__(self, x: torch.Tensor, *, keep_grid_pad: bool = False) -> UniParserOutput:
        raise NotImplementedError

    decision: dict | None = None  # set when ``auto`` chose this engine (``select.select``'s table)

    def info(self) -> dict:
        out = {"runtime": self.runtime, "precision": self.precision, "note": self.note, "cache": self.cache}
        if self.decision:
            out["auto"] = [{k: r.get(k) for k in ("runtime", "precision", "ms", "passes", "error")}
                           | ({"part_map": r["agreement"]["part_map"]} if "agreement" in r else {})
                           for r in self.decision.get("table", [])]
        return out


class TorchEngine(Engine):
    """Today's path, unchanged: ``model(x, keep_grid_pad=...)``."""

    def __init__(self, model: nn.Module, note: str = ""):
        self.model = model
        self.note = note

    def __call__(self, x: torch.Tensor, *, keep_grid_pad: bool = False) -> UniParserOutput:
        return self.model(x, keep_grid_pad=keep_grid_pad)


class DenseGraph(nn.Module):
    """What is exported: x (B,3,H,W) -> (center_logits (B,1,S,S), F_ins, F_cate (B,C,h',w'), Q_cate
    (B,N,h',w')) on the grid the heads ran on (grid padding kept: cropping happens in ``assemble``).
    K_cate depends on the weights alone and is computed once in torch."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.model(x, keep_grid_pad=True)
        return out.center_logits, out.ins_feats, out.cate_feats, out.cate_maps


class ExportedEngine(Engine):
    """Base of the exported runtimes: ``_run(x) -> the four DenseGraph tensors`` (torch, CPU), then
    the same cropping as ``UniParser.forward_heads``."""

    def __init__(self, model: nn.Module, *, runtime: str, precision: str, cache: str = ""):
        self.model = model
        self.runtime, self.precision, self.cache = runtime, precision, cache
        with torch.inference_mode():
            self.kernels = model.cate_kernels().detach().clone()

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, *, keep_grid_pad: bool = False) -> UniParserOutput:
        self.model.check_images(x)
        center_logits, ins_feats, cate_feats, cate_maps = self._run(x)
        return assemble(self.model, center_logits, ins_feats, cate_feats, cate_maps, self.kernels, keep_grid_pad)


def assemble(model, center_logits, ins_feats, cate_feats, cate_maps, kernels, keep_grid_pad: bool) -> UniParserOutput:
    """``UniParserOutput`` (dense fields) from the exported graph's tensors, cropped as
    ``UniParser.forward_heads`` crops (kernels are read on the padded grid)."""
    p = 0 if keep_grid_pad else int(getattr(model, "grid_pad", 0))
    kernel_feats = None
    if p:
        kernel_feats = ins_feats
        ins_feats, cate_feats, cate_maps = (t[..., p:-p, p:-p] for t in (ins_feats, cate_feats, cate_maps))
    return UniParserOutput(center_logits=center_logits, ins_feats=ins_feats, cate_feats=cate_feats, cate_kernels=kernels,
                           cate_maps=cate_maps, kernel_feats=kernel_feats)


class EngineModel:
    """A ``UniParser`` whose dense heads run on ``engine`` (for ``models.tta.forward_tta``, which calls
    ``model(x)`` and reads the model's attributes)."""

    def __init__(self, model: nn.Module, engine: Engine):
        self._model, self._engine = model, engine

    def __call__(self, images: torch.Tensor, centers=None, *, compute_parsing: bool = True, keep_grid_pad: bool = False):
        out = self._engine(images, keep_grid_pad=keep_grid_pad)
        return out if centers is None else self._model.instances(out, centers, compute_parsing=compute_parsing)

    def __getattr__(self, name: str):
        return getattr(self._model, name)


def to_numpy_input(x: torch.Tensor):
    """x (B,3,H,W) float32 (any memory format) -> a C-contiguous NCHW float32 numpy array."""
    return x.detach().to(torch.float32).contiguous().cpu().numpy()
