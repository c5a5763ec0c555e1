"""Small plans of a streaming session: settings, retakes and captures."""

from __future__ import annotations

from collections.abc import Generator, Sequence

from bluesky import plan_stubs as bps
from bluesky.utils import Msg, short_uid

from ..devices.capture import CaptureRecorder
from ..devices.recon_settings import recon_settings
from ..errors import BadParameter

#: Name of the event stream holding one event per capture.
CAPTURE_STREAM = "capture"


def set_recon(tomostream, *, center: float | None = None, filter: str | None = None,
              ortho: Sequence[int] | None = None, rot: Sequence[float] | None = None,
              wait: bool = True) -> Generator[Msg, object, None]:
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
    wait : bool
        Wait until every write has completed.
    """
    pairs = recon_settings(tomostream, center=center, filter=filter, ortho=ortho, rot=rot)
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


def capture(tomoscan, tomostream=None, recorder: CaptureRecorder | None = None, *,
            num_capture: int | None = None, pre_count: int | None = None,
            stream: str = CAPTURE_STREAM) -> Generator[Msg, object, str]:
    """Capture the stream to a DXfile and record it as one event of ``stream``.

    The slices published at the moment of the trigger are read first, then StreamCapture is
    written with put-completion (the file is closed when it completes), then an event holds
    the file name, the number of pre-trigger frames, and references to the projections and
    the slices snapshot.

    Parameters
    ----------
    tomoscan : TomoScanStream
    tomostream : TomoStream, optional
        Source of the slices snapshot; None records no snapshot.
    recorder : CaptureRecorder, optional
        Keeps the data keys of a run's captures; a run with several captures passes one.
    num_capture, pre_count : int, optional
        Change StreamNumCapture / StreamPreCount first [frames].
    stream : str
        Event stream name.

    Returns
    -------
    str
        The capture file name (None when run without a RunEngine).
    """
    recorder = recorder if recorder is not None else CaptureRecorder()
    yield from configure_capture(tomoscan, num_capture, pre_count)
    slices = None
    if tomostream is not None:
        slices = yield from bps.rd(tomostream.recon, default_value=None)
    yield from bps.abs_set(tomoscan.stream_capture, 1, wait=True)
    file_name = yield from bps.rd(tomoscan.stream_file_name, default_value=None)
    pre_counted = yield from bps.rd(tomoscan.stream_pre_counted, default_value=0)
    if file_name is not None:  # under a RunEngine
        recorder.record(file_name, slices, pre_counted)
    yield from bps.create(stream)
    yield from bps.read(recorder)
    yield from bps.save()
    return file_name
