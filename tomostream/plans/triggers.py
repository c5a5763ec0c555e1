"""Triggers for automatic capture: decide from the current slices whether to capture now."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from ..errors import BadParameter

#: A trigger takes the published image (rows, 3n) and returns True to capture now.
Trigger = Callable[[np.ndarray], bool]


class ChangeDetector:
    """Fires when the slices have changed by more than ``threshold`` since the reference.

    The relative change is ``||a - ref|| / ||ref||`` (Frobenius norms) over ``region`` of the
    published image. The first image seen becomes the reference; after each firing the
    current image becomes the new reference and the detector stays quiet for ``holdoff``.

    Parameters
    ----------
    threshold : float
        Relative change that fires the trigger (0.1 = 10 %).
    region : tuple of slice, optional
        Region of the (rows, 3n) image compared, e.g. ``np.s_[:, :n]`` for the Z slice only.
    holdoff : float
        Seconds after a firing during which the detector does not fire again [s].
    clock : callable
        Time source [s]; ``time.monotonic`` by default.

    Attributes
    ----------
    last_change : float
        Relative change computed on the last call.
    fired : int
        Number of times the detector has fired.
    """

    def __init__(self, threshold: float = 0.1, region: tuple | None = None, holdoff: float = 5.0,
                 clock: Callable[[], float] = time.monotonic):
        if not np.isfinite(threshold) or threshold <= 0:
            raise BadParameter(f"threshold={threshold} must be a positive number")
        if not np.isfinite(holdoff) or holdoff < 0:
            raise BadParameter(f"holdoff={holdoff} s must be >= 0")
        self.threshold = float(threshold)
        self.region = region
        self.holdoff = float(holdoff)
        self.clock = clock
        self.reference: np.ndarray | None = None
        self.last_change = 0.0
        self.fired = 0
        self._quiet_until = -np.inf

    def _view(self, image: np.ndarray) -> np.ndarray:
        array = np.asarray(image, dtype=np.float64)
        return array[self.region] if self.region is not None else array

    def reset(self) -> None:
        """Forget the reference (the next image becomes it)."""
        self.reference = None
        self._quiet_until = -np.inf

    def __call__(self, image: np.ndarray) -> bool:
        current = self._view(image)
        if self.reference is None or self.reference.shape != current.shape:
            self.reference = current.copy()
            return False
        norm = np.linalg.norm(self.reference)
        diff = np.linalg.norm(current - self.reference)
        self.last_change = float(diff / norm) if norm > 0 else (np.inf if diff > 0 else 0.0)
        now = self.clock()
        if now < self._quiet_until or not self.last_change > self.threshold:
            return False
        self.reference = current.copy()
        self._quiet_until = now + self.holdoff
        self.fired += 1
        return True


def as_trigger(capture_when) -> Trigger | None:
    """Turn the ``capture_when`` argument of a plan into a trigger.

    ``None`` (no automatic capture), a callable ``f(image) -> bool``, or ``"change"`` (a
    :class:`ChangeDetector` with its defaults).
    """
    if capture_when is None or callable(capture_when):
        return capture_when
    if capture_when == "change":
        return ChangeDetector()
    raise BadParameter(f"capture_when={capture_when!r} must be None, 'change' or a callable")
