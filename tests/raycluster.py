"""A two-node Ray cluster on loopback for tests: ``LoopbackCluster``.

``ray.cluster_utils.Cluster`` runs in a child process of its own session (this file is also that
child's script): a head node with the dashboard / job server on 127.0.0.1 (token authentication
with the session's token, tests/conftest.py; usage stats off, every port on loopback) and a second
node with its own CPUs. The test talks to the child
over stdin/stdout (``kill_node2``, ``stop``). Stopping kills only what this cluster started: the
child's node processes (Cluster.shutdown), then the child's session, then any process still naming
this cluster's unique temp dir. Never a bare ``ray stop``.

Ray writes the cluster address to ``/tmp/ray/ray_current_cluster`` (read by other ``ray.init()`` calls
on the machine); the child disables that write so no other test run can connect to it by mistake.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3", "OMP_NUM_THREADS": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


class LoopbackCluster:
    """``head_cpus`` / ``node_cpus``: logical CPUs of the head and the second node."""

    def __init__(self, head_cpus: int = 2, node_cpus: int = 1, object_store_mb: int = 300, python: str = sys.executable):
        """``python``: the interpreter both nodes run on (e.g. a venv with the dependencies but not streamparse)."""
        self.temp_dir = "/tmp/spa-" + "".join(random.choices(string.ascii_lowercase + string.digits, k=6))
        self.dashboard_port = free_port()
        env = {**os.environ, **RAY_ENV, "PATH": f"{Path(python).parent}:{os.environ.get('PATH', '')}"}
        env.pop("PYTHONPATH", None)
        self.proc = subprocess.Popen([python, __file__, self.temp_dir, str(self.dashboard_port), str(free_port()),
                                      str(head_cpus), str(node_cpus), str(object_store_mb)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     env=env, start_new_session=True, cwd=tempfile.gettempdir())  # not a checkout
        line = self.proc.stdout.readline()
        if not line:
            self.stop()
            raise RuntimeError("the Ray test cluster did not start")
        info = json.loads(line)
        self.gcs_address, self.node2_id, self.node2_raylet = info["gcs"], info["node2"], info["raylet2"]
        self.address = f"http://127.0.0.1:{self.dashboard_port}"
        self._wait_job_server()

    def _wait_job_server(self, timeout_s: float = 90.0) -> None:
        """The job agent registers a few seconds after the head: submit a no-op until it is taken."""
        from ray.job_submission import JobSubmissionClient

        client = JobSubmissionClient(self.address)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                jid = client.submit_job(entrypoint="true")
                break
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        while not client.get_job_status(jid).is_terminal() and time.monotonic() < deadline:
            time.sleep(0.2)

    def client(self):
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.address)

    def on_node2(self, pid: int) -> bool:
        """Whether ``pid`` is a worker process of the second node."""
        return _ppid(pid) == self.node2_raylet

    def _cmd(self, cmd: str, timeout_s: float = 60.0) -> str:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def kill_node2(self) -> None:
        """The second node dies (its raylet and workers SIGKILLed), as a lost machine."""
        assert self._cmd("kill2") == "killed"

    def stop(self) -> None:
        try:
            if self.proc.poll() is None:
                self._cmd("stop")
                self.proc.wait(30)
        except Exception:  # noqa: BLE001
            pass
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for d in os.listdir("/proc"):  # anything left that names this cluster's temp dir is ours
            if d.isdigit() and int(d) != os.getpid():
                try:
                    with open(f"/proc/{d}/cmdline", "rb") as f:
                        if self.temp_dir.encode() in f.read():
                            os.kill(int(d), signal.SIGKILL)
                except OSError:
                    pass


def _serve(temp_dir: str, dash: int, agent: int, head_cpus: int, node_cpus: int, store_mb: int) -> None:
    import ray._common.utils as cu
    import ray._private.utils as u
    from ray.cluster_utils import Cluster

    write = u.write_ray_address
    u.write_ray_address = lambda *a, **k: None  # keep other ray.init() calls on this machine away from us
    cu.reset_ray_address = lambda *a, **k: None
    c = Cluster(initialize_head=True, head_node_args=dict(
        num_cpus=head_cpus, include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=dash,
        dashboard_agent_listen_port=agent, temp_dir=temp_dir, object_store_memory=store_mb * 2**20, node_ip_address="127.0.0.1"))
    # the address in the cluster's OWN temp dir: the job server hands it to every job's driver (without it, Ray
    # would look for a GCS among the machine's processes and could pick another test run's cluster)
    write(c.address, temp_dir)
    n2 = c.add_node(num_cpus=node_cpus, object_store_memory=store_mb * 2**20, node_ip_address="127.0.0.1")
    raylet = next(p.process.pid for p in n2.all_processes["raylet"])
    print(json.dumps({"gcs": c.address, "node2": n2.node_id, "raylet2": raylet}), flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "kill2":
            c.remove_node(n2, allow_graceful=False)
            print("killed", flush=True)
        elif cmd == "stop":
            break
    c.shutdown()
    print("stopped", flush=True)


if __name__ == "__main__":
    _serve(sys.argv[1], *map(int, sys.argv[2:]))
