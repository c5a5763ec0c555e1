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
finds the shift between the two extrapolated projections and their mirror image by a
cross-correlation over detector rows, band-limited to the derivative of the projections
(edges weigh, offsets and slow trends of the flat field do not), refined to a small fraction
of a pixel by Newton steps on its exact Fourier series.

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
#: Centre of the band of spatial frequencies the correlation weighs [cycles/pixel]: the
#: derivative (f^2) rolled off by exp(-(f / BAND)^2) against noise.
BAND = 0.08
#: Least normalised correlation of the two sides: below it the frames do not show one sample
#: (no sample in the beam, frames of another scan) and there is no estimate.
MIN_MATCH = 0.2


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


def _band(length: int) -> np.ndarray:
    """Weights of the ``rfft`` frequencies of ``length``-point rows: ``(2 pi f)^2 exp(-(f/BAND)^2)``."""
    f = np.arange(length // 2 + 1) / length
    return (2.0 * np.pi * f) ** 2 * np.exp(-((f / BAND) ** 2))


def cross_spectrum(after, before, xp) -> np.ndarray:
    """Cross-power spectrum of ``after`` and mirrored ``before``, summed over rows (on the host).

    Parameters
    ----------
    after, before : array (rows, n), float32 or float64, on ``xp``'s device
        ``-log`` projections; ``after(u)`` is expected to equal ``before(2 center - u)``.
    xp : module
        ``numpy`` or ``cupy``.

    Returns
    -------
    ndarray (L/2 + 1,), complex128
        ``sum_rows rfft(after) * conj(rfft(before[:, ::-1]))`` with rows zero-padded to
        ``L = padded_length(n)``, weighted by the band of :data:`BAND`.
    """
    length = padded_length(after.shape[-1])
    a = xp.fft.rfft(after.astype(xp.float64), n=length, axis=-1)
    b = xp.fft.rfft(before[:, ::-1].astype(xp.float64), n=length, axis=-1)
    spectrum = (a * xp.conj(b)).sum(axis=0)
    power = (xp.abs(a) ** 2).sum(axis=0), (xp.abs(b) ** 2).sum(axis=0)
    host = [np.asarray(xp.asnumpy(v) if hasattr(xp, "asnumpy") else v) for v in (spectrum, *power)]
    band = _band(length)
    # normalised so that the correlation of identical rows is 1 at their shift
    norm = math.sqrt(float(_series(host[1] * band, length, 0.0) * _series(host[2] * band, length, 0.0)))
    return host[0] * band / norm if norm > 0 else np.zeros_like(host[0])


def _series(spectrum: np.ndarray, length: int, shift: float, derivative: int = 0) -> float:
    """``d^k/ds^k`` at ``s = shift`` of the real correlation whose ``rfft`` is ``spectrum``."""
    k = np.arange(spectrum.size)
    w = np.where((k == 0) | (k == length // 2), 1.0, 2.0) / length
    phase = 2j * np.pi * k / length
    return float((w * spectrum * phase ** derivative * np.exp(phase * shift)).real.sum())


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
    t = float(grid[int(np.argmax([_series(spectrum, length, g) for g in grid]))])
    for _ in range(4):                                  # Newton steps on the exact series
        d1, d2 = _series(spectrum, length, t, 1), _series(spectrum, length, t, 2)
        if d2 >= 0.0:
            break
        step = -d1 / d2
        t = min(max(t + step, s - 1.0), s + 1.0)
        if abs(step) < 1e-6:
            break
    return t, _series(spectrum, length, t)


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
