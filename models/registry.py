"""A plain dict registry of keyword-only model builders (house rule 5)."""

from __future__ import annotations

from typing import Callable

from torch import nn

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str | None = None) -> Callable:
    """Decorator registering a keyword-only builder under ``name`` (default: the function name)."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or fn.__name__
        if key in _BUILDERS:
            raise ValueError(f"model {key!r} is already registered")
        _BUILDERS[key] = fn
        return fn

    return deco


def build_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model by name; ``kwargs`` go to its builder (e.g. ``num_classes``)."""
    try:
        fn = _BUILDERS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(sorted(_BUILDERS))}") from None
    return fn(**kwargs)


def list_models() -> list[str]:
    return sorted(_BUILDERS)
