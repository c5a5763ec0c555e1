"""Single-distance Paganin phase retrieval (Paganin et al. 2002, as in tomopy ``retrieve_phase``).

The filter acts on the normalised transmission before ``-log``::

    H(k) = 1 / (1 + lambda * distance * |k|^2 / (4 pi alpha)),   k = 2 pi * spatial frequency

All unit conversions of the project's phase parameters happen here.
"""

from __future__ import annotations

import numpy as np

#: h c [keV m]: wavelength [m] = HC_KEV_M / energy [keV].
HC_KEV_M = 1.23984198e-9
MM = 1e-3            # [m per mm]
UM = 1e-6            # [m per micrometre]


def paganin_filter(shape: tuple[int, int], energy: float, distance: float, alpha: float,
                   pixel_size: float) -> np.ndarray:
    """Paganin filter on the ``rfft2`` grid of a padded frame.

    Parameters
    ----------
    shape : (int, int) [pixels]
        Padded frame shape (rows, columns).
    energy : float [keV]
    distance : float [mm]
        Sample-to-detector distance.
    alpha : float
        Regularisation, > 0.
    pixel_size : float [micrometres]

    Returns
    -------
    ndarray, float32, shape (shape[0], shape[1] // 2 + 1)
    """
    wavelength = HC_KEV_M / energy
    dx = pixel_size * UM
    ky = 2 * np.pi * np.fft.fftfreq(shape[0], d=dx)
    kx = 2 * np.pi * np.fft.rfftfreq(shape[1], d=dx)
    k2 = ky[:, None] ** 2 + kx[None, :] ** 2
    return (1.0 / (1.0 + wavelength * distance * MM * k2 / (4 * np.pi * alpha))).astype(np.float32)


def padded_shape(nz: int, n: int) -> tuple[int, int]:
    """Frame shape [pixels] for the Paganin FFT: each side doubled, rounded up to even."""
    return (2 * nz + (nz % 2), 2 * n + (n % 2))


def apply_paganin(transmission, filt, xp=np):
    """Apply ``filt`` (from :func:`paganin_filter`) to frames of transmission.

    Parameters
    ----------
    transmission : ndarray, float32, shape (k, nz, n)
        Normalised frames (1 = no absorption).
    filt : ndarray, float32, shape (pz, pn // 2 + 1)
        On the device of ``transmission``; ``(pz, pn) = padded_shape(nz, n)``.
    xp : module
        ``numpy`` or ``cupy``.

    Returns
    -------
    ndarray, float32, shape (k, nz, n)
        Edge-padded before the transform so frame borders do not ring.
    """
    k, nz, n = transmission.shape
    pz, pn = filt.shape[0], 2 * (filt.shape[1] - 1)
    top, left = (pz - nz) // 2, (pn - n) // 2
    padded = xp.pad(transmission, ((0, 0), (top, pz - nz - top), (left, pn - n - left)), mode="edge")
    spectrum = xp.fft.rfft2(padded, axes=(-2, -1))
    spectrum *= filt
    out = xp.fft.irfft2(spectrum, s=(pz, pn), axes=(-2, -1))
    return out[:, top:top + nz, left:left + n].astype(xp.float32)
