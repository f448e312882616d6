"""Start/stop/freeze a GStreamer RTSP server (``gst_rtsp_server.py`` next to this file) on 127.0.0.1,
for the live-stream tests and ``streamparse bench live``.

The server runs under Debian's ``/usr/bin/python3`` (python3-gi is not installable in the venv). Needs
``apt-get install -y --no-install-recommends gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0
gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly
gstreamer1.0-tools gir1.2-gstreamer-1.0 python3-gi``; ``gst_rtsp_available()`` says why not otherwise.

    with RtspServer(testsrc=True, width=160, height=120, fps=25) as srv:
        url = srv.url()            # rtsp://127.0.0.1:<port>/stream
        srv.freeze(); srv.thaw()   # SIGSTOP / SIGCONT
        srv.kill(); srv.start()    # the port is kept: restart on the same port
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

GST_PYTHON = "/usr/bin/python3"
SCRIPT = Path(__file__).with_name("gst_rtsp_server.py")
HOST = "127.0.0.1"

_CHECK = (
    "import gi; gi.require_version('Gst','1.0'); gi.require_version('GstRtspServer','1.0');"
    "from gi.repository import Gst, GstRtspServer; Gst.init(None);"
    "missing=[e for e in ('x264enc','qtdemux','h264parse','rtph264pay','videotestsrc') "
    "if Gst.ElementFactory.find(e) is None]; assert not missing, 'missing GStreamer elements: %s' % missing"
)


@functools.lru_cache(maxsize=1)
def gst_rtsp_available() -> tuple[bool, str]:
    """(True, "") when the GStreamer RTSP server can run here, else (False, reason)."""
    if not os.path.exists(GST_PYTHON):
        return False, f"{GST_PYTHON} not found"
    try:
        r = subprocess.run([GST_PYTHON, "-c", _CHECK], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"cannot run {GST_PYTHON}: {exc}"
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["?"])[-1]
        return False, f"GStreamer RTSP server not usable ({last}); install the Debian packages (docs/environment.md)"
    return True, ""


class RtspServer:
    """One server subprocess serving ``file`` (an H.264 MP4) or an endless live ``videotestsrc``."""

    def __init__(
        self,
        *,
        file: str | os.PathLike | None = None,
        testsrc: bool = False,
        width: int = 160,
        height: int = 120,
        fps: int = 25,
        port: int = 0,
        mount: str = "/stream",
        exit_on_eos: bool = False,
        user: str = "",
        password: str = "",
        ready_timeout_s: float = 10.0,
    ) -> None:
        if (file is None) == (not testsrc):
            raise ValueError("give exactly one of file=... or testsrc=True")
        self.file, self.testsrc = (str(file) if file is not None else None), testsrc
        self.width, self.height, self.fps = width, height, fps
        self.port, self.mount, self.exit_on_eos = port, mount, exit_on_eos
        self.user, self.password = user, password
        self.ready_timeout_s = ready_timeout_s
        self.proc: subprocess.Popen | None = None
        self._log = tempfile.TemporaryFile()
        self._lines: list[str] = []
        self._ready = threading.Event()

    # -------------------------------------------------------------- control

    def start(self, retry_s: float = 5.0) -> "RtspServer":
        """Start (or restart, on the same port once one was bound); waits until it listens."""
        deadline = time.monotonic() + retry_s
        while True:
            try:
                return self._start_once()
            except RuntimeError:
                if self.port == 0 or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)  # the old socket may still hold the port for a moment

    def _start_once(self) -> "RtspServer":
        if self.alive:
            raise RuntimeError("server already running")
        cmd = [GST_PYTHON, str(SCRIPT), "--port", str(self.port), "--mount", self.mount]
        cmd += ["--file", self.file] if self.file else ["--testsrc", "--width", str(self.width),
                                                        "--height", str(self.height), "--fps", str(self.fps)]
        if self.exit_on_eos:
            cmd.append("--exit-on-eos")
        if self.user:
            cmd += ["--user", self.user, "--password", self.password]
        self._ready.clear()
        self._lines = []
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log, text=True, start_new_session=True)
        threading.Thread(target=self._pump, args=(self.proc,), daemon=True).start()
        if not self._ready.wait(self.ready_timeout_s) or not any(l.startswith("READY") for l in self._lines):
            self.kill()
            raise RuntimeError(f"RTSP server did not start: {self._lines[-1:] or self.stderr()[-500:]}")
        self.port = int(next(l for l in self._lines if l.startswith("READY")).split()[1])
        return self

    def _pump(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:  # ends when the process exits
            self._lines.append(line.strip())
            if line.startswith(("READY", "ERROR")):
                self._ready.set()
        self._ready.set()

    def freeze(self) -> None:
        """SIGSTOP: the server keeps its sockets open but sends nothing (a hung camera)."""
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL and reap (an abrupt crash; the kernel closes the connections)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM (after SIGCONT), then SIGKILL if it does not end within ``timeout_s``."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.thaw()
        self.proc.terminate()
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def wait(self, timeout_s: float) -> int | None:
        """Exit code once the process ended within ``timeout_s``, else None."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    # -------------------------------------------------------------- info

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def url(self, user: str | None = None, password: str | None = None) -> str:
        cred = f"{user}:{password}@" if user is not None else ""
        return f"rtsp://{cred}{HOST}:{self.port}{self.mount}"

    def stderr(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def __enter__(self) -> "RtspServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        self._log.close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]
