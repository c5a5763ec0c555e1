"""Cross-cutting behaviour of streaming plans, as wrappers and decorators."""

from __future__ import annotations

import logging
import time
from collections.abc import Generator

from bluesky import plan_stubs as bps
from bluesky import preprocessors as bpp
from bluesky.utils import Msg, make_decorator
from ophyd.utils.errors import DisconnectedError

from ..errors import TomostreamTimeout

log = logging.getLogger(__name__)

#: What ophyd raises when a device's IOC is gone (reads, puts).
DISCONNECTED = (DisconnectedError, TimeoutError)


def device_gone(device, exc: Exception) -> bool:
    """Whether ``exc`` (raised while talking to ``device``) means that its IOC is gone: a
    disconnection error, or any failure (a put-completion that never came back, ...) after
    which the device is found disconnected."""
    return isinstance(exc, DISCONNECTED) or not device.connected

#: Seconds to wait for TomoScan and TomoStream to report they have stopped [s].
STOP_TIMEOUT = 10.0
#: Poll period while waiting for them [s].
POLL_PERIOD = 0.1


def wait_for_value(signal, value, timeout: float = STOP_TIMEOUT,
                   poll: float = POLL_PERIOD) -> Generator[Msg, object, None]:
    """Poll ``signal`` until it reads ``value``.

    Raises
    ------
    TomostreamTimeout
        If it does not within ``timeout`` [s].
    """
    deadline = time.monotonic() + timeout
    while True:
        current = yield from bps.rd(signal, default_value=value)
        if current == value:
            return
        if time.monotonic() > deadline:
            raise TomostreamTimeout(f"{signal.name} is {current!r}, not {value!r}, after {timeout:g} s")
        yield from bps.sleep(poll)


def stop_stream(tomoscan, tomostream) -> Generator[Msg, object, None]:
    """Abort the scan and the reconstruction, then wait until both say they have stopped.

    A device whose PVs are gone (its IOC was killed) is skipped with a warning, so that the
    other one is still stopped and the error that ended the plan is the one reported.
    """
    waiting = []
    for device, abort, busy in ((tomoscan, tomoscan.abort_scan, tomoscan.start_scan),
                                (tomostream, tomostream.abort_recon, tomostream.start_recon)):
        if (yield from _unless_gone(device, bps.abs_set(abort, 1, wait=True))):
            waiting.append((device, busy))
    for device, busy in waiting:  # its IOC may also go after taking the abort
        yield from _unless_gone(device, wait_for_value(busy, 0))


def _unless_gone(device, plan) -> Generator[Msg, object, bool]:
    """Run ``plan``; if it fails because ``device`` is gone, log that and return False."""
    try:
        yield from plan
    except Exception as exc:
        if not device_gone(device, exc):
            raise
        log.warning("%s (%s*) is not connected, not seen stopping by this plan: %s", device.name,
                    device.prefix, exc)
        return False
    return True


def stream_stopped_wrapper(plan, tomoscan, tomostream):
    """Run ``plan``; whatever ends it (success, exception, abort, stop), stop scan and recon.

    Parameters
    ----------
    plan : iterable or iterator
        The plan to wrap.
    tomoscan : TomoScanStream
    tomostream : TomoStream
    """
    return (yield from bpp.finalize_wrapper(plan, stop_stream(tomoscan, tomostream)))


stream_stopped_decorator = make_decorator(stream_stopped_wrapper)
