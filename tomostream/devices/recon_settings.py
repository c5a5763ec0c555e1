"""Validation of reconstruction settings shared by ``TomoStream.set_recon`` and the plan stub."""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..errors import BadParameter
from ..vocabulary import FILTER_NAMES


def filter_pv_value(name: str) -> str:
    """The FilterType enum string for a filter ``name`` given in any case.

    Raises
    ------
    BadParameter
        If ``name`` is not a filter the TomoStream IOC offers.
    """
    for pv_name in FILTER_NAMES:
        if str(name).strip().lower() == pv_name.lower():
            return pv_name
    raise BadParameter(f"FilterType={name!r} is not one of {list(FILTER_NAMES)}")


def _triple(label: str, values: Sequence, kind: type) -> tuple:
    if len(values) != 3:
        raise BadParameter(f"{label}={values!r} must have three values (x, y, z)")
    out = tuple(kind(v) for v in values)
    if not all(math.isfinite(v) for v in out):
        raise BadParameter(f"{label}={values!r} must be finite")
    return out


def recon_settings(tomostream, *, center: float | None = None, filter: str | None = None,
                   ortho: Sequence[int] | None = None, rot: Sequence[float] | None = None,
                   zoom: float | None = None) -> list:
    """``[(signal, value), ...]`` for the settings given (None = leave as is), validated.

    Parameters
    ----------
    tomostream : TomoStream
        The device whose signals are set.
    center : float, optional
        Rotation axis [pixels].
    filter : str, optional
        Filter name, any case.
    ortho : (int, int, int), optional
        Slice positions X, Y, Z [pixels]; must be >= 0.
    rot : (float, float, float), optional
        Slice tilts X, Y, Z [degrees].
    zoom : float, optional
        Software zoom of the slices, >= 1 (the IOC clamps it to 1..16).

    Raises
    ------
    BadParameter
        On a non-finite center, an unknown filter, a negative slice position, a wrong count or
        a zoom that is not a finite number >= 1.
    """
    pairs = []
    if center is not None:
        if not math.isfinite(float(center)):
            raise BadParameter(f"Center={center!r} is not a finite number")
        pairs.append((tomostream.center, float(center)))
    if filter is not None:
        pairs.append((tomostream.filter_type, filter_pv_value(filter)))
    if ortho is not None:
        ix, iy, iz = _triple("ortho", ortho, int)
        if min(ix, iy, iz) < 0:
            raise BadParameter(f"ortho={tuple(ortho)!r}: slice positions must be >= 0 pixels")
        pairs += [(tomostream.ortho_x, ix), (tomostream.ortho_y, iy), (tomostream.ortho_z, iz)]
    if rot is not None:
        rx, ry, rz = _triple("rot", rot, float)
        pairs += [(tomostream.rot_x, rx), (tomostream.rot_y, ry), (tomostream.rot_z, rz)]
    if zoom is not None:
        if not math.isfinite(float(zoom)) or float(zoom) < 1.0:
            raise BadParameter(f"Zoom={zoom!r} must be a finite number >= 1")
        pairs.append((tomostream.zoom, float(zoom)))
    return pairs
