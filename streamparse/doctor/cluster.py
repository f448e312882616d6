"""Checks of Ray: the installed package (from its metadata: Ray is never imported or started), a
``RAY_ADDRESS`` (probed with one TCP connection under a timeout) and token authentication (where the
token comes from and whether it is there; the token itself is never read into the report)."""

from __future__ import annotations

import os
import socket
import stat
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from streamparse.doctor.common import Check, _dist_version, _first_line, _pin_note

RAY_DEFAULT_PORT = 6379


def check_ray() -> Check:
    version = _dist_version("ray")
    if version is None:
        return Check("ray", False, "not installed", "pip install 'ray[default]==2.60.0'")
    import importlib.util

    jobs = all(importlib.util.find_spec(m) is not None for m in ("aiohttp", "aiohttp_cors"))
    detail = f"{version} (job submission: {'yes' if jobs else 'no'})"
    fix = _pin_note("ray", version)
    if not jobs:
        fix = "pip install 'ray[default]==2.60.0' (`streamparse submit` and the job server need ray[default])"
    return Check("ray", True, detail, fix)


def _ray_target(address: str) -> tuple[str, int] | str:
    """(host, port) to probe for a Ray address, or a message when there is nothing to probe."""
    addr = address.strip()
    if addr == "local":
        return "local: a new local Ray is started"
    if addr == "auto":
        f = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        try:
            addr = f.read_text().strip()
        except OSError:
            addr = ""
        if not addr:
            raise ValueError(f"'auto' but no local Ray cluster is running (no {f})")
    parts = urlsplit(addr if "://" in addr else "tcp://" + addr)
    default = {"http": 80, "https": 443}.get(parts.scheme, RAY_DEFAULT_PORT if parts.scheme == "tcp" else 10001)
    try:
        port = parts.port or default
    except ValueError as exc:
        raise ValueError(f"bad address {address!r}: {exc}") from None
    if not parts.hostname:
        raise ValueError(f"bad address {address!r}: no host")
    return parts.hostname, port


def _tcp_probe(host: str, port: int, timeout: float) -> str:
    """Connect once; '' when something accepted, else why not. Never waits much past ``timeout``
    (the name lookup too runs under it)."""
    result = ["timed out after %.1f s" % timeout]

    def probe():
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result[0] = ""
        except OSError as exc:
            result[0] = exc.strerror or _first_line(exc)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return result[0]


def check_ray_address(address: str | None = None, timeout: float = 2.0) -> Check:
    src = "--ray-address" if address else "$RAY_ADDRESS"
    address = address or os.environ.get("RAY_ADDRESS", "")
    if not address:
        return Check("ray address", True, "RAY_ADDRESS not set: each run starts a local Ray")
    fix = "start the cluster (ray start --head, ray up), check the address and firewall, or unset RAY_ADDRESS"
    try:
        target = _ray_target(address)
    except ValueError as exc:
        return Check("ray address", False, f"{src}: {exc}", fix)
    if isinstance(target, str):
        return Check("ray address", True, f"{src}={address}: {target}")
    host, port = target
    t0 = time.monotonic()
    why = _tcp_probe(host, port, timeout)
    if why:
        return Check("ray address", False, f"{src}={address}: {host}:{port} not reachable ({why})", fix)
    return Check("ray address", True, f"{src}={address}: {host}:{port} accepts connections ({(time.monotonic() - t0) * 1000:.0f} ms)")


def check_ray_auth(address: str | None = None) -> Check:
    """Ray's token authentication as this environment sets it up (RAY_AUTH_MODE, the token's
    source). The token itself is never read into the report."""
    mode = os.environ.get("RAY_AUTH_MODE", "").strip().lower()
    remote = bool(address or os.environ.get("RAY_ADDRESS", "") not in ("", "local"))
    if mode not in ("", "token", "disabled"):
        return Check("ray auth", False, f"RAY_AUTH_MODE={mode!r} is not a mode Ray knows (token, disabled)",
                     "export RAY_AUTH_MODE=token")
    if os.environ.get("RAY_AUTH_TOKEN"):
        source, where = "$RAY_AUTH_TOKEN", None
    elif os.environ.get("RAY_AUTH_TOKEN_PATH"):
        source, where = "$RAY_AUTH_TOKEN_PATH", Path(os.environ["RAY_AUTH_TOKEN_PATH"]).expanduser()
    else:
        source, where = "~/.ray/auth_token", Path.home() / ".ray" / "auth_token"
    token_ok, token_note, loose = True, "", False
    if where is not None:
        try:
            st = where.stat()
            if not stat.S_ISREG(st.st_mode):
                raise IsADirectoryError(f"{where} is not a file")
            with open(where, "rb") as f:
                empty = not f.read(4096).strip()
            loose = bool(st.st_mode & 0o077)
            token_ok, token_note = (not empty), (f"token file {where} is empty" if empty else f"token file {where} ({source})")
        except OSError as exc:
            token_ok, token_note = False, f"no readable token file at {where} ({source}: {exc.strerror or exc})"
    else:
        token_note = "token from $RAY_AUTH_TOKEN (environment)"
    if mode == "disabled":
        return Check("ray auth", True, "RAY_AUTH_MODE=disabled: token authentication is off",
                     "unset RAY_AUTH_MODE or export RAY_AUTH_MODE=token: without it anyone who reaches the "
                     "cluster's ports can run code on it")
    if mode == "token":
        if not token_ok:
            return Check("ray auth", False, f"RAY_AUTH_MODE=token but {token_note}",
                         "put the cluster's token in a file readable only by you (chmod 600) and export "
                         "RAY_AUTH_TOKEN_PATH=FILE; for a new local cluster: ray get-auth-token --generate")
        if loose:
            return Check("ray auth", True, f"RAY_AUTH_MODE=token, {token_note}, readable by others", f"chmod 600 {where}")
        if where is None:
            return Check("ray auth", True, f"RAY_AUTH_MODE=token, {token_note}",
                         "prefer a file: export RAY_AUTH_TOKEN_PATH=FILE and unset RAY_AUTH_TOKEN "
                         "(environment variables reach child processes and logs)")
        return Check("ray auth", True, f"RAY_AUTH_MODE=token, {token_note}")
    # unset: Ray (>= 2.59) turns token auth on for clusters it starts itself
    have = token_note if token_ok else "no token yet (a local Ray makes one in ~/.ray/auth_token)"
    if token_ok and loose:
        return Check("ray auth", True, f"RAY_AUTH_MODE not set; {have}, readable by others", f"chmod 600 {where}")
    if remote:
        return Check("ray auth", True, f"RAY_AUTH_MODE not set; {have}",
                     "for a cluster with token auth: export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=FILE")
    return Check("ray auth", True, f"RAY_AUTH_MODE not set (local Ray starts with token auth); {have}")
