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

#: uniqueId counters: detectors that wrap at 65535, and signed 32-bit ones.
WRAP_16 = 1 << 16
WRAP_31 = 1 << 31
#: States of TomoScan's FrameType (mbbi), by index.
FRAME_TYPES = ("DarkField", "FlatField", "Projection")
PROJECTION = "Projection"


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


def projection_index(unique_id: int, first_projid: int, table_size: int) -> int | None:
    """Row of the angle table for a frame, or None when the frame is outside the table.

    ``uniqueId - FirstProjid``, taken modulo 65536 when both ids are 16-bit (detectors that
    wrap their counter at 65535) and modulo 2**31 otherwise.

    Parameters
    ----------
    unique_id : int
        ``uniqueId`` of the frame.
    first_projid : int
        TomoScan's ``FirstProjid``: uniqueId of the first projection of the scan.
    table_size : int
        Length of the angle table.
    """
    wrap = WRAP_16 if 0 <= unique_id < WRAP_16 and 0 <= first_projid < WRAP_16 else WRAP_31
    index = (unique_id - first_projid) % wrap
    return index if index < table_size else None


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


def dezinger_radius(state: str) -> int:
    """Median radius [pixels] of a Dezinger PV state ("None" -> 0, "Radius 3" -> 3)."""
    return 0 if state == "None" else int(state.split()[-1])


@dataclass
class Counters:
    """Frame counts of one StartRecon, as shown in the Frames* PVs."""

    received: int = 0
    used: int = 0
    dropped: int = 0
    lost: int = 0
    bad: int = 0
    not_projection: int = 0
    outside_theta: int = 0
    #: uniqueIds skipped just before the first frame of a scan: the detector ran between
    #: scans; not frames lost from a scan.
    between_scans: int = 0
    #: Counts of subscribers already closed in this session (channel changed, reconnect).
    closed: dict = field(default_factory=dict)

    def pvs(self, subscriber) -> dict[str, int]:
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


@dataclass
class LatencyStats:
    """Seconds from a frame's timestamp to the publication of the slices that contain it."""

    samples: list = field(default_factory=list)
    updates: int = 0

    def add(self, frame_times: Sequence[float], published: float) -> None:
        self.updates += 1
        self.samples.extend(published - t for t in frame_times if t > 0)

    def percentiles(self) -> dict[str, float]:
        if not self.samples:
            return {}
        data = np.asarray(self.samples)
        return {"p50": float(np.percentile(data, 50)), "p99": float(np.percentile(data, 99)),
                "max": float(data.max()), "count": int(data.size)}
