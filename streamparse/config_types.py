"""Typed config values: the error type, range/enum checks for the dataclasses' ``__post_init__``, and the
conversion of YAML / ``--set`` values to a dataclass field's type (``from_mapping``). A leaf of
``streamparse.config``."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any


class ConfigError(ValueError):
    """Bad config file, key or value; the message names the key."""


def _one_of(section: str, key: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{section}.{key} must be one of {', '.join(map(str, allowed))}, got {value!r}")


def _range(section: str, key: str, value, lo=None, hi=None, *, lo_open: bool = False, hi_open: bool = False) -> None:
    bad = (lo is not None and (value <= lo if lo_open else value < lo)) or (hi is not None and (value >= hi if hi_open else value > hi))
    if bad:
        lo_s = "" if lo is None else ("(" if lo_open else "[") + f"{lo:g}"
        hi_s = "" if hi is None else f"{hi:g}" + (")" if hi_open else "]")
        where = f"in {lo_s}, {hi_s}" if lo is not None and hi is not None else (f">{'' if lo_open else '='} {lo:g}" if lo is not None else f"<{'' if hi_open else '='} {hi:g}")
        raise ConfigError(f"{section}.{key}: must be {where}, got {value!r}")


def _positive(section: str, obj, *keys: str) -> None:
    for k in keys:
        _range(section, k, getattr(obj, k), 0, lo_open=True)


def _convert(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return from_mapping(tp, value, key + ".")
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


def from_mapping(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config key {prefix}{unknown[0]!s} (known in {prefix or 'root'}: {', '.join(sorted(names))})")
    kwargs = {k: _convert(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs)


# model.runtime / model.precision (streamparse.runtime, docs/runtimes.md)
RUNTIMES = ("auto", "torch", "openvino", "onnxruntime")
PRECISIONS = ("auto", "fp32", "bf16", "int8")
# the precisions each concrete runtime runs (on CPU; CUDA runs torch with pipeline.amp)
SUPPORTED = {"torch": ("fp32",), "openvino": ("fp32", "bf16", "int8"), "onnxruntime": ("fp32",)}


def check_combination(runtime: str, precision: str) -> str | None:
    """None if ``runtime`` can run ``precision``, else a one-line reason (auto runtimes pick one that can)."""
    if runtime not in RUNTIMES:
        return f"model.runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}"
    if precision not in PRECISIONS:
        return f"model.precision must be one of {', '.join(PRECISIONS)}, got {precision!r}"
    if runtime in SUPPORTED and precision != "auto" and precision not in SUPPORTED[runtime]:
        able = [r for r, p in SUPPORTED.items() if precision in p]
        return (f"model.precision={precision} needs model.runtime {' or '.join(able + ['auto'])} "
                f"({runtime} runs {', '.join(SUPPORTED[runtime])})")
    return None
