"""``stream_scan``: one run of live streaming reconstruction, with automatic captures.

Annotations are evaluated (no ``from __future__ import annotations``) and use builtin types, so
bluesky-queueserver can validate the parameters of a queued plan.
"""

import time
from collections.abc import Generator

from bluesky import plan_stubs as bps
from bluesky import preprocessors as bpp
from bluesky.utils import Msg

from ..devices.capture import CaptureRecorder
from ..errors import BadParameter, ConnectionLost, TomostreamTimeout
from ..io.catalog import snapshot_dir as default_snapshot_dir
from .plan_stubs import CAPTURES_STREAM, capture, configure_capture, set_recon
from .preprocessors import device_gone, stream_stopped_decorator, wait_for_value
from .triggers import as_trigger

#: Seconds between two status readings (and trigger evaluations) during the scan [s].
POLL_PERIOD = 0.5
#: Seconds to wait for the stream server to start [s].
START_TIMEOUT = 10.0


def buffer_full(text: str | None) -> bool:
    """Whether a BufferSize readback ``"filled/size"`` says the 180 degree buffer is full."""
    try:
        filled, size = (int(part) for part in str(text).split("/"))
    except ValueError:
        return False
    return size > 0 and filled >= size


def read_status(tomoscan, tomostream) -> Generator[Msg, object, None]:
    """One ``primary`` event of both devices' status, once the stream server is known alive.

    Raises
    ------
    ConnectionLost
        When the stream server has stopped (ServerRunning = Stopped) or its PVs are gone (the
        server was stopped or killed).
    """
    try:
        running = yield from bps.rd(tomostream.server_running, default_value="Running")
        if running != "Stopped":
            yield from bps.trigger_and_read([tomostream, tomoscan])
            return
        status = yield from bps.rd(tomostream.recon_status, default_value="")
    except Exception as exc:
        if not device_gone(tomostream, exc):
            raise
        raise ConnectionLost(f"the stream server's PVs ({tomostream.prefix}*) are gone: the server "
                             f"was stopped or killed ({type(exc).__name__}: {exc})") from exc
    raise ConnectionLost(f"the stream server stopped (ServerRunning = Stopped): {status or 'no status'}")


def stream_scan(tomoscan, tomostream, *, duration: float | None = None, center: float | None = None,
                filter: str | None = None, ortho: tuple[int, int, int] | None = None, capture_when=None,
                num_capture: int = 100, pre_count: int = 0, max_captures: int | None = None,
                poll_period: float = POLL_PERIOD, snapshot_dir=None, md: dict | None = None
                ) -> Generator[Msg, object, str]:
    """Stream-reconstruct one scan, recording status and captures; always leave both stopped.

    Configures the reconstruction, starts the stream server (StartRecon) and the scan
    (StartScan), then every ``poll_period`` reads the status of both into the ``primary``
    stream and, once the 180 degree buffer is full, asks ``capture_when`` whether to capture.
    Each capture adds its frames (pre-trigger first) as rows of the ``capture`` stream and
    one event to the ``captures`` stream. The scan ends when TomoScan finishes
    or after ``duration``; whatever ends it (Ctrl-C, RE.abort(), RE.stop(), an exception),
    the scan and the reconstruction are stopped before the run closes.

    Parameters
    ----------
    tomoscan : TomoScanStream
    tomostream : TomoStream
    duration : float, optional
        Stop the scan after this many seconds [s]; None: until TomoScan finishes.
    center : float, optional
        Rotation axis [pixels].
    filter : str, optional
        parzen, shepp-logan, ramp or butterworth.
    ortho : (int, int, int), optional
        Slice positions X, Y, Z [pixels].
    capture_when : None, "change" or callable
        ``f(image) -> bool`` evaluated on the published slices (rows, 3n), or ``"change"`` for
        a :class:`~tomostream.plans.triggers.ChangeDetector`; None: no automatic capture.
    num_capture : int
        Projections saved after a trigger [frames].
    pre_count : int
        Projections from before the trigger saved as well [frames].
    max_captures : int, optional
        Stop triggering after this many captures.
    poll_period : float
        Seconds between status readings [s].
    snapshot_dir : path, optional
        Folder of the catalog's storage for the slices at each trigger; default
        :func:`tomostream.io.catalog.snapshot_dir` (``<data_dir>/snapshots``).
    md : dict, optional
        Metadata merged into the start document.

    Returns
    -------
    str
        The run uid.
    """
    trigger = as_trigger(capture_when)
    if duration is not None and not duration >= 0:
        raise BadParameter(f"duration={duration} s must be >= 0")
    if not poll_period > 0:
        raise BadParameter(f"poll_period={poll_period} s must be > 0")
    if max_captures is not None and max_captures < 0:
        raise BadParameter(f"max_captures={max_captures} must be >= 0")
    if num_capture < 1 or pre_count < 0:
        raise BadParameter(f"num_capture={num_capture} must be >= 1 and pre_count={pre_count} >= 0")
    _md = {
        "plan_name": "stream_scan",
        "detectors": [tomostream.name],
        "plan_args": {"tomoscan": repr(tomoscan), "tomostream": repr(tomostream),
                      "duration": duration, "center": center, "filter": filter,
                      "ortho": None if ortho is None else list(ortho),
                      "capture_when": None if trigger is None else repr(capture_when),
                      "num_capture": num_capture, "pre_count": pre_count},
        "hints": {"dimensions": [(["time"], "primary")]},
    }
    _md.update(md or {})
    recorder = CaptureRecorder(CAPTURES_STREAM,
                               default_snapshot_dir() if snapshot_dir is None else snapshot_dir)

    @bpp.stage_decorator([tomoscan, tomostream])
    @bpp.run_decorator(md=_md)
    @stream_stopped_decorator(tomoscan, tomostream)
    def inner():
        try:  # a server that has just started shows Running at its first heartbeat
            yield from wait_for_value(tomostream.server_running, "Running", timeout=START_TIMEOUT)
        except TomostreamTimeout:
            raise ConnectionLost(f"the stream server of {tomostream.prefix} is not running "
                                 f"(ServerRunning = Stopped for {START_TIMEOUT:g} s): start it "
                                 "with `tomostream serve`") from None
        yield from set_recon(tomostream, center=center, filter=filter, ortho=ortho)
        yield from configure_capture(tomoscan, num_capture, pre_count)
        yield from bps.abs_set(tomostream.start_recon, 1, group="recon")
        yield from wait_for_value(tomostream.start_recon, 1, timeout=START_TIMEOUT)
        scan = yield from bps.abs_set(tomoscan.start_scan, 1, group="scan")
        start = time.monotonic()
        captures = 0
        while True:
            yield from bps.checkpoint()
            yield from read_status(tomoscan, tomostream)
            scan_over = scan is not None and scan.done
            timed_out = duration is not None and time.monotonic() - start >= duration
            if scan_over or timed_out:
                break
            if trigger is not None and (max_captures is None or captures < max_captures):
                full = yield from bps.rd(tomostream.buffer_size, default_value="1/1")
                # slices exist (and stop building up) once the 180 degree buffer is full
                image = None
                if buffer_full(full):
                    image = yield from bps.rd(tomostream.recon, default_value=None)
                if image is not None and trigger(image):
                    yield from capture(tomoscan, tomostream, recorder)
                    captures += 1
            yield from bps.sleep(poll_period)

    return (yield from inner())
