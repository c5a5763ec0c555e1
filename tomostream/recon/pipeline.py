"""Per-frame processing of the engine: raw frames -> filtered projections.

Dark/flat normalisation, optional dezinger and Paganin phase retrieval, ``-log``, optional
ring removal (:mod:`.rings`) and the row filter, on one backend's device. The same code runs
on NumPy and CuPy (``xp``); only the normalisation kernel differs (numba / CUDA, same
signature).
"""

from __future__ import annotations

from tomostream.recon import paganin, rings
from tomostream.recon._cpu_kernels import MIN_TRANSMISSION
from tomostream.recon.backend import Backend
from tomostream.recon.filters import filter_rows, filter_window, padded_length
from tomostream.recon.params import ReconParams


class FramePipeline:
    """Raw frames -> filtered projections, with the state that depends on: the dark and flat
    fields, the stripe estimate of ring removal, and the filters made for the parameters.

    Parameters
    ----------
    be : Backend
        Where the frames and the state live.
    width, height : int [pixels]
        Detector columns ``n`` and rows ``nz``.
    slots : int
        Slots of the frame buffer (for the stripe estimate's running sum).

    Attributes
    ----------
    dark, flat : ndarray (nz, n) float32 [counts]
        The fields frames are normalised with, on the device (zeros and ones until set).
    stripes : rings.StripeEstimate
        Running sum of the buffered raw frames and the stripe estimate made from it.
    """

    def __init__(self, be: Backend, width: int, height: int, slots: int) -> None:
        xp = be.xp
        self.be, self.width, self.height = be, int(width), int(height)
        self.dark = xp.zeros((self.height, self.width), dtype=xp.float32)
        self.flat = xp.ones((self.height, self.width), dtype=xp.float32)
        self.stripes = rings.StripeEstimate(xp, be.ndimage, slots, (self.height, self.width))
        self._window: tuple | None = None        # (filter name, device window)
        self._phase: tuple | None = None         # ((energy, distance, alpha, pixel size), device filter)

    def key(self, params: ReconParams) -> tuple:
        """What the absorption of a frame depends on besides the frame (see
        :meth:`rings.StripeEstimate.profile`)."""
        return params, self.dark, self.flat

    def process(self, raw, params: ReconParams, bad):
        """Raw frames (k, nz, n) on the device -> filtered projections float32 (k, nz, n).

        ``bad`` (1-element device counter) accumulates the number of non-finite raw pixels.
        """
        out = self.absorption(raw, params, bad)
        if params.ring_removal != "none":
            self.stripes.subtract(out, lambda mean: self.absorption(mean, params),
                                  self.key(params))
        if self._window is None or self._window[0] != params.filter:
            self._window = params.filter, self.be.asarray(filter_window(params.filter, self.width))
        return filter_rows(out, self._window[1], self.be.xp, n=self.width)

    def absorption(self, raw, params: ReconParams, bad=None):
        """Raw frames (k, nz, n) on the device -> ``-log`` of their transmission, float32
        (k, nz, n), or rows zero-padded for the filter's FFT (k, nz, padded_length(n)).

        ``bad``: the non-finite pixel counter to add to (a scratch one when None).
        """
        p, xp, be = params, self.be.xp, self.be
        if bad is None:
            bad = be.counter()
        if p.dezinger > 0:
            f = raw.astype(xp.float32)
            size = 2 * p.dezinger + 1
            med = be.ndimage.median_filter(f, size=(1, size, size), mode="nearest")
            raw = xp.where(f - med > p.dezinger_threshold * xp.abs(med), med, f)
        phase = p.alpha > 0
        # without phase retrieval the rows are normalised straight into the FFT's zero padding
        width = self.width if phase else padded_length(self.width)
        out = xp.empty(raw.shape[:2] + (width,), dtype=xp.float32)
        be.kernels.preprocess(raw, self.dark, self.flat, not phase, out, bad)
        if phase:
            key = (p.energy, p.distance, p.alpha, p.pixel_size)
            if self._phase is None or self._phase[0] != key:
                shape = paganin.padded_shape(self.height, self.width)
                self._phase = key, be.asarray(paganin.paganin_filter(shape, *key))
            t = paganin.apply_paganin(out, self._phase[1], xp)
            out = -xp.log(xp.maximum(t, MIN_TRANSMISSION))
        return out

    def log_rows(self, raw, rows):
        """``-log`` of the normalised transmission of frames ``raw`` (k, r, n) on the device,
        cut from detector ``rows`` (device ints, r of them), float32 (k, r, n): dark and flat
        only, no dezinger, phase retrieval, ring removal or filter."""
        out = self.be.xp.empty(raw.shape, dtype=self.be.xp.float32)
        self.be.kernels.preprocess(raw, self.dark[rows], self.flat[rows], True, out, self.be.counter())
        return out
