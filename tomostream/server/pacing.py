"""When the slices are published, and what each publication is owed.

:class:`Pacer` decides when the session hands its slices to the publisher: only when they have
changed since the last publication, at most ``1 / min_interval`` times a second, and so that
publishing takes at most half of the worker's time (the interval is at least twice the last
publication's cost). It keeps the publications in flight, and when the publisher reports one
finished it records the latency of every frame in it, sets ``ReconTime`` and says in
ReconStatus why one failed.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence

from .frames import LatencyStats

#: How often the worker looks for a finished publication while every image buffer is in
#: flight and the slices have changed [s].
PUBLISH_POLL = 0.002
#: Tokens that tie a publication's result to its frames (unique in the process).
_TOKENS = itertools.count()


class Pacer:
    """Publication pacing and bookkeeping of one StartRecon (worker thread only).

    Parameters
    ----------
    min_interval : float [s]
        Shortest time between two publications.
    status : callable
        ``status(text)``: ReconStatus.
    set_pvs : callable
        ``set_pvs({suffix: value})``: ReconTime.
    latency : LatencyStats
        Where the frame-to-publication delays go.

    Attributes
    ----------
    dirty : bool
        Whether the slices changed since the last publication.
    cost : float [s]
        Worker time the last publication took (the image; with an InlinePublisher, all).
    """

    def __init__(self, min_interval: float, status: Callable[[str], None],
                 set_pvs: Callable[[dict], None], latency: LatencyStats):
        self.min_interval = float(min_interval)
        self._status = status
        self._set_pvs = set_pvs
        self.latency = latency
        self.dirty = False
        self.cost = 0.0
        self.last = 0.0
        self._work = 0.0
        self._frame_times: list[float] = []
        #: token -> (frame times, worker seconds) of publications in flight.
        self._in_flight: dict[int, tuple[list[float], float]] = {}

    @property
    def interval(self) -> float:
        """Seconds between published updates: at least ``min_interval``, and publishing takes
        at most half of the worker's time."""
        return max(self.min_interval, 2.0 * self.cost)

    @property
    def in_flight(self) -> int:
        """Publications handed over and not reported finished yet."""
        return len(self._in_flight)

    def changed(self, frame_times: Sequence[float] = (), work: float = 0.0) -> None:
        """The slices changed: by frames taken at ``frame_times`` [s, epoch], ``work``
        seconds of the worker's time."""
        self.dirty = True
        self._frame_times.extend(frame_times)
        self._work += work

    def add_work(self, seconds: float) -> None:
        """Worker time spent on frames, owed to the next publication."""
        self._work += seconds

    def wait(self, now: float, publisher_full: bool) -> float | None:
        """Seconds until a publication is due (None when nothing changed); while every image
        buffer is in flight, at least :data:`PUBLISH_POLL`."""
        if not self.dirty:
            return None
        due = self.last + self.interval - now
        return max(due, PUBLISH_POLL) if publisher_full else due

    def due(self, now: float) -> bool:
        """Whether the slices changed and the interval has passed."""
        return self.dirty and now - self.last >= self.interval

    def publish(self, rec, publisher, channel: str, markers: bool) -> bool:
        """Hand ``rec``'s slices to ``publisher`` for ``channel``; False when every buffer is
        in flight. Raises :class:`~tomostream.errors.TomostreamError` when the publishing
        process cannot run here."""
        t0 = time.perf_counter()
        got = publisher.buffer(rec.image_shape)
        if got is None:
            return False
        slot, canvas = got
        rec.image(out=canvas)
        token = next(_TOKENS)
        self._in_flight[token] = (self._frame_times, self._work + time.perf_counter() - t0)
        publisher.submit(slot, channel, markers=rec.crossing if markers else None, n=rec.width,
                         nz=rec.height, token=token, line_value=rec.peak)
        self.cost = time.perf_counter() - t0
        self._work = 0.0
        self._frame_times = []
        self.dirty = False
        self.last = time.monotonic()
        return True

    def collect(self, publisher, timeout: float = 0.0) -> None:
        """Record the publications finished: latency, ReconTime, failures in ReconStatus."""
        for done in publisher.results(timeout):
            times, work = self._in_flight.pop(done.token, ([], 0.0))
            if done.error is not None:
                self._status(f"Running: cannot publish the slices: {done.error}")
            else:
                self.latency.add(times, done.time)
            self._set_pvs({"ReconTime": round(work + done.seconds, 6)})

    def drain(self, publisher, seconds: float) -> None:
        """Wait up to ``seconds`` for the publications in flight."""
        deadline = time.monotonic() + seconds
        while self._in_flight and publisher.in_flight and time.monotonic() < deadline:
            self.collect(publisher, timeout=0.2)
