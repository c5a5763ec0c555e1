"""Scan geometry of the simulated beamline: angle tables, uniqueIds and the changing sample.

Angles and uniqueIds
--------------------
The stage moves one ``RotationStep`` per frame period whatever the frame type, so frame ``k``
of a scan (``k = 0`` is the first projection) has uniqueId ``FirstProjid + k`` (modulo the
wrap) and angle ``theta[k]``. The published theta table covers the whole scan: it has
``NumAngles`` entries, one per frame the scan streams; a consumer reads
``theta[(uniqueId - FirstProjid) mod W]`` (``W = 65536`` when the detector wraps its uniqueId
at 65535, else ``2**31``). Dark and flat frames taken while the stage keeps rotating
(StreamRetakeDark/Flat) use up their uniqueIds and angles like any frame.

- ``continuous``: ``theta[k] = RotationStart + k * RotationStep``; the angle keeps growing
  past 360 degrees.
- ``backforth``: the stage sweeps ``sweep`` frames forward then the same angles in reverse,
  repeatedly: ``RotationStart + RotationStep * j`` with ``j = 0, 1, ..., sweep-1, sweep-1,
  ..., 1, 0, 0, 1, ...``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import BadParameter
from ..recon.phantom import Ellipsoid

SCAN_TYPES = ("backforth", "continuous")


def angle_table(scan_type: str, start: float, step: float, num_angles: int,
                sweep: int | None = None) -> np.ndarray:
    """Angle of every frame of a scan.

    Parameters
    ----------
    scan_type : {"continuous", "backforth"}
    start : float [degrees]
        RotationStart.
    step : float [degrees]
        RotationStep, angle advanced per frame.
    num_angles : int
        Frames in the scan (NumAngles); the table length.
    sweep : int, optional
        Frames per sweep of a back-and-forth scan; by default the frames of 180 degrees.

    Returns
    -------
    ndarray (num_angles,) float64 [degrees]
    """
    if scan_type not in SCAN_TYPES:
        raise BadParameter(f"StreamScanType={scan_type!r} is not one of {SCAN_TYPES}")
    if num_angles < 1:
        raise BadParameter(f"NumAngles={num_angles} must be at least 1")
    if not np.isfinite(step) or step == 0:
        raise BadParameter(f"RotationStep={step} must be a finite non-zero angle")
    k = np.arange(num_angles, dtype=np.float64)
    if scan_type == "continuous":
        return start + k * step
    sweep = max(1, round(180.0 / abs(step))) if sweep is None else int(sweep)
    if sweep < 1:
        raise BadParameter(f"sweep={sweep} frames must be at least 1")
    phase = np.arange(num_angles) % (2 * sweep)
    j = np.where(phase < sweep, phase, 2 * sweep - 1 - phase)
    return start + j * step


@dataclass(frozen=True)
class Inclusion:
    """A sphere that changes during the scan, so triggers have something to find.

    Between frame ``start_frame`` and ``start_frame + frames`` its centre moves linearly from
    ``(x0, y0, z0)`` to ``(x1, y1, z1)`` and its radius from ``r0`` to ``r1``; it stays put
    before and after. ``r0 = 0`` with equal positions is a growing inclusion, equal radii
    with different positions a moving one.

    Parameters
    ----------
    x0, y0, z0, x1, y1, z1 : float [pixels]
        Centre relative to the rotation axis and the middle row, at the start and the end.
    r0, r1 : float [pixels]
        Radius at the start and at the end.
    mu : float [1/pixel]
        Attenuation added inside the sphere.
    start_frame, frames : int
        Frame index (within the scan) where the change starts, and how many frames it lasts.
    """

    x0: float
    y0: float
    z0: float
    r0: float
    r1: float
    x1: float | None = None
    y1: float | None = None
    z1: float | None = None
    mu: float = 0.02
    start_frame: int = 0
    frames: int = 1000

    @classmethod
    def growing(cls, n: int, nz: int, frames: int = 1000, start_frame: int = 0) -> Inclusion:
        """A sphere off the axis in the upper half growing from nothing to ``n/16`` pixels."""
        return cls(x0=0.2 * n, y0=-0.15 * n, z0=-0.15 * nz, r0=0.0, r1=max(2.0, n / 16),
                   mu=4.0 / n, start_frame=start_frame, frames=frames)

    def at(self, k: int) -> Ellipsoid | None:
        """The inclusion at frame ``k`` as an ellipsoid, or None while its radius is 0."""
        f = min(max((k - self.start_frame) / max(self.frames, 1), 0.0), 1.0)

        def lerp(a: float, b: float | None) -> float:
            return a if b is None else a + (b - a) * f

        r = lerp(self.r0, self.r1)
        if r <= 0:
            return None
        return Ellipsoid(lerp(self.x0, self.x1), lerp(self.y0, self.y1), lerp(self.z0, self.z1),
                         r, r, r, 0.0, self.mu)


def named_inclusion(name: str, width: int, height: int, num_angles: int) -> Inclusion | None:
    """The inclusion called ``name``: "grow", "move" or "none".

    Parameters
    ----------
    name : {"grow", "move", "none", ""}
    width, height : int [pixels]
        Frame size.
    num_angles : int
        Frames of the scan; the inclusion changes over the first half.
    """
    frames = max(1, num_angles // 2)
    if name == "grow":
        return Inclusion.growing(width, height, frames=frames)
    if name == "move":
        r = max(2.0, width / 20)
        return Inclusion(x0=-0.25 * width, y0=0.0, z0=0.1 * height, r0=r, r1=r, x1=0.25 * width,
                         mu=4.0 / width, frames=frames)
    if name in ("none", ""):
        return None
    raise BadParameter(f"inclusion={name!r} is not one of 'grow', 'move', 'none'")
