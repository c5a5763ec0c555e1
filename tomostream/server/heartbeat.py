"""The stream server's heartbeat: a thread that shows the worker is alive, and what it cannot say.

Every :data:`HEARTBEAT_PERIOD` seconds, while the worker thread lives, the heartbeat sets
``Watchdog`` (so a client sees the server alive although the worker is busy), reports in
ReconStatus each fall-back the reconstruction engine made after a device failure (smaller
batches, the CPU), publishes the frame counters when the worker has not for a while (stuck in a
long step), and hands the heap's free pages back to the OS (:mod:`.heap`). When the worker has
died it drops ``Watchdog`` and ``ServerRunning`` at once and says so.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ..ioc.records import WATCHDOG_RESET
from .heap import release_free_memory

log = logging.getLogger(__name__)

#: Seconds between heartbeats (Watchdog set to WATCHDOG_RESET); well under WATCHDOG_RESET.
HEARTBEAT_PERIOD = 1.5
#: Age [s] of the worker's last counter report after which the heartbeat publishes them.
STALE_REPORT = 1.0


class Heartbeat:
    """The heartbeat thread of one server run.

    Parameters
    ----------
    worker : threading.Thread
        The worker thread it watches.
    session : callable
        ``session()``: the current (or last) :class:`~.session.StreamSession`, or None.
    set_pvs, status : callable
        ``set_pvs({suffix: value})`` and ``status(text)`` of the server.
    stopping : threading.Event
        Set when the server stops; the heartbeat ends.

    Attributes
    ----------
    degraded : int
        Device failures the engine answered with smaller batches or the CPU, reported so far.
    """

    def __init__(self, worker: threading.Thread, session: Callable[[], object],
                 set_pvs: Callable[[dict], None], status: Callable[[str], None],
                 stopping: threading.Event):
        self.worker = worker
        self._session = session
        self._set_pvs = set_pvs
        self._status = status
        self._stopping = stopping
        self.degraded = 0
        self._thread = threading.Thread(target=self._beat, name="tomostream-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _beat(self) -> None:
        seen: tuple[object, int] = (None, 0)   # (reconstructor, degradations reported)
        while not self._stopping.is_set():
            if self.worker.is_alive():
                self._set_pvs({"Watchdog": WATCHDOG_RESET})
                seen = self._report_degradations(*seen)
                self._report_for_busy_worker()
                release_free_memory()
            elif not self._stopping.is_set():
                log.error("the reconstruction worker has ended: ServerRunning goes to Stopped")
                self._set_pvs({"Watchdog": 0, "ServerRunning": "Stopped",
                               "ReconStatus": "Stopped: the reconstruction worker ended "
                                              "unexpectedly; restart the server"})
                return
            self._stopping.wait(HEARTBEAT_PERIOD)

    def _report_for_busy_worker(self) -> None:
        """Publish the frame counters when the worker has not for a while (stuck in a long
        reconstruction step), so FramesReceived / FramesDropped keep telling the truth."""
        session = self._session()
        if session is None or session.finished:
            return
        if time.monotonic() - session.last_status > STALE_REPORT:
            self._set_pvs(session.counters.pvs(session.image))

    def _report_degradations(self, rec, reported: int) -> tuple[object, int]:
        """Show the engine's device fall-backs not reported yet; return what is reported now."""
        current = getattr(self._session(), "rec", None)
        if current is None:
            return rec, reported
        if current is not rec:
            rec, reported = current, 0
        notes = list(current.degradations)
        if len(notes) > reported:
            self._status(f"Running: reconstruction degraded: {notes[-1]}")
            self.degraded += len(notes) - reported
        return rec, len(notes)
