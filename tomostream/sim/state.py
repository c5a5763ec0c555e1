"""What the simulated beamline is doing now, shared by its scan, captures and retakes.

One lock guards it all, as one lock guards TomoScan's streaming state: the activity
StreamMessage shows (``Done`` when idle; TomoScan skips a capture or retake asked for while it
reads anything else), the binning, the armed capture, the running retake and the circular
buffer of recent projections.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

log = logging.getLogger(__name__)

#: StreamMessage when no capture or retake is running; anything else makes TomoScan skip one.
IDLE = "Done"


class StreamState:
    """The streaming state of the simulated beamline, guarded by :attr:`lock`.

    Parameters
    ----------
    post : callable
        The IOC's :meth:`~tomostream.sim.ioc.TomoScanStreamIOC.post`: ``{suffix: value}``
        updates, from any thread.
    ring_size : int [frames]
        Capacity of the circular buffer.
    """

    def __init__(self, post: Callable[..., None], ring_size: int):
        self.post = post
        self.lock = threading.Lock()
        #: what StreamMessage shows: IDLE, or the capture / retake running
        self.activity = IDLE
        self.binning = 1
        #: the armed capture (:class:`~tomostream.sim.capture.Capture`) or None
        self.capture: Any = None
        #: the running retake (:class:`~tomostream.sim.fields.Retake`) or None
        self.retake: Any = None
        #: (uniqueId, angle [degrees], frame) of the latest projections
        self.ring: collections.deque = collections.deque(maxlen=ring_size)

    def set_activity(self, activity: str) -> None:
        """Show ``activity`` in StreamMessage."""
        with self.lock:
            self.activity = activity
        self.post({"StreamMessage": activity})

    def claim(self, name: str, activity: str, arm: Callable[[], None]) -> Future | None:
        """Start ``activity`` if idle: under the lock, make it the activity and ``arm()``.

        The caller then shows it in StreamMessage. Returns None when started, else the
        completed future of a command TomoScan skips (its busy record goes back) because
        StreamMessage does not read Done.
        """
        with self.lock:
            busy = self.activity
            if busy == IDLE:
                self.activity = activity
                arm()
        if busy != IDLE:
            log.warning("%s skipped: StreamMessage reads %r, not %r", name, busy, IDLE)
            future: Future = Future()
            future.set_result(None)
            return future
        return None


def submit(executor: Executor, work: Callable[..., None], *args) -> None:
    """Run ``work(*args)`` on ``executor``, or here once it has been shut down (at stop)."""
    try:
        executor.submit(work, *args)
    except RuntimeError:
        work(*args)
