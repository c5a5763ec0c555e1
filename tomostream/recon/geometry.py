"""Where each output pixel of the three slices sits in the sample.

Coordinates are relative to the rotation axis and the middle detector row:
``x = ix - n/2``, ``y = iy - n/2``, ``z = iz - nz/2`` [pixels] (see :mod:`.phantom`).
"""

from __future__ import annotations

import numpy as np


def rotation(rot: tuple[float, float, float]) -> np.ndarray:
    """Matrix rotating by ``rot = (rx, ry, rz)`` [degrees] about x, then y, then z."""
    ax, ay, az = np.deg2rad(rot)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def slice_points(n: int, nz: int, ortho: tuple[int, int, int],
                 rot: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample points of the Z, Y and X slices.

    The untilted slices are ``z[iy, ix]`` at row ``iz``, ``y[iz, ix]`` at ``iy`` and
    ``x[iz, iy]`` at ``ix`` (``ortho = (ix, iy, iz)``). ``rot`` turns the three planes
    together about their common point, so they stay orthogonal and keep crossing there.

    Parameters
    ----------
    n, nz : int [pixels]
        Detector width and height.
    ortho : (int, int, int) [pixels]
    rot : (float, float, float) [degrees]

    Returns
    -------
    three ndarrays, float32, shapes (n*n, 3), (nz*n, 3), (nz*n, 3)
        ``(x, y, z)`` per output pixel, in the row-major order of each slice.
    """
    ix, iy, iz = ortho
    c = np.arange(n) - n / 2.0
    cz = np.arange(nz) - nz / 2.0
    x0, y0, z0 = ix - n / 2.0, iy - n / 2.0, iz - nz / 2.0
    grids = (
        np.broadcast_arrays(c[None, :], c[:, None], np.full((1, 1), z0)),     # Z: rows y, cols x
        np.broadcast_arrays(c[None, :], np.full((1, 1), y0), cz[:, None]),    # Y: rows z, cols x
        np.broadcast_arrays(np.full((1, 1), x0), c[None, :], cz[:, None]),    # X: rows z, cols y
    )
    origin = np.array([x0, y0, z0])
    r = rotation(rot)
    out = []
    for g in grids:
        p = np.stack([a.ravel() for a in g], axis=1)
        out.append(((p - origin) @ r.T + origin).astype(np.float32))
    return out[0], out[1], out[2]
