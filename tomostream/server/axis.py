"""The rotation axis followed live: CenterEstimate kept up to date, Center set from it on request.

:class:`AxisFollower` belongs to one :class:`~.session.StreamSession` and runs in the worker
thread, between batches: the reconstructor, its device memory and its CUDA stream are that
thread's alone, so the estimate (:meth:`~tomostream.recon.OrthoReconstructor.estimate_center`)
queues its work behind the pushes on the same stream and no second thread touches the GPU.
It costs ingest little by bounds of its own: it runs at most every :data:`ESTIMATE_PERIOD`
seconds, only when frames or fields came in since the last estimate, and spaces its runs so
that they take at most :data:`MAX_SHARE` of the worker's time.

While CenterAuto is Yes, each new estimate more than :data:`FOLLOW_TOLERANCE` from Center is
written to Center as a client's write would be (validated, then applied by the worker), so the
slices are rebackprojected only when the axis has really moved, not at every refresh.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

#: Shortest time between two estimates [s].
ESTIMATE_PERIOD = 0.5
#: Largest share of the worker's time the estimates may take: an estimate that took ``t``
#: seconds is followed by the next after ``t / MAX_SHARE`` at the earliest.
MAX_SHARE = 0.05
#: Least difference [pixels] between CenterEstimate and Center that CenterAuto corrects.
FOLLOW_TOLERANCE = 0.1
#: Decimals of CenterEstimate [pixels] (the PV shows 2).
DECIMALS = 2


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


class AxisFollower:
    """CenterEstimate and CenterAuto for one StartRecon; CenterEstimate starts at NaN.

    Parameters
    ----------
    value : callable
        ``value(suffix)``: a TomoStream PV's value (Center, CenterAuto).
    set_pvs : callable
        ``set_pvs({suffix: value}, validate=False)``: write PVs (``validate``: as a client).
    """

    def __init__(self, value: Callable[[str], Any], set_pvs: Callable[..., None]):
        self._value = value
        self._set_pvs = set_pvs
        #: The last estimate published [pixels], NaN when there is none.
        self.estimate = math.nan
        #: What the last estimate was made from: (reconstructor id, frames used, dark id, flat id).
        self.inputs: tuple | None = None
        self._due = 0.0                        # monotonic time the next one may run
        self._followed: tuple | None = None    # (estimate, CenterAuto) last acted on
        set_pvs({"CenterEstimate": math.nan})

    def step(self, rec, frames_used: int, fields: dict) -> None:
        """Refresh the estimate when due and its inputs changed; let Center follow it.

        Parameters
        ----------
        rec : OrthoReconstructor or None
            The engine.
        frames_used : int
            Frames it has taken (FramesUsed).
        fields : dict
            The ``"dark"`` and ``"flat"`` fields it uses.
        """
        inputs = (id(rec), frames_used, id(fields["dark"]), id(fields["flat"]))
        now = time.monotonic()
        if rec is not None and inputs != self.inputs and now >= self._due:
            t0 = time.perf_counter()
            try:
                estimate = rec.estimate_center()
            except Exception:  # an aid to alignment: its failure never stops the reconstruction
                log.exception("estimating the rotation axis failed")
                estimate = math.nan
            cost = time.perf_counter() - t0
            self.inputs, self._due = inputs, now + max(ESTIMATE_PERIOD, cost / MAX_SHARE)
            self._publish(round(estimate, DECIMALS) if math.isfinite(estimate) else math.nan)
        self._follow()

    def _publish(self, estimate: float) -> None:
        if not _same(estimate, self.estimate):
            self.estimate = estimate
            self._set_pvs({"CenterEstimate": estimate})

    def _follow(self) -> None:
        """Once per new estimate (or change of CenterAuto): Center := estimate if CenterAuto is
        Yes and they differ by more than FOLLOW_TOLERANCE. A Center the IOC clamps, or one set
        by hand meanwhile, is left as it is until the next estimate."""
        auto = self._value("CenterAuto")
        last = self._followed
        if last is not None and _same(self.estimate, last[0]) and auto == last[1]:
            return
        self._followed = (self.estimate, auto)
        if auto == "Yes" and math.isfinite(self.estimate) \
                and abs(self.estimate - float(self._value("Center"))) > FOLLOW_TOLERANCE:
            self._set_pvs({"Center": self.estimate}, validate=True)
