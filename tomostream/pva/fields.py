"""Dark field, flat field and angle table as served by the TomoScan streaming IOC.

The structures are the ones beamline software already speaks (see pv-names.md):

- dark / flat: ``{value: float[], sizex: int, sizey: int}``, the averaged field flattened row
  after row, ``sizex`` columns (detector width) and ``sizey`` rows (height);
- theta: ``{value: float[], sizex: int}``, the projection angles [degrees], ``sizex`` of them.
"""

from __future__ import annotations

import numpy as np
import pvaccess as pva

from ..errors import BadFrame
from .ntnda import MAX_PIXELS, MAX_SIDE

#: pvaccess type of the dark- and flat-field structure.
FIELD_TYPE = {"value": [pva.FLOAT], "sizex": pva.INT, "sizey": pva.INT}
#: pvaccess type of the angle-table structure.
THETA_TYPE = {"value": [pva.FLOAT], "sizex": pva.INT}


def field_pv(array2d: np.ndarray) -> pva.PvObject:
    """Wrap a dark or flat field.

    Parameters
    ----------
    array2d : numpy.ndarray
        Field of shape (sizey, sizex) [counts], any real dtype; sent as float32.

    Raises
    ------
    BadFrame
        When the array is not 2-D, is empty or absurdly large, or is not real-valued.
    """
    array2d = np.asarray(array2d)
    if array2d.ndim != 2:
        raise BadFrame(f"dark/flat field shape {array2d.shape} is not 2-D (sizey, sizex)")
    if not (np.issubdtype(array2d.dtype, np.integer) or np.issubdtype(array2d.dtype, np.floating)):
        raise BadFrame(f"dark/flat field dtype {array2d.dtype} is not real-valued")
    sizey, sizex = array2d.shape
    _check_field_size(sizex, sizey)
    pv = pva.PvObject(FIELD_TYPE)
    pv["value"] = np.ascontiguousarray(array2d, dtype=np.float32).reshape(-1)
    pv["sizex"] = sizex
    pv["sizey"] = sizey
    return pv


def _check_field_size(sizex: int, sizey: int) -> None:
    if not (0 < sizex <= MAX_SIDE and 0 < sizey <= MAX_SIDE and sizex * sizey <= MAX_PIXELS):
        raise BadFrame(f"dark/flat field size sizex={sizex} sizey={sizey} is outside 1..{MAX_SIDE} "
                       f"per side and {MAX_PIXELS} pixels in all")


def _values(pv: pva.PvObject, what: str, keys: tuple[str, ...]) -> np.ndarray:
    for key in keys:
        if not pv.hasField(key):
            raise BadFrame(f"{what} structure has no {key!r} field")
    value = pv["value"]
    if not isinstance(value, np.ndarray) or value.ndim != 1:
        raise BadFrame(f"{what} 'value' is not a numeric array but {type(value).__name__}")
    return value


def read_field(pv: pva.PvObject) -> np.ndarray:
    """Unwrap a dark or flat field.

    Parameters
    ----------
    pv : pvaccess.PvObject
        Structure ``{value: float[], sizex: int, sizey: int}``.

    Returns
    -------
    numpy.ndarray
        float32 array (sizey, sizex) [counts], read-only.

    Raises
    ------
    BadFrame
        Missing fields, absurd sizes, or a value length other than sizex * sizey.
    """
    value = _values(pv, "dark/flat field", ("value", "sizex", "sizey"))
    sizex, sizey = pv["sizex"], pv["sizey"]
    _check_field_size(sizex, sizey)
    if value.size != sizex * sizey:
        raise BadFrame(f"dark/flat field has {value.size} values, sizex * sizey = "
                       f"{sizex} * {sizey} = {sizex * sizey}")
    field = value.astype(np.float32, copy=False).reshape(sizey, sizex)
    field.flags.writeable = False
    return field


def theta_pv(theta_deg: np.ndarray) -> pva.PvObject:
    """Wrap an angle table.

    Parameters
    ----------
    theta_deg : array_like
        Projection angles [degrees], 1-D, finite.

    Raises
    ------
    BadFrame
        When the table is not 1-D, is empty or holds non-finite angles.
    """
    theta = np.asarray(theta_deg, dtype=np.float64)
    if theta.ndim != 1 or theta.size == 0:
        raise BadFrame(f"theta shape {theta.shape} is not a non-empty 1-D table")
    if not np.all(np.isfinite(theta)):
        raise BadFrame(f"theta holds {np.count_nonzero(~np.isfinite(theta))} non-finite angles")
    pv = pva.PvObject(THETA_TYPE)
    pv["value"] = theta.astype(np.float32)
    pv["sizex"] = theta.size
    return pv


def read_theta(pv: pva.PvObject) -> np.ndarray:
    """Unwrap an angle table.

    Parameters
    ----------
    pv : pvaccess.PvObject
        Structure ``{value: float[], sizex: int}``.

    Returns
    -------
    numpy.ndarray
        float64 angles [degrees], ``sizex`` of them.

    Raises
    ------
    BadFrame
        Missing fields, ``sizex`` < 1 or other than the number of values, non-finite angles.
    """
    value = _values(pv, "theta", ("value", "sizex"))
    sizex = pv["sizex"]
    if sizex < 1 or value.size != sizex:
        raise BadFrame(f"theta has {value.size} values but sizex={sizex}")
    theta = value.astype(np.float64)
    if not np.all(np.isfinite(theta)):
        raise BadFrame(f"theta holds {np.count_nonzero(~np.isfinite(theta))} non-finite angles")
    return theta
