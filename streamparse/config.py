"""Typed configuration: frozen dataclasses are the schema; YAML files fill them; ``--set a.b=c``
overrides with type checks; the resolved config round-trips through JSON (stored in checkpoints
and in zarr root attributes).

Each section belongs to one part of the package; constructors never take config objects, a
builder maps a section to keyword arguments (house rule 1).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """Bad config file, key or value; the message names the key."""


@dataclass(frozen=True)
class ModelConfig:
    name: str = "uniparser_small"  # a name from streamparse.models.registry (the shipped weights)
    num_classes: int = 20  # incl. background: 20 CIHP, 59 MHPv2
    label_space: str = "cihp"
    input_size: tuple[int, int] = (256, 448)  # (short side, max long side) at inference (the shipped weights: 256)
    center_thresh: float = 0.1  # theta_ctr
    mask_thresh: float = 0.5  # theta_mask
    max_instances: int = 100
    center_pool: int = 3  # local-maximum window on the centre heatmap (odd; 1 = off)
    merge_cos: float = 0.95  # merge centres whose instance kernels have cosine >= this (> 1 = off)
    cate_score_thresh: float = 0.15  # per-person category filter (authors' cate_score_thr; 0 = off)
    test_flip: bool = False  # horizontal-flip test-time augmentation (2x the network work)
    # test-time scales, factors of input_size; 1.0 (the reference grid) must be among them; the
    # passes are averaged (with test_flip: each also mirrored), costing one network pass each
    test_scales: tuple[float, ...] = (1.0,)
    # default: kornia resize (short side input_size[0]) + normalisation; official: the authors' test
    # pipeline (cv2 keep-ratio resize into input_size = (800, 1333), mean/std on 0-255, pad to 32)
    preprocess: str = "default"
    # default: NMS-free exclusive label maps (models/postprocess.py); official: the authors' overlapping
    # per-person maps (models/postprocess_official.py; label maps: highest centre score wins)
    protocol: str = "default"


@dataclass(frozen=True)
class PipelineConfig:
    device: str = "auto"  # auto | cpu | cuda
    batch_size: int = 4
    batch_timeout_s: float = 0.05
    workers: int = 1  # inference actors (on GPU: one per GPU by default)
    torch_threads: int = 0  # CPU threads per inference actor (0 = all cores / workers)
    max_in_flight: int = 4  # batches in flight per source (backpressure)
    amp: str = "none"  # none | fp16 | bf16 (CUDA only)
    cuda_streams: bool = True
    chunk_frames: int = 16  # zarr chunk/shard length along time
    compressor: str = "zstd"
    max_frames: int = 0  # 0 = all
    ray_address: str = ""  # "" = start a local Ray
    object_store_memory_mb: int = 1024


@dataclass(frozen=True)
class LiveConfig:
    transport: str = "tcp"  # rtsp transport: tcp | udp
    open_timeout_s: float = 10.0
    read_timeout_s: float = 5.0
    reconnect_initial_s: float = 0.5
    reconnect_factor: float = 2.0
    reconnect_cap_s: float = 30.0
    reconnect_max_attempts: int = -1  # -1 = forever
    queue_size: int = 8
    drop_policy: str = "drop-oldest"  # drop-oldest | drop-latest | wait
    stall_timeout_s: float = 10.0
    # batches of a live source in flight downstream (pipeline.max_in_flight is for files): the lag
    # bound is about (queue_size + max_in_flight x batch_size) frames of model time
    max_in_flight: int = 2


@dataclass(frozen=True)
class DataConfig:
    format: str = "cihp"  # cihp | mhpv2
    root: str = ""
    train_split: str = "train"
    val_split: str = "val"
    short_side: tuple[int, ...] = (640, 672, 704, 736, 768, 800)
    # true: one short side per global batch (as in multi-scale YOLO training) instead of one per image;
    # a batch is padded to its largest image, so per-image scales cost the batch's largest scale
    scale_per_batch: bool = False
    max_long_side: int = 1333
    test_short_side: int = 800
    flip_prob: float = 0.5


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 12
    lr_per_image: float = 6.25e-4
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 500
    warmup_ratio: float = 0.001
    lr_steps: tuple[int, ...] = (9, 11)
    grad_clip: float = 35.0
    batch_size: int = 2
    num_workers: int = 0  # dataloader workers
    amp: bool = True  # fp16 autocast + GradScaler, used on CUDA only
    # none | bf16: bf16 autocast when training on CPU (losses in fp32). ~1.7x faster steps on a CPU with
    # AVX512-BF16 (the shipped weights' stages 4-5); slower on CPUs without native bf16.
    cpu_amp: str = "none"
    seed: int = 0
    checkpoint_interval: int = 1  # epochs
    eval_interval: int = 1
    loss_weights: tuple[float, float, float, float] = (1.0, 3.0, 3.0, 1.0)  # c, aux, par, metric
    cihp_variant: bool = False  # paper 6.5: no negative-category term, pull-together term instead
    lr_gamma: float = 0.1  # lr factor at each of lr_steps
    # BatchNorm in the ResNet during training: frozen_bn = BN layers kept in eval mode (running
    # statistics fixed, affine parameters trained; detectron2's choice for small per-GPU batches),
    # bn = batch statistics per worker, syncbn = batch statistics across workers (CUDA only).
    norm: str = "frozen_bn"
    # sgd = the paper's SGD (momentum, weight_decay); adamw = AdamW(lr, weight_decay) — a deviation for
    # short from-scratch CPU runs (the shipped synthetic weights), where SGD at the paper's lr is too slow.
    optimizer: str = "sgd"
    log_interval: int = 20  # iterations between metrics.jsonl lines / progress-bar updates
    eval_max_images: int = 0  # images of the val split evaluated per eval (0 = all)
    ray_address: str = ""  # multi-worker training: "" = start a local Ray, else connect here
    torch_threads: int = 0  # CPU threads per training process (0 = torch's default; Ray workers: CPUs per worker)
    # start from these weights (a streamparse checkpoint of the same model and classes; fresh optimizer
    # and schedule), e.g. fine-tune the shipped weights; "default" = the shipped weights; "" = from scratch.
    # --resume takes precedence.
    init_from: str = ""


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    live: LiveConfig = field(default_factory=LiveConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# ----------------------------------------------------------------------------- conversion


def _convert(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return _from_dict(tp, value, key + ".")
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, args[0], key)
    if origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, str):
            value = [v for v in value.replace("(", "").replace(")", "").replace("[", "").replace("]", "").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            value = [value]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], key) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
        return tuple(_convert(v, a, key) for v, a in zip(value, args))
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.strip().lower() in ("1", "true", "yes", "on")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"{key}: expected a boolean, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
        if f != int(f):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return int(f)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if tp is str:
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    return value


def _from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config key {prefix}{unknown[0]!s} (known in {prefix or 'root'}: {', '.join(sorted(names))})")
    kwargs = {k: _convert(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict:
    """JSON-compatible nested dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict(data: dict, cls: type = Config) -> Any:
    return _from_dict(cls, data)


