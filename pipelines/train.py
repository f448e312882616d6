"""Training entry point (installed as ``streamparse.pipelines.train``).

``train(cfg, work_dir, resume, num_workers, use_gpu) -> dict``: one process (``num_workers <= 1``)
or N Ray workers with DDP (``streamparse.training.distributed``). The work dir receives
``config.yaml``, ``metrics.jsonl``, ``last.pt`` / ``best.pt`` / ``epoch_N.pt`` and
``last_state.pt`` (see ``streamparse.training.loop`` and ``streamparse.training.build``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from streamparse.training.build import NORMS, STATE_FILE, TrainingError, load_state, open_dataset


def resolve_resume(work_dir: Path, resume: str | None) -> Path | None:
    """``None`` -> fresh run (refused if ``work_dir`` already holds a state); ``"auto"`` -> the work
    dir's ``last_state.pt`` if present, else a fresh run; a path -> that state (file or folder)."""
    own = work_dir / STATE_FILE
    if resume in (None, ""):
        if own.is_file():
            raise TrainingError(f"{work_dir} already holds a training run ({STATE_FILE}); "
                                "continue it with --resume auto or choose another --work-dir")
        return None
    if resume == "auto":
        return own if own.is_file() else None
    path = Path(resume)
    path = path / STATE_FILE if path.is_dir() else path
    if not path.is_file():
        raise TrainingError(f"resume state not found: {path}")
    return path.resolve()


def train(cfg, work_dir: str | Path, resume: str | None = None, num_workers: int = 1, use_gpu: bool = False, *,
          progress: bool = True, launcher: str = "auto") -> dict:
    """Train ``cfg`` (a ``streamparse.config.Config``) into ``work_dir``; returns rank 0's summary
    (epochs, iterations, checkpoint paths, best AP^p_vol, last eval and losses, seconds).

    Raises ``TrainingError`` (a ``ValueError``) on a bad setup: data root missing, class count
    mismatch, ``--gpu`` without CUDA, a work dir with a previous run and no ``resume``.
    """
    import torch

    if num_workers < 1:
        raise TrainingError(f"num_workers must be >= 1, got {num_workers}")
    if cfg.train.norm not in NORMS:
        raise TrainingError(f"train.norm must be one of {', '.join(NORMS)}, got {cfg.train.norm!r}")
    if cfg.train.norm == "syncbn" and num_workers > 1 and not use_gpu:
        raise TrainingError("train.norm=syncbn needs CUDA workers (--gpu); use frozen_bn or bn on CPU")
    if use_gpu and num_workers == 1 and not torch.cuda.is_available():
        raise TrainingError("--gpu given but no CUDA device is available")
    work_dir = Path(work_dir).resolve()
    root = cfg.data.root
    if root:
        root = str(Path(root).expanduser().resolve())
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=root))
    init = cfg.train.init_from
    if init and init != "default":  # absolute for Ray workers; a missing file fails before any worker starts
        init = str(Path(init).expanduser().resolve())
        if not Path(init).is_file():
            raise TrainingError(f"train.init_from: checkpoint not found: {init}")
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, init_from=init))
    from streamparse.models import list_models

    if cfg.model.name not in list_models():
        raise TrainingError(f"unknown model.name {cfg.model.name!r}; registered: {', '.join(list_models())}")
    space = open_dataset(cfg.data.format, root, cfg.data.train_split).label_space  # fail fast, before any worker starts
    if space.num_classes != cfg.model.num_classes:
        raise TrainingError(f"model.num_classes={cfg.model.num_classes} but data.format={cfg.data.format} has {space.num_classes} classes")
    state_path = resolve_resume(work_dir, resume)
    if state_path is None:  # a new run: the work dir must be new, empty, or a streamparse work dir
        from streamparse.store.outputs import OutputError, prepare_output

        try:
            prepare_output(work_dir, mode="update", kind="dir")
        except OutputError as exc:
            raise TrainingError(str(exc)) from None
    if state_path is not None:
        print(f"train: resuming from {state_path}")
    elif resume == "auto":
        print(f"train: no {STATE_FILE} in {work_dir}; starting a new run")
    if num_workers == 1:
        from streamparse.training.loop import run_training

        device = torch.device("cuda" if use_gpu else "cpu")
        if cfg.train.torch_threads > 0:
            torch.set_num_threads(cfg.train.torch_threads)
        state = load_state(state_path) if state_path is not None else None
        return run_training(cfg, work_dir, resume_state=state, device=device, progress=progress)

    from streamparse.config import to_dict
    from streamparse.training.distributed import launch

    payload = {"config": to_dict(cfg), "work_dir": str(work_dir), "resume": str(state_path) if state_path else None,
               "progress": progress}
    return launch(payload, num_workers=num_workers, use_gpu=use_gpu, ray_address=cfg.train.ray_address, launcher=launcher)
