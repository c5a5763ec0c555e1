"""Reconstruction filters for filtered backprojection, applied along detector rows.

Every filter is the ramp ``|f|`` times a window of the frequency ``f`` [cycles/pixel]
(Nyquist = 0.5). The ramp is the exact discrete one (Kak & Slaney, eq. 61): the Fourier
transform of the band-limited spatial kernel ``h[0] = 1/4``, ``h[odd k] = -1/(pi k)^2``,
which has no DC bias. Rows are zero-padded to at least twice their length so the circular
convolution of the FFT does not wrap around.
"""

from __future__ import annotations

import numpy as np

from tomostream.recon.params import canonical_filter


def padded_length(n: int) -> int:
    """FFT length [pixels] for rows of ``n`` pixels: the next power of two >= ``2 n``."""
    return 1 << int(np.ceil(np.log2(max(2 * n, 2))))


def _window(name: str, f: np.ndarray) -> np.ndarray:
    """Window of filter ``name`` at frequencies ``f`` in [0, 0.5] [cycles/pixel]."""
    x = f / 0.5                                                   # 0 .. 1 at Nyquist
    if name == "ramp":
        return np.ones_like(f)
    if name == "shepp-logan":
        return np.sinc(x / 2.0)                                   # sin(pi f) / (pi f)
    if name == "cosine":
        return np.cos(np.pi * x / 2.0)
    if name == "hann":
        return 0.5 + 0.5 * np.cos(np.pi * x)
    if name == "hamming":
        return 0.54 + 0.46 * np.cos(np.pi * x)
    if name == "parzen":
        return np.where(x <= 0.5, 1.0 - 6.0 * x**2 * (1.0 - x), 2.0 * (1.0 - x) ** 3)
    if name == "butterworth":                                     # order 8, cut-off at Nyquist (tomopy)
        return 1.0 / (1.0 + x**16)
    raise AssertionError(name)                                    # canonical_filter() screened names


def filter_window(name: str, n: int) -> np.ndarray:
    """Frequency response of filter ``name`` for rows of ``n`` pixels, on the ``rfft`` grid.

    Parameters
    ----------
    name : str
        One of :data:`tomostream.recon.FILTERS` (or a PV spelling such as ``"Shepp-logan"``).
    n : int [pixels]
        Detector row length.

    Returns
    -------
    ndarray, float32, shape (padded_length(n) // 2 + 1,)
        Multiply the ``rfft`` of a zero-padded row by this.

    Raises
    ------
    BadParameter
        Unknown filter name.
    """
    name = canonical_filter(name)
    size = padded_length(n)
    k = np.concatenate((np.arange(1, size // 2 + 1, 2), np.arange(size // 2 - 1, 0, -2)))
    h = np.zeros(size)
    h[0] = 0.25
    h[1::2] = -1.0 / (np.pi * k) ** 2
    ramp = np.fft.rfft(h).real                                    # ~ |f|, exact for the sampled kernel
    f = np.fft.rfftfreq(size)
    return (ramp * _window(name, f)).astype(np.float32)


def filter_rows(proj, window, xp=np, n: int | None = None):
    """Filter each detector row of ``proj`` with ``window`` (zero-padded FFT convolution).

    Parameters
    ----------
    proj : ndarray, float32, shape (..., n) or (..., padded_length(n))
        Projections after ``-log`` (NumPy or CuPy, matching ``xp``): rows of ``n`` pixels, or
        rows already zero-padded to the FFT length (then pass ``n``; no padded copy is made).
    window : ndarray, float32, shape (padded_length(n) // 2 + 1,)
        From :func:`filter_window`, on the same device as ``proj``.
    xp : module
        ``numpy`` or ``cupy``.
    n : int, optional [pixels]
        Row length when ``proj`` is already padded (default: ``proj.shape[-1]``).

    Returns
    -------
    ndarray, float32, shape (..., n)
        A view of the first ``n`` columns of the filtered, padded rows.
    """
    size = 2 * (window.shape[0] - 1)
    n = proj.shape[-1] if n is None else int(n)
    spectrum = xp.fft.rfft(proj, n=size, axis=-1)                  # n=size zero-pads short rows
    spectrum *= window
    return xp.fft.irfft(spectrum, n=size, axis=-1)[..., :n].astype(xp.float32, copy=False)
