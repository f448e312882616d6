"""Ctrl-C / SIGTERM handling for writers: both become ``KeyboardInterrupt``, but never in the middle of
a store write — inside ``critical()`` the signal is remembered and raised when the section ends, so a
chunk and its commit marker are always written whole."""

from __future__ import annotations

import contextlib
import signal
import threading


class Interrupts:
    def __init__(self) -> None:
        self.requested: int | None = None
        self._depth = 0
        self._old: dict[int, object] = {}

    def install(self) -> "Interrupts":
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handler)
        return self

    def restore(self) -> None:
        for sig, old in self._old.items():
            try:
                signal.signal(sig, old)
            except (ValueError, TypeError):
                pass
        self._old.clear()

    def _handler(self, signum, frame) -> None:
        self.requested = signum
        if self._depth == 0:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def critical(self):
        """A section that a signal must not cut (a store write + its commit marker)."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0 and self.requested is not None and self._old:
                raise KeyboardInterrupt

    def __enter__(self) -> "Interrupts":
        return self.install()

    def __exit__(self, *exc) -> None:
        self.restore()
