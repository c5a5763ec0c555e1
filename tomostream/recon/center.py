"""The rotation axis found from the projections of a 180-degree buffer, while the sample turns.

In parallel beam the projection at ``t + 180`` degrees is the one at ``t`` mirrored about the
axis: ``p(t + 180, u) = p(t, 2 center - u)`` for detector column ``u`` (the convention of
:mod:`.phantom` and the backprojection kernels: a point on the axis projects onto column
``center``, so ``center = n/2`` is the middle of an ``n``-column detector). A buffer that
holds one frame per slot over 180 degrees holds such a pair only at its *seam*: the frames
that end the half turn meet the mirror images of the frames that begin it, one slot apart.

:func:`find_seam` picks, at the seam, the last :data:`SIDE` frames of the half turn and the
first :data:`SIDE` (to be mirrored), with weights that extrapolate each side along the angle
(Lagrange polynomials through the frames' actual angles) to the angle where they meet, so the
sample's rotation between the two sides does not bias the axis. :func:`seam_center` then
finds the shift between one extrapolated side and the mirror image of the other by a
cross-correlation over detector rows that weighs each spatial frequency by its
signal-to-noise ratio (:func:`cross_spectrum`), refined to a small fraction of a pixel by
Newton steps on its exact Fourier series (:func:`mirror_shift`).

The device part (combining the frames, FFTs, the cross-power spectrum summed over rows) runs on
the array module ``xp`` given (NumPy or CuPy); the refinement works on the spectrum, a few
thousand numbers, in float64 on the host, so both backends give the same axis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tomostream.recon.filters import padded_length

#: Frames taken on each side of the seam: 3 extrapolate with a parabola, which keeps the bias
#: from the sample's rotation below 0.05 pixel with 5-degree slots.
SIDE = 3
#: Largest seam [degrees], in units of the median spacing of the frames: a wider one means the
#: buffer does not cover 180 degrees yet.
MAX_SEAM_STEPS = 2.5
#: Most detector rows the estimate uses (evenly spread); more add time, not accuracy.
MAX_ROWS = 256
#: Largest squared coherence a frequency is credited with (its weight is c^2 / (1 - c^2)).
MAX_COHERENCE = 0.99
#: Least normalised correlation of the two sides: below it the frames do not show one sample
#: (no sample in the beam, frames of another scan) and there is no estimate.
MIN_MATCH = 0.3


@dataclass(frozen=True)
class Seam:
    """The buffered frames that meet at the seam of a half turn, and how to combine them.

    Attributes
    ----------
    slots : ndarray (2 SIDE,), int64
        Buffer slots: first the frames that end the half turn, then those that begin it.
    weights : ndarray (2 SIDE,), float64
        Weight of each frame: each side's weighted sum is that side extrapolated to the angle
        where the two meet (each side's weights sum to 1).
    gap : float [degrees]
        Angle between the last frame and the mirror image of the first.
    """

    slots: np.ndarray
    weights: np.ndarray
    gap: float


def _lagrange(at: np.ndarray, x: float) -> np.ndarray:
    """Weights of the polynomial through the points ``at`` evaluated at ``x``."""
    w = np.ones(at.size)
    for i in range(at.size):
        for j in range(at.size):
            if i != j:
                w[i] *= (x - at[j]) / (at[i] - at[j])
    return w


def find_seam(angles: np.ndarray) -> Seam | None:
    """Where a buffer's frames close the half turn, if they cover it.

    Parameters
    ----------
    angles : ndarray (P,) [degrees]
        Angle of the frame in each slot (any value: a continuous rotation keeps counting), NaN
        for an empty slot.

    Returns
    -------
    Seam or None
        None while the frames do not span 180 degrees (the gap at the seam is wider than
        :data:`MAX_SEAM_STEPS` spacings), with fewer than ``2 SIDE`` frames, or when they
        span more than 180 degrees (frames of two half turns, which only the axis could tell
        apart).
    """
    angles = np.asarray(angles, dtype=np.float64)
    slots = np.nonzero(np.isfinite(angles))[0]
    if slots.size < 2 * SIDE:
        return None
    a = np.mod(angles[slots], 360.0)                   # p(t + 360) = p(t)
    order = np.argsort(a, kind="stable")
    a, slots = a[order], slots[order]
    gaps = np.diff(np.append(a, a[0] + 360.0))         # gaps[i]: from frame i to the next
    widest = int(np.argmax(gaps))
    start = (widest + 1) % a.size                      # the half turn begins after the widest gap
    a, slots = np.roll(a, -start), np.roll(slots, -start)
    t = np.mod(a - a[0], 360.0)                        # 0 .. span along the half turn
    gap = 180.0 - t[-1]
    steps = np.diff(t)
    if gap <= 0.0 or gap > MAX_SEAM_STEPS * float(np.median(steps)) or np.any(steps <= 0.0):
        return None
    meet = t[-1] + gap / 2.0
    last, first = t[-SIDE:], t[:SIDE] + 180.0
    return Seam(slots=np.concatenate([slots[-SIDE:], slots[:SIDE]]).astype(np.int64),
                weights=np.concatenate([_lagrange(last, meet), _lagrange(first, meet)]),
                gap=float(gap))


def frame_rows(height: int) -> np.ndarray:
    """The detector rows the estimate reads: all, or :data:`MAX_ROWS` evenly spread (int64)."""
    if height <= MAX_ROWS:
        return np.arange(height, dtype=np.int64)
    return np.unique(np.linspace(0, height - 1, MAX_ROWS).round().astype(np.int64))


def cross_spectrum(after, before, xp) -> np.ndarray:
    """Weighted cross-power spectrum of ``after`` and mirrored ``before`` over rows (on the host).

    Each spatial frequency is weighed by its signal-to-noise ratio ``c^2 / (1 - c^2)``, with
    ``c`` the coherence of the two sides at that frequency across detector rows (``c^2`` at
    most :data:`MAX_COHERENCE`): frequencies where the sample shows weigh, those where noise
    dominates do not, whatever the detector's size and the sample's detail (a fixed band tuned
    at 128^2 is noise at 2048^2). The mean (frequency 0) is left out, so an offset of the flat
    field does not pull the axis towards the middle of the detector.

    Parameters
    ----------
    after, before : array (rows, n), float32 or float64, on ``xp``'s device
        ``-log`` projections; ``after(u)`` is expected to equal ``before(2 center - u)``.
    xp : module
        ``numpy`` or ``cupy``.

    Returns
    -------
    ndarray (L/2 + 1,), complex128
        The weighted ``sum_rows rfft(after) * conj(rfft(before[:, ::-1]))`` (rows zero-padded
        to ``L = padded_length(n)``), scaled so that its correlation is at most 1, and 1 for
        two sides equal up to the shift.
    """
    length = padded_length(after.shape[-1])
    a = xp.fft.rfft(after.astype(xp.float64), n=length, axis=-1)
    b = xp.fft.rfft(before[:, ::-1].astype(xp.float64), n=length, axis=-1)
    sums = ((a * xp.conj(b)).sum(axis=0), (xp.abs(a) ** 2).sum(axis=0), (xp.abs(b) ** 2).sum(axis=0))
    spectrum, power_a, power_b = (np.asarray(v if xp is np else xp.asnumpy(v)) for v in sums)
    magnitude = np.abs(spectrum)
    tiny = np.finfo(np.float64).tiny
    coherence = np.minimum(magnitude ** 2 / np.maximum(power_a * power_b, tiny), MAX_COHERENCE)
    weight = coherence / (1.0 - coherence)
    weight[0] = 0.0
    # Cauchy-Schwarz: the weighted correlation is at most the geometric mean of the sides' own
    norm = math.sqrt(_series(power_a * weight, length, 0.0)[0] * _series(power_b * weight, length, 0.0)[0])
    return spectrum * weight / norm if norm > 0 else np.zeros_like(spectrum)


def _series(spectrum: np.ndarray, length: int, shifts, derivative: int = 0) -> np.ndarray:
    """``d^k/ds^k`` at ``s = shifts`` of the real correlation whose ``rfft`` is ``spectrum``."""
    k = np.arange(spectrum.size)
    phase = 2j * np.pi * k / length
    terms = np.where((k == 0) | (k == length // 2), 1.0, 2.0) / length * spectrum * phase ** derivative
    return (np.exp(np.multiply.outer(np.atleast_1d(np.asarray(shifts, dtype=np.float64)), phase))
            @ terms).real


def mirror_shift(spectrum: np.ndarray, length: int) -> tuple[float, float]:
    """Sub-pixel peak of a correlation given by its ``rfft`` (from :func:`cross_spectrum`).

    Returns
    -------
    shift : float [pixels]
        Where the correlation peaks, in ``-length/2 .. length/2``.
    match : float
        The normalised correlation there (1 for identical rows).
    """
    coarse = np.fft.irfft(spectrum, n=length)
    s = int(np.argmax(coarse))
    s = s - length if s > length // 2 else s
    grid = s + np.linspace(-1.0, 1.0, 33)
    t = float(grid[int(np.argmax(_series(spectrum, length, grid)))])
    for _ in range(4):                                  # Newton steps on the exact series
        d1, d2 = _series(spectrum, length, t, 1)[0], _series(spectrum, length, t, 2)[0]
        if d2 >= 0.0:
            break
        step = -d1 / d2
        t = min(max(t + step, s - 1.0), s + 1.0)
        if abs(step) < 1e-6:
            break
    return t, float(_series(spectrum, length, t)[0])


def seam_center(projections, seam: Seam, xp) -> float:
    """The rotation axis [pixels, detector column] from the seam's projections.

    Parameters
    ----------
    projections : array (2 SIDE, rows, n), float32, on ``xp``'s device
        ``-log`` of the flat-field normalised frames of ``seam.slots``, in that order (any
        rows, the same for all).
    seam : Seam
    xp : module
        ``numpy`` or ``cupy``.

    Returns
    -------
    float [pixels]
        The column of the axis, or NaN where the two sides do not match (see :data:`MIN_MATCH`).
    """
    n = projections.shape[-1]
    w = xp.asarray(seam.weights.astype(np.float32))[:, None, None]
    combined = projections * w
    after, before = combined[:SIDE].sum(axis=0), combined[SIDE:].sum(axis=0)
    spectrum = cross_spectrum(after, before, xp)
    shift, match = mirror_shift(spectrum, padded_length(n))
    if not match >= MIN_MATCH:
        return math.nan
    # after(u) = before(2 center - u) = reversed(u - shift) with reversed(v) = before(n - 1 - v)
    return (shift + n - 1) / 2.0
