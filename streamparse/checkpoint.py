"""Checkpoints are data: ``{format, state_dict, model_name, model_kwargs, config, class_names}``.

Saved with ``torch.save`` and loaded with ``torch.load(weights_only=True)`` -- never pickled
modules, never module paths, so a checkpoint loads whatever the package layout becomes. torch is
imported when a checkpoint is saved or read, not with this module (a driver that only names
``CheckpointError`` starts without it; ``archive`` imports it on the plan's thread while Ray starts).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

FORMAT = "streamparse-checkpoint-v1"
WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "uniparser_small_synth_cihp.pt"


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, or does not fit the requested model."""


def atomic_save(obj: dict, path: str | Path) -> Path:
    """``torch.save`` through a temporary file and a rename: a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    import torch

    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)
    return path


def torch_load(path: str | Path, what: str, error: type[Exception] = ValueError) -> object:
    """``torch.load(weights_only=True)`` on the CPU; any failure (missing, truncated, not plain data)
    becomes ``error`` with one line naming ``what`` and the path."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, or a pickle that is not plain data
        raise error(f"cannot load {what} {path}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    *,
    model_name: str,
    model_kwargs: dict[str, Any],
    class_names: list[str],
    config: dict | None = None,
    half: bool = False,
    extra: dict | None = None,
) -> Path:
    """Write a checkpoint (optionally with fp16 floating weights, e.g. for shipping)."""
    sd = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().clone() for k, v in model.state_dict().items()}
    payload = {
        "format": FORMAT,
        "state_dict": sd,
        "model_name": model_name,
        "model_kwargs": dict(model_kwargs),
        "class_names": list(class_names),
        "config": config or {},
    }
    if extra:
        payload["extra"] = extra
    return atomic_save(payload, path)


_LOADED: dict = {}  # (path, mtime, size) -> checkpoint: a process reads a checkpoint file once


def load_checkpoint(path: str | Path) -> dict:
    """Load and validate a checkpoint dict (``weights_only=True``). A file already loaded by this process
    (same path, mtime and size) is not read again; callers must not modify what they get."""
    try:
        st = Path(path).stat()
        key = (str(Path(path).resolve()), st.st_mtime_ns, st.st_size)
    except OSError:
        key = None
    if key in _LOADED:
        return _LOADED[key]
    ckpt = _load_checkpoint(path)
    if key is not None:
        _LOADED.clear()  # keep one: the weights of a run
        _LOADED[key] = ckpt
    return ckpt


def _load_checkpoint(path: str | Path) -> dict:
    ckpt = torch_load(path, "checkpoint", CheckpointError)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a streamparse checkpoint (expected format {FORMAT!r})")
    for key in ("state_dict", "model_name", "model_kwargs", "class_names"):
        if key not in ckpt:
            raise CheckpointError(f"checkpoint {path} lacks {key!r}")
    return ckpt


def resolve_checkpoint(checkpoint: str | None, model_name: str, num_classes: int) -> str | None:
    """Which weights to load: a path as given; ``'none'`` -> None (random init); ``'default'`` -> the
    shipped weights (CheckpointError when missing or not fitting); None -> the shipped weights when
    they fit ``model_name``/``num_classes``, else None."""
    if checkpoint == "none":
        return None
    if checkpoint not in (None, "default"):
        return str(checkpoint)
    if not DEFAULT_WEIGHTS.is_file():
        if checkpoint == "default":
            raise CheckpointError(f"no shipped weights at {DEFAULT_WEIGHTS}")
        return None
    meta = load_checkpoint(DEFAULT_WEIGHTS)
    if meta["model_name"] == model_name and len(meta["class_names"]) == num_classes:
        return str(DEFAULT_WEIGHTS)
    if checkpoint == "default":
        raise CheckpointError(f"shipped weights hold {meta['model_name']} with {len(meta['class_names'])} classes, "
                              f"config asks for {model_name} with {num_classes}")
    return None


def export_checkpoint(src: str | Path, dst: str | Path, *, half: bool = True, extra: dict | None = None) -> tuple[Path, str, int]:
    """Copy a checkpoint's weights (fp16 with ``half``), name, kwargs, class names and config into a
    new checkpoint (training state and anything else dropped); returns (path, sha256, bytes)."""
    model, ck = build_from_checkpoint(src)
    path = save_checkpoint(dst, model, model_name=ck["model_name"], model_kwargs=ck["model_kwargs"],
                           class_names=ck["class_names"], config=ck.get("config") or {}, half=half,
                           extra={**(ck.get("extra") or {}), **(extra or {})} or None)
    build_from_checkpoint(path)  # it loads back (weights_only) and fits its model
    return path, sha256_file(path), path.stat().st_size


def build_from_checkpoint(
    path: str | Path,
    *,
    expect_model: str | None = None,
    expect_num_classes: int | None = None,
) -> tuple[torch.nn.Module, dict]:
    """Build the checkpoint's model and load its weights (float32). Mismatches raise
    ``CheckpointError`` naming what differs."""
    from streamparse.models import build_model

    ckpt = load_checkpoint(path)
    name = ckpt["model_name"]
    kwargs = dict(ckpt["model_kwargs"])
    n = int(kwargs.get("num_classes", len(ckpt["class_names"])))
    if expect_model and expect_model != name:
        raise CheckpointError(f"checkpoint {path} holds model {name!r}, but {expect_model!r} was requested")
    if expect_num_classes and expect_num_classes != n:
        raise CheckpointError(f"checkpoint {path} has {n} classes, but {expect_num_classes} were requested")
    model = build_model(name, **kwargs)
    sd = {k: v.float() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path} does not fit model {name!r}: missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]}"
        )
    return model, ckpt
