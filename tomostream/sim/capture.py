"""Captures of the simulated beamline, as TomoScan's streaming mode makes them.

Between captures the circular buffer keeps the latest projections. A capture (StreamCapture)
takes from it the frames from before the trigger (at most StreamPreCount), pauses it, and
gathers the next StreamNumCapture projections; the writer thread then writes the main file
``<base>`` (the HDF5 plugin's next file in FilePath) and ``circular_buffer_<base>``, and the
field-copy thread adds the dark and flat fields to each (see :mod:`tomostream.sim.files`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import CaptureError, TomostreamError
from ..io.capture import circular_buffer_path
from ..io.dxfile import check_directory, check_file_name, next_capture_path
from .fields import Fields
from .files import FIELD_DATASETS, FIELD_FILES, add_fields, write_fields, write_projections
from .state import IDLE, StreamState, submit

log = logging.getLogger(__name__)


@dataclass
class Capture:
    """An armed capture: frames gathered by the acquisition thread."""

    num: int
    path: Path          # main file <FilePath>/<base>
    future: Future
    pre: list = field(default_factory=list)
    frames: list = field(default_factory=list)
    stop: bool = False


class Recorder:
    """The circular buffer, the armed capture and the threads that write and complete its files.

    Parameters
    ----------
    prefix : str
        TomoScan PV prefix (for the log).
    ioc : TomoScanStreamIOC
        Where the capture settings are read and its counters posted.
    state : StreamState
    fields : Fields
        The fields the field-copy thread writes and adds.
    writer, copier : Executor
        The capture-writing thread and the field-copy thread.
    stopping : threading.Event
        Set when the beamline stops: a waiting field copy starts at once.
    exposure_time : callable
        The frame period now [s], for the files' metadata.
    field_copy_delay : float [s]
        See :class:`~tomostream.sim.beamline.SimBeamline`.
    """

    def __init__(self, prefix: str, ioc, state: StreamState, fields: Fields, writer: Executor,
                 copier: Executor, stopping: threading.Event, exposure_time: Callable[[], float],
                 field_copy_delay: float = 0.0):
        self.prefix = prefix
        self.ioc = ioc
        self.state = state
        self.fields = fields
        self.writer, self.copier = writer, copier
        self.stopping = stopping
        self.exposure_time = exposure_time
        self.field_copy_delay = float(field_copy_delay)
        self.total_captured = 0

    @property
    def pre_counted(self) -> int:
        """Frames the circular buffer holds now for a capture (at most StreamPreCount)."""
        return min(len(self.state.ring), int(self.ioc.value("StreamPreCount")))

    def capture(self) -> Future:
        """Arm a capture with the IOC's settings; see
        :meth:`~tomostream.sim.beamline.SimBeamline.capture`."""
        directory = str(self.ioc.value("FilePath")).strip()
        file_name = str(self.ioc.value("FileName")).strip()
        check_directory(directory)
        check_file_name(file_name)
        num = int(self.ioc.value("StreamNumCapture"))
        pre_count = int(self.ioc.value("StreamPreCount"))
        path = next_capture_path(directory, file_name)   # the HDF5 plugin's next file
        future: Future = Future()

        def arm() -> None:
            # the circular buffer stops filling; it restarts empty after the capture
            ring = self.state.ring
            pre = list(ring)[-pre_count:] if pre_count else []
            ring.clear()
            self.state.capture = Capture(num, path, future, pre=pre)

        skipped = self.state.claim("StreamCapture", "Capturing projections", arm)
        if skipped is not None:
            return skipped
        self.ioc.post({"StreamNumCaptured": 0, "StreamPreCounted": 0,
                       "StreamMessage": "Capturing projections"})
        return future

    def stop_capture(self, scanning: bool) -> None:
        """End the armed capture with the frames it has (at once unless ``scanning``)."""
        with self.state.lock:
            if self.state.capture is not None:
                self.state.capture.stop = True
        if not scanning:
            self.finish("capture stopped")

    def record(self, uid: int, angle: float, frame: np.ndarray) -> None:
        """Feed an armed capture, else the circular buffer (which is paused during a capture)."""
        entry = (uid, angle, frame)
        with self.state.lock:
            cap = self.state.capture
            if cap is None:
                self.state.ring.append(entry)
            else:
                cap.frames.append(entry)
                full = len(cap.frames) >= cap.num or cap.stop
        if cap is not None and full:
            self.finish("capture complete")

    def finish(self, reason: str) -> None:
        """Detach the armed capture (if any) and hand it to the writer thread."""
        state = self.state
        with state.lock:
            cap, state.capture = state.capture, None
        if cap is None:
            return
        if not cap.frames and reason == "scan ended" and not cap.stop:
            with state.lock:                      # the HDF5 plugin waits for the next scan
                if state.capture is None:
                    state.capture = cap
                    return
        if not cap.frames:
            state.set_activity(IDLE)
            cap.future.set_exception(CaptureError(f"StreamCapture: {reason} before any frame was captured"))
            return
        self.ioc.post({"StreamNumCaptured": len(cap.frames)})
        submit(self.writer, self._write, cap, reason)

    def _write(self, cap: Capture, reason: str) -> None:
        """Write the main file, then the circular-buffer file; as TomoScan does, the field-copy
        thread is handed each file as soon as it is written (so the main file may be complete
        before the circular-buffer file exists)."""
        metadata = {"instrument/detector/binning": int(self.state.binning),
                    "instrument/detector/exposure_time": self.exposure_time()}
        try:
            for path, entries in ((cap.path, cap.frames), (circular_buffer_path(cap.path), cap.pre)):
                if not entries:               # an empty circular buffer leaves no file
                    continue
                if path != cap.path:
                    self.state.set_activity("Capturing circular buffer")
                written = write_projections(path, np.stack([e[2] for e in entries]),
                                            [e[0] for e in entries], [e[1] for e in entries], metadata)
                submit(self.copier, self.copy_fields, written)
        except TomostreamError as exc:
            message = f"StreamCapture failed: {exc}"
            log.error("%s", message)
            self.state.set_activity(IDLE)
            cap.future.set_exception(CaptureError(message))
            return
        self.total_captured += len(cap.frames) + len(cap.pre)
        log.info("%s: captured %d + %d projections to %s (%s)", self.prefix, len(cap.pre),
                 len(cap.frames), cap.path, reason)
        self.ioc.post({"StreamFileName": cap.path.name, "StreamNumTotalCaptured": self.total_captured})
        self.state.set_activity(IDLE)
        cap.future.set_result(cap.path)

    def copy_fields(self, path: Path) -> None:
        """TomoScan's field-copy thread: after ``field_copy_delay``, ``dark_fields_<base>`` and
        ``flat_fields_<base>`` from the current field files, and the fields into ``path``."""
        self.stopping.wait(self.field_copy_delay)
        try:
            for kind in FIELD_DATASETS:
                if not (path.parent / FIELD_FILES[kind]).exists():
                    write_fields(path.parent, kind, self.fields.frames[kind])
            add_fields(path)
        except TomostreamError as exc:
            log.error("%s: dark and flat fields not added to %s: %s", self.prefix, path, exc)
