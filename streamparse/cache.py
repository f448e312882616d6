"""Where streamparse keeps what it can rebuild (exported runtimes, logs): ``cache_dir()``."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$STREAMPARSE_CACHE_DIR``, else ``$XDG_CACHE_HOME/streamparse``, else ``~/.cache/streamparse``
    (not created here)."""
    env = os.environ.get("STREAMPARSE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "streamparse"
