"""Ring removal in the stream: column stripes estimated from the buffer's mean frame.

A detector column that answers the beam through the sample differently from how it answered
the flat field stays too bright or too dark after normalisation, at every angle: a vertical
stripe in each sinogram, a ring about the rotation axis in the slices. The stripe is what a
column keeps *at every angle* beyond its neighbours. So, for the frames of the 180-degree
buffer (exactly the frames the slices are made of),

1. ``mean`` is the buffer's mean raw frame, from a running sum: a frame entering a slot is
   added, the frame it replaces subtracted, so the work per frame is a frame, not the buffer;
2. ``m`` is that mean turned into absorption exactly as each frame is (dark/flat, dezinger,
   phase retrieval, ``-log``);
3. along each detector row, ``d = m - gaussian(m)`` (:data:`SMOOTHING`) is the column detail,
   the sample's slopes and curvature gone with the smooth part, and ``s = d - median(d)``
   (:data:`MEDIAN_WIDTH` columns) what stands out of that detail, the smooth remains of the
   sample's edges gone with the median: the stripe estimate (:func:`stripe_profile`);
4. ``s`` is subtracted from the absorption of every frame before the ramp filter.

The estimate (about one frame's work: the mean frame processed, a Gaussian and a median) is
made again once the frames that entered the buffer since it was made reach :data:`REFRESH`
of the buffered frames, so per frame ring removal costs the running sum (a frame added, the
one it replaces subtracted), the subtraction, and a small share of an estimate.

Relation to Fourier-wavelet removal (fw: Muench et al. 2009, tomopy's ``remove_stripe_fw``,
tomocupy): fw splits each sinogram into detail bands along the detector (wavelets) and damps
their low frequencies along the angle (a Gaussian notch about frequency 0): it removes the
column detail that changes slowly with angle, and needs the whole sinogram. The estimate here
is the part of it that does not change at all, the mean over the buffer's 180 degrees, with a
Gaussian and a median instead of wavelets to tell stripes from the sample, as in the
smoothing-filter and filtering methods (tomopy's ``remove_stripe_sf``, Vo et al. 2018). Needing
only the mean over angles, it follows the stream at a fraction of a frame's work per frame.
It removes stripes up to ``MEDIAN_WIDTH // 2`` columns wide; wider ones, and stripes that come
and go within the buffer's time, stay. Like fw, it also takes away sample structure that is the
same at every angle and sharp: edges centred on the rotation axis.

Stripes from gain errors are offsets after ``-log`` (``-log(g T) = -log T - log g``), and the
mean raw frame carries them exactly: normalisation is affine per pixel, so ``-log`` of the
mean transmission has the same column offsets as the mean of the frames' ``-log``.

Frames already in the buffer keep the estimate they were corrected with. Once the buffer is
full the stripes in the estimate stay as they are; only the little of the sample that leaks
into it changes as the buffer turns (a half-turn's mean sees a sample differently from one
half-turn to the next) or as the sample changes. While the buffer fills, each
time the frames behind the estimate have doubled since the buffer was last corrected as a
whole, :meth:`StripeEstimate.track` asks for the whole buffer to be corrected again (one
re-processing, as after a change of filter): every buffered frame then has an estimate made
from at least half the frames buffered, for about two buffers' worth of re-processing in all.

Written against the array module ``xp`` (``numpy`` or ``cupy``) and its ``ndimage``, so both
backends run the same code and give the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tomostream.errors import BadParameter

#: Ring-removal methods (the RingRemoval PV's states, lower case).
RING_REMOVALS: tuple[str, ...] = ("none", "fw")
#: Standard deviation [pixels] of the Gaussian smoothing that separates a row's column detail
#: from the sample's smooth profile.
SMOOTHING = 3.0
#: Columns [pixels] of the median that separates stripes from the rest of the detail: stripes
#: up to ``MEDIAN_WIDTH // 2`` columns wide are taken out.
MEDIAN_WIDTH = 5
#: Frames summed at a time when the running sum is counted again from the buffer.
RECOUNT_CHUNK = 32
#: The estimate is made again once the frames that entered the buffer since it was made reach
#: this fraction of the buffered frames (at every push while fewer than its inverse are held).
REFRESH = 1 / 32


def canonical_ring_removal(name: str) -> str:
    """Canonical spelling of ring-removal method ``name`` (``"None"`` -> ``"none"``).

    Raises
    ------
    BadParameter
        ``name`` is not one of :data:`RING_REMOVALS` (any case).
    """
    if isinstance(name, str) and name.lower() in RING_REMOVALS:
        return name.lower()
    raise BadParameter(f"ring_removal={name!r} is not one of {RING_REMOVALS} (RingRemoval: None, fw)")


def stripe_profile(absorption, ndimage, sigma: float = SMOOTHING, width: int = MEDIAN_WIDTH):
    """Stripes of a mean absorption frame: what each column has beyond its neighbours.

    Two steps along each detector row: ``d = absorption - gaussian(absorption, sigma)``, the
    column detail (the sample's slopes and curvature go with the smooth part), then
    ``d - median(d, width)``, what stands out of that detail against the ``width - 1``
    nearest columns (the smooth remains of the sample's edges go with the median).

    Parameters
    ----------
    absorption : ndarray, float32, shape (nz, n) [-log transmission]
        Mean over angles of the frames' absorption (NumPy or CuPy).
    ndimage : module
        ``scipy.ndimage`` or ``cupyx.scipy.ndimage``, matching ``absorption``.
    sigma : float [pixels]
        Standard deviation of the Gaussian smoothing along rows.
    width : int [pixels]
        Columns of the median along rows.

    Returns
    -------
    ndarray, float32, shape (nz, n)
        Edges: the nearest column repeated.
    """
    detail = absorption - ndimage.gaussian_filter1d(absorption, sigma, axis=1, mode="nearest")
    stripes = detail - ndimage.median_filter(detail, size=(1, width), mode="nearest")
    return stripes.astype(absorption.dtype, copy=False)


def _frame_sum(frames, xp):
    """Sum of ``frames`` (k, nz, n) over k in float64 (exact for integer counts); non-finite
    pixels count as 0."""
    if frames.dtype.kind == "f":
        frames = xp.where(xp.isfinite(frames), frames, 0)
    return frames.sum(axis=0, dtype=xp.float64)


class StripeEstimate:
    """Running sum of the buffered raw frames and the stripe estimate made from it.

    Parameters
    ----------
    xp : module
        ``numpy`` or ``cupy``: where the sum lives.
    ndimage : module
        ``scipy.ndimage`` or ``cupyx.scipy.ndimage``.
    slots : int
        Slots of the buffer.
    shape : (int, int) [pixels]
        Frame ``(nz, n)``.

    Notes
    -----
    The sum covers the slots this object has been told about (:meth:`track`); when they differ
    from the buffer's occupied slots (the buffer was emptied, or moved to another device) it is
    counted again from the raw buffer, as it is whenever the whole buffer is re-processed.
    """

    def __init__(self, xp, ndimage, slots: int, shape: tuple[int, int]):
        self.xp, self.ndimage, self.shape = xp, ndimage, tuple(shape)
        self._sum = xp.zeros(self.shape, dtype=xp.float64)
        self._in_sum = np.zeros(int(slots), dtype=bool)
        self._basis = 0                 # frames in the sum when the buffer was last corrected whole
        self._changed = 0               # frames that entered the sum since the estimate was made
        self._cache: tuple | None = None

    @property
    def count(self) -> int:
        """Frames in the sum."""
        return int(self._in_sum.sum())

    @property
    def total(self):
        """The running sum ``(nz, n)`` float64 [counts] of the frames in it, on the device: to
        read, never to write."""
        return self._sum

    def forget(self) -> None:
        """Have the estimate made again at its next use (:meth:`profile`)."""
        self._cache = None

    def sync(self, raw, occupied: np.ndarray) -> None:
        """Count the sum again over the ``occupied`` slots of ``raw`` (a pass over the buffer:
        it may have changed while ring removal was off); say the whole buffer is about to be
        corrected with the next estimate.

        Parameters
        ----------
        raw : ndarray (p, nz, n) [counts]
            The raw frame buffer.
        occupied : ndarray of bool, shape (p,)
            Slots holding a frame.
        """
        self._sum.fill(0)
        slots = np.nonzero(occupied)[0]
        for start in range(0, slots.size, RECOUNT_CHUNK):
            idx = self.xp.asarray(slots[start:start + RECOUNT_CHUNK])
            self._sum += _frame_sum(raw[idx], self.xp)
        self._in_sum[:] = occupied
        self._basis = self.count
        self.forget()                   # the whole buffer is corrected with an estimate made now

    def track(self, raw, occupied: np.ndarray, slots: np.ndarray, old_slots, frames) -> bool:
        """Account for ``frames`` entering ``slots`` (call before they overwrite ``raw``).

        Parameters
        ----------
        raw : ndarray (p, nz, n) [counts]
            The raw frame buffer, still holding the frames to be replaced.
        occupied : ndarray of bool, shape (p,)
            Slots holding a frame before this batch.
        slots : ndarray of int, shape (k,)
            Slots of ``frames`` (host), each once.
        old_slots : ndarray of int32
            Those of ``slots`` that are occupied, on the device of ``raw``.
        frames : ndarray (k, nz, n) [counts]
            The new raw frames, on the device of ``raw``.

        Returns
        -------
        bool
            Whether the whole buffer should now be corrected with the new estimate (the frames
            behind it have doubled since the buffer was last corrected as a whole).
        """
        if not np.array_equal(self._in_sum, occupied):
            self.sync(raw, occupied)
        before = self.count
        if old_slots.size:
            self._sum -= _frame_sum(raw[old_slots], self.xp)
        self._sum += _frame_sum(frames, self.xp)
        self._in_sum[slots] = True
        self._changed += len(slots)
        if before == 0:
            self._basis = self.count
            return False
        if self.count >= 2 * self._basis:
            self._basis = self.count
            return True
        return False

    def profile(self, absorption: Callable, key: tuple):
        """The stripe estimate (nz, n) float32 on the device, made again when ``key`` changed,
        the buffer is about to be corrected whole, or the frames that entered since it was made
        reach :data:`REFRESH` of the frames buffered.

        Parameters
        ----------
        absorption : callable
            ``absorption(raw)``: raw frames (1, nz, n) float32 [counts] -> their absorption
            (1, nz, m >= n) float32, as the frames are processed.
        key : tuple
            What ``absorption`` depends on besides its input (parameters, compared by value;
            dark and flat arrays, compared by identity).
        """
        cached = self._cache
        if (cached is not None and self._changed < max(1.0, REFRESH * self.count)
                and cached[0][0] == key[0]
                and all(a is b for a, b in zip(cached[0][1:], key[1:], strict=True))):
            return cached[1]
        n = self.shape[1]
        mean = (self._sum / max(self.count, 1)).astype(self.xp.float32)[None]
        m = self.xp.ascontiguousarray(absorption(mean)[0, :, :n])
        s = stripe_profile(m, self.ndimage)
        self._cache, self._changed = (key, s), 0
        return s

    def subtract(self, frames, absorption: Callable, key: tuple) -> None:
        """Subtract the stripe estimate from the absorption ``frames`` (k, nz, m >= n), in place
        (columns from ``n`` on, the FFT's zero padding, are left alone); see :meth:`profile`."""
        if self.count:
            frames[..., :self.shape[1]] -= self.profile(absorption, key)
