"""Ctrl-C / SIGTERM during training: finish the current batch, then stop cleanly.

The first signal only sets a flag that the loop checks after every batch, so the run can
write its files and say how to resume. A second signal aborts at once.
"""
from __future__ import annotations

import signal
import threading


class GracefulStop:
    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt  # second signal: the user really wants out now
        self.requested = signal.Signals(signum).name

    def __enter__(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():  # signals only work there
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
