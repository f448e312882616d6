"""Where config becomes the plan: the only module that reads the config dataclasses (house rule 1).

``make_plan(cfg, checkpoint)`` runs once, in the driver, before anything starts: it reads the checkpoint
once (the file, its weights, its model, its classes), decides the device (``decide_device``) and turns
every section the engine uses into plain keyword values. The result is a frozen ``Plan`` of plain
data: stored in every output, handed to Ray tasks and actors as ``plan.to_dict()`` (the weights travel
apart, once, through the object store), and turned into objects by its methods (``predictor``,
``source``, ``sink``, ``writer``, ``root_attrs``). Nothing below this module takes a config object.

The older helpers that take a ``Config`` (``build_predictor(cfg, ...)``, ``root_attrs(cfg, meta, ...)``)
remain for single-process callers (predict, eval, tests) and build the same objects through a plan.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamparse.categories import class_names_for, label_space_for
from streamparse.config import Config, LiveConfig, ModelConfig, TrackConfig, to_dict
from streamparse.sources.uri import redact_uri

# a model being trained is validated on torch (its weights change between validations)
TORCH_RUNTIME = {"runtime": "torch", "precision": "fp32", "cache_dir": "", "calibration": "", "calibration_frames": 0}
LIVE_KEYS = ("transport", "open_timeout_s", "read_timeout_s", "reconnect_initial_s", "reconnect_factor", "reconnect_cap_s",
             "reconnect_max_attempts", "queue_size", "drop_policy", "stall_timeout_s", "analyze_s", "startup_s")


@dataclass(frozen=True)
class Plan:
    """Everything a run needs, decided once from the config and the checkpoint, as plain data.

    ``model``: name, builder kwargs, class names, palette, flip permutation, checkpoint path and
    sha256, embedding size. ``predictor``: ``make_predictor`` keyword values (device resolved).
    ``live``: ``LiveSource`` keyword values. ``store``: chunk length, compressor. ``track``: ``Tracker``
    keyword values, or None (tracking off). ``weights``: the numpy state dict (None: random init),
    never part of ``to_dict()``."""

    config: dict
    model: dict
    predictor: dict
    device: str
    workers: int
    batch_size: int
    batch_timeout_s: float
    max_in_flight: int
    live_max_in_flight: int
    max_frames: int
    live: dict
    store: dict
    track: dict | None
    ray_address: str
    object_store_mb: int
    weights: dict | None = field(default=None, compare=False, repr=False)

    # ------------------------------------------------------------------ plain data
    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "weights"}

    @classmethod
    def from_dict(cls, data: dict, weights: dict | None = None) -> "Plan":
        return cls(**data, weights=weights)

    def on_device(self, device: str) -> "Plan":
        """The same plan on another device (a cluster decides it from its GPUs: ``decide_device``)."""
        return dataclasses.replace(self, device=device, predictor={**self.predictor, "device": device},
                                   weights=self.weights)

    # ------------------------------------------------------------------ objects
    def source_kwargs(self, uri: str, *, source_id: str, start_frame: int = 0) -> dict:
        """Keyword values for ``sources.open_source``."""
        return {"uri": uri, "source_id": source_id, "start_frame": int(start_frame), "max_frames": self.max_frames,
                "live": dict(self.live)}

    def source(self, uri: str, *, source_id: str = "", start_frame: int = 0, max_frames: int | None = None):
        """A source (file or live) for ``uri`` in this process."""
        from streamparse.sources import open_source

        kw = self.source_kwargs(uri, source_id=source_id, start_frame=start_frame)
        if max_frames is not None:
            kw["max_frames"] = max_frames
        return open_source(kw.pop("uri"), **kw)

    def root_attrs(self, uris: list[str]) -> dict:
        """A store's root attributes: versions, model, checkpoint, classes, palette, resolved config, sources."""
        from streamparse import __version__

        m = self.model
        attrs = {"streamparse_version": __version__, "model_name": m["model_name"], "checkpoint_sha256": m["checkpoint_sha256"],
                 "class_names": m["class_names"], "palette": m["palette"], "config": self.config,
                 "sources": [redact_uri(u) for u in uris]}
        if self.track is not None:
            from streamparse.tracking.tracker import NAME

            attrs["tracker"] = {"name": NAME, "params": dict(self.track)}
        return attrs

    def sink(self, out: str | Path, *, mode: str, attrs: dict, store=None, lock_token: str | None = None,
             storage_options: dict | None = None):
        """The store of a run: ``ZarrSink``, or ``RemoteZarrSink`` for object storage (``s3://...``);
        ``store``: a zarr store object to write through; ``lock_token``: an archive's writer-lock token."""
        from streamparse.store.objstore import is_url

        kw = dict(mode=mode, root_attrs=attrs, chunk_frames=self.store["chunk_frames"], compressor=self.store["compressor"],
                  lock_token=lock_token, commit_frames=self.store["commit_frames"])
        if is_url(out):
            from streamparse.store.remote import RemoteZarrSink

            return RemoteZarrSink(str(out), storage_options=storage_options, **kw)
        from streamparse.store.sink import ZarrSink

        return ZarrSink(out, store=store, **kw)

    def writer(self, sink, source_id: str, info: dict):
        """The writer of one source in ``sink`` (size from ``info``), with its tracker; every writing path
        (run, archive, the benchmarks) opens its writers here."""
        tracker = _tracker(self.track)
        m = self.model
        palette = np.asarray(m["palette"]) if m["palette"] else None
        return sink.source(source_id, info, (info["height"], info["width"]), m["class_names"], palette,
                           embedding_dim=m["embedding_dim"], tracker=tracker)


