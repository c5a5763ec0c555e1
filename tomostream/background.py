"""A daemon thread that runs a loop until asked to stop."""

from __future__ import annotations

import threading
from collections.abc import Callable


class Background:
    """A loop run in a daemon thread: the loop watches :attr:`stopping`.

    Attributes
    ----------
    stopping : threading.Event
        Set by :meth:`stop`; the loop returns once it is.
    """

    def __init__(self):
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """Whether the thread was started and not stopped since."""
        return self._thread is not None

    def start(self, target: Callable[[], None], name: str) -> bool:
        """Run ``target`` in a daemon thread called ``name``, unless one runs; whether it
        started one."""
        if self._thread is not None:
            return False
        self.stopping.clear()
        self._thread = threading.Thread(target=target, name=name, daemon=True)
        self._thread.start()
        return True

    def stop(self, timeout: float) -> bool:
        """Set :attr:`stopping` and wait up to ``timeout`` [s] for the thread to end; whether
        one was running (idempotent)."""
        if self._thread is None:
            return False
        self.stopping.set()
        self._thread.join(timeout)
        self._thread = None
        return True
