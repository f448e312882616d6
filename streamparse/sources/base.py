"""The source protocol every decoder implements (files and live streams alike), and its errors.

A source is a context manager with::

    info()              -> dict: uri (redacted), source_id, kind (file | live), width, height, codec,
                           time_base [num, den], avg_fps/fps, frames_hint (files)
    read(n, timeout_s)  -> FrameBatch of 1..n frames, or None when none is available: for a file at its
                           end; for a live stream when nothing arrived within ``timeout_s``
    ended()             -> True once no frame will come any more (a file read to its end, a live
                           source closed); a live source that gave up raises from ``read`` instead
    stats()             -> dict of counters (decoded, errors, drops, reconnects, ...), no credentials
    close()

Errors: ``SourceError`` (cannot open/decode, bad URI) and ``LiveSourceError`` (a live source gave up).
"""

from __future__ import annotations

from typing import Protocol

from streamparse.structures import FrameBatch


class SourceError(ValueError):
    """A source that cannot be opened or decoded; the message names the (redacted) source."""


class LiveSourceError(RuntimeError):
    """A live source gave up; the message names the redacted URI and the last error."""


class Source(Protocol):
    kind: str
    source_id: str

    def info(self) -> dict: ...

    def read(self, max_batch: int, timeout_s: float | None = None) -> FrameBatch | None: ...

    def ended(self) -> bool: ...

    def stats(self) -> dict: ...

    def close(self) -> None: ...
