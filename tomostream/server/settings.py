"""The TomoStream PVs as the reconstruction's parameters (pure functions, no EPICS).

``value`` below is any ``value(suffix)`` callable that reads a TomoStream PV (the IOC's
``value``, or a dict's ``__getitem__`` in tests).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import BadParameter
from ..ioc.tomostream_ioc import DEZINGER_RADII

#: The slice position PVs and the frame axis each runs along.
ORTHO_PVS = ("OrthoX", "OrthoY", "OrthoZ")


def dezinger_radius(state: str) -> int:
    """Median radius [pixels] of a Dezinger PV state ("None" -> 0, "Radius 3" -> 3).

    Raises
    ------
    BadParameter
        ``state`` is not one of the IOC's Dezinger states.
    """
    try:
        return DEZINGER_RADII[state]
    except KeyError:
        raise BadParameter(f"Dezinger={state!r} is not one of {list(DEZINGER_RADII)}") from None


def _clamp(position: float, size: int) -> int:
    """``position`` [pixels] rounded into ``0 .. size - 1``."""
    return int(min(max(round(position), 0), size - 1))


def centred(value: Callable[[str], Any], width: int, height: int) -> dict:
    """The first frames of a session (``width`` x ``height`` pixels): an unset (0) or
    out-of-frame Center or slice position goes to the middle of the frame. Returns the PVs to
    write, ``{suffix: value}`` (empty when all are in the frame)."""
    values = {}
    if not 0 < value("Center") < width:
        values["Center"] = width / 2.0
    ortho = [value(s) for s in ORTHO_PVS]
    for suffix, pos, size in zip(ORTHO_PVS, ortho, (width, width, height), strict=True):
        if not any(ortho) or not 0 <= pos < size:
            values[suffix] = size // 2
    return values


def rescaled(value: Callable[[str], Any], old: tuple[int, int], new: tuple[int, int]) -> dict:
    """Center and OrthoX/Y/Z kept on the same sample features when the frame size changes from
    ``old`` to ``new`` (each ``(height, width)`` [pixels]); the PVs to write."""
    (h0, w0), (h1, w1) = old, new
    fx, fz = w1 / w0, h1 / h0
    return {
        "Center": min(max(value("Center") * fx, 0.0), w1 - 1.0),
        "OrthoX": _clamp(value("OrthoX") * fx, w1),
        "OrthoY": _clamp(value("OrthoY") * fx, w1),
        "OrthoZ": _clamp(value("OrthoZ") * fz, h1),
    }


def engine_params(value: Callable[[str], Any], width: int, height: int) -> dict:
    """Keyword arguments of :meth:`~tomostream.recon.OrthoReconstructor.set_params` from the
    PVs, slice positions truncated into a ``width`` x ``height`` frame.

    Raises
    ------
    BadParameter
        Dezinger is not one of its states.
    """
    ortho = tuple(min(max(int(value(s)), 0), n - 1)
                  for s, n in zip(ORTHO_PVS, (width, width, height), strict=True))
    return dict(
        center=float(value("Center")), filter=value("FilterType"),
        dezinger=dezinger_radius(value("Dezinger")), ortho=ortho,
        rot=(float(value("RotX")), float(value("RotY")), float(value("RotZ"))),
        zoom=float(value("Zoom")), energy=float(value("Energy")),
        distance=float(value("Distance")), alpha=float(value("Alpha")),
        pixel_size=float(value("PixelSize")), ring_removal=value("RingRemoval"))
