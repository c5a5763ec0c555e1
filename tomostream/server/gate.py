"""Which detector frames the reconstruction takes: decisions, not actions.

:class:`FrameGate` looks at one frame at a time (its format, uniqueId and timestamp) and says
what to do with it; the session acts on the verdict (builds the reconstructor, counts, says why
in ReconStatus). Nothing here touches EPICS, the engine or the clock, so every rule can be
tested with plain objects.

The rules:

- **Format.** A frame of the reconstructor's format (shape and dtype) is taken. A detector that
  changed binning or data type is followed after :data:`NEW_SIZE_RUN` frames of the new format
  in a row, or at once when the dark or flat field already has the new size; a frame of another
  format alone is refused.
- **Projection.** A frame is used only when FrameType was Projection all through the
  ``frame_type_window`` around its timestamp (so no dark or flat frame of a retake enters the
  buffer), and its uniqueId has a row in the angle table counted from FirstProjid.
- **Scan start.** uniqueIds the detector skipped between the last frame before a scan and its
  FirstProjid are not frames lost from the scan (``between_scans``).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ..recon.reconstructor import FRAME_DTYPES
from ..unique_ids import missing_ids, projection_index
from ..vocabulary import PROJECTION
from .frames import FrameTypeHistory

#: Frames of one new format in a row that mean the detector changed (binning, data type).
NEW_SIZE_RUN = 4
#: A frame this few ids behind the newest is late (frames spread over several channels come
#: a little out of order), not the start of a new count.
SCAN_START_SLACK = 64


class Action(enum.Enum):
    """What to do with a frame of a given format."""

    TAKE = "take"          #: the reconstructor's format
    BUILD = "build"        #: the first frame: build a reconstructor for it
    RESIZE = "resize"      #: the detector's frame size changed: build a new reconstructor
    RETYPE = "retype"      #: the detector's data type changed: take it from now on
    REFUSE = "refuse"      #: not usable (the reason is in ``Verdict.why``)


@dataclass(frozen=True)
class Verdict:
    """A frame's fate: ``action``, and for REFUSE and RETYPE, why in words."""

    action: Action
    why: str = ""


class Skip(enum.Enum):
    """Why a frame of the right format is not used."""

    NOT_PROJECTION = "not_projection"    #: FrameType not Projection, or no scan known yet
    OUTSIDE_THETA = "outside_theta"      #: its uniqueId has no row in the angle table


def describe_format(shape: tuple, dtype) -> str:
    """A format as "uint16 64x32 frames" (width x height)."""
    size = "x".join(str(v) for v in shape[::-1]) if shape else "scalar"
    return f"{dtype} {size} frames"


def describe(array: np.ndarray) -> str:
    """A frame's format as "a float32 64x32 frame"."""
    return "a " + describe_format(array.shape, array.dtype)[:-1]


class FrameGate:
    """The frame rules of one StartRecon, with what they remember between frames.

    Parameters
    ----------
    frame_type_window : float [s]
        How late a FrameType change may arrive after the frames it concerns.

    Attributes
    ----------
    format : tuple or None
        ``(shape, dtype)`` of the frames the reconstructor takes; None before the first.
    last_uid : int or None
        Newest uniqueId seen before FirstProjid.
    """

    def __init__(self, frame_type_window: float):
        self.frame_type_window = float(frame_type_window)
        self.format: tuple | None = None
        self.last_uid: int | None = None
        self._new_format: tuple | None = None
        self._new_format_run = 0

    @staticmethod
    def dtype_refusal(array: np.ndarray) -> str | None:
        """Why the reconstruction cannot take ``array``'s dtype at all, or None."""
        if array.dtype in FRAME_DTYPES:
            return None
        return f"{describe(array)}: the reconstruction takes {', '.join(map(str, FRAME_DTYPES))} frames"

    def check_format(self, array: np.ndarray, field_shapes: Iterable[tuple | None] = ()) -> Verdict:
        """Whether ``array`` fits the reconstructor's format, following a detector that
        changed it; ``field_shapes``: the dark and flat fields' shapes (None where absent)."""
        fmt = (array.shape, array.dtype)
        if self.format is None:
            self.format = fmt
            return Verdict(Action.BUILD)
        if fmt == self.format:
            self._new_format_run = 0
            return Verdict(Action.TAKE)
        if fmt == self._new_format:
            self._new_format_run += 1
        else:
            self._new_format, self._new_format_run = fmt, 1
        resized = array.shape != self.format[0]
        if self._new_format_run >= NEW_SIZE_RUN or (resized and array.shape in set(field_shapes)):
            old, self.format, self._new_format_run = self.format, fmt, 0
            if resized:
                return Verdict(Action.RESIZE)
            return Verdict(Action.RETYPE, f"the detector now sends {array.dtype} frames "
                                          f"(was {old[1]})")
        return Verdict(Action.REFUSE, f"{describe(array)} in a stream of "
                                      f"{describe_format(*self.format)}")

    def angle(self, unique_id: int, timestamp: float, theta: np.ndarray | None,
              first_projid: int | None, frame_types: FrameTypeHistory) -> float | Skip:
        """The angle [degrees] of the frame ``unique_id`` taken at ``timestamp`` (0: unknown),
        or why it is not used."""
        if theta is None or first_projid is None:
            return Skip.NOT_PROJECTION
        lag = self.frame_type_window
        if not (frame_types.only(PROJECTION, timestamp - lag, timestamp + lag) if timestamp > 0
                else frame_types.type_at(0) == PROJECTION):
            return Skip.NOT_PROJECTION
        index = projection_index(unique_id, first_projid, theta.size)
        if index is None:
            return Skip.OUTSIDE_THETA
        return float(theta[index])

    def skipped_before_scan(self, uid: int, first_projid: int | None) -> int:
        """Note the frame ``uid``; return the ids the detector skipped between the last scan
        and this one when ``uid`` is FirstProjid (they are not lost), else 0.

        Frames spread over several channels come a little out of order, so frames just after
        FirstProjid that come before it, and late frames a little behind the newest, leave
        :attr:`last_uid` as it is."""
        fp, last = first_projid, self.last_uid
        if fp is not None and uid == fp:
            self.last_uid = fp
            return (missing_ids(last, fp) or 0) if last is not None and last != fp else 0
        if fp is not None and missing_ids(uid, fp) is None:
            return 0  # a frame of the scan
        late = None if last is None else missing_ids(uid, last)
        if late is None or late >= SCAN_START_SLACK:
            self.last_uid = uid
        return 0
