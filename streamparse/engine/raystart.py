"""Starting (or joining) Ray for a streamparse command: quiet, on loopback, with token authentication.

A local Ray (no address) runs with ``RAY_AUTH_MODE=token`` (Ray's own default for local clusters since
2.59, made explicit so Ray prints no notice about it), the token in Ray's token file (created once,
atomically, readable by its owner only: two commands starting at the same moment agree on one token),
no usage stats, every port on 127.0.0.1, no dashboard. Joining a cluster (``address``) leaves the
environment as the user set it: a token-auth cluster needs ``RAY_AUTH_MODE=token`` and
``RAY_AUTH_TOKEN_PATH`` in the environment, never on a command line. Ray's log lines go to a file
(``streamparse.logs``); a failure to start is one line naming where the full log is.
``plan_while_ray_starts``: a command's plan made on a thread while Ray starts (both take seconds).
"""

from __future__ import annotations

import os
from pathlib import Path

from streamparse import logs

LOCAL_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token"}
TEMP_DIR = "/tmp/sp-ray"  # short: Unix socket paths are capped at 107 bytes


class RayStartError(RuntimeError):
    """Ray could not be started or joined: one line naming where the full log is (exit code 1)."""


def token_path() -> Path:
    """Ray's token file: ``$RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token``."""
    env = os.environ.get("RAY_AUTH_TOKEN_PATH")
    return Path(env).expanduser() if env else Path.home() / ".ray" / "auth_token"


def ensure_token() -> Path:
    """Create Ray's token file if there is none (O_EXCL, mode 0600; never replaces one)."""
    path = token_path()
    if path.is_file() and path.stat().st_size > 0:
        return path
    from ray._private.authentication.authentication_token_generator import generate_new_authentication_token

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another command made it first: use theirs
        return path
    with os.fdopen(fd, "w") as f:
        f.write(generate_new_authentication_token())
    return path


def _refresh_auth_config() -> None:
    """Ray reads ``RAY_AUTH_MODE`` into its C++ config when it is imported; a mode set since then must be
    re-read, or this driver would talk to a token-auth GCS without its token (what ``ray.init`` itself
    does when it turns token auth on)."""
    from ray._raylet import Config

    Config.initialize("")


def init_ray(address: str = "", object_store_mb: int = 1024, num_cpus: int | None = None, *,
             temp_dir: str = TEMP_DIR) -> bool:
    """Start a local Ray, or join ``address``; returns True if this call started or joined it (the
    caller then shuts it down), False if Ray was already initialised in this process."""
    import ray

    if ray.is_initialized():
        return False
    logs.quiet_ray()
    kw = dict(configure_logging=False, log_to_driver=logs.verbose())
    try:
        if address:
            _refresh_auth_config()
            ray.init(address=address, **kw)
        else:
            for k, v in LOCAL_ENV.items():
                os.environ.setdefault(k, v)
            if os.environ["RAY_AUTH_MODE"].lower() == "token":
                ensure_token()
            _refresh_auth_config()
            ray.init(num_cpus=num_cpus or max(2, os.cpu_count() or 2), include_dashboard=False,
                     object_store_memory=int(object_store_mb) * 2**20, _temp_dir=temp_dir, **kw)
    except Exception as exc:  # noqa: BLE001 - Ray's many start errors: one line and where the log is
        msg = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        where = f"Ray at {address}" if address else "a local Ray"
        raise RayStartError(f"could not start {where}: {msg[:300]} (full log: {logs.where_logs(None if address else temp_dir)})") from None
    return True


def start_ray(address: str, object_store_mb: int, intr) -> dict:
    """``init_ray`` timed, our signal handlers put back after it (``intr``: an ``Interrupts``; ``ray.init``
    installs its own SIGTERM handler): {"started": whether this call started or joined Ray, "seconds"}."""
    import time

    t = time.monotonic()
    started = init_ray(address, object_store_mb)
    intr.install()
    return {"started": started, "seconds": round(time.monotonic() - t, 3)}


def plan_while_ray_starts(cfg, checkpoint: str | None, address: str, ray_start: dict, intr, *, gpus: int | None,
                          early: bool):
    """``streamparse.plan.make_plan(cfg, checkpoint, gpus=gpus)`` (importing torch, reading the checkpoint:
    ~1.4 s on 2 cores) on a thread while this thread starts Ray (``start_ray``, its answer put in
    ``ray_start``), when ``early`` (Ray will almost surely be needed); else only the plan. A plan that
    fails (a wrong checkpoint) shuts down the Ray this call started, and raises."""
    from concurrent.futures import ThreadPoolExecutor

    from streamparse.plan import make_plan

    if not early:
        return make_plan(cfg, checkpoint, gpus=gpus)
    import ray

    already = ray.is_initialized()
    planner = ThreadPoolExecutor(1, thread_name_prefix="plan")
    try:
        planning = planner.submit(make_plan, cfg, checkpoint, gpus=gpus)
        ray_start.update(start_ray(address, cfg.pipeline.object_store_memory_mb, intr))
        return planning.result()
    except BaseException:
        if not already and ray.is_initialized():
            ray.shutdown()
        raise
    finally:
        planner.shutdown(wait=False, cancel_futures=True)
