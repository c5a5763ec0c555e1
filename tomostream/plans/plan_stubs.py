"""Small plans of a streaming session: settings, retakes and captures.

Annotations are evaluated (no ``from __future__ import annotations``) and use builtin types, so
bluesky-queueserver can validate the parameters of a queued plan.
"""

import logging
import time
from collections.abc import Generator
from pathlib import Path

import h5py
from bluesky import plan_stubs as bps
from bluesky.utils import Msg, short_uid

from ..devices.capture import CaptureRecorder
from ..devices.recon_settings import recon_settings
from ..errors import BadParameter, CaptureError
from ..io.capture import COMPLETE_TIMEOUT, circular_buffer_path, incomplete_error, missing_parts
from ..io.dxfile import check_file_name

log = logging.getLogger(__name__)

#: Name of the stream holding every captured frame (one row each).
CAPTURE_STREAM = "capture"
#: Name of the event stream holding one event per capture.
CAPTURES_STREAM = "captures"
#: A capture whose StreamNumTotalCaptured has not changed this long [s] after StreamCapture
#: completed was skipped by TomoScan (StreamMessage was not Done).
SKIPPED_AFTER = 10.0


def set_recon(tomostream, *, center: float | None = None, filter: str | None = None,
              ortho: tuple[int, int, int] | None = None,
              rot: tuple[float, float, float] | None = None,
              zoom: float | None = None, wait: bool = True) -> Generator[Msg, object, None]:
    """Change reconstruction settings together (None leaves a setting as it is).

    Parameters
    ----------
    tomostream : TomoStream
    center : float, optional
        Rotation axis [pixels].
    filter : str, optional
        parzen, shepp-logan, ramp or butterworth (any case).
    ortho : (int, int, int), optional
        Slice positions X, Y, Z [pixels].
    rot : (float, float, float), optional
        Slice tilts X, Y, Z [degrees].
    zoom : float, optional
        Software zoom of the slices about their crossing point, 1..16.
    wait : bool
        Wait until every write has completed.
    """
    pairs = recon_settings(tomostream, center=center, filter=filter, ortho=ortho, rot=rot, zoom=zoom)
    group = short_uid("set_recon")
    for signal, value in pairs:
        yield from bps.abs_set(signal, value, group=group)
    if wait and pairs:
        yield from bps.wait(group=group)


def retake_dark(tomoscan) -> Generator[Msg, object, None]:
    """Retake the dark fields while the stage keeps rotating; returns when they are taken."""
    yield from bps.abs_set(tomoscan.stream_retake_dark, 1, wait=True)


def retake_flat(tomoscan) -> Generator[Msg, object, None]:
    """Retake the flat fields while the stage keeps rotating; returns when they are taken."""
    yield from bps.abs_set(tomoscan.stream_retake_flat, 1, wait=True)


def configure_capture(tomoscan, num_capture: int | None = None,
                      pre_count: int | None = None) -> Generator[Msg, object, None]:
    """Set how many projections a capture saves after (``num_capture``) and before (``pre_count``)."""
    if num_capture is not None and int(num_capture) < 1:
        raise BadParameter(f"num_capture={num_capture} must be at least 1")
    if pre_count is not None and int(pre_count) < 0:
        raise BadParameter(f"pre_count={pre_count} must be >= 0")
    if num_capture is not None:
        yield from bps.abs_set(tomoscan.stream_num_capture, int(num_capture), wait=True)
    if pre_count is not None:
        yield from bps.abs_set(tomoscan.stream_pre_count, int(pre_count), wait=True)


def _changed(signal, before, timeout: float | None = None,
             poll: float = 0.05) -> Generator[Msg, object, object]:
    """The value of ``signal`` once it differs from ``before``; ``before`` itself when it has
    not changed after ``timeout`` [s] (:data:`SKIPPED_AFTER` by default)."""
    deadline = time.monotonic() + (SKIPPED_AFTER if timeout is None else timeout)
    while True:
        value = yield from bps.rd(signal, default_value=None)
        if value is None or value != before or time.monotonic() > deadline:
            return value
        yield from bps.sleep(poll)


def _local_folder(tomoscan, folder: str, base: str) -> Path:
    """TomoScan's FilePath as read here; a clear error when no such folder is seen here."""
    local_path = getattr(tomoscan, "local_path", Path)
    local = local_path(folder)
    if not local.is_dir():
        seen = "" if str(local) == folder else f" (read here as {local})"
        raise CaptureError(
            f"TomoScan's FilePath {folder}{seen} is not a folder on this machine, so capture {base} "
            "cannot be recorded: it stays where TomoScan wrote it. Mount that folder here, or give "
            "TomoScanStream(..., write_path_template=<FilePath's folder>, "
            "read_path_template=<where it is mounted here>)")
    return local