# ----------------------------------------------------------------------------- making the plan
def ray_settings(cfg: Config) -> tuple[str, int]:
    """(the Ray address, the object store's MiB) of ``cfg``: what starting Ray needs, known before the
    plan (which imports torch and reads the checkpoint) is made."""
    return cfg.pipeline.ray_address, cfg.pipeline.object_store_memory_mb


def decide_device(requested: str, gpus: int) -> str:
    """The one place the device is decided: ``auto`` -> ``cuda`` when ``gpus`` (this machine's, or the
    cluster's) else ``cpu``; ``cuda``/``cuda:N`` without a GPU -> ValueError."""
    if requested in ("", "auto", None):
        return "cuda" if gpus > 0 else "cpu"
    if str(requested).startswith("cuda") and gpus <= 0:
        raise ValueError(f"pipeline.device is {requested!r} but there is no CUDA device (use --device cpu or auto)")
    return str(requested)


def local_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def make_plan(cfg: Config, checkpoint: str | None = None, *, device: str | None = None, gpus: int | None = None,
              load_weights: bool = True) -> Plan:
    """The plan of a run (see the module docstring). ``checkpoint``: a path, 'default' (the shipped
    weights), 'none' (random init) or None (the shipped weights if they fit, else random init).
    ``device``: instead of ``pipeline.device``; ``gpus``: GPUs where inference runs (default: this machine's)."""
    check_runtime(cfg.model)
    meta, weights = _model(cfg, checkpoint, load_weights)
    device = decide_device(device or cfg.pipeline.device, local_gpus() if gpus is None else gpus)
    return _plan(cfg, meta, weights, device)


