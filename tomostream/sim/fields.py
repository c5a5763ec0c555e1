"""Dark and flat fields of the simulated beamline: taken, broadcast, retaken and saved.

At scan start (and when the binning changes) the detector takes ``num_dark`` dark and
``num_flat`` flat frames; their averages are broadcast on StreamDarkFields / StreamFlatFields
and the frames saved to ``dark_fields.h5`` / ``flat_fields.h5`` in FilePath. A retake
(StreamRetakeDark / StreamRetakeFlat) does what TomoScan's does while the stage keeps
rotating: FrameType goes to DarkField (or FlatField) before the first such frame, the next
frames are fields, then FrameType goes back to Projection, the new average is broadcast and
the file replaced.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field

import numpy as np

from ..errors import BadParameter, TomostreamError
from ..io.dxfile import check_directory
from ..pva.fields import field_pv
from .channels import DetectorChannels
from .detector import FrameSource
from .files import FIELD_DATASETS, write_fields
from .state import IDLE, StreamState, submit

log = logging.getLogger(__name__)


@dataclass
class Retake:
    """A running retake: field frames gathered by the acquisition thread."""

    kind: str           # "dark" or "flat"
    count: int
    future: Future
    frames: list = field(default_factory=list)


class Fields:
    """The current dark and flat fields, and their retakes.

    Parameters
    ----------
    prefix : str
        TomoScan PV prefix (for the log).
    ioc : TomoScanStreamIOC
        Where FilePath is read and FrameType / StreamMessage posted.
    source : FrameSource
        The detector that makes the field frames.
    state : StreamState
    channels : DetectorChannels
        Where the averaged fields are broadcast.
    writer : Executor
        The thread that writes the field files.
    num_dark, num_flat : int
        Frames averaged into a dark / flat field.
    """

    def __init__(self, prefix: str, ioc, source: FrameSource, state: StreamState,
                 channels: DetectorChannels, writer: Executor, num_dark: int, num_flat: int):
        self.prefix = prefix
        self.ioc = ioc
        self.source = source
        self.state = state
        self.channels = channels
        self.writer = writer
        self.counts = {"dark": int(num_dark), "flat": int(num_flat)}
        #: frames of the current dark and flat, by kind
        self.frames: dict[str, np.ndarray] = {}
        #: averaged dark and flat last published (float32, binned)
        self.dark: np.ndarray | None = None
        self.flat: np.ndarray | None = None

    def take(self) -> None:
        """Take dark and flat frames at the current binning; their averages are the fields."""
        make = {"dark": self.source.dark_frame, "flat": self.source.flat_frame}
        for kind, count in self.counts.items():
            self.frames[kind] = np.stack([make[kind](self.state.binning) for _ in range(count)])
        self.dark = np.mean(self.frames["dark"], axis=0, dtype=np.float32)
        self.flat = np.mean(self.frames["flat"], axis=0, dtype=np.float32)

    def publish(self) -> None:
        """Take new fields, broadcast them and save them to the field files (writer thread)."""
        self.take()
        submit(self.writer, self.save)
        self.channels.publish(self.channels.dark_channel, field_pv(self.dark))
        self.channels.publish(self.channels.flat_channel, field_pv(self.flat))

    def retake(self, kind: str, scanning: bool) -> Future:
        """Retake dark or flat fields while rotating, as TomoScan does (skipped unless idle)."""
        name = "StreamRetakeDark" if kind == "dark" else "StreamRetakeFlat"
        if not scanning:
            raise BadParameter(f"{name}: needs a running scan (StartScan)")
        future: Future = Future()
        activity = f"Capturing {kind} fields"

        def arm() -> None:
            self.state.retake = Retake(kind, self.counts[kind], future)

        skipped = self.state.claim(name, activity, arm)
        if skipped is not None:
            return skipped
        self.ioc.post({"StreamMessage": activity})
        return future

    def frame(self, retake: Retake, uid: int, binning: int) -> bool:
        """Take the next field frame of ``retake`` at ``binning`` and send it as frame ``uid``;
        whether that completed (and ended) the retake."""
        make = self.source.dark_frame if retake.kind == "dark" else self.source.flat_frame
        frame = make(binning)
        retake.frames.append(frame)
        self.channels.publish_frame(frame, uid)
        if len(retake.frames) < retake.count:
            return False
        self._end(retake)
        return True

    def _end(self, retake: Retake) -> None:
        frames = np.stack(retake.frames)
        field_ = np.mean(frames, axis=0, dtype=np.float32)
        self.frames[retake.kind] = frames
        if retake.kind == "dark":
            self.dark = field_
        else:
            self.flat = field_
        with self.state.lock:
            self.state.retake = None
        self.ioc.post({"FrameType": "Projection"}, timestamp=time.time())
        channel = self.channels.dark_channel if retake.kind == "dark" else self.channels.flat_channel
        self.channels.publish(channel, field_pv(field_))
        log.info("%s: %s field retaken from %d frames", self.prefix, retake.kind, len(frames))

        def save() -> None:
            self.save((retake.kind,))
            self.state.set_activity(IDLE)
            retake.future.set_result(None)

        submit(self.writer, save)

    def abandon(self) -> None:
        """End a running retake because the scan ended: its command fails."""
        with self.state.lock:
            retake, self.state.retake = self.state.retake, None
        if retake is not None and not retake.future.done():
            self.state.set_activity(IDLE)
            retake.future.set_exception(BadParameter(f"retake of {retake.kind} stopped: scan ended"))

    def save(self, kinds=tuple(FIELD_DATASETS)) -> None:
        """Write the current fields to ``dark_fields.h5`` / ``flat_fields.h5`` in FilePath, as
        TomoScan does at a retake; without a usable FilePath, say so in the log only."""
        try:
            directory = check_directory(str(self.ioc.value("FilePath")).strip())
            for kind in kinds:
                write_fields(directory, kind, self.frames[kind])
        except TomostreamError as exc:
            log.warning("%s: fields not saved: %s", self.prefix, exc)
