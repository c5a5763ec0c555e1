"""Paganin phase retrieval on tomopy's scale: the same Alpha filters the same.

The reference is a transcription of tomopy's ``retrieve_phase`` formula (tomopy.prep.phase:
``_reciprocal_coord``, ``_paganin_filter_factor``, the filter divided by its maximum), in
tomopy's units (cm, keV) and with tomopy's constants.
"""

from __future__ import annotations

import numpy as np
import pytest

from tomostream.recon import paganin

# tomopy.prep.phase constants
TOMOPY_PI = 3.14159265359
SPEED_OF_LIGHT = 299792458e2        # [cm/s]
PLANCK_CONSTANT = 6.58211928e-19    # [keV s] (h-bar)

ENERGY = 20.0       # [keV]
DISTANCE = 100.0    # [mm]
PIXEL = 1.0         # [um]
#: An alpha at which the two scales differ clearly: at the Nyquist frequency tomopy's filter
#: is about 0.45, a radians-per-length grid would give about 0.02.
ALPHA = 0.1


def tomopy_wavelength(energy: float) -> float:
    """Wavelength [cm] at ``energy`` [keV], as tomopy computes it."""
    return 2 * TOMOPY_PI * PLANCK_CONSTANT * SPEED_OF_LIGHT / energy


def tomopy_factor(energy: float, dist: float, alpha: float, w2: np.ndarray) -> np.ndarray:
    """tomopy's unnormalised filter; ``dist`` [cm], ``w2`` [cycles^2 / cm^2]."""
    return 1 / (tomopy_wavelength(energy) * dist * w2 / (4 * TOMOPY_PI) + alpha)


def tomopy_grid(pixel_size: float, ny: int, nx: int) -> np.ndarray:
    """tomopy's squared reciprocal grid [1/cm^2] (centred; ``pixel_size`` [cm])."""
    def coord(num: int) -> np.ndarray:
        n = num - 1
        return np.arange(-n, num, 2, dtype=np.float64) * (0.5 / (n * pixel_size))
    return np.add.outer(coord(ny) ** 2, coord(nx) ** 2)


def tomopy_filter(shape, energy, distance_mm, alpha, pixel_um) -> np.ndarray:
    """tomopy's normalised filter on its own grid, in ``fft2`` order."""
    cm_pixel, cm_dist = pixel_um * 1e-4, distance_mm * 0.1
    f = np.fft.fftshift(tomopy_factor(energy, cm_dist, alpha, tomopy_grid(cm_pixel, *shape)))
    return f / f.max()


def disc_frame(nz=40, n=64) -> np.ndarray:
    """Transmission of a weakly absorbing disc (sharp edges: where phase retrieval acts)."""
    y, x = np.mgrid[:nz, :n]
    inside = (x - n / 2) ** 2 + (y - nz / 2) ** 2 < 12 ** 2
    return np.where(inside, 0.9, 1.0).astype(np.float32)[None]


def test_filter_is_tomopys_formula_in_cycles_per_length():
    shape = paganin.padded_shape(40, 64)
    ours = paganin.paganin_filter(shape, ENERGY, DISTANCE, ALPHA, PIXEL)
    cm = PIXEL * 1e-4
    w2 = np.fft.fftfreq(shape[0], d=cm)[:, None] ** 2 + np.fft.rfftfreq(shape[1], d=cm)[None, :] ** 2
    theirs = tomopy_factor(ENERGY, DISTANCE * 0.1, ALPHA, w2)
    theirs /= theirs.max()
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)
    assert 0.2 < ours.min() < 0.6     # the chosen alpha filters, but far from 4 pi^2 harder


def test_phase_retrieval_matches_tomopy_and_not_the_radian_scale():
    frame = disc_frame()
    shape = paganin.padded_shape(*frame.shape[1:])
    ours = paganin.apply_paganin(frame, paganin.paganin_filter(shape, ENERGY, DISTANCE, ALPHA, PIXEL))

    def apply_full(filt):
        nz, n = frame.shape[1:]
        top, left = (shape[0] - nz) // 2, (shape[1] - n) // 2
        padded = np.pad(frame[0], ((top, shape[0] - nz - top), (left, shape[1] - n - left)), mode="edge")
        out = np.real(np.fft.ifft2(np.fft.fft2(padded) * filt))
        return out[top:top + nz, left:left + n]

    theirs = apply_full(tomopy_filter(shape, ENERGY, DISTANCE, ALPHA, PIXEL))
    # radians per length: the same alpha 4 pi^2 weaker
    radians = apply_full(tomopy_filter(shape, ENERGY, DISTANCE, ALPHA / (4 * np.pi ** 2), PIXEL))
    contrast = float(frame.max() - frame.min())
    err = np.abs(ours[0] - theirs).max() / contrast
    err_radians = np.abs(ours[0] - radians).max() / contrast
    assert err < 0.01 < 0.1 < err_radians


@pytest.mark.parametrize("alpha", [1e-3, 1e-2, ALPHA])
def test_alpha_scales_the_cut_off(alpha):
    """Filter = 1/2 where lambda d w^2 / (4 pi) = alpha."""
    shape = (2, 4096)
    filt = paganin.paganin_filter(shape, ENERGY, DISTANCE, alpha, PIXEL)[0]
    w = np.fft.rfftfreq(shape[1], d=PIXEL * paganin.UM)
    wavelength = paganin.HC_KEV_M / ENERGY
    w_half = np.sqrt(4 * np.pi * alpha / (wavelength * DISTANCE * paganin.MM))
    assert w_half < w[-1]
    assert np.interp(w_half, w, filt) == pytest.approx(0.5, abs=0.01)
