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
from llvmlite import ir as llvm_ir
from numba import carray, njit, prange
from numba.core import cgutils, types
from numba.extending import intrinsic

#: Smallest transmission used by ``-log`` [1]: darker pixels are clamped (attenuation <= 6.9).
MIN_TRANSMISSION = np.float32(1e-3)

#: Fast-math flags of the backprojection loops: no NaN/inf semantics in ``min``/``max`` (the
#: filtered data are finite), no reassociation or contraction, so the sums keep their order.
_FAST = {"nnan", "ninf"}


@njit(parallel=True, cache=True)
def preprocess(raw, dark, flat, take_log, out, bad):
    """Flat-field normalise ``raw`` into ``out`` (then ``-log`` if ``take_log``).

    Parameters
    ----------
    raw : ndarray (k, nz, n), uint8 / uint16 / float32 [counts]
    dark, flat : ndarray (nz, n), float32 [counts]
    take_log : bool
        Write ``-log(max(T, MIN_TRANSMISSION))`` instead of the transmission ``T``.
    out : ndarray (k, nz, m), float32, m >= n
        Transmission ``(raw - dark) / (flat - dark)``; 1 where ``flat - dark <= 0`` or
        ``raw`` is not finite. Columns ``n..m-1`` are set to 0 (rows zero-padded for the FFT
        of the filter).
    bad : ndarray (1,), int64 (uint64 on the GPU)
        Incremented by the number of non-finite raw pixels (neutralised to transmission 1).
    """
    k, nz, n = raw.shape
    nonfinite = np.zeros(nz, np.int64)
    for r in prange(nz):
        for j in range(k):
            for c in range(n, out.shape[2]):
                out[j, r, c] = 0
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


def frame_buffer(p: int, nz: int, n: int) -> np.ndarray:
    """Zeroed buffer of ``p`` filtered frames, shape ``(p, nz, n)``, laid out for these kernels.

    Each frame is stored column by column (the array is the ``(0, 2, 1)`` transpose of a
    C-contiguous ``(p, n, nz)`` array): a detector column is contiguous, so the vertical
    slices are built from contiguous column reads that vectorise (see :func:`backproject_yx`).
    Writing ``buffer[slots] = frames`` with ``(k, nz, n)`` frames stores them transposed.
    """
    return np.zeros((p, n, nz), dtype=np.float32).transpose(0, 2, 1)


@intrinsic
def _stack_f32(typingctx, size):
    """Pointer to ``size`` (a literal) float32 on the stack of the calling function.

    Stack memory cannot alias any array the function receives, so the compiler vectorises a
    loop that gathers from such an array and accumulates into this one (it cannot prove that
    for two heap arrays and keeps the loop scalar).
    """
    if not isinstance(size, types.IntegerLiteral):
        return None

    def codegen(context, builder, sig, args):
        return cgutils.alloca_once(builder, llvm_ir.FloatType(), size=size.literal_value)

    return types.CPointer(types.float32)(size), codegen


#: Columns of the Z slice accumulated at once on the stack [pixels] (16 KiB of float32).
_Z_CHUNK = 4096


@njit(parallel=True, cache=True)
def _sinogram(filt, idx, weights, iz):
    """Row ``iz`` of frames ``filt[idx]`` times their weights, zero-padded: ``(k, n + 3)``.

    ``out[j, c + 1] = weights[j] * filt[idx[j], iz, c]``; columns 0, n + 1 and n + 2 stay 0 so
    that an interpolation clamped to ``u`` in [-1, n] needs no branch.
    """
    k, n = idx.shape[0], filt.shape[2]
    out = np.zeros((k, n + 3), np.float32)
    for j in prange(k):
        w = weights[j]
        for c in range(n):
            out[j, c + 1] = w * filt[idx[j], iz, c]
    return out


@intrinsic
def _as_f32(typingctx, bits):
    """The float32 whose bit pattern is the uint32 ``bits``."""
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], llvm_ir.FloatType())

    return types.float32(types.uint32), codegen


