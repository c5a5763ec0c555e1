"""uniqueId arithmetic: detector frame counters that wrap, and what a jump between two means.

Detectors number their frames with a counter that wraps: at 65535 (16-bit counters) or at
2**31 - 1 (signed 32-bit ones, which wrap to 0 or to -2**31). TomoScan's FirstProjid is the
uniqueId of the first projection of a scan, so a frame's row in the angle table is its id's
distance from FirstProjid, modulo the wrap.
"""

from __future__ import annotations

import numpy as np

#: Ids of a 16-bit counter (0..65535).
WRAP_16 = 1 << 16
#: Ids of a non-negative signed 32-bit counter (0..2**31 - 1).
WRAP_31 = 1 << 31
#: All signed 32-bit ids (-2**31..2**31 - 1).
WRAP_32 = 1 << 32
#: Largest number of frames that may go missing across a uniqueId wrap and still be read as a
#: wrap; a bigger backwards jump is a new acquisition (ids restarted), not a wrap.
WRAP_WINDOW = 1 << 14


def missing_ids(previous: int, current: int) -> int | None:
    """Number of uniqueIds skipped between two consecutive frames.

    Parameters
    ----------
    previous, current : int
        ``uniqueId`` of the previous and of the current frame (signed 32-bit values).

    Returns
    -------
    int or None
        0 when ``current`` follows ``previous``; the number of ids in between when it jumps
        ahead (ids missed during a disconnection count too), also across a wrap
        (65535 -> 0, 2**31 - 1 -> -2**31 or -> 0) of at most :data:`WRAP_WINDOW` ids; None
        when the ids went back or stayed (a new acquisition, or a restarted detector), which
        is no loss.
    """
    step = current - previous
    if step > 0:
        return step - 1
    if 0 <= current < WRAP_16 and WRAP_16 - 1 - WRAP_WINDOW < previous < WRAP_16:
        step = current + WRAP_16 - previous
    elif previous > WRAP_31 - 1 - WRAP_WINDOW and 0 <= current < WRAP_WINDOW:
        step = current + WRAP_31 - previous
    elif previous > WRAP_31 - 1 - WRAP_WINDOW and -WRAP_31 <= current < -WRAP_31 + WRAP_WINDOW:
        step = current + WRAP_32 - previous
    else:
        return None
    return step - 1 if 0 < step <= WRAP_WINDOW else None


def projection_index(unique_id: int, first_projid: int, table_size: int) -> int | None:
    """Row of the angle table for a frame, or None when the frame is outside the table.

    ``uniqueId - FirstProjid``, taken modulo 65536 when both ids are 16-bit (detectors that
    wrap their counter at 65535) and modulo 2**31 otherwise.

    Parameters
    ----------
    unique_id : int
        ``uniqueId`` of the frame.
    first_projid : int
        TomoScan's ``FirstProjid``: uniqueId of the first projection of the scan.
    table_size : int
        Length of the angle table.
    """
    wrap = WRAP_16 if 0 <= unique_id < WRAP_16 and 0 <= first_projid < WRAP_16 else WRAP_31
    index = (unique_id - first_projid) % wrap
    return index if index < table_size else None


def unique_id(first: int, k: int | np.ndarray, wrap16: bool) -> int | np.ndarray:
    """uniqueId of frame ``k`` of a scan whose first projection has ``first`` (a detector
    whose counter wraps at 65535 when ``wrap16``, else at 2**31 - 1)."""
    return (first + k) % (WRAP_16 if wrap16 else WRAP_31)


def frame_index(uid: int | np.ndarray, first: int, wrap16: bool) -> int | np.ndarray:
    """Inverse of :func:`unique_id`: index into the theta table of the frame ``uid``."""
    return (uid - first) % (WRAP_16 if wrap16 else WRAP_31)
