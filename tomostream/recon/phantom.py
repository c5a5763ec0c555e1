"""Analytic 3-D phantoms made of ellipsoids, with exact parallel-beam projections.

Geometry (the one used everywhere in tomostream): detector column ``u``, row ``v``; volume
index ``(ix, iy, iz)`` with ``iz = v``. Coordinates relative to the rotation axis are
``x = ix - n/2``, ``y = iy - n/2``, ``z = iz - nz/2`` [pixels]. The projection at angle ``t``
of detector column ``u`` is the line integral over the line
``x cos t - y sin t = u - center`` in the plane ``z``.

Attenuation ``mu`` is per pixel, so a line integral is ``sum(mu * chord length [pixels])``.
The simulator and the reconstruction tests share these functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Ellipsoid:
    """One ellipsoid of constant attenuation, axes rotated by ``phi`` about the z axis.

    Parameters
    ----------
    x0, y0, z0 : float [pixels]
        Centre, relative to the rotation axis (x, y) and to the middle row (z).
    a, b, c : float [pixels]
        Semi-axes along the rotated x, rotated y and z directions.
    phi : float [degrees]
        Rotation of the (a, b) axes about z.
    mu : float [1/pixel]
        Attenuation added inside the ellipsoid (negative values subtract).
    """

    x0: float
    y0: float
    z0: float
    a: float
    b: float
    c: float
    phi: float = 0.0
    mu: float = 0.01


def default_phantom(n: int, nz: int | None = None, mu: float | None = None) -> list[Ellipsoid]:
    """A 3-D Shepp-Logan-like phantom sized to an ``n`` wide, ``nz`` tall detector.

    The outer attenuation defaults to ``2/n`` per pixel, which keeps the longest path at
    about 15 % transmission whatever the detector size.
    """
    nz = n if nz is None else nz
    mu0 = 2.0 / n if mu is None else mu
    r, h = n / 2.0, nz / 2.0
    return [
        Ellipsoid(0, 0, 0, 0.69 * r, 0.85 * r, 0.80 * h, 0, mu0),
        Ellipsoid(0, 0.018 * r, 0, 0.62 * r, 0.78 * r, 0.72 * h, 0, -0.5 * mu0),
        Ellipsoid(0.22 * r, 0, -0.1 * h, 0.11 * r, 0.31 * r, 0.25 * h, -18, 0.6 * mu0),
        Ellipsoid(-0.22 * r, 0, 0.1 * h, 0.16 * r, 0.41 * r, 0.30 * h, 18, 0.6 * mu0),
        Ellipsoid(0, 0.35 * r, 0.05 * h, 0.21 * r, 0.25 * r, 0.20 * h, 0, 0.3 * mu0),
        Ellipsoid(0, -0.1 * r, -0.2 * h, 0.046 * r, 0.046 * r, 0.1 * h, 0, 0.4 * mu0),
        Ellipsoid(0.06 * r, -0.6 * r, 0.0, 0.046 * r, 0.023 * r, 0.15 * h, 0, 0.4 * mu0),
    ]


def reach(ellipsoids: Sequence[Ellipsoid]) -> float:
    """Farthest any of ``ellipsoids`` reaches from the rotation axis [pixels] (a bound).

    ``hypot(x0, y0) + max(a, b)`` over the ellipsoids: every projection of them lies within
    this distance of the axis's column, at every angle.
    """
    return max((float(np.hypot(e.x0, e.y0)) + max(e.a, e.b) for e in ellipsoids), default=0.0)


def project(ellipsoids: Sequence[Ellipsoid], angles: np.ndarray, n: int, nz: int,
            center: float | None = None) -> np.ndarray:
    """Exact line integrals of ``ellipsoids`` (the sample's ``-log`` transmission).

    Parameters
    ----------
    ellipsoids : sequence of Ellipsoid
    angles : array (k,) [degrees]
    n, nz : int [pixels]
        Detector width and height.
    center : float [pixels], optional
        Detector column of the rotation axis; ``n/2`` by default.

    Returns
    -------
    ndarray, float32, shape (k, nz, n)
    """
    center = n / 2.0 if center is None else float(center)
    t = np.deg2rad(np.atleast_1d(np.asarray(angles, dtype=np.float64)))
    s = np.arange(n, dtype=np.float64) - center                     # (n,)
    z = np.arange(nz, dtype=np.float64) - nz / 2.0                  # (nz,)
    out = np.zeros((t.size, nz, n), dtype=np.float64)
    cos_t, sin_t = np.cos(t)[:, None], np.sin(t)[:, None]           # (k, 1)
    for e in ellipsoids:
        zr = 1.0 - ((z - e.z0) / e.c) ** 2                          # (nz,)
        rows = np.nonzero(zr > 0)[0]
        if rows.size == 0:
            continue
        scale = np.sqrt(zr[rows])                                   # cross-section shrink
        phi = np.deg2rad(e.phi)
        # line normal (cos t, -sin t) expressed in the ellipse's own axes
        nx = cos_t * np.cos(phi) - sin_t * np.sin(phi)
        ny = -cos_t * np.sin(phi) - sin_t * np.cos(phi)
        r2 = (e.a * nx) ** 2 + (e.b * ny) ** 2                      # (k, 1)
        s0 = e.x0 * cos_t - e.y0 * sin_t                            # (k, 1)
        ds = (s[None, :] - s0)                                      # (k, n)
        # per row the cross-section is the ellipse scaled by `scale`
        sc = scale[None, :, None]                                   # (1, r, 1)
        r2s = r2[:, :, None] * sc**2                                # (k, 1, 1)*(1, r, 1)
        num = r2s - ds[:, None, :] ** 2                             # (k, r, n)
        chord = np.where(num > 0, 2.0 * e.a * e.b * sc**2 * np.sqrt(np.maximum(num, 0)) / r2s, 0)
        out[:, rows, :] += e.mu * chord
    return out.astype(np.float32)


def rasterize(ellipsoids: Sequence[Ellipsoid], x: np.ndarray, y: np.ndarray,
              z: np.ndarray) -> np.ndarray:
    """Attenuation [1/pixel] at points ``(x, y, z)`` (relative coordinates, any equal shape)."""
    x, y, z = np.broadcast_arrays(*(np.asarray(c, dtype=np.float64) for c in (x, y, z)))
    f = np.zeros(x.shape, dtype=np.float64)
    for e in ellipsoids:
        phi = np.deg2rad(e.phi)
        dx, dy = x - e.x0, y - e.y0
        xr = dx * np.cos(phi) + dy * np.sin(phi)
        yr = -dx * np.sin(phi) + dy * np.cos(phi)
        inside = (xr / e.a) ** 2 + (yr / e.b) ** 2 + ((z - e.z0) / e.c) ** 2 <= 1.0
        f += np.where(inside, e.mu, 0.0)
    return f.astype(np.float32)


def ortho_slices(ellipsoids: Sequence[Ellipsoid], n: int, nz: int,
                 ortho: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True (untilted) Z, Y and X slices at volume indices ``ortho = (ix, iy, iz)``.

    Returns ``z (n, n)`` = f[iy, ix] at iz, ``y (nz, n)`` = f[iz, ix] at iy and
    ``x (nz, n)`` = f[iz, iy] at ix, matching ``OrthoReconstructor.slices()``.
    """
    ix, iy, iz = ortho
    c = np.arange(n) - n / 2.0
    cz = np.arange(nz) - nz / 2.0
    zs = rasterize(ellipsoids, c[None, :], c[:, None], iz - nz / 2.0)
    ys = rasterize(ellipsoids, c[None, :], iy - n / 2.0, cz[:, None])
    xs = rasterize(ellipsoids, ix - n / 2.0, c[None, :], cz[:, None])
    return zs, ys, xs
