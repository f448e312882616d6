"""Multi-worker training on Ray: the same ``run_training`` on N workers with DDP.

Preferred launcher: Ray Train's ``TorchTrainer`` (it starts the workers, creates the process
group -- gloo on CPU, NCCL with ``use_gpu`` -- and ``ray.train.torch.prepare_model`` wraps the
model in DDP). ``ray.train`` needs ``pyarrow`` (the ``ray[train]`` extra); where it cannot be
imported, a minimal launcher runs the same worker function in plain Ray actors that create the
gloo/NCCL process group themselves. Both pass only plain data (the config dict, paths) to the
workers. Rank 0 writes the work dir; on a multi-node cluster it must be on a shared filesystem.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import timedelta
from pathlib import Path

import torch

from streamparse.training.build import SUMMARY_FILE, TrainingError, load_state
from streamparse.training.loop import run_training

LOCAL_RAY_TEMP_DIR = "/tmp/sp-train-ray"  # short: unix socket paths are capped at 107 bytes


def ray_train_available() -> tuple[bool, str]:
    """(True, "") if ``ray.train.torch.TorchTrainer`` imports, else (False, the reason)."""
    try:
        import ray.train.torch  # noqa: F401
    except ImportError as exc:
        return False, str(exc).splitlines()[0]
    return True, ""


def init_ray(address: str = "", object_store_memory_mb: int = 512) -> bool:
    """Connect to ``address`` (or ``$RAY_ADDRESS``), else start a local Ray (token auth, loopback, no
    dashboard or usage stats: ``streamparse.engine.raystart``). Returns True if this call started Ray."""
    from streamparse.engine.raystart import init_ray as _init

    return _init(address or os.environ.get("RAY_ADDRESS", ""), object_store_memory_mb, os.cpu_count() or 1,
                 temp_dir=LOCAL_RAY_TEMP_DIR)


def _worker_main(payload: dict, rank: int, world_size: int, device: torch.device, wrap_model=None) -> dict:
    """What every worker runs (both launchers)."""
    from streamparse.config import from_dict

    torch.set_num_threads(max(1, int(payload["threads"])))
    cfg = from_dict(payload["config"])
    state = load_state(payload["resume"]) if payload["resume"] else None
    return run_training(cfg, payload["work_dir"], resume_state=state, device=device, rank=rank, world_size=world_size,
                        wrap_model=wrap_model, progress=payload["progress"])


# ----------------------------------------------------------------------------- TorchTrainer
def _train_loop_per_worker(payload: dict) -> None:
    """``TorchTrainer`` entry point (the process group already exists)."""
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    device = ray.train.torch.get_device() if payload["use_gpu"] else torch.device("cpu")

    def wrap(model):
        return ray.train.torch.prepare_model(model, move_to_device=device,
                                             parallel_strategy_kwargs={"find_unused_parameters": True})

    _worker_main(payload, ctx.get_world_rank(), ctx.get_world_size(), device, wrap)  # rank 0 writes summary.json


def _launch_torch_trainer(payload: dict, num_workers: int, use_gpu: bool, cpus_per_worker: float) -> dict:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    resources = {"CPU": cpus_per_worker, **({"GPU": 1} if use_gpu else {})}
    trainer = TorchTrainer(
        _train_loop_per_worker,
        train_loop_config=payload,
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=RunConfig(name="ray_train", storage_path=str(Path(payload["work_dir"]).resolve())),
    )
    try:
        trainer.fit()
    except Exception as exc:  # ray.train.TrainingFailedError: surface the first worker's error
        failures = getattr(exc, "worker_failures", None) or {}
        for err in failures.values():
            cause = getattr(err, "cause", err)
            if isinstance(cause, TrainingError):
                raise TrainingError(str(cause)) from None
        raise
    return json.loads((Path(payload["work_dir"]) / SUMMARY_FILE).read_text())


# ----------------------------------------------------------------------------- plain actors
def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class _ActorWorker:
    """A training worker as a plain Ray actor (used when ``ray.train`` cannot be imported)."""

    def address(self) -> str:
        import ray

        host = ray.util.get_node_ip_address()
        return f"{host}:{_free_port(host)}"

    def run(self, payload: dict, rank: int, world_size: int, master: str) -> dict:
        import torch.distributed as dist

        device = torch.device("cuda", 0) if payload["use_gpu"] else torch.device("cpu")  # Ray sets CUDA_VISIBLE_DEVICES
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method=f"tcp://{master}",
                                rank=rank, world_size=world_size, timeout=timedelta(minutes=30))
        try:
            return _worker_main(payload, rank, world_size, device)
        finally:
            dist.destroy_process_group()


def _launch_actors(payload: dict, num_workers: int, use_gpu: bool, cpus_per_worker: float) -> dict:
    import ray

    cls = ray.remote(num_cpus=cpus_per_worker, num_gpus=1 if use_gpu else 0)(_ActorWorker)
    workers = [cls.remote() for _ in range(num_workers)]
    try:
        master = ray.get(workers[0].address.remote())
        refs = [w.run.remote(payload, r, num_workers, master) for r, w in enumerate(workers)]
        pending = list(refs)
        while pending:  # fail fast: one failed rank would leave the others waiting in a collective
            done, pending = ray.wait(pending, num_returns=1)
            try:
                ray.get(done[0])
            except ray.exceptions.RayTaskError as exc:
                cause = exc.cause if hasattr(exc, "cause") else None
                if isinstance(cause, TrainingError):
                    raise TrainingError(str(cause)) from None
                raise
        return ray.get(refs[0])
    finally:
        for w in workers:
            ray.kill(w)


def launch(payload: dict, *, num_workers: int, use_gpu: bool, ray_address: str = "", launcher: str = "auto") -> dict:
    """Run ``run_training`` on ``num_workers`` Ray workers; returns rank 0's summary.

    ``payload``: ``config`` (a config dict), ``work_dir`` and ``resume`` (absolute paths or None),
    ``progress``. ``launcher``: auto (TorchTrainer if ``ray.train`` imports, else actors) |
    torch_trainer | actors.
    """
    import ray

    if launcher not in ("auto", "torch_trainer", "actors"):
        raise ValueError(f"launcher must be auto, torch_trainer or actors, got {launcher!r}")
    available, why = ray_train_available()
    if launcher == "torch_trainer" and not available:
        raise TrainingError(f"Ray Train is unavailable ({why}); install ray[train]")
    use_trainer = available and launcher != "actors"
    started = init_ray(ray_address)
    try:
        res = ray.cluster_resources()
        if use_gpu and res.get("GPU", 0) < num_workers:
            raise TrainingError(f"--gpu with {num_workers} workers needs {num_workers} GPUs, the Ray cluster has {int(res.get('GPU', 0))}")
        cpus = float(res.get("CPU", 1))
        cpus_per_worker = max(1.0, float(int(cpus // num_workers))) if cpus >= num_workers else cpus / num_workers
        threads = int(payload["config"]["train"].get("torch_threads", 0)) or max(1, int(cpus_per_worker))
        payload = {**payload, "use_gpu": bool(use_gpu), "threads": threads}
        if not use_trainer and launcher == "auto":
            print(f"train: Ray Train unavailable ({why}); running {num_workers} workers as plain Ray actors")
        run = _launch_torch_trainer if use_trainer else _launch_actors
        return run(payload, num_workers, use_gpu, cpus_per_worker)
    finally:
        if started:
            ray.shutdown()
