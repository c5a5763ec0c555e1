"""Frame bookkeeping of the stream server: pure functions and small records, no EPICS.

Which row of the angle table a frame belongs to (across uniqueId wraps), how many frames make
180 degrees, which FrameType was in force when a frame was taken, and the counts and delays
reported for each StartRecon.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


def buffer_size_from_theta(theta: np.ndarray) -> int:
    """Number of frames that cover 180 degrees of an angle table.

    Parameters
    ----------
    theta : ndarray [degrees]
        Angle of each frame of the scan (continuous or back-and-forth).

    Returns
    -------
    int
        ``round(180 / step)`` with ``step`` the typical non-zero angle step, at most
        ``len(theta)`` and at least 1.
    """
    theta = np.asarray(theta, dtype=np.float64)
    steps = np.abs(np.diff(theta))
    steps = steps[np.isfinite(steps) & (steps > 0)]
    if steps.size == 0:
        return max(1, min(1, theta.size))
    size = int(round(180.0 / float(np.median(steps))))
    return max(1, min(size, theta.size))


class FrameTypeHistory:
    """When TomoScan's ``FrameType`` changed, to tell the type of a frame by its timestamp.

    Frames and FrameType updates travel on different protocols, so a frame may be handled
    before or after the FrameType change that preceded it arrives. Both carry timestamps of
    the beamline's clocks: a frame is of the type in force when it was taken. Thread-safe.
    """

    def __init__(self, keep: int = 64):
        self._times: list[float] = []
        self._types: list[str] = []
        self._keep = keep
        self._lock = threading.Lock()

    def record(self, timestamp: float, frame_type: str) -> None:
        """Note that FrameType became ``frame_type`` at ``timestamp`` [s since the epoch]."""
        with self._lock:
            at = bisect.bisect_right(self._times, timestamp)
            self._times.insert(at, timestamp)
            self._types.insert(at, frame_type)
            del self._times[:-self._keep], self._types[:-self._keep]

    def type_at(self, timestamp: float) -> str | None:
        """FrameType in force at ``timestamp`` (the latest known when 0); None if never known."""
        with self._lock:
            if not self._types:
                return None
            if timestamp <= 0:
                return self._types[-1]
            at = bisect.bisect_right(self._times, timestamp)
            return self._types[max(at - 1, 0)]

    def only(self, frame_type: str, start: float, end: float) -> bool:
        """Whether FrameType was ``frame_type`` throughout ``[start, end]`` [s since the epoch]."""
        with self._lock:
            if not self._types:
                return False
            first = max(bisect.bisect_right(self._times, start) - 1, 0)
            last = bisect.bisect_right(self._times, end)
            return all(t == frame_type for t in self._types[first:max(last, first + 1)])


@dataclass
class Counters:
    """Frame counts of one StartRecon kept by the session; the subscriber keeps the rest.

    Attributes
    ----------
    used : int
        Frames pushed into the reconstruction.
    bad : int
        Frames of an unusable dtype or of the wrong size.
    not_projection : int
        Frames skipped because FrameType was not Projection around their timestamp, or the
        angle table / FirstProjid were not known yet.
    outside_theta : int
        Frames whose uniqueId has no row in the angle table.
    between_scans : int
        uniqueIds skipped just before the first frame of a scan (the detector ran between
        scans): not frames lost from a scan.
    closed : dict of str to int
        Counters of image subscribers already closed in this session (channel changed).
    """

    used: int = 0
    bad: int = 0
    not_projection: int = 0
    outside_theta: int = 0
    between_scans: int = 0
    closed: dict = field(default_factory=dict)

    def pvs(self, subscriber) -> dict[str, int]:
        """Values of the Frames* PVs, given the current :class:`ImageSubscriber` (or None)."""
        sub = dict(subscriber.counters) if subscriber is not None else {}

        def total(key: str) -> int:
            return sub.get(key, 0) + self.closed.get(key, 0)

        return {
            "FramesReceived": total("received") + total("bad"),
            "FramesUsed": self.used,
            "FramesDropped": total("dropped"),
            "FramesLost": max(total("lost") - self.between_scans, 0),
            "FramesBad": total("bad") + self.bad,
        }

    def retire(self, subscriber) -> None:
        """Keep the counts of a subscriber about to be closed."""
        for key, value in subscriber.counters.items():
            self.closed[key] = self.closed.get(key, 0) + value


class LatencyStats:
    """Seconds from a frame's timestamp to the publication of the slices that contain it.

    Samples are numbered from 0 in order of arrival; only the newest ``keep`` are stored.
    """

    def __init__(self, keep: int = 1_000_000):
        self.keep = keep
        self.samples: list[float] = []
        self.offset = 0  # number of the first stored sample

    @property
    def count(self) -> int:
        """Samples recorded so far (stored or not)."""
        return self.offset + len(self.samples)

    def add(self, frame_times: Sequence[float], published: float) -> None:
        """Record one publication at ``published`` of frames taken at ``frame_times`` [s]."""
        self.add_delays([published - t for t in frame_times if t > 0])

    def add_delays(self, delays: Sequence[float]) -> None:
        """Record delays [s] measured one by one."""
        self.samples.extend(delays)
        if len(self.samples) > self.keep:
            drop = len(self.samples) - self.keep // 2
            del self.samples[:drop]
            self.offset += drop

    def percentiles(self, start: int = 0, end: int | None = None) -> dict[str, float]:
        """p50, p99 and max [s] of samples ``start`` to ``end`` (stored ones only); {} if none."""
        end = self.count if end is None else end
        data = np.asarray(self.samples[max(start - self.offset, 0):max(end - self.offset, 0)])
        if not data.size:
            return {}
        return {"p50": float(np.percentile(data, 50)), "p99": float(np.percentile(data, 99)),
                "max": float(data.max()), "count": int(data.size)}