def _pairs(sino: np.ndarray) -> np.ndarray:
    """``(k, m)`` padded rows -> ``(k, m - 1)`` uint64 holding ``(row[i], row[i + 1])`` as bits.

    One 64-bit gather then fetches both neighbours of an interpolation (half the gathered
    elements of two 32-bit gathers).
    """
    k, m = sino.shape
    both = np.empty((k, m - 1, 2), np.float32)
    both[:, :, 0] = sino[:, :-1]
    both[:, :, 1] = sino[:, 1:]
    return both.view(np.uint64).reshape(k, m - 1)


@njit(parallel=True, cache=True, fastmath=_FAST)
def _z_from_pairs(pairs, cos_t, sin_t, center, out):
    """``out[iy, ix] += sum_j row_j(u)``, ``u = x cos - y sin + center`` (see :func:`backproject_z`).

    ``pairs`` is :func:`_pairs` of the padded sinogram. Per output row the frames are summed in
    order into a float32 accumulator on the stack (vectorised over columns), then added to
    ``out``.
    """
    k, n = pairs.shape[0], out.shape[1]
    half = np.float32(0.5 * n)
    cen = np.float32(center)
    lo, hi = np.float32(-1.0), np.float32(n)
    low32, shift = np.uint64(0xFFFFFFFF), np.uint64(32)
    xs = np.arange(n).astype(np.float32)
    for r in prange(out.shape[0]):
        y = np.float32(r) - half
        acc = carray(_stack_f32(_Z_CHUNK), _Z_CHUNK)
        for c0 in range(0, n, _Z_CHUNK):
            m = min(_Z_CHUNK, n - c0)
            for col in range(m):
                acc[col] = 0
            for j in range(k):
                c, s = cos_t[j], sin_t[j]
                row = pairs[j]
                base = cen - y * s - half * c
                for col in range(m):
                    # padded coordinate u + 1 in [0, n + 1]: floor by truncation, no branch
                    u = min(max(xs[c0 + col] * c + base, lo), hi) + np.float32(1.0)
                    i = np.uint32(u)
                    f = u - np.float32(i)
                    both = row[i]
                    left = _as_f32(np.uint32(both & low32))
                    right = _as_f32(np.uint32(both >> shift))
                    acc[col] += (np.float32(1.0) - f) * left + f * right
            for col in range(m):
                out[r, c0 + col] += acc[col]


