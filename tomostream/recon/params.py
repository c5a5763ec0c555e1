"""Reconstruction parameters: one frozen dataclass, validated on every change.

Units are stated per field; conversions to SI happen in :mod:`tomostream.recon.paganin` only.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from tomostream.errors import BadParameter
from tomostream.recon.rings import canonical_ring_removal

#: Canonical filter names (lower case), in the order the documentation lists them.
FILTERS: tuple[str, ...] = ("ramp", "shepp-logan", "parzen", "butterworth", "hann", "hamming", "cosine")

#: Other accepted spellings (the FilterType PV of the TomoStream IOC uses these).
FILTER_ALIASES: dict[str, str] = {
    "Ramp": "ramp", "Shepp-logan": "shepp-logan", "Parzen": "parzen", "Butterworth": "butterworth",
}

#: Largest dezinger median radius [pixels] (the Dezinger PV offers 2, 3, 4).
MAX_DEZINGER_RADIUS = 4
#: Default dezinger threshold, relative to the local median: a raw pixel more than 30% above
#: the median of its neighbourhood is a zinger. Relative, so one value serves 8-, 12- and
#: 16-bit cameras and float frames alike; at a median of m photons the noise is sqrt(m), so
#: 0.3 m is beyond 3 sigma from m = 100 photons up.
DEZINGER_THRESHOLD = 0.3
#: Largest software zoom of the slices (the Zoom PV offers 1..16).
MAX_ZOOM = 16.0


def canonical_filter(name: str) -> str:
    """Return the canonical spelling of filter ``name``.

    Raises
    ------
    BadParameter
        ``name`` is not one of :data:`FILTERS` (any case) or :data:`FILTER_ALIASES`.
    """
    if isinstance(name, str):
        if name in FILTER_ALIASES:
            return FILTER_ALIASES[name]
        if name.lower() in FILTERS:
            return name.lower()
    valid = ", ".join(FILTERS + tuple(FILTER_ALIASES))
    raise BadParameter(f"filter={name!r} is not a known filter; valid: {valid}")


@dataclass(frozen=True)
class ReconParams:
    """Parameters of the ortho-slice reconstruction.

    Parameters
    ----------
    center : float [pixels]
        Detector column of the rotation axis (``None`` at construction means ``width / 2``).
    filter : str
        Reconstruction filter, one of :data:`FILTERS`.
    ortho : (int, int, int) [pixels]
        Slice positions ``(ix, iy, iz)``: the X slice at column ``ix``, the Y slice at row
        ``iy`` of the Z slice, the Z slice at detector row ``iz``.
    rot : (float, float, float) [degrees]
        ``(rx, ry, rz)``, each turning its own slice only (as the APS TomoStream): the X and
        the Y slice about the vertical rotation axis through the volume centre, the Z slice
        about the horizontal y direction through the volume centre (see
        :func:`~tomostream.recon.geometry.slice_points`); ``(0, 0, 0)`` gives untilted slices.
    zoom : float [1]
        Software magnification of the three slices, 1..:data:`MAX_ZOOM`: each covers a field
        ``1 / zoom`` as wide centred on the point where the slices cross (as far as the volume
        allows), sampled ``zoom`` times finer, with the same number of pixels (see
        :func:`~tomostream.recon.geometry.slice_points`); 1 gives the whole slices.
    dezinger : int [pixels]
        Median radius of the outlier filter applied to raw frames; 0 turns it off.
    dezinger_threshold : float [fraction of the local median]
        A raw pixel ``f`` with ``f - median > dezinger_threshold * |median|`` (median over the
        ``(2 dezinger + 1)^2`` pixels around it) is replaced by the median; relative, so it
        means the same for any bit depth.
    energy : float [keV]
        Photon energy, for Paganin phase retrieval.
    distance : float [mm]
        Sample-to-detector distance, for Paganin phase retrieval.
    alpha : float
        Paganin regularisation on the scale of tomopy's ``retrieve_phase`` (filter
        ``1 / (1 + lambda distance w^2 / (4 pi alpha))``, ``w`` in cycles per length), so
        values from tomopy / tomocupy mean the same here; 0 turns phase retrieval off.
    pixel_size : float [micrometres]
        Detector pixel size at the sample, for Paganin phase retrieval.
    ring_removal : {"none", "fw"}
        ``"fw"`` subtracts from every frame the column stripes of the buffer's mean frame
        (:mod:`tomostream.recon.rings`), the streaming counterpart of Fourier-wavelet stripe
        removal; the RingRemoval PV's spellings (``"None"``) are accepted.
    """

    center: float
    filter: str = "parzen"
    ortho: tuple[int, int, int] = (0, 0, 0)
    rot: tuple[float, float, float] = (0.0, 0.0, 0.0)
    zoom: float = 1.0
    dezinger: int = 0
    dezinger_threshold: float = DEZINGER_THRESHOLD
    energy: float = 20.0
    distance: float = 100.0
    alpha: float = 0.0
    pixel_size: float = 1.0
    ring_removal: str = "none"

    #: Fields whose change requires re-processing the raw frames (not only re-backprojecting).
    PROCESSING = ("filter", "dezinger", "dezinger_threshold", "energy", "distance", "alpha", "pixel_size",
                  "ring_removal")

    def replace(self, width: int, height: int, **changes) -> ReconParams:
        """Return a validated copy with ``changes`` applied.

        Parameters
        ----------
        width, height : int [pixels]
            Detector size, bounding ``ortho``.
        **changes
            Any field of this class.

        Raises
        ------
        BadParameter
            An unknown field or an invalid value; the message names both.
        """
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise BadParameter(f"unknown reconstruction parameter(s) {unknown}; valid: {sorted(names)}")
        values = {**dataclasses.asdict(self), **changes}
        return _validated(values, width, height)


def _finite(name: str, value, low: float = -math.inf, high: float = math.inf,
            low_open: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise BadParameter(f"{name}={value!r} is not a number") from None
    if not math.isfinite(v) or v < low or v > high or (low_open and v == low):
        bound = f"> {low}" if low_open else f"in [{low}, {high}]"
        raise BadParameter(f"{name}={value!r} must be finite and {bound}")
    return v


def _triple(name: str, value) -> tuple:
    try:
        items = tuple(value)
    except TypeError:
        raise BadParameter(f"{name}={value!r} must be a sequence of 3 numbers") from None
    if len(items) != 3:
        raise BadParameter(f"{name}={value!r} must have 3 elements")
    return items


def _validated(v: dict, width: int, height: int) -> ReconParams:
    center = _finite("center", v["center"], -width, 2 * width)
    ortho_in = _triple("ortho", v["ortho"])
    ortho = []
    for axis, value, size in zip("xyz", ortho_in, (width, width, height), strict=True):
        f = _finite(f"ortho {axis}", value)
        if f != int(f) or not 0 <= f < size:
            raise BadParameter(f"ortho {axis}={value!r} must be an integer in 0..{size - 1}")
        ortho.append(int(f))
    rot = tuple(_finite(f"rot {axis}", r, -360.0, 360.0) for axis, r in zip("xyz", _triple("rot", v["rot"]),
                                                                           strict=True))
    dz = _finite("dezinger", v["dezinger"], 0, MAX_DEZINGER_RADIUS)
    if dz != int(dz):
        raise BadParameter(f"dezinger={v['dezinger']!r} must be an integer radius 0..{MAX_DEZINGER_RADIUS}")
    return ReconParams(
        center=center,
        filter=canonical_filter(v["filter"]),
        ortho=tuple(ortho),
        rot=rot,
        zoom=_finite("zoom", v["zoom"], 1.0, MAX_ZOOM),
        dezinger=int(dz),
        dezinger_threshold=_finite("dezinger_threshold", v["dezinger_threshold"], 0.0, low_open=True),
        energy=_finite("energy", v["energy"], 0.0, low_open=True),
        distance=_finite("distance", v["distance"], 0.0),
        alpha=_finite("alpha", v["alpha"], 0.0),
        pixel_size=_finite("pixel_size", v["pixel_size"], 0.0, low_open=True),
        ring_removal=canonical_ring_removal(v["ring_removal"]),
    )


def default_params(width: int, height: int) -> ReconParams:
    """Parameters for a ``width`` x ``height`` detector: axis at ``width/2``, slices through the middle."""
    return _validated(dataclasses.asdict(ReconParams(center=width / 2.0,
                                                     ortho=(width // 2, width // 2, height // 2))),
                      width, height)
