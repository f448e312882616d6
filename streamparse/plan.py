"""Where config becomes objects: the only module that reads the config dataclasses (house rule 1).

Everything below it (predictor, sources, sink, actors, scheduler) takes modules and plain keyword
values. Actors are sent plain dicts made here (``predictor_kwargs``, ``source_kwargs``) and the weights
once, as numpy arrays in Ray's object store (``load_weights``); never a config object.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from streamparse.categories import class_names_for, label_space_for
from streamparse.config import Config, LiveConfig, ModelConfig, TrackConfig, to_dict
from streamparse.sources.uri import redact_uri


# ----------------------------------------------------------------------------- model + predictor
def postprocess_kwargs(mc: ModelConfig) -> dict:
    """``PostprocessParams`` keyword values from the config's model section."""
    return {"center_thresh": mc.center_thresh, "center_pool": mc.center_pool, "max_instances": mc.max_instances,
            "mask_thresh": mc.mask_thresh, "merge_cos": mc.merge_cos, "cate_score_thresh": mc.cate_score_thresh}


def resolve_model_meta(cfg: Config, checkpoint: str | None) -> dict:
    """What a run's model is, without building it: model name and builder kwargs, class names,
    palette, flip permutation (``model.test_flip``), checkpoint path and sha256. Checks that a given
    checkpoint fits ``cfg.model`` (name and class count). ``checkpoint``: a path, 'default' (the
    shipped weights), 'none' (random init) or None (shipped weights if they fit, else random init)."""
    from streamparse import checkpoint as ck

    mc = cfg.model
    path = ck.resolve_checkpoint(checkpoint, mc.name, mc.num_classes)
    names, sha, kwargs, dim = None, None, {"num_classes": mc.num_classes}, None
    if path:
        meta = ck.load_checkpoint(path)
        kern = meta["state_dict"].get("cate_kernels.weight")
        dim = int(kern.shape[1]) if kern is not None else None
        if meta["model_name"] != mc.name:
            raise ck.CheckpointError(f"checkpoint {path} holds model {meta['model_name']!r}, config model.name is {mc.name!r}")
        n = int(dict(meta["model_kwargs"]).get("num_classes", len(meta["class_names"])))
        if n != mc.num_classes:
            raise ck.CheckpointError(f"checkpoint {path} has {n} classes, config model.num_classes is {mc.num_classes}")
        names, sha, kwargs = list(meta["class_names"]), ck.sha256_file(path), dict(meta["model_kwargs"])
    space = label_space_for(mc.label_space, mc.num_classes)
    if names is None:
        names = class_names_for(space, mc.num_classes)
    fits = space is not None and space.num_classes == len(names)
    flip_perm = None
    if mc.test_flip:
        if not fits:
            raise ValueError(f"model.test_flip needs the left/right pairs of a known label space; {mc.label_space!r} "
                             f"with {len(names)} classes has none")
        flip_perm = space.flip_lut().tolist()
    if dim is None:  # the instance-kernel size (schema v2 embeddings) of a randomly initialised model
        from streamparse.models import build_model

        dim = int(build_model(mc.name, **kwargs).cate_kernels.weight.shape[1])
    return {"model_name": mc.name, "model_kwargs": kwargs, "class_names": names,
            "palette": space.palette_array().tolist() if fits else None, "flip_perm": flip_perm,
            "checkpoint": path, "checkpoint_sha256": sha, "embedding_dim": dim}


def checkpoint_preset_overrides(checkpoint: str | None) -> list[str]:
    """``model.KEY=VALUE`` overrides from a checkpoint's stored inference preset (the converted authors'
    checkpoints store one: model name, classes, input size, thresholds, pre- and post-processing), to
    apply before the user's own ``--set``. [] for None / 'none' / 'default', a checkpoint without a
    preset, or a file that cannot be read (loading it later says why). Imports torch only for a file."""
    import json

    if checkpoint in (None, "", "none", "default") or not Path(checkpoint).is_file():
        return []
    import torch

    from streamparse.checkpoint import FORMAT

    try:
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - reported when the checkpoint is loaded for real
        return []
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        return []
    stored = ckpt.get("config") or {}
    if not stored.get("inference_preset") or not isinstance(stored.get("model"), dict):
        return []
    known = set(ModelConfig.__dataclass_fields__)
    return [f"model.{k}={json.dumps(v)}" for k, v in stored["model"].items() if k in known]