def backproject_z(filt, idx, cos_t, sin_t, weights, center, iz, out) -> None:
    """Add the backprojection of frames ``filt[idx]`` to the Z slice ``out`` (untilted).

    Parameters
    ----------
    filt : ndarray (P, nz, n), float32
        Filtered projections, best in the layout of :func:`frame_buffer` (other layouts work;
        :func:`backproject_yx` then copies the frames it uses).
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
    _z_from_pairs(_pairs(_sinogram(filt, idx, weights, iz)), cos_t, sin_t, center, out)


@njit(inline="always")
def _column_weights(n, u, w):
    """Detector columns ``a, a + 1`` and weights giving ``w * row(u)`` (linear, 0 off the row).

    ``a`` is kept in 0..n-2 so both columns exist (n >= 2); a weight is 0 for a column outside
    the interpolation.
    """
    u = min(max(u, np.float32(-1.0)), np.float32(n))
    i1 = np.int32(u + np.float32(1.0))                 # floor(u) + 1, as u + 1 >= 0
    f = u + np.float32(1.0) - np.float32(i1)
    i0 = i1 - 1
    a = min(max(i0, 0), max(n - 2, 0))
    g, h = (np.float32(1.0) - f) * w, f * w            # weights of columns i0 and i0 + 1
    zero = np.float32(0.0)
    g_in, h_in = 0 <= i0 < n, i0 + 1 < n               # i0 + 1 >= 0 always
    wa = (g if g_in and i0 == a else zero) + (h if h_in and i0 + 1 == a else zero)
    wb = (g if g_in and i0 != a else zero) + (h if h_in and i0 + 1 != a else zero)
    return a, wa, wb


@njit(parallel=True, cache=True)
def _vertical_tables(n, cos_t, sin_t, weights, center, iy, ix, col_a, w_a, w_b):
    """Per frame and output column of the Y (``[0]``) and X (``[1]``) slices: the two detector
    columns to interpolate and their weights (they do not depend on the detector row)."""
    half = np.float32(0.5 * n)
    cen = np.float32(center)
    y0 = np.float32(iy) - half
    x0 = np.float32(ix) - half
    for j in prange(cos_t.shape[0]):
        c, s, w = cos_t[j], sin_t[j], weights[j]
        base_y = cen - y0 * s - half * c
        base_x = cen + x0 * c + half * s
        for col in range(n):
            col_a[0, col, j], w_a[0, col, j], w_b[0, col, j] = _column_weights(
                n, np.float32(col) * c + base_y, w)
            col_a[1, col, j], w_a[1, col, j], w_b[1, col, j] = _column_weights(
                n, np.float32(col) * (-s) + base_x, w)


#: Detector rows of the vertical slices accumulated together [pixels]: the float32 sums of a
#: block (2 x n x _ROWS) stay in the L2 cache while the frames stream through once.
_ROWS = 128


@njit(parallel=True, cache=True, fastmath=_FAST)
def _vertical_from_columns(cols, idx, col_a, w_a, w_b, out_y, out_x):
    """``out_{y,x}[r, c] += sum_j w_a * cols[idx[j], a, r] + w_b * cols[idx[j], a + 1, r]``.

    ``cols`` is ``(P, n, nz)`` (frames stored by detector column). Work items are blocks of
    ``_ROWS`` detector rows; each frame's part of the block is read once for both slices, and
    every output pixel sums the frames in order into a float32 accumulator from contiguous
    column segments (vectorised over rows).
    """
    k = idx.shape[0]
    n, nz = cols.shape[1], cols.shape[2]
    nxt = np.uint64(nz if n > 1 else 0)
    flat = cols.reshape(cols.shape[0], n * nz)
    for b in prange((nz + _ROWS - 1) // _ROWS):
        r0 = b * _ROWS
        m = min(_ROWS, nz - r0)
        acc = np.zeros((2, n, m), np.float32)
        for j in range(k):
            frame = flat[idx[j]]
            for sl in range(2):
                for col in range(n):
                    first = np.uint64(col_a[sl, col, j]) * np.uint64(nz) + np.uint64(r0)
                    second = first + nxt
                    p, q = w_a[sl, col, j], w_b[sl, col, j]
                    sums = acc[sl, col]
                    for r in range(m):
                        sums[r] += p * frame[first + np.uint64(r)] + q * frame[second + np.uint64(r)]
        for col in range(n):
            for r in range(m):
                out_y[r0 + r, col] += acc[0, col, r]
                out_x[r0 + r, col] += acc[1, col, r]


def backproject_yx(filt, idx, cos_t, sin_t, weights, center, iy, ix, out_y, out_x) -> None:
    """Add the backprojection of frames ``filt[idx]`` to the Y and X slices (untilted).

    Detector row ``iz`` feeds row ``iz`` of both vertical slices at columns that do not depend
    on the row: they are tabulated once per frame, then whole column segments are combined.

    Parameters
    ----------
    filt, idx, cos_t, sin_t, weights, center
        As in :func:`backproject_z`.
    iy, ix : int [pixels]
        Positions of the Y slice (row of the Z slice) and the X slice (column).
    out_y, out_x : ndarray (nz, n), float64
        ``out_y[iz, ix']`` and ``out_x[iz, iy']`` accumulate.
    """
    k, n = idx.shape[0], filt.shape[2]
    col_a = np.empty((2, n, k), np.int32)
    w_a = np.empty((2, n, k), np.float32)
    w_b = np.empty((2, n, k), np.float32)
    _vertical_tables(n, cos_t, sin_t, weights, center, iy, ix, col_a, w_a, w_b)
    cols = filt.transpose(0, 2, 1)
    if not cols.flags.c_contiguous:                     # not a frame_buffer(): copy the frames used
        cols = np.ascontiguousarray(cols[idx])
        idx = np.arange(k, dtype=np.int32)
    _vertical_from_columns(cols, idx, col_a, w_a, w_b, out_y, out_x)


@njit(parallel=True, cache=True)
def backproject_points(filt, idx, cos_t, sin_t, weights, center, points, out):
    """Add the backprojection of frames ``filt[idx]`` at arbitrary sample points (tilted or zoomed
    slices).

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
