"""What reaches the user's terminal: streamparse's own lines only.

``configure(verbose)`` (called once by the CLI): streamparse's loggers print warnings (``-v``: info)
to stderr as ``streamparse: message``; Ray's Python loggers go to a log file (``ray_log_path()``),
and to the terminal too only with ``-v``. A Ray failure is reported by the command as one line that
names that file (``where_logs()``).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

_state = {"verbose": False, "configured": False}
RAY_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune", "ray.serve")


def verbose() -> bool:
    """Whether ``-v`` was given (or ``STREAMPARSE_VERBOSE=1``)."""
    return _state["verbose"] or os.environ.get("STREAMPARSE_VERBOSE", "") not in ("", "0")


def ray_log_path() -> Path:
    """The file Ray's driver-side Python log lines go to (the session's own logs are in Ray's temp dir)."""
    from streamparse.cache import cache_dir

    return cache_dir() / "logs" / "ray-driver.log"


def configure(verbose_: bool = False) -> None:
    """Set up the terminal for a command (idempotent). ``-v`` is passed on to Ray's workers (they inherit
    ``STREAMPARSE_VERBOSE``) and their lines then reach the terminal too."""
    _state["verbose"] = bool(verbose_)
    if verbose_:
        os.environ["STREAMPARSE_VERBOSE"] = "1"
    sp = logging.getLogger("streamparse")
    if not _state["configured"]:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("streamparse: %(message)s"))
        sp.addHandler(h)
        sp.propagate = False
        _state["configured"] = True
    sp.setLevel(logging.INFO if verbose() else logging.WARNING)
    quiet_ray()


def configure_worker() -> None:
    """In a Ray task or actor: streamparse's lines to stderr (forwarded to the driver's terminal only with
    ``-v``), at info level with ``-v``."""
    if not _state["configured"]:
        configure(verbose())


def quiet_ray() -> None:
    """Ray's Python loggers to ``ray_log_path()`` (and the terminal with ``-v``), never to the terminal
    by default. Call after importing Ray (it attaches a handler of its own then) and before
    ``ray.init(configure_logging=False)``."""
    path = ray_log_path()
    handlers: list[logging.Handler] = []
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(path)
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handlers.append(fh)
    except OSError:  # an unwritable cache: Ray's lines are dropped unless -v
        pass
    if verbose():
        handlers.append(logging.StreamHandler(sys.stderr))
    for name in RAY_LOGGERS:
        lg = logging.getLogger(name)
        for h in list(lg.handlers):  # ours of an earlier call, and the one Ray attaches when it is imported
            lg.removeHandler(h)
            if getattr(h, "_streamparse", False):
                h.close()
        for h in handlers:
            h._streamparse = True  # ours: replaced on the next call
            lg.addHandler(h)
        lg.setLevel(logging.INFO if verbose() else logging.WARNING)
        lg.propagate = False


def where_logs(temp_dir: str | None = None) -> str:
    """Where a Ray failure's full log is: the driver log and the session's log folder."""
    parts = [str(ray_log_path())]
    if temp_dir:
        parts.append(str(Path(temp_dir) / "session_latest" / "logs"))
    return " and ".join(parts)


def missing_dependency(name: str, node: str | None = None) -> str:
    """One line for a package this Python lacks: which package, which Python on which node, the fix."""
    import socket

    where = node or socket.gethostname()
    return (f"the Python at {sys.executable} on node {where} lacks the package {name.split('.')[0]!r}: install "
            f"streamparse's dependencies there (pip install streamparse, or an image from examples/)")


class MissingDependency(RuntimeError):
    """A package this Python lacks (a cluster node set up without streamparse's dependencies): one line
    (``missing_dependency``) that ends the run, never a per-video failure."""


def require(*modules: str) -> None:
    """Import ``modules`` or raise ``MissingDependency`` naming the first one missing and this node."""
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            node = None
            try:
                import ray

                node = ray.util.get_node_ip_address()
            except Exception:  # noqa: BLE001 - outside Ray: the host name
                pass
            raise MissingDependency(missing_dependency(exc.name or name, node)) from None
