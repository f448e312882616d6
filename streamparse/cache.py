"""Where streamparse may keep files it can rebuild (downloaded or converted weights, compiled models).

One rule, for every module that needs a cache: ``$STREAMPARSE_CACHE_DIR``, else
``$XDG_CACHE_HOME/streamparse``, else ``~/.cache/streamparse``. Nothing is created on import;
``cache_dir(create=True)`` makes the folder.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "STREAMPARSE_CACHE_DIR"


def cache_dir_source() -> tuple[Path, str]:
    """The cache folder and what chose it (``$STREAMPARSE_CACHE_DIR``, ``$XDG_CACHE_HOME`` or ``~/.cache``)."""
    own = os.environ.get(ENV_VAR)
    if own:
        return Path(own).expanduser(), f"${ENV_VAR}"
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(os.path.expanduser(xdg)):  # the XDG spec ignores a relative value
        return Path(xdg).expanduser() / "streamparse", "$XDG_CACHE_HOME"
    return Path.home() / ".cache" / "streamparse", "~/.cache"


def cache_dir(create: bool = False) -> Path:
    """The cache folder (see the module doc); with ``create``, made (parents too) if absent."""
    path, _ = cache_dir_source()
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path
