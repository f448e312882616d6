"""What every check of ``streamparse doctor`` is made of: :class:`Check`, and the small helpers that
read the installed metadata (versions, streamparse's exact pins) and try an import."""

from __future__ import annotations

import importlib
import importlib.metadata as md
from typing import Callable, NamedTuple


class Check(NamedTuple):
    name: str
    ok: bool
    detail: str
    fix: str = ""  # empty: nothing to do; set on an ok check: a warning

    @property
    def status(self) -> str:
        return "FAIL" if not self.ok else ("warn" if self.fix else "ok")

    def as_dict(self) -> dict:
        return {"name": self.name, "status": self.status, "ok": self.ok, "detail": self.detail, "fix": self.fix}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:240]}" if text else type(exc).__name__


def _dist_version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def _pins() -> dict[str, str]:
    """``name -> version`` of streamparse's exact (``==``) requirements, extras excluded."""
    try:
        reqs = md.requires("streamparse") or []
    except md.PackageNotFoundError:
        return {}
    pins = {}
    for req in reqs:
        spec, _, marker = req.partition(";")
        if "extra" in marker:
            continue
        name, eq, ver = spec.partition("==")
        if eq:
            pins[name.split("[")[0].strip().lower()] = ver.strip()
    return pins


def _pin_note(dist: str, installed: str | None) -> str:
    want = _pins().get(dist)
    if want and installed and installed.split("+")[0] != want:
        return f"pip install '{dist}=={want}' (streamparse is tested with {want})"
    return ""


def _import_check(name: str, module: str, dist: str, fix: str, extra: Callable[[object], str] | None = None) -> Check:
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - any import failure is the finding
        return Check(name, False, f"cannot import {module}: {_first_line(exc)}", fix)
    version = getattr(mod, "__version__", None) or _dist_version(dist) or "?"
    detail = str(version)
    if extra:
        detail += f" ({extra(mod)})"
    return Check(name, True, detail, _pin_note(dist, _dist_version(dist)))
