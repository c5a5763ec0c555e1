"""CPU (numba) twins of the CUDA kernels in ``kernels.cu``: same names, same signatures, same
arithmetic order (per output pixel, frames are summed in ``idx`` order into a float32
accumulator that is then added to the float64 output), so both backends give the same numbers.

Geometry (see :mod:`tomostream.recon.phantom`): a sample point ``(x, y, z)`` relative to the
axis projects at angle ``t`` onto detector column ``u = x cos t - y sin t + center`` and row
``v = z + nz/2``. Values at ``u`` are linearly interpolated between columns ``floor(u)`` and
``floor(u) + 1``; columns outside ``0..n-1`` count as 0.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

#: Smallest transmission used by ``-log`` [1]: darker pixels are clamped (attenuation <= 6.9).
MIN_TRANSMISSION = np.float32(1e-3)


@njit(parallel=True, cache=True)
def preprocess(raw, dark, flat, take_log, out, bad):
    """Flat-field normalise ``raw`` into ``out`` (then ``-log`` if ``take_log``).

    Parameters
    ----------
    raw : ndarray (k, nz, n), uint8 / uint16 / float32 [counts]
    dark, flat : ndarray (nz, n), float32 [counts]
    take_log : bool
        Write ``-log(max(T, MIN_TRANSMISSION))`` instead of the transmission ``T``.
    out : ndarray (k, nz, n), float32
        Transmission ``(raw - dark) / (flat - dark)``; 1 where ``flat - dark <= 0`` or
        ``raw`` is not finite.
    bad : ndarray (1,), int64 (uint64 on the GPU)
        Incremented by the number of non-finite raw pixels (neutralised to transmission 1).
    """
    k, nz, n = raw.shape
    nonfinite = np.zeros(nz, np.int64)
    for r in prange(nz):
        for j in range(k):
            for c in range(n):
                v = np.float32(raw[j, r, c])
                d = dark[r, c]
                den = flat[r, c] - d
                t = np.float32(1.0)
                if not np.isfinite(v):
                    nonfinite[r] += 1
                elif den > 0:
                    t = (v - d) / den
                if take_log:
                    t = -np.float32(math.log(max(t, MIN_TRANSMISSION)))
                out[j, r, c] = t
    bad[0] += nonfinite.sum()


@njit(inline="always")
def _pad_row(row, n, padded):
    """Copy ``row`` into ``padded[1:n+1]``; ``padded`` (n + 3) keeps zeros at both ends."""
    for c in range(n):
        padded[c + 1] = row[c]


@njit(inline="always")
def _add_row(padded, n, step, base, w, acc):
    """acc[c] += w * row(u), u = c * step + base, linear interpolation, zero outside the row.

    ``padded`` is the row from :func:`_pad_row`; clamping ``u`` to [-1, n] lands on its zero
    ends, so the loop has no branch.
    """
    lo, hi = np.float32(-1.0), np.float32(n)
    for c in range(n):
        u = min(max(np.float32(c) * step + base, lo), hi)
        i = np.int32(u + np.float32(1.0))          # floor(u) + 1, as u + 1 >= 0
        f = u + np.float32(1.0) - np.float32(i)
        acc[c] += w * ((np.float32(1.0) - f) * padded[i] + f * padded[i + 1])


@njit(parallel=True, cache=True)
def backproject_z(filt, idx, cos_t, sin_t, weights, center, iz, out):
    """Add the backprojection of frames ``filt[idx]`` to the Z slice ``out`` (untilted).

    Parameters
    ----------
    filt : ndarray (P, nz, n), float32
        Filtered projections.
    idx : ndarray (k,), int32
        Frames of ``filt`` to use.
    cos_t, sin_t : ndarray (k,), float32
        Cosine and sine of each frame's angle.
    weights : ndarray (k,), float32
        Weight of each frame (+1 adds, -1 removes a frame's contribution).
    center : float [pixels]
        Detector column of the rotation axis.
    iz : int [pixels]
        Detector row of the slice.
    out : ndarray (n, n), float64
        ``out[iy, ix]`` accumulates.
    """
    k = idx.shape[0]
    n = filt.shape[2]
    half = np.float32(0.5 * n)
    cen = np.float32(center)
    for r in prange(n):
        y = np.float32(r) - half
        acc = np.zeros(n, np.float32)
        padded = np.zeros(n + 3, np.float32)
        for j in range(k):
            c, s = cos_t[j], sin_t[j]
            _pad_row(filt[idx[j], iz], n, padded)
            _add_row(padded, n, c, cen - y * s - half * c, weights[j], acc)
        for col in range(n):
            out[r, col] += acc[col]


@njit(parallel=True, cache=True)
def backproject_yx(filt, idx, cos_t, sin_t, weights, center, iy, ix, out_y, out_x):
    """Add the backprojection of frames ``filt[idx]`` to the Y and X slices (untilted).

    Each detector row ``iz`` feeds row ``iz`` of both vertical slices, so it is read once.

    Parameters
    ----------
    filt, idx, cos_t, sin_t, weights, center
        As in :func:`backproject_z`.
    iy, ix : int [pixels]
        Positions of the Y slice (row of the Z slice) and the X slice (column).
    out_y, out_x : ndarray (nz, n), float64
        ``out_y[iz, ix']`` and ``out_x[iz, iy']`` accumulate.
    """
    k = idx.shape[0]
    nz, n = filt.shape[1], filt.shape[2]
    half = np.float32(0.5 * n)
    cen = np.float32(center)
    y0 = np.float32(iy) - half
    x0 = np.float32(ix) - half
    for r in prange(nz):
        acc_y = np.zeros(n, np.float32)
        acc_x = np.zeros(n, np.float32)
        padded = np.zeros(n + 3, np.float32)
        for j in range(k):
            c, s = cos_t[j], sin_t[j]
            _pad_row(filt[idx[j], r], n, padded)
            _add_row(padded, n, c, cen - y0 * s - half * c, weights[j], acc_y)
            _add_row(padded, n, -s, cen + x0 * c + half * s, weights[j], acc_x)
        for col in range(n):
            out_y[r, col] += acc_y[col]
            out_x[r, col] += acc_x[col]


@njit(parallel=True, cache=True)
def backproject_points(filt, idx, cos_t, sin_t, weights, center, points, out):
    """Add the backprojection of frames ``filt[idx]`` at arbitrary sample points (tilted slices).

    Parameters
    ----------
    filt, idx, cos_t, sin_t, weights, center
        As in :func:`backproject_z`.
    points : ndarray (m, 3), float32 [pixels]
        ``(x, y, z)`` relative to the axis and the middle detector row.
    out : ndarray (m,), float64
        Accumulates; bilinear interpolation in ``(u, v)``, zero outside the detector.
    """
    k = idx.shape[0]
    nz, n = filt.shape[1], filt.shape[2]
    cen = np.float32(center)
    halfz = np.float32(0.5 * nz)
    for p in prange(points.shape[0]):
        x, y = points[p, 0], points[p, 1]
        v = points[p, 2] + halfz
        v0 = math.floor(v)
        fv = np.float32(v - v0)
        iv = int(v0)
        acc = np.float32(0.0)
        for j in range(k):
            u = x * cos_t[j] - y * sin_t[j] + cen
            u0 = math.floor(u)
            fu = np.float32(u - u0)
            iu = int(u0)
            frame = filt[idx[j]]
            val = np.float32(0.0)
            for dv in range(2):
                row = iv + dv
                if 0 <= row < nz:
                    wv = fv if dv == 1 else np.float32(1.0) - fv
                    if 0 <= iu < n:
                        val += wv * (np.float32(1.0) - fu) * frame[row, iu]
                    if 0 <= iu + 1 < n:
                        val += wv * fu * frame[row, iu + 1]
            acc += weights[j] * val
        out[p] += acc
