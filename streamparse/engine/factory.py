"""A ``Predictor`` from the plain values of the plan (``streamparse.plan.Plan.predictor``): what an
inference actor, or a process without Ray, builds (``make_predictor``, ``predictor_from_plan``); and, for
single-process callers (predict, eval, training's validation, tests), the same from a config through a
plan (``build_predictor``, ``build_predictor_from_checkpoint``, ``predictor_for_model``)."""

from __future__ import annotations

import numpy as np

from streamparse.plan import TORCH_RUNTIME, config_from_checkpoint, make_plan, validation_kwargs


def make_predictor(*, model_name: str, model_kwargs: dict, weights: dict | None, class_names: list[str], palette,
                   flip_perm, input_size, device, postprocess: dict, test_scales, amp: str, cuda_streams: bool,
                   preprocess: str, protocol: str, checkpoint_sha256: str | None, checkpoint_path: str | None,
                   runtime: dict | None = None):
    """A ``Predictor`` from plain values (in an inference actor, or in-process). ``weights``: numpy state
    dict (strictly loaded), or None for a deterministic random init (every worker builds the same).
    ``runtime``: ``streamparse.runtime.RuntimeSpec`` values (``plan.runtime_kwargs``; None: torch)."""
    import torch

    from streamparse.checkpoint import CheckpointError
    from streamparse.engine.protocols import make_protocol
    from streamparse.models import build_model
    from streamparse.models.postprocess import PostprocessParams
    from streamparse.engine.predictor import Predictor

    if weights is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = build_model(model_name, **model_kwargs)
    else:
        model = build_model(model_name, **model_kwargs)
        sd = {k: torch.from_numpy(np.array(v)) for k, v in weights.items()}
        missing, unexpected = model.load_state_dict(sd, strict=False)
        if missing or unexpected:
            raise CheckpointError(f"checkpoint {checkpoint_path} does not fit model {model_name!r}: missing "
                                  f"{list(missing)[:3]}, unexpected {list(unexpected)[:3]}")
    return Predictor(model, model_name=model_name, class_names=class_names,
                     palette=np.asarray(palette, dtype=np.uint8) if palette is not None else None,
                     input_size=tuple(input_size), device=device, postprocess=PostprocessParams(**postprocess),
                     flip_perm=np.asarray(flip_perm) if flip_perm is not None else None, test_scales=tuple(test_scales),
                     amp=amp, cuda_streams=cuda_streams, preprocess=preprocess,
                     protocol=make_protocol(protocol, postprocess),
                     checkpoint_sha256=checkpoint_sha256, checkpoint_path=checkpoint_path,
                     runtime=dict(TORCH_RUNTIME) if runtime is None else runtime)


def predictor_from_plan(plan, weights: dict | None = None):
    """A ``Predictor`` in this process from a ``Plan`` (``weights``: numpy state dict; default the plan's)."""
    return make_predictor(**plan.predictor, weights=plan.weights if weights is None else weights)


def build_predictor(cfg, checkpoint: str | None = None, device: str | None = None):
    """A ``Predictor`` for the config ``cfg`` in this process (``device`` overrides ``pipeline.device``)."""
    return predictor_from_plan(make_plan(cfg, checkpoint, device=device))


def build_predictor_from_checkpoint(path: str, device: str | None = "auto", **model_overrides):
    """A ``Predictor`` from a checkpoint alone: its stored model section gives the inference settings
    (the shipped weights: 512 px, category filter 0.275, see ``configs/quality.yaml``)."""
    return build_predictor(config_from_checkpoint(path, **model_overrides), checkpoint=path, device=device)


def predictor_for_model(model, cfg, *, class_names: list[str], input_size: tuple[int, int], device):
    """A ``Predictor`` around a model being trained (validation during training)."""
    import copy

    from streamparse.engine.predictor import Predictor
    from streamparse.engine.protocols import make_protocol
    from streamparse.models.postprocess import PostprocessParams

    kw = validation_kwargs(cfg, class_names)
    return Predictor(copy.deepcopy(model), input_size=input_size, device=device, flip_perm=None, test_scales=(1.0,), amp="none",
                     cuda_streams=False, **{**kw, "postprocess": PostprocessParams(**kw["postprocess"]),
                                            "protocol": make_protocol(kw["protocol"], kw["postprocess"])})