def _parse_scalar(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    """Apply ``a.b=c`` strings to a nested dict (values parsed as YAML scalars/lists)."""
    data = json.loads(json.dumps(data))
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, _, raw = item.partition("=")
        parts = key.strip().split(".")
        node = data
        for p in parts[:-1]:
            if p not in node or not isinstance(node[p], dict):
                raise ConfigError(f"unknown config key {key.strip()}")
            node = node[p]
        if parts[-1] not in node:
            raise ConfigError(f"unknown config key {key.strip()}")
        node[parts[-1]] = _parse_scalar(raw)
    return data


def _deep_update(base: dict, new: dict, prefix: str = "") -> dict:
    for k, v in new.items():
        if k not in base:
            raise ConfigError(f"unknown config key {prefix}{k}")
        if isinstance(v, dict) and isinstance(base[k], dict):
            _deep_update(base[k], v, prefix + k + ".")
        else:
            base[k] = v
    return base


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults <- YAML/JSON file (may name ``_base_: other.yaml``, relative) <- ``--set`` overrides."""
    data = to_dict(Config())
    if path:
        data = _deep_update(data, _read_file(Path(path)))
    data = apply_overrides(data, overrides)
    return from_dict(data)


def _read_file(path: Path) -> dict:
    import yaml

    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping")
    base = raw.pop("_base_", None)
    if base:
        merged = to_dict(Config())
        merged = _deep_update(merged, _read_file((path.parent / base).resolve()))
        return _deep_update(merged, raw)
    return raw


def save_config(cfg: Config, path: str | Path) -> None:
    import yaml

    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
