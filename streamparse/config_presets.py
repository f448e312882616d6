"""The presets installed with streamparse (``configs/*.yaml`` of the repository, ``streamparse/configs`` of
a wheel) and the resolution of a ``--config`` value: a path, else a preset by name. A leaf of
``streamparse.config``."""

from __future__ import annotations

from pathlib import Path

from streamparse.config_types import ConfigError


def presets() -> list[str]:
    """The names of the presets installed with streamparse (``configs/*.yaml`` of the repository, e.g.
    ``quality``, ``pipeline_gpu``, ``shipped_weights/stage10``)."""
    root = _presets_dir()
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))


def _presets_dir() -> Path:
    """``streamparse/configs`` of an installed wheel; ``configs/`` beside the package in a checkout."""
    here = Path(__file__).resolve().parent
    installed = here / "configs"
    return installed if installed.is_dir() else here.parent / "configs"


def resolve_config_path(name: str | Path) -> Path:
    """A config file: an existing path, else an installed preset by name (``quality`` or
    ``quality.yaml``); otherwise ``ConfigError`` naming the presets there are."""
    path = Path(name)
    if path.is_file():
        return path
    stem = str(name)[:-5] if str(name).endswith(".yaml") else str(name)
    if not path.is_absolute() and ".." not in Path(stem).parts:
        preset = _presets_dir() / f"{stem}.yaml"
        if preset.is_file():
            return preset
    raise ConfigError(f"config file not found: {name} (not a file, nor a preset: {', '.join(presets()) or 'none installed'})")
