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


def _field_centre(count: int, crossing: float, zoom: float) -> float:
    """Middle of the zoomed field along one axis [pixels]: the crossing point, moved just
    enough that the field (``count / zoom`` wide) stays inside ``0 .. count``."""
    reach = 0.5 * count / zoom
    return min(max(float(crossing), reach), count - reach)


def pixel_coordinate(count: int, crossing: float, zoom: float, pixel):
    """Sample coordinate of output pixel(s) ``pixel`` along one axis of ``count`` pixels,
    relative to the middle (``coordinate = pixel - count/2`` at ``zoom = 1``) [pixels].

    The field is ``count / zoom`` wide, sampled ``zoom`` times finer, centred on ``crossing``
    (the slice position along this axis [pixels]) unless that would reach outside
    ``0 .. count``, where it stops at the edge; it moves continuously with ``zoom``.
    """
    half = 0.5 * count
    return _field_centre(count, crossing, zoom) - half + (pixel - half) / zoom


def zoom_axis(count: int, crossing: float, zoom: float) -> np.ndarray:
    """:func:`pixel_coordinate` of each of the ``count`` output pixels; ``zoom = 1`` gives
    ``arange(count) - count/2`` exactly."""
    return pixel_coordinate(count, crossing, zoom, np.arange(count))


def crossing_pixel(count: int, crossing: float, zoom: float) -> float:
    """Output pixel (fractional) at which the slice position ``crossing`` appears along an axis
    of ``count`` pixels at ``zoom`` (:func:`zoom_axis`); ``crossing`` itself at ``zoom = 1``."""
    half = 0.5 * count
    return half + (crossing - _field_centre(count, crossing, zoom)) * zoom


def crossing_pixels(n: int, nz: int, ortho: tuple[int, int, int], zoom: float) -> tuple[int, int, int]:
    """``(ix, iy, iz)`` of the slice-crossing lines in the zoomed slices [pixels], rounded and
    kept inside the slices: ``ortho`` itself at ``zoom = 1``."""
    sizes = (n, n, nz)
    return tuple(min(max(int(round(crossing_pixel(size, c, zoom))), 0), size - 1)
                 for size, c in zip(sizes, ortho, strict=True))


def slice_points(n: int, nz: int, ortho: tuple[int, int, int], rot: tuple[float, float, float],
                 zoom: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample points of the Z, Y and X slices.

    The untilted slices are ``z[iy, ix]`` at row ``iz``, ``y[iz, ix]`` at ``iy`` and
    ``x[iz, iy]`` at ``ix`` (``ortho = (ix, iy, iz)``). Each of ``rot = (rx, ry, rz)`` turns
    its own slice only, as the APS TomoStream does: ``rx`` turns the X slice and ``ry`` the Y
    slice about the vertical rotation axis through the volume centre (so ``rx = 90`` with the
    X slice at the centre shows the Y slice through the centre, columns in the same order);
    ``rz`` tilts the Z slice about the horizontal y direction through the volume centre.

    ``zoom`` magnifies each slice in its own plane (before the turns): along each axis the
    slice covers a field ``1 / zoom`` as wide, sampled ``zoom`` times finer, centred on the
    crossing point as far as the volume allows (see :func:`zoom_axis`), so the region about
    the crossing point fills the image. ``zoom = 1`` gives exactly the unzoomed points; the
    crossing point is then at pixel :func:`crossing_pixel` of each axis. Detector rows (``z``)
    become fractional.

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
    cx = zoom_axis(n, ix, zoom)                # x of each column of the Z and Y slices
    cy = zoom_axis(n, iy, zoom)                # y of each row of Z, each column of X
    cz = zoom_axis(nz, iz, zoom)               # z of each row of Y and X
    zx, zy, zz = np.broadcast_arrays(cx[None, :], cy[:, None], np.full((1, 1), z0))  # rows y, cols x
    yx, yy, yz = np.broadcast_arrays(cx[None, :], np.full((1, 1), y0), cz[:, None])  # rows z, cols x
    xx, xy, xz = np.broadcast_arrays(np.full((1, 1), x0), cy[None, :], cz[:, None])  # rows z, cols y
    zx, zz = _turn(zx, zz, rz)
    yx, yy = _turn(yx, yy, ry)
    xy, xx = _turn(xy, xx, -rx)
    return tuple(np.stack([a.ravel() for a in np.broadcast_arrays(px, py, pz)], axis=1).astype(np.float32)
                 for px, py, pz in ((zx, zy, zz), (yx, yy, yz), (xx, xy, xz)))