def wait_capture_files(main: Path, saved: int | None, timeout: float = COMPLETE_TIMEOUT,
                       poll: float = 0.1) -> Generator[Msg, object, list[Path]]:
    """Wait (without blocking the RunEngine) until a capture's files are complete.

    Parameters
    ----------
    main : Path
        The main file, ``FilePath / StreamFileName``.
    saved : int or None
        Frames the capture saved (the change of StreamNumTotalCaptured): more than the main file
        holds means a ``circular_buffer_`` file is still to come. A ``circular_buffer_`` file
        beside the main file belongs to the capture in any case (TomoScan numbers base names,
        so it is this capture's); a count that disagrees with the files is logged.
    timeout : float [s]

    Returns
    -------
    list of Path
        The projection files in time order (circular buffer first).

    Raises
    ------
    CaptureError
        Naming each file and what it still lacks after ``timeout``.
    """
    pre = circular_buffer_path(main)
    deadline = time.monotonic() + timeout
    while True:
        # the main file is judged once per poll: the field-copy thread may complete it at any
        # moment, and a second look could see it complete without the circular buffer's file
        # having been asked for
        files, missing = [main], {}
        if main_missing := missing_parts(main):
            missing[main] = main_missing
        else:
            with h5py.File(main, "r", locking=False) as f:
                main_frames = f["/exchange/data"].shape[0]
            if pre.exists() or (saved is not None and saved > main_frames):
                files = [pre, main]
                if pre_missing := missing_parts(pre):
                    missing[pre] = pre_missing
        if not missing:
            if saved is not None and len(files) == 2:
                with h5py.File(pre, "r", locking=False) as f:
                    pre_frames = f["/exchange/data"].shape[0]
                if saved != main_frames + pre_frames:
                    log.warning("capture %s: StreamNumTotalCaptured grew by %d, the files hold %d + %d "
                                "frames; recording the files", main.name, saved, pre_frames, main_frames)
            log.info("capture %s complete: %s (StreamNumTotalCaptured grew by %s)", main.name,
                     ", ".join(p.name for p in files), saved)
            return files
        if time.monotonic() > deadline:
            raise incomplete_error(missing, timeout)
        yield from bps.sleep(poll)


def capture(tomoscan, tomostream=None, recorder: CaptureRecorder | None = None, *,
            num_capture: int | None = None, pre_count: int | None = None,
            timeout: float = COMPLETE_TIMEOUT) -> Generator[Msg, object, Path | None]:
    """Capture the stream as TomoScan does and record it in the run.

    The slices published at the moment of the trigger are read first, then StreamCapture is
    written with put-completion. The capture's files are then located (StreamFileName is a
    base name in FilePath) and waited for until complete (TomoScan adds the dark and flat
    fields from a thread after StreamCapture reads Done). Their frames, pre-trigger first,
    become rows of the ``capture`` stream (collected; the data stay in the files), and one
    event of the ``captures`` stream records the capture (file, pre-trigger frames, rows,
    slices snapshot).

    Parameters
    ----------
    tomoscan : TomoScanStream
    tomostream : TomoStream, optional
        Source of the slices snapshot; None records no snapshot.
    recorder : CaptureRecorder, optional
        Keeps the data keys of a run's captures; a run with several captures passes one.
    num_capture, pre_count : int, optional
        Change StreamNumCapture / StreamPreCount first [frames].
    timeout : float [s]
        How long to wait for the files to be complete.

    Returns
    -------
    Path or None
        The main file; None when run without a RunEngine, or when TomoScan skipped the capture
        (StreamMessage was not Done: another capture or a retake was running).

    Raises
    ------
    CaptureError
        FilePath is not a folder here, or the files are not complete after ``timeout``
        or cannot be read.
    """
    recorder = recorder if recorder is not None else CaptureRecorder(CAPTURES_STREAM)
    yield from configure_capture(tomoscan, num_capture, pre_count)
    slices = None
    if tomostream is not None:
        slices = yield from bps.rd(tomostream.recon, default_value=None)
    before = yield from bps.rd(tomoscan.stream_num_total_captured, default_value=None)
    yield from bps.abs_set(tomoscan.stream_capture, 1, wait=True)
    # the IOC sets StreamFileName and StreamNumTotalCaptured before StreamCapture completes,
    # but their monitor updates may reach this process after the completion: wait for them
    total = yield from _changed(tomoscan.stream_num_total_captured, before)
    base = yield from bps.rd(tomoscan.stream_file_name, default_value=None)
    folder = yield from bps.rd(tomoscan.file_path, default_value=None)
    if base is None or folder is None:  # not under a RunEngine
        return None
    if total == before:
        log.warning("capture skipped by TomoScan (StreamNumTotalCaptured stayed %s for %g s)",
                    total, SKIPPED_AFTER)
        return None
    main = _local_folder(tomoscan, str(folder), str(base)) / check_file_name(str(base))
    saved = None if before is None or total is None else int(total) - int(before)
    files = yield from wait_capture_files(main, saved, timeout)
    recorder.record(files, slices)
    frames = recorder.frames
    if not frames.declared:
        yield from bps.declare_stream(frames, name=frames.name, collect=True)
        frames.declared = True
    while frames.pending:
        yield from bps.collect(frames, name=frames.name)
    yield from bps.create(recorder.name)
    yield from bps.read(recorder)
    yield from bps.save()
    return main
