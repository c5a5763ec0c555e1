"""uniqueIds of one frame stream that arrives over several channels.

A detector whose frames come faster than one PV Access connection carries spreads them over
several NDPluginPva plugins (areaDetector's NDPluginScatter hands each frame to the next
plugin with room). Each channel then sees every N-th uniqueId or so, and the channels
deliver at their own pace, so one channel's gaps say nothing of loss and a frame may arrive
after a later one. :class:`IdLedger` is fed the id of every frame that any channel delivered
and counts each id once: ids skipped by the stream are *missing* until a channel brings them,
and *lost* when none has within :data:`REORDER_S` (or :data:`LATE_IDS` ids later).
"""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Callable

from ..unique_ids import missing_ids

#: How long a skipped uniqueId may still come over another channel before it counts as lost [s].
REORDER_S = 1.0
#: How far behind the newest id a frame may come and still be matched with its gap.
LATE_IDS = 4096
#: A frame this close behind the newest that fills no gap is a repeat (a restarted server
#: re-sends its last value), or, this close before the first frame seen, an earlier frame
#: that came later; one further back that fills no gap starts a new count (a new acquisition).
REPEAT_IDS = 64


class IdLedger:
    """Counts of the uniqueIds seen over several channels, each id counted once.

    Parameters
    ----------
    last_unique_id : int, optional
        uniqueId of the last frame seen before (ids skipped after it count as lost).
    reorder_s : float
        How long a skipped id may still arrive [s].
    clock : callable
        Monotonic clock [s] (tests pass their own).

    Attributes
    ----------
    repeated : int
        Frames whose id had been seen already (a restarted server re-sends its last value).
    restarts : int
        Times the ids went back further than :data:`LATE_IDS` (a new acquisition): no loss.
    """

    def __init__(self, last_unique_id: int | None = None, *, reorder_s: float = REORDER_S,
                 clock: Callable[[], float] = time.monotonic):
        self.reorder_s = float(reorder_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._high = last_unique_id      # the newest id seen
        self._pos = 0                     # its position in a count that does not wrap
        #: Positions before which a late frame extends the stream's start, rather than being a
        #: repeat: the first frame's (None until one came; unbounded when ``last_unique_id``
        #: says where the stream was).
        self._start: float | None = None if last_unique_id is None else -math.inf
        #: Positions skipped and not yet seen -> when they were skipped (in that order).
        self._missing: dict[int, float] = {}
        #: Positions already counted lost that may still come late (a set in position order).
        self._gone: collections.OrderedDict[int, None] = collections.OrderedDict()
        self._lost = 0
        self.repeated = 0
        self.restarts = 0

    def see(self, unique_id: int) -> bool:
        """Record a frame's id; False when that id was seen already (a repeat, counted)."""
        uid = int(unique_id)
        with self._lock:
            high = self._high
            if high is None:
                self._high, self._start = uid, self._pos
                return True
            if uid == high:
                self.repeated += 1
                return False
            back = missing_ids(uid, high)  # ids between this one and the newest, if behind
            if back is not None and back < LATE_IDS:
                pos = self._pos - back - 1
                if self._fill(pos):
                    return True
                if self._start - REPEAT_IDS < pos < self._start:  # an earlier frame, later
                    self._skip(range(pos + 1, int(self._start)))
                    self._start = pos
                    return True
                if back < REPEAT_IDS:
                    self.repeated += 1
                    return False
            gap = missing_ids(high, uid)
            if gap is None:  # back: a new acquisition, no loss
                self.restarts += 1
                self._settle(None)
                self._gone.clear()
            else:
                skipped = range(self._pos + 1 + max(gap - LATE_IDS, 0), self._pos + 1 + gap)
                self._lost += gap - len(skipped)  # too far back to ever be matched
                self._skip(skipped)
                self._pos += gap
            self._pos += 1
            self._high = uid
            return True

    def _skip(self, positions: range) -> None:
        now = self._clock()
        for pos in positions:
            self._missing[pos] = now

    def _fill(self, pos: int) -> bool:
        """Whether a late frame at ``pos`` fills a gap (then no longer missing or lost)."""
        if self._missing.pop(pos, None) is not None:
            return True
        if pos in self._gone:  # it came after all
            del self._gone[pos]
            self._lost -= 1
            return True
        return False

    def _settle(self, before: float | None) -> None:
        """Count as lost the missing ids skipped before ``before`` (all when None) or too far
        back to be matched."""
        oldest = self._pos - LATE_IDS
        while self._missing:
            pos, since = next(iter(self._missing.items()))
            if before is not None and since > before and pos >= oldest:
                break
            del self._missing[pos]
            self._lost += 1
            self._gone[pos] = None
        while self._gone and next(iter(self._gone)) < oldest:
            self._gone.popitem(last=False)

    def settle(self) -> None:
        """The stream has ended: every id still missing is lost."""
        with self._lock:
            self._settle(None)

    @property
    def lost(self) -> int:
        """Ids no channel brought within ``reorder_s`` of being skipped."""
        with self._lock:
            self._settle(self._clock() - self.reorder_s)
            return self._lost

    @property
    def missing(self) -> int:
        """Ids skipped less than ``reorder_s`` ago and not seen yet (may still come)."""
        with self._lock:
            self._settle(self._clock() - self.reorder_s)
            return len(self._missing)

    @property
    def last_unique_id(self) -> int | None:
        """The newest id seen; None before any."""
        return self._high
