"""Thin Ray actor wrappers: they only delegate to the plain classes (house rule 8). Only numpy
dicts cross actors; GPU tensors never leave an inference actor."""

from __future__ import annotations

import os

import ray


@ray.remote
class DecoderActor:
    """One per source: wraps ``open_source(...)``; ``next_batch()`` returns a FrameBatch dict, an
    ``{"empty": True}`` marker (live source with nothing ready yet) or None at the end."""

    def __init__(self, uri: str, live_cfg: dict | None, source_id: str, start_frame: int, max_frames: int, batch_size: int,
                 batch_timeout_s: float):
        from streamparse.config import LiveConfig
        from streamparse.sources import open_source

        self.batch_size = batch_size
        self.batch_timeout_s = batch_timeout_s
        self.src = open_source(uri, live_cfg=LiveConfig(**live_cfg) if live_cfg else None, source_id=source_id,
                               start_frame=start_frame, max_frames=max_frames)
        self.live = getattr(self.src, "kind", "file") == "live"
        self.max_frames = max_frames
        self.emitted = 0
        self.it = None

    def info(self) -> dict:
        if self.live:
            self.src.start()
            return self.src.info(wait_s=30.0)
        return self.src.info()

    def next_batch(self):
        if self.live:
            if self.max_frames and self.emitted >= self.max_frames:
                return None
            want = min(self.batch_size, self.max_frames - self.emitted) if self.max_frames else self.batch_size
            b = self.src.read(want, self.batch_timeout_s)  # LiveSourceError once it gave up: the driver records it
            if b is None:
                if self.src.stats().get("state") in ("failed", "closed"):
                    return None
                return {"empty": True, "_live": self._live_stats()}
            self.emitted += len(b)
            return {**b.to_dict(), "_live": self._live_stats()}
        if self.it is None:
            self.it = self.src.batches(self.batch_size)
        b = next(self.it, None)
        return None if b is None else b.to_dict()

    def _live_stats(self) -> dict:
        st = self.src.stats()
        return {"dropped": dict(st.get("dropped", {})), "reconnects": int(st.get("reconnects", 0) or 0),
                "segments": int(st.get("segments", 0) or 0)}

    def stats(self) -> dict:
        return self.src.stats()

    def close(self) -> None:
        self.src.close()


@ray.remote(max_restarts=4, max_task_retries=4)
class InferenceActor:
    """Owns one model; restartable: a killed actor is restarted and its batch re-run by Ray."""

    def __init__(self, cfg_dict: dict, checkpoint: str | None, threads: int):
        import torch

        from streamparse.config import from_dict
        from streamparse.predictor import Predictor

        if threads:
            torch.set_num_threads(threads)
        self.pred = Predictor.from_config(from_dict(cfg_dict), checkpoint=checkpoint)

    def infer(self, batch: dict) -> dict:
        return self.pred(batch)

    def pid(self) -> int:
        return os.getpid()

    def info(self) -> dict:
        return self.pred.info()
