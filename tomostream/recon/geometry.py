"""Where each output pixel of the three slices sits in the sample.

Coordinates are relative to the rotation axis and the middle detector row:
``x = ix - n/2``, ``y = iy - n/2``, ``z = iz - nz/2`` [pixels] (see :mod:`.phantom`).
"""

from __future__ import annotations

import numpy as np


def _turn(a: np.ndarray, b: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """``(a, b)`` turned by ``degrees`` in their plane about ``(0, 0)``: ``(1, 0)`` goes to
    ``(cos, -sin)`` and ``(0, 1)`` to ``(sin, cos)``."""
    t = np.deg2rad(degrees)
    c, s = np.cos(t), np.sin(t)
    return a * c + b * s, -a * s + b * c


def slice_points(n: int, nz: int, ortho: tuple[int, int, int], rot: tuple[float, float, float],
                 zoom: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample points of the Z, Y and X slices.

    The untilted slices are ``z[iy, ix]`` at row ``iz``, ``y[iz, ix]`` at ``iy`` and
    ``x[iz, iy]`` at ``ix`` (``ortho = (ix, iy, iz)``). Each of ``rot = (rx, ry, rz)`` turns
    its own slice only, as the APS TomoStream does: ``rx`` turns the X slice and ``ry`` the Y
    slice about the vertical rotation axis through the volume centre (so ``rx = 90`` with the
    X slice at the centre shows the Y slice through the centre, columns in the same order);
    ``rz`` tilts the Z slice about the horizontal y direction through the volume centre.

    ``zoom`` magnifies each slice in its own plane about the pixel where the slices cross
    (``(iy, ix)`` of the Z slice, ``(iz, ix)`` of the Y slice, ``(iz, iy)`` of the X slice):
    pixel ``c`` of an axis through crossing coordinate ``a0`` at pixel ``i`` samples
    ``a0 + (c - i) / zoom`` instead of ``a0 + (c - i)``, before the turns. Each slice then
    covers a field ``1 / zoom`` as wide, inside the one it covers at ``zoom = 1``, sampled
    ``zoom`` times finer; the crossing point keeps its pixel (so lines drawn where the slices
    cross stay right), the slice planes are those of ``zoom = 1``, and ``zoom = 1`` gives
    exactly the unzoomed points. Detector rows (``z``) become fractional.

    Parameters
    ----------
    n, nz : int [pixels]
        Detector width and height.
    ortho : (int, int, int) [pixels]
    rot : (float, float, float) [degrees]
    zoom : float [1]
        Magnification, >= 1.

    Returns
    -------
    three ndarrays, float32, shapes (n*n, 3), (nz*n, 3), (nz*n, 3)
        ``(x, y, z)`` per output pixel, in the row-major order of each slice.
    """
    ix, iy, iz = ortho
    rx, ry, rz = rot
    x0, y0, z0 = ix - n / 2.0, iy - n / 2.0, iz - nz / 2.0
    cx = x0 + (np.arange(n) - ix) / zoom       # x of each column of the Z and Y slices
    cy = y0 + (np.arange(n) - iy) / zoom       # y of each row of Z, each column of X
    cz = z0 + (np.arange(nz) - iz) / zoom      # z of each row of Y and X
    zx, zy, zz = np.broadcast_arrays(cx[None, :], cy[:, None], np.full((1, 1), z0))  # rows y, cols x
    yx, yy, yz = np.broadcast_arrays(cx[None, :], np.full((1, 1), y0), cz[:, None])  # rows z, cols x
    xx, xy, xz = np.broadcast_arrays(np.full((1, 1), x0), cy[None, :], cz[:, None])  # rows z, cols y
    zx, zz = _turn(zx, zz, rz)
    yx, yy = _turn(yx, yy, ry)
    xy, xx = _turn(xy, xx, -rx)
    return tuple(np.stack([a.ravel() for a in np.broadcast_arrays(px, py, pz)], axis=1).astype(np.float32)
                 for px, py, pz in ((zx, zy, zz), (yx, yy, yz), (xx, xy, xz)))
