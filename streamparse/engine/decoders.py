"""What decodes for the scheduler: ``DecoderCore`` (one source's reads as the scheduler's decode results,
in a decode thread of ``streamparse.engine.executor`` or in process) and ``InProcessExecutor`` (the
scheduler's ``Executor`` run synchronously in this process, no Ray: tests and debugging)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from streamparse.engine.scheduler import Slot


class _Done:
    """A finished in-process call: its value or its error."""

    def __init__(self, value=None, error: BaseException | None = None):
        self.value, self.error = value, error


class InProcessExecutor:
    """Runs everything synchronously in this process (sources from ``make_source(slot)``, one
    ``predictor``): deterministic, no Ray; for tests and debugging."""

    def __init__(self, make_source: Callable[[Slot], object], predictor, *, batch_size: int, batch_timeout_s: float = 0.05,
                 max_frames: int = 0):
        self.make_source = make_source
        self.predictor = predictor
        self.batch_size = int(batch_size)
        self.batch_timeout_s = float(batch_timeout_s)
        self.max_frames = int(max_frames)

    def open_source(self, slot: Slot) -> dict:
        slot.decoder = DecoderCore(self.make_source(slot), self.batch_size, self.batch_timeout_s, self.max_frames)
        return slot.decoder.info()

    def request(self, slot: Slot):
        try:
            return _Done(slot.decoder.next())
        except Exception as exc:  # noqa: BLE001
            return _Done(error=exc)

    def infer(self, batch: dict):
        try:
            return _Done(self.predictor(batch))
        except Exception as exc:  # noqa: BLE001
            return _Done(error=exc)

    def wait(self, handles: list, timeout_s: float) -> list:
        return list(handles)

    def get(self, handle):
        if handle.error is not None:
            raise handle.error
        return handle.value

    def stats(self, slot: Slot) -> dict:
        return slot.decoder.src.stats()

    def stop_source(self, slot: Slot) -> None:
        slot.decoder.close()

    def close(self) -> None:
        pass


class DecoderCore:
    """What a decoder (actor or in-process) does for the scheduler: ``next()`` -> ``{"batch": FrameBatch
    dict | None, "end": bool, "stats": dict}`` (``stats`` of live sources: drops, reconnects)."""

    def __init__(self, src, batch_size: int, batch_timeout_s: float, max_frames: int = 0):
        self.src = src
        self.batch_size = int(batch_size)
        self.batch_timeout_s = float(batch_timeout_s)
        self.live = getattr(src, "kind", "file") == "live"
        self.decode_s = 0.0  # seconds spent in the source's read (decoding, or waiting for a live frame)
        self.first_decoded: float | None = None  # wall clock (time.time) of the first decoded batch
        self.max_frames = int(max_frames) if self.live else 0  # (files stop at max_frames themselves)
        self.emitted = 0

    def info(self) -> dict:
        if self.live:
            return self.src.info(wait_s=30.0)
        return self.src.info()

    def next(self) -> dict:
        if self.max_frames and self.emitted >= self.max_frames:
            return {"batch": None, "end": True}
        want = min(self.batch_size, self.max_frames - self.emitted) if self.max_frames else self.batch_size
        t0 = time.perf_counter()
        b = self.src.read(want, self.batch_timeout_s)  # a live source that gave up raises here
        self.decode_s += time.perf_counter() - t0
        self.emitted += len(b) if b is not None else 0
        if b is not None and self.first_decoded is None:
            self.first_decoded = time.time()
        out = {"batch": None if b is None else b.to_dict(), "end": b is None and self.src.ended()}
        if self.live:
            st = self.src.stats()
            out["stats"] = {"dropped": dict(st.get("dropped", {})), "reconnects": int(st.get("reconnects", 0) or 0),
                            "segments": int(st.get("segments", 0) or 0)}
        return out

    def close(self) -> None:
        self.src.close()
