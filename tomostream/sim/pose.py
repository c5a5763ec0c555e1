"""Where the sample stages and the lens put the phantom on the simulated detector.

The phantom (:mod:`tomostream.recon.phantom`) is defined in pixels of the *reference* lens
(the lens in place when the simulator starts: today's frames), relative to the rotation axis
and the middle detector row. A :class:`Pose` moves it in the sample's own frame (the stages on
top of the rotation stage turn with it, so a shift along x or y moves the projection
sinusoidally with the angle), vertically, and magnifies it about the optical centre (the
middle of the detector) by the ratio of the lens magnifications. Line integrals keep their
values under magnification: lengths in pixels grow by the zoom, attenuation per pixel falls by
it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..recon.phantom import Ellipsoid


@dataclass(frozen=True)
class Pose:
    """The sample's place and magnification on the detector.

    Parameters
    ----------
    x, y : float [pixels of the reference lens]
        Shift of the sample in its own frame, along the slices' x (columns of the Z slice) and
        y (rows of the Z slice).
    z : float [pixels of the reference lens]
        Vertical shift, positive downwards (towards larger detector rows).
    zoom : float
        Magnification relative to the reference lens.
    """

    x: float = 0.0
    y: float = 0.0
    z: float = 0.0
    zoom: float = 1.0

    def place(self, ellipsoids: Sequence[Ellipsoid]) -> list[Ellipsoid]:
        """The ellipsoids as the detector sees them: shifted, then magnified about the axis
        and the middle row (the optical centre's row)."""
        m = self.zoom
        if self == Pose():
            return list(ellipsoids)
        return [Ellipsoid(m * (e.x0 + self.x), m * (e.y0 + self.y), m * (e.z0 + self.z),
                          m * e.a, m * e.b, m * e.c, e.phi, e.mu / m) for e in ellipsoids]

    def axis(self, center: float, width: int) -> float:
        """Detector column [pixels] of the rotation axis that sits at ``center`` with the
        reference lens, magnified about the optical centre ``width / 2``."""
        if self.zoom == 1.0:
            return center
        return width / 2.0 + self.zoom * (center - width / 2.0)
