"""Typed configuration: frozen dataclasses are the schema; YAML files fill them; ``--set a.b=c``
overrides with type checks; the resolved config round-trips through JSON (stored in checkpoints
and in zarr root attributes).

Each section belongs to one part of the package; constructors never take config objects, a
builder maps a section to keyword arguments (house rule 1).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from streamparse.config_presets import presets, resolve_config_path  # noqa: F401 (re-exported)
from streamparse.config_types import (  # noqa: F401
    PRECISIONS, RUNTIMES, ConfigError, _one_of, _positive, _range, check_combination, from_mapping,
)


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
    # the tracker's low-score candidates: peaks in (candidate_thresh, center_thresh], parsed beside the people
    # (never on their pixels), stored apart (cand_*); none if >= center_thresh, with TTA or protocol official
    candidate_thresh: float = 0.03
    max_candidates: int = 16  # candidates per frame at most (highest centre scores)
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
    # what the dense heads run on (streamparse.runtime, docs/runtimes.md): auto = on CPU the fastest installed
    # runtime whose label maps agree with torch on the parity frames (on CUDA: torch) | torch | openvino | onnxruntime
    runtime: str = "auto"
    # auto = the fastest float precision that agrees (bf16 where the CPU has it; never int8) | fp32 | bf16 | int8
    precision: str = "auto"
    runtime_cache: str = ""  # export cache folder ("" = $STREAMPARSE_CACHE_DIR, else $XDG_CACHE_HOME/streamparse or ~/.cache/streamparse)
    calibration: str = ""  # int8 calibration frames: a video file or a folder of images ("" = synthetic frames)
    calibration_frames: int = 32

    def __post_init__(self) -> None:
        sec = "model"
        if not self.name:
            raise ConfigError("model.name: must name a registered model")
        _range(sec, "num_classes", self.num_classes, 2)
        if len(self.input_size) != 2 or min(self.input_size) < 16 or self.input_size[0] > self.input_size[1]:
            raise ConfigError(f"model.input_size: expected [short side, max long side] with 16 <= short <= long, got {list(self.input_size)}")
        for k in ("center_thresh", "mask_thresh", "cate_score_thresh", "candidate_thresh"):
            _range(sec, k, getattr(self, k), 0.0, 1.0)
        _one_of(sec, "preprocess", self.preprocess, ("default", "official"))
        _one_of(sec, "protocol", self.protocol, ("default", "official"))
        _one_of(sec, "runtime", self.runtime, RUNTIMES)
        _one_of(sec, "precision", self.precision, PRECISIONS)
        why = check_combination(self.runtime, self.precision)
        if why:
            raise ConfigError(why)
        _range(sec, "calibration_frames", self.calibration_frames, 1, 10000)
        _range(sec, "max_instances", self.max_instances, 1)
        _range(sec, "max_candidates", self.max_candidates, 0, 255)
        if self.center_pool < 1 or self.center_pool % 2 == 0:
            raise ConfigError(f"model.center_pool: must be an odd window >= 1, got {self.center_pool}")
        _range(sec, "merge_cos", self.merge_cos, -1.0, 2.0)
        scales = tuple(self.test_scales)
        if 1.0 not in scales or len(set(scales)) != len(scales) or any(not 0.1 <= f <= 4.0 for f in scales):
            raise ConfigError(f"model.test_scales: must be distinct factors in [0.1, 4] that include 1.0, got {list(scales)}")


@dataclass(frozen=True)
class PipelineConfig:
    device: str = "auto"  # auto | cpu | cuda
    batch_size: int = 4
    batch_timeout_s: float = 0.05
    workers: int = 0  # inference actors; 0 = auto (one per GPU; on CPU plan.cpu_actors: 2 x 1 thread on 2 cores)
    torch_threads: int = 0  # CPU threads per inference actor (0 = plan.cpu_actor_threads: cores / workers, or cores // 4 with workers=0)
    max_in_flight: int = 4  # batches in flight per source (backpressure)
    amp: str = "none"  # none | fp16 | bf16 (CUDA only)
    cuda_streams: bool = True
    chunk_frames: int = 16  # zarr chunk/shard length along time
    commit_frames: int = 64  # frames per store write + commit (whole chunks; the first chunk at once, at least every 2 s)
    compressor: str = "zstd"
    max_frames: int = 0  # 0 = all
    ray_address: str = ""  # "" = start a local Ray
    object_store_memory_mb: int = 1024

    def __post_init__(self) -> None:
        sec = "pipeline"
        if not (self.device in ("auto", "cpu", "cuda") or str(self.device).startswith("cuda:")):
            raise ConfigError(f"pipeline.device must be one of auto, cpu, cuda (or cuda:N), got {self.device!r}")
        _one_of(sec, "amp", self.amp, ("none", "fp16", "bf16"))
        _one_of(sec, "compressor", self.compressor, ("zstd", "blosc", "none"))
        for k in ("batch_size", "max_in_flight", "chunk_frames", "commit_frames"):
            _range(sec, k, getattr(self, k), 1)
        _positive(sec, self, "batch_timeout_s")
        for k in ("workers", "torch_threads", "max_frames"):
            _range(sec, k, getattr(self, k), 0)
        _range(sec, "object_store_memory_mb", self.object_store_memory_mb, 64)


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
    # how long FFmpeg reads a stream at open to learn its parameters (analyzeduration): the frames read
    # meanwhile arrive at once after it, so a long probe is a burst the queue drops (FFmpeg's default: 5 s)
    analyze_s: float = 0.25
    # for this long after a stream's first frame the queue keeps up to 25 x startup_s frames more than
    # queue_size (the first batches wait while the inference workers make the model for the stream's
    # shape: ~1 s on 2 CPU cores); then the backlog drains and the bound returns to queue_size. 0: off
    startup_s: float = 4.0
    # batches of a live source in flight downstream (pipeline.max_in_flight is for files): the lag
    # bound is about (queue_size + max_in_flight x batch_size) frames of model time
    max_in_flight: int = 2

    def __post_init__(self) -> None:
        sec = "live"
        _one_of(sec, "transport", self.transport, ("tcp", "udp"))
        _one_of(sec, "drop_policy", self.drop_policy, ("drop-oldest", "drop-latest", "wait"))
        _positive(sec, self, "open_timeout_s", "read_timeout_s", "stall_timeout_s", "analyze_s")
        _range(sec, "reconnect_initial_s", self.reconnect_initial_s, 0.0)
        _range(sec, "reconnect_factor", self.reconnect_factor, 1.0)
        _range(sec, "reconnect_cap_s", self.reconnect_cap_s, self.reconnect_initial_s)
        _range(sec, "reconnect_max_attempts", self.reconnect_max_attempts, -1)
        _range(sec, "queue_size", self.queue_size, 1)
        _range(sec, "max_in_flight", self.max_in_flight, 1)
        _range(sec, "startup_s", self.startup_s, 0.0)


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

    def __post_init__(self) -> None:
        sec = "data"
        _one_of(sec, "format", self.format, ("cihp", "mhpv2"))
        if not self.short_side or min(self.short_side) < 1:
            raise ConfigError(f"data.short_side: needs at least one positive size, got {list(self.short_side)}")
        _range(sec, "max_long_side", self.max_long_side, 1)
        _range(sec, "test_short_side", self.test_short_side, 1)
        _range(sec, "flip_prob", self.flip_prob, 0.0, 1.0)


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
    # AVX512-BF16 (the shipped weights' stages 4-10); slower on CPUs without native bf16.
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

    def __post_init__(self) -> None:
        sec = "train"
        _one_of(sec, "cpu_amp", self.cpu_amp, ("none", "bf16"))
        _one_of(sec, "norm", self.norm, ("frozen_bn", "bn", "syncbn"))
        _one_of(sec, "optimizer", self.optimizer, ("sgd", "adamw"))
        for k in ("epochs", "batch_size", "log_interval"):
            _range(sec, k, getattr(self, k), 1)
        for k in ("checkpoint_interval", "eval_interval", "warmup_iters", "num_workers", "eval_max_images", "torch_threads", "weight_decay", "grad_clip"):
            _range(sec, k, getattr(self, k), 0)
        _positive(sec, self, "lr_per_image")
        _range(sec, "momentum", self.momentum, 0.0, 1.0, hi_open=True)
        _range(sec, "warmup_ratio", self.warmup_ratio, 0.0, 1.0, lo_open=True)
        _range(sec, "lr_gamma", self.lr_gamma, 0.0, 1.0, lo_open=True)
        if any(w < 0 for w in self.loss_weights):
            raise ConfigError(f"train.loss_weights: must be >= 0, got {list(self.loss_weights)}")
        if list(self.lr_steps) != sorted(self.lr_steps) or any(e < 1 for e in self.lr_steps):
            raise ConfigError(f"train.lr_steps: epochs must be >= 1 and increasing, got {list(self.lr_steps)}")


# ----------------------------------------------------------------------------- track (issue 19)
@dataclass(frozen=True)
class TrackConfig:
    """Person tracker (``streamparse.tracking.tracker.Tracker``; its keyword arguments are these fields but
    ``enabled``). Costs are in [0, 1]; a cue with weight 0 is off. Defaults tuned on synthetic
    tracking videos of seed 7 with the shipped weights at the 512-px preset (``bench track``)."""

    enabled: bool = True  # assign inst_track writer-side
    grid: int = 96  # mask IoU on the label map sampled to about this many cells on the long side
    iou_mode: str = "motion"  # motion: the previous mask displaced by the track's velocity | static: as it was
    w_iou: float = 1.0  # weight of 1 - mask IoU
    w_emb: float = 0.0  # weight of (1 - cosine of instance embeddings) / 2 between active tracks and detections
    # ... and when re-identifying lost tracks (the shipped weights' kernels also encode position: they
    # match a person across a few frames, not across seconds)
    w_emb_reid: float = 0.0
    w_col: float = 2.0  # weight of the part-colour signature distance over the parts both people show
    iou_gate: float = 0.3  # an active track and a detection may match if their IoU is at least this ...
    max_cost: float = 0.5  # ... (or their appearance cost is under reid_cost) and the combined cost is under this
    reid_cost: float = 0.2  # appearance cost under which a lost track is re-identified (0 = no re-identification)
    iou_max_gap: int = 8  # frames after the last match during which mask IoU (with motion) is used (gap bridging)
    motion_momentum: float = 0.6  # velocity EMA
    appearance_momentum: float = 0.8  # colour-signature EMA (weight of the track's old value)
    emb_momentum: float = 0.0  # embedding EMA (0 = the last embedding)
    confirm_frames: int = 2  # consecutive matches before a new track gets an id (its earlier frames stay 0)
    birth_score: float = 0.2  # minimum detection score to start a track
    birth_overlap: float = 0.5  # no birth for a detection this much inside a matched track's predicted mask
    max_lost_s: float = 30.0  # source seconds a lost track is kept for re-identification
    # match by appearance (without mask overlap) only within 0.25 + reid_speed x (seconds since last
    # seen) frame sizes of where the track was last seen (0 = anywhere); any distance after a live
    # reconnect, where the camera may have moved
    reid_speed: float = 1.0
    min_part_frac: float = 0.02  # a part counts in the colour signature from this fraction of the person
    min_shared_frac: float = 0.1  # colour signatures are compared when the shared parts cover this much of both
    # second stage: a confirmed track left unmatched takes a low-score candidate (model.candidate_thresh)
    # whose mask overlaps its predicted mask at IoU >= recover_iou (0 = off) and whose cost is <= max_cost,
    # for at most recover_frames frames in a row without a detection
    recover_iou: float = 0.3
    recover_frames: int = 5
    # offline only (`streamparse track`): track backwards too and join the passes (offline_backward), drop tracks
    # seen in < offline_min_frames frames, paint masks interpolated over gaps of <= interp_frames frames (0 = none)
    offline_backward: bool = False
    offline_min_frames: int = 8
    interp_frames: int = 0

    def __post_init__(self) -> None:
        if self.iou_mode not in ("motion", "static"):
            raise ConfigError(f"track.iou_mode must be motion or static, got {self.iou_mode!r}")
        if not 8 <= self.grid <= 4096:
            raise ConfigError(f"track.grid must be in [8, 4096], got {self.grid}")
        for name in ("w_iou", "w_emb", "w_emb_reid", "w_col"):
            if not 0.0 <= getattr(self, name) <= 100.0:
                raise ConfigError(f"track.{name} must be in [0, 100], got {getattr(self, name)}")
        if self.w_iou + self.w_emb + self.w_col <= 0:
            raise ConfigError("track: at least one of w_iou, w_emb, w_col must be > 0")
        for name in ("iou_gate", "max_cost", "reid_cost", "motion_momentum", "appearance_momentum", "emb_momentum", "birth_score",
                     "birth_overlap", "min_part_frac", "min_shared_frac", "recover_iou"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"track.{name} must be in [0, 1], got {v}")
        for name in ("iou_max_gap", "recover_frames", "interp_frames", "offline_min_frames"):
            if not 0 <= getattr(self, name) <= 1000:
                raise ConfigError(f"track.{name} must be in [0, 1000], got {getattr(self, name)}")
        if not 1 <= self.confirm_frames <= 100:
            raise ConfigError(f"track.confirm_frames must be in [1, 100], got {self.confirm_frames}")
        if not 0.0 <= self.reid_speed <= 100.0:
            raise ConfigError(f"track.reid_speed must be in [0, 100], got {self.reid_speed}")
        if not 0.0 <= self.max_lost_s <= 1e6:
            raise ConfigError(f"track.max_lost_s must be in [0, 1e6], got {self.max_lost_s}")


# ----------------------------------------------------------------------------- end track


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    live: LiveConfig = field(default_factory=LiveConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    track: TrackConfig = field(default_factory=TrackConfig)


def to_dict(cfg: Any) -> dict:
    """JSON-compatible nested dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict(data: dict, cls: type = Config) -> Any:
    return from_mapping(cls, data)


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
    """Defaults <- YAML/JSON file or installed preset name (may name ``_base_: other.yaml``, relative)
    <- ``--set`` overrides."""
    data = to_dict(Config())
    if path:
        data = _deep_update(data, _read_file(resolve_config_path(path)))
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
