"""A local S3-compatible server for tests: ``moto_server()`` (moto[server] on 127.0.0.1, a free port),
yielding fsspec storage options; it is stopped (only it) on exit. Raises ``RuntimeError`` with the
reason when it cannot start (tests skip with it)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def moto_server():
    import importlib.util

    missing = [m for m in ("moto", "s3fs") if importlib.util.find_spec(m) is None]
    if missing:
        raise RuntimeError(f"S3 tests need s3fs and moto[server]: {', '.join(missing)} not installed")
    port = _free_port()
    exe = Path(sys.executable).with_name("moto_server")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "moto.server"]
    log = tempfile.NamedTemporaryFile(prefix="sp-moto-", suffix=".log", delete=False)
    proc = subprocess.Popen([*cmd, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.2)
        if proc.poll() is not None or time.monotonic() >= deadline:
            raise RuntimeError(f"moto server did not start: {Path(log.name).read_text()[-300:]}")
        yield {"endpoint_url": f"http://127.0.0.1:{port}", "key": "testing", "secret": "testing"}
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        Path(log.name).unlink(missing_ok=True)
