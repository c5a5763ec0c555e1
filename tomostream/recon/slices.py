"""The three slice sums of the engine and the backprojection that adds frames to them.

The sums are unnormalised (``pi / filled`` turns them into slices [1/pixel]); frames enter
with weight +1 and leave with weight -1 (:func:`.inputs.pack_frames`). Flat slices at zoom 1
use the dedicated Z and Y/X kernels, turned or zoomed ones the point-by-point kernel on the
sample points of :func:`.geometry.slice_points`.
"""

from __future__ import annotations

from tomostream.recon.backend import Backend
from tomostream.recon.geometry import slice_points
from tomostream.recon.inputs import unpack_frames
from tomostream.recon.params import ReconParams


class SliceSums:
    """Z ``(n, n)``, Y and X ``(nz, n)`` slice sums, float64 on one backend's device.

    Parameters
    ----------
    be : Backend
        Where the sums live and which kernels add to them.
    width, height : int [pixels]
        Detector columns ``n`` and rows ``nz``.

    Attributes
    ----------
    arrays : tuple of 3 ndarray
        The Z, Y and X sums.
    """

    def __init__(self, be: Backend, width: int, height: int) -> None:
        n, nz, xp = int(width), int(height), be.xp
        self.be, self.width, self.height = be, n, nz
        self.arrays = (xp.zeros((n, n)), xp.zeros((nz, n)), xp.zeros((nz, n)))
        self._points: tuple | None = None        # ((ortho, rot, zoom), device sample points)

    def clear(self) -> None:
        """Set the sums to zero."""
        for s in self.arrays:
            s.fill(0)

    def add(self, filt, table, params: ReconParams) -> None:
        """Add frames of the filtered buffer ``filt`` (p, nz, n) to the sums.

        Parameters
        ----------
        filt : ndarray (p, nz, n) float32
            Filtered frames, on the device.
        table : ndarray of int32
            Slots, angles and weights of the frames (:func:`.inputs.pack_frames`), on the device.
        params : ReconParams
            Center, slice positions, turns and zoom.
        """
        idx, cos_t, sin_t, w = unpack_frames(table, self.be.xp)
        p, k, (z, y, x) = params, self.be.kernels, self.arrays
        if p.rot == (0.0, 0.0, 0.0) and p.zoom == 1.0:
            ix, iy, iz = p.ortho
            k.backproject_z(filt, idx, cos_t, sin_t, w, p.center, iz, z)
            k.backproject_yx(filt, idx, cos_t, sin_t, w, p.center, iy, ix, y, x)
            return
        key = (p.ortho, p.rot, p.zoom)
        if self._points is None or self._points[0] != key:
            pts = slice_points(self.width, self.height, p.ortho, p.rot, p.zoom)
            self._points = key, [self.be.asarray(a) for a in pts]
        for pts, s in zip(self._points[1], self.arrays, strict=True):
            k.backproject_points(filt, idx, cos_t, sin_t, w, p.center, pts, s.reshape(-1))

    def to_host(self, scale: float) -> tuple:
        """The sums times ``scale``, as float32 NumPy arrays."""
        xp = self.be.xp
        return tuple(self.be.to_host((s * scale).astype(xp.float32)) for s in self.arrays)