def load_weights(meta: dict) -> dict[str, np.ndarray] | None:
    """The checkpoint's state dict as float32 numpy arrays (what crosses Ray, once), or None (random init)."""
    from streamparse import checkpoint as ck

    if not meta["checkpoint"]:
        return None
    sd = ck.load_checkpoint(meta["checkpoint"])["state_dict"]
    return {k: (v.float() if v.is_floating_point() else v).numpy() for k, v in sd.items()}


def predictor_kwargs(cfg: Config, meta: dict, *, device: str | None = None) -> dict:
    """Plain keyword values for ``streamparse.engine.factory.make_predictor`` (JSON-able; the weights travel apart)."""
    mc, pc = cfg.model, cfg.pipeline
    return {"model_name": meta["model_name"], "model_kwargs": dict(meta["model_kwargs"]), "class_names": list(meta["class_names"]),
            "palette": meta["palette"], "flip_perm": meta["flip_perm"], "input_size": list(mc.input_size),
            "device": device or pc.device, "postprocess": postprocess_kwargs(mc), "test_scales": list(mc.test_scales),
            "amp": pc.amp, "cuda_streams": pc.cuda_streams, "preprocess": mc.preprocess, "protocol": mc.protocol,
            "checkpoint_sha256": meta["checkpoint_sha256"], "checkpoint_path": meta["checkpoint"]}


def build_predictor(cfg: Config, checkpoint: str | None = None, device: str | None = None):
    """A ``Predictor`` for ``cfg`` in this process (see ``resolve_model_meta`` for ``checkpoint``)."""
    meta = resolve_model_meta(cfg, checkpoint)
    from streamparse.engine.factory import make_predictor

    return make_predictor(**predictor_kwargs(cfg, meta, device=device), weights=load_weights(meta))


def config_from_checkpoint(path: str, **model_overrides) -> Config:
    """The config a checkpoint was made with (its model section), name and class count from the file."""
    from streamparse import checkpoint as ck
    from streamparse.config import from_dict

    meta = ck.load_checkpoint(path)
    data = to_dict(Config())
    stored = meta.get("config") or {}
    if isinstance(stored.get("model"), dict):
        data["model"].update({k: v for k, v in stored["model"].items() if k in data["model"]})
    data["model"]["name"] = meta["model_name"]
    data["model"]["num_classes"] = len(meta["class_names"])
    data["model"].update(model_overrides)
    return from_dict(data)


def build_predictor_from_checkpoint(path: str, device: str | None = "auto", **model_overrides):
    """A ``Predictor`` from a checkpoint alone: its stored model section gives the inference settings
    (the shipped weights: 512 px, category filter 0.275, see ``configs/quality.yaml``)."""
    return build_predictor(config_from_checkpoint(path, **model_overrides), checkpoint=path, device=device)


def predictor_for_model(model, cfg: Config, *, class_names: list[str], input_size: tuple[int, int], device):
    """A ``Predictor`` around a model being trained (validation during training)."""
    import copy

    from streamparse.models.postprocess import PostprocessParams
    from streamparse.engine.predictor import Predictor

    mc = cfg.model
    space = label_space_for(mc.label_space, mc.num_classes)
    return Predictor(copy.deepcopy(model), model_name=mc.name, class_names=class_names,
                     palette=space.palette_array() if space and space.num_classes == len(class_names) else None,
                     input_size=input_size, device=device, postprocess=PostprocessParams(**postprocess_kwargs(mc)),
                     flip_perm=None, test_scales=(1.0,), amp="none", cuda_streams=False, preprocess=mc.preprocess,
                     protocol=mc.protocol)


