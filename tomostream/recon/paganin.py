"""Single-distance Paganin phase retrieval (Paganin et al. 2002), on tomopy's scale.

The filter acts on the normalised transmission before ``-log``::

    H(w) = 1 / (1 + lambda * distance * |w|^2 / (4 pi alpha))

with ``w`` the spatial frequency in *cycles* per length (``numpy.fft.fftfreq``), not radians
per length. This is tomopy's ``retrieve_phase`` (its ``1 / (lambda d w^2 / (4 pi) + alpha)``
divided by its value at ``w = 0``), so an ``alpha`` carried over from tomopy, tomocupy or the
APS tomostream filters the same: a grid in radians per length would filter 4 pi^2 (about 39)
times harder for the same ``alpha``.

The filter is computed here, on the host, and copied to the device of the frames: the NumPy
and CuPy backends use the same array and the same :func:`apply_paganin`. All unit conversions
of the project's phase parameters happen here.
"""

from __future__ import annotations

import numpy as np

#: h c [keV m]: wavelength [m] = HC_KEV_M / energy [keV].
HC_KEV_M = 1.23984198e-9
MM = 1e-3            # [m per mm]
UM = 1e-6            # [m per micrometre]


def paganin_filter(shape: tuple[int, int], energy: float, distance: float, alpha: float,
                   pixel_size: float) -> np.ndarray:
    """Paganin filter on the ``rfft2`` grid of a padded frame, as tomopy defines it.

    ``H = 1 / (1 + lambda * distance * w^2 / (4 pi alpha))``, ``w`` [cycles/m] the spatial
    frequency of each ``rfft2`` bin, ``lambda`` [m] the wavelength at ``energy``.

    Parameters
    ----------
    shape : (int, int) [pixels]
        Padded frame shape (rows, columns).
    energy : float [keV]
    distance : float [mm]
        Sample-to-detector distance.
    alpha : float
        Regularisation, > 0, on tomopy's scale (``retrieve_phase(..., alpha=...)``).
    pixel_size : float [micrometres]

    Returns
    -------
    ndarray, float32, shape (shape[0], shape[1] // 2 + 1)
    """
    wavelength = HC_KEV_M / energy
    dx = pixel_size * UM
    wy = np.fft.fftfreq(shape[0], d=dx)            # [cycles/m]
    wx = np.fft.rfftfreq(shape[1], d=dx)
    w2 = wy[:, None] ** 2 + wx[None, :] ** 2
    return (1.0 / (1.0 + wavelength * distance * MM * w2 / (4 * np.pi * alpha))).astype(np.float32)


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
