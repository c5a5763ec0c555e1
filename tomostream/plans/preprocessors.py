"""Cross-cutting behaviour of streaming plans, as wrappers and decorators."""

from __future__ import annotations

import time
from collections.abc import Generator

from bluesky import plan_stubs as bps
from bluesky import preprocessors as bpp
from bluesky.utils import Msg, make_decorator

from ..errors import TomostreamTimeout

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
    """Abort the scan and the reconstruction, then wait until both say they have stopped."""
    yield from bps.abs_set(tomoscan.abort_scan, 1, wait=True)
    yield from bps.abs_set(tomostream.abort_recon, 1, wait=True)
    yield from wait_for_value(tomoscan.start_scan, 0)
    yield from wait_for_value(tomostream.start_recon, 0)


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