def inference_threads(cfg: Config) -> int:
    """CPU threads per inference worker: ``pipeline.torch_threads``, else the cores shared by the workers."""
    return cfg.pipeline.torch_threads or max(1, (os.cpu_count() or 2) // max(1, cfg.pipeline.workers))


# ----------------------------------------------------------------------------- sources
def live_kwargs(live: LiveConfig) -> dict:
    """``LiveSource`` keyword values from the config's live section."""
    names = ("transport", "open_timeout_s", "read_timeout_s", "reconnect_initial_s", "reconnect_factor",
             "reconnect_cap_s", "reconnect_max_attempts", "queue_size", "drop_policy", "stall_timeout_s")
    return {n: getattr(live, n) for n in names}


def source_kwargs(uri: str, cfg: Config, *, source_id: str, start_frame: int = 0) -> dict:
    """Plain keyword values for ``sources.open_source`` (what a decoder actor is given)."""
    return {"uri": uri, "source_id": source_id, "start_frame": int(start_frame), "max_frames": cfg.pipeline.max_frames,
            "live": live_kwargs(cfg.live)}


def build_source(uri: str, cfg: Config | None = None, *, source_id: str = "", start_frame: int = 0, max_frames: int | None = None):
    """A source (file or live) for ``uri`` in this process."""
    from streamparse.sources import open_source

    cfg = cfg or Config()
    kw = source_kwargs(uri, cfg, source_id=source_id, start_frame=start_frame)
    if max_frames is not None:
        kw["max_frames"] = max_frames
    return open_source(kw.pop("uri"), **kw)


# ----------------------------------------------------------------------------- sink
def root_attrs(cfg: Config, meta: dict, uris: list[str]) -> dict:
    """The store's root attributes: versions, model, checkpoint, classes, palette, resolved config, sources."""
    from streamparse import __version__

    attrs = {"streamparse_version": __version__, "model_name": meta["model_name"], "checkpoint_sha256": meta["checkpoint_sha256"],
             "class_names": meta["class_names"], "palette": meta["palette"], "config": to_dict(cfg),
             "sources": [redact_uri(u) for u in uris]}
    if cfg.track.enabled:
        from streamparse.tracking.tracker import NAME

        attrs["tracker"] = {"name": NAME, "params": track_kwargs(cfg.track)}
    return attrs


def build_sink(cfg: Config, out: str | Path, *, mode: str, attrs: dict, store=None, lock_token: str | None = None,
               storage_options: dict | None = None):
    """The store of a run (``store``: an optional zarr store object to write through). ``out`` on object
    storage (``s3://...``) gives a ``RemoteZarrSink`` (fsspec, ``storage_options``); ``lock_token``: an
    archive run's writer-lock token (see ``streamparse.store.lock``)."""
    pc = cfg.pipeline
    from streamparse.store.objstore import is_url

    if is_url(out):
        from streamparse.store.remote import RemoteZarrSink

        return RemoteZarrSink(str(out), mode=mode, root_attrs=attrs, chunk_frames=pc.chunk_frames, compressor=pc.compressor,
                              storage_options=storage_options, lock_token=lock_token)
    from streamparse.store.sink import ZarrSink

    return ZarrSink(out, mode=mode, root_attrs=attrs, chunk_frames=pc.chunk_frames, compressor=pc.compressor, store=store,
                    lock_token=lock_token)


def track_kwargs(track: TrackConfig) -> dict:
    """``Tracker`` keyword values from the config's track section (every field but ``enabled``)."""
    import dataclasses

    return {f.name: getattr(track, f.name) for f in dataclasses.fields(track) if f.name != "enabled"}


def build_tracker(track: TrackConfig):
    """A fresh tracker for one source, or None when ``track.enabled`` is false."""
    if not track.enabled:
        return None
    from streamparse.tracking.tracker import Tracker

    return Tracker(**track_kwargs(track))


def open_source_writer(sink, cfg: Config, meta: dict, source_id: str, info: dict):
    """The writer of one source in ``sink`` (its size from ``info``: height, width), with its tracker,
    set up as the config says; every writing path (run, archive) opens its writers here."""
    palette = np.asarray(meta["palette"]) if meta["palette"] else None
    return sink.source(source_id, info, (info["height"], info["width"]), meta["class_names"], palette,
                       embedding_dim=meta["embedding_dim"], tracker=build_tracker(cfg.track))
