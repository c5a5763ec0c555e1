"""The simulated detector's response, pixel by pixel: column gain errors, noise, binning.

Plain array functions with explicit parameters; :class:`~tomostream.sim.detector.FrameSource`
applies them to its frames.
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: Relative gain error [fraction] of a miscalibrated column: drawn uniformly from this range,
#: with a random sign.
COLUMN_ERROR_RANGE = (0.02, 0.1)


@njit(cache=True, nogil=True)
def fused_noise(clean, dark, z, gain2, read2, top, out):  # pragma: no cover - compiled
    """out = clip(rint(clean + sqrt(max(clean - dark, 0) * gain2 + read2) * z), 0, top), one pass.

    All arrays 1-D of equal length; ``top <= 0`` means a float output (no rounding, no clip).
    """
    for i in range(clean.size):
        c = np.float32(clean[i])
        s = c - dark[i]
        if s < 0:
            s = np.float32(0)
        v = c + np.sqrt(s * gain2 + read2) * z[i]
        if top > 0:
            v = np.rint(v)
            if v < 0:
                v = 0
            elif v > top:
                v = top
        out[i] = v


def column_gain(width: int, fraction: float, seed: int) -> np.ndarray:
    """Gain of each detector column in the projections relative to the flat field.

    A ``fraction`` of the columns, chosen at random, are miscalibrated: each has a gain
    ``1 +/- e`` (random sign) with ``e`` drawn uniformly from :data:`COLUMN_ERROR_RANGE`; the
    others have gain 1. The draws come from a generator of their own seeded by ``seed``, so
    the other random patterns of the detector stay as they are, and a given seed always
    picks the same columns.

    Parameters
    ----------
    width : int [pixels]
    fraction : float [0..1]
        Fraction of miscalibrated columns; 0 gives ones.
    seed : int

    Returns
    -------
    ndarray, float32, shape (width,)
    """
    rng = np.random.default_rng([seed, 0xC0])
    bad = rng.random(width) < fraction
    size = rng.uniform(*COLUMN_ERROR_RANGE, width) * rng.choice((-1.0, 1.0), width)
    return np.where(bad, 1.0 + size, 1.0).astype(np.float32)


def bin_frame(frame: np.ndarray, b: int) -> np.ndarray:
    """Mean of ``b x b`` blocks, as float32 (``b = 1`` returns the frame as float32)."""
    f = np.asarray(frame, dtype=np.float32)
    if b == 1:
        return f
    h, w = f.shape
    return f.reshape(h // b, b, w // b, b).mean(axis=(1, 3), dtype=np.float32)