def cpu_actor_threads(cores: int, torch_threads: int = 0, actors: int = 0) -> int:
    """Threads of each CPU inference actor on a node of ``cores`` CPUs: ``torch_threads`` if set; with
    ``actors`` named, the node's cores (at most 8) shared by them; else (``pipeline.workers`` = 0, auto)
    ``cores // 4`` (1 to 8), so a 2-core machine runs 2 single-threaded actors and a 16-core node 4 of
    4 threads. Single-threaded actors waste no core on the threads' barriers when another process takes
    a core for a moment (decoding, writing, Ray): on 2 cores, 2 x 1 thread gave 1.18x the frames/s of
    1 x 2 threads end to end (docs/performance.md)."""
    if torch_threads:
        return int(torch_threads)
    if actors:
        return max(1, min(int(cores), 8) // int(actors))
    return max(1, min(int(cores) // 4, 8))


def cpu_actors(cores: int, torch_threads: int = 0) -> int:
    """CPU inference actors on a node of ``cores`` CPUs when ``pipeline.workers`` = 0 (auto)."""
    return max(1, int(cores) // cpu_actor_threads(cores, torch_threads))


def _plan(cfg: Config, meta: dict, weights: dict | None, device: str) -> Plan:
    pc, mc = cfg.pipeline, cfg.model
    pred = {"model_name": meta.get("model_name"), "model_kwargs": dict(meta.get("model_kwargs") or {}),
            "class_names": list(meta.get("class_names") or []), "palette": meta.get("palette"), "flip_perm": meta.get("flip_perm"),
            "input_size": list(mc.input_size), "device": device, "postprocess": postprocess_kwargs(mc),
            "test_scales": list(mc.test_scales), "amp": pc.amp, "cuda_streams": pc.cuda_streams, "preprocess": mc.preprocess,
            "protocol": mc.protocol, "checkpoint_sha256": meta.get("checkpoint_sha256"), "checkpoint_path": meta.get("checkpoint"),
            "runtime": runtime_kwargs(mc)}
    return Plan(config=to_dict(cfg), model=meta, predictor=pred, device=device, workers=pc.workers,
                batch_size=pc.batch_size, batch_timeout_s=pc.batch_timeout_s, max_in_flight=pc.max_in_flight,
                live_max_in_flight=cfg.live.max_in_flight, max_frames=pc.max_frames, live=live_kwargs(cfg.live),
                store={"chunk_frames": pc.chunk_frames, "commit_frames": pc.commit_frames, "compressor": pc.compressor},
                track=track_kwargs(cfg.track) if cfg.track.enabled else None, ray_address=pc.ray_address,
                object_store_mb=pc.object_store_memory_mb, weights=weights)


def _model(cfg: Config, checkpoint: str | None, load_weights: bool) -> tuple[dict, dict | None]:
    """(model meta, numpy state dict or None) from ONE read of the checkpoint; checks that it fits
    ``cfg.model`` (name and class count)."""
    from streamparse import checkpoint as ck

    mc = cfg.model
    path = ck.resolve_checkpoint(checkpoint, mc.name, mc.num_classes)
    names, sha, kwargs, dim, weights = None, None, {"num_classes": mc.num_classes}, None, None
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
        if load_weights:
            weights = {k: (v.float() if v.is_floating_point() else v).numpy() for k, v in meta["state_dict"].items()}
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
    meta = {"model_name": mc.name, "model_kwargs": kwargs, "class_names": names,
            "palette": space.palette_array().tolist() if fits else None, "flip_perm": flip_perm,
            "checkpoint": path, "checkpoint_sha256": sha, "embedding_dim": dim}
    return meta, weights


# ----------------------------------------------------------------------------- config sections -> values
def postprocess_kwargs(mc: ModelConfig) -> dict:
    """``PostprocessParams`` keyword values from the config's model section."""
    return {"center_thresh": mc.center_thresh, "center_pool": mc.center_pool, "max_instances": mc.max_instances,
            "mask_thresh": mc.mask_thresh, "merge_cos": mc.merge_cos, "cate_score_thresh": mc.cate_score_thresh,
            "candidate_thresh": mc.candidate_thresh, "max_candidates": mc.max_candidates}


def runtime_kwargs(mc: ModelConfig) -> dict:
    """``streamparse.runtime.RuntimeSpec`` values (the predictor's ``runtime``) from the model section."""
    return {"runtime": mc.runtime, "precision": mc.precision, "cache_dir": mc.runtime_cache, "calibration": mc.calibration,
            "calibration_frames": mc.calibration_frames}


def check_runtime(mc: ModelConfig) -> None:
    """A runtime asked for by name must be installed: ``RuntimeUnavailable`` (a ValueError, one line naming
    the extra to install) before anything starts."""
    from streamparse.runtime import check_installed

    check_installed(mc.runtime, mc.precision)


def live_kwargs(live: LiveConfig) -> dict:
    """``LiveSource`` keyword values from the config's live section."""
    return {n: getattr(live, n) for n in LIVE_KEYS}


def track_kwargs(track: TrackConfig) -> dict:
    """``Tracker`` keyword values from the config's track section (every field but ``enabled``)."""
    return {f.name: getattr(track, f.name) for f in dataclasses.fields(track) if f.name != "enabled"}


def _tracker(kwargs: dict | None):
    if kwargs is None:
        return None
    from streamparse.tracking.tracker import Tracker

    return Tracker(**kwargs)


def build_tracker(track: TrackConfig):
    """A fresh tracker for one source, or None when ``track.enabled`` is false."""
    return _tracker(track_kwargs(track) if track.enabled else None)


def checkpoint_preset_overrides(checkpoint: str | None) -> list[str]:
    """``model.KEY=VALUE`` overrides from a checkpoint's stored inference preset (the converted authors'
    checkpoints store one: model name, classes, input size, thresholds, pre- and post-processing), to
    apply before the user's own ``--set``. [] for None / 'none' / 'default', a checkpoint without a
    preset, or a file that cannot be read (loading it later says why). The file is read once per
    process (``checkpoint.load_checkpoint``): the plan reuses it."""
    import json

    if checkpoint in (None, "", "none", "default") or not Path(checkpoint).is_file():
        return []
    from streamparse.checkpoint import load_checkpoint

    try:
        ckpt = load_checkpoint(checkpoint)
    except Exception:  # noqa: BLE001 - reported when the checkpoint is loaded for real
        return []
    stored = ckpt.get("config") or {}
    if not stored.get("inference_preset") or not isinstance(stored.get("model"), dict):
        return []
    known = set(ModelConfig.__dataclass_fields__)
    return [f"model.{k}={json.dumps(v)}" for k, v in stored["model"].items() if k in known]


# ----------------------------------------------------------------------------- single-process helpers
def resolve_model_meta(cfg: Config, checkpoint: str | None) -> dict:
    """The model part of the plan (``Plan.model``), without loading the weights."""
    return _model(cfg, checkpoint, load_weights=False)[0]


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


def validation_kwargs(cfg: Config, class_names: list[str]) -> dict:
    """``Predictor`` keyword values (besides the model, size and device) for a model being trained."""
    mc = cfg.model
    space = label_space_for(mc.label_space, mc.num_classes)
    return {"model_name": mc.name, "class_names": class_names,
            "palette": space.palette_array() if space and space.num_classes == len(class_names) else None,
            "postprocess": postprocess_kwargs(mc), "preprocess": mc.preprocess, "protocol": mc.protocol,
            "runtime": dict(TORCH_RUNTIME)}


def _plan_of(cfg: Config, meta: dict) -> Plan:
    """A plan for ``cfg`` around an already resolved ``meta`` (no checkpoint read, no device check)."""
    return _plan(cfg, meta, None, cfg.pipeline.device)


def root_attrs(cfg: Config, meta: dict, uris: list[str]) -> dict:
    """``Plan.root_attrs`` for ``cfg`` and ``meta``."""
    return _plan_of(cfg, meta).root_attrs(uris)


def build_sink(cfg: Config, out: str | Path, *, mode: str, attrs: dict, store=None, lock_token: str | None = None,
               storage_options: dict | None = None):
    """``Plan.sink`` for ``cfg``."""
    return _plan_of(cfg, {}).sink(out, mode=mode, attrs=attrs, store=store, lock_token=lock_token, storage_options=storage_options)


def open_source_writer(sink, cfg: Config, meta: dict, source_id: str, info: dict):
    """``Plan.writer`` for ``cfg`` and ``meta``."""
    return _plan_of(cfg, meta).writer(sink, source_id, info)


def build_source(uri: str, cfg: Config | None = None, *, source_id: str = "", start_frame: int = 0, max_frames: int | None = None):
    """``Plan.source`` for ``cfg``."""
    return _plan_of(cfg or Config(), {}).source(uri, source_id=source_id, start_frame=start_frame, max_frames=max_frames)
