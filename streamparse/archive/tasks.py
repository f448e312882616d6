"""The Ray side of an archive, thin: the worker-side video task (``archive_video``), one engine task per
video (``streamparse.engine.tasks``: decode here, inference on the run's shared pool, the store written
here). The work is ``streamparse.archive.worker.process_video``."""

from __future__ import annotations

import ray


@ray.remote(num_cpus=0.25, max_retries=3, retry_exceptions=False)
def archive_video(job: dict, ctx: dict, pool: list, monitor) -> dict:
    """One archive video, on a worker: ``streamparse.archive.worker.process_video`` with the engine's
    ``PoolExecutor``. Retried by Ray (``max_retries``) when its worker or node is lost; the retry
    continues the store from its commit marker."""
    from streamparse import logs
    from streamparse.archive.worker import process_video
    from streamparse.engine.tasks import ENGINE_NEEDS, pool_executor, reporter

    logs.configure_worker()
    logs.require(*ENGINE_NEEDS)  # a node without them ends the run in one line, not as a failed video

    report = reporter(monitor, job["video_id"])
    res = process_video(job, ctx, lambda plan: pool_executor(plan, pool)(),
                        on_progress=lambda vid, n: report({vid: n}), node=ray.get_runtime_context().get_node_id())
    report({job["video_id"]: res.get("frames_new", 0)}, final=True)
    return res
