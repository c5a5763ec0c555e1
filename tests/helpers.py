"""Helpers shared by the test suite: polling, Channel Access shorthands, server wiring.

Importable as ``helpers`` from every test module (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import os
import time

import epics
import numpy as np
import pytest

from tomostream.ioc.tomostream_ioc import STATUS_LENGTH


def pixels(uid: int, dtype=np.uint16, shape=(8, 12)) -> np.ndarray:
    """Small test image that tells frame ``uid`` apart from its neighbours."""
    return (np.arange(shape[0] * shape[1]) + uid % 100).astype(dtype).reshape(shape)


#: Seconds between two looks of :func:`wait_until`.
POLL = 0.01
#: Least time [s] :func:`wait_until` waits for a condition. Waiting ends as soon as it holds,
#: so only a failing test waits this long; a loaded 2-core machine can hold a thread for
#: seconds, and a test must not fail for that. A bound that is itself the behaviour under test
#: is asserted on the clock by the test.
PATIENCE = 30.0


def wait_until(predicate, timeout=10.0, what="condition"):
    """Poll ``predicate`` until it holds and return what it returned; fail the test after
    ``timeout`` seconds (at least :data:`PATIENCE`).

    The one polling helper of the suite. ``predicate`` holds when it returns something true, or
    an array (any array: a frame that has come). ``what`` names the condition in the failure
    message; a callable is called then.
    """
    timeout = max(timeout, PATIENCE)
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if isinstance(value, np.ndarray) or value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what() if callable(what) else what} not reached within {timeout} s")
        time.sleep(POLL)


def stopped_after(start):
    """Body of a factory fixture: yields ``make(**options)``, which returns ``start(**options)``
    (something started), and stops every one made when the test ends.

    Use as ``yield from stopped_after(start)``.
    """
    started = []

    def make(**options):
        made = start(**options)
        started.append(made)
        return made

    yield make
    for made in started:
        made.stop()

#: Seconds a stream server may take to follow a beamline on loopback. It takes well under a
#: second as a rule. A run that waited until this ran out showed the image subscriber holding a
#: frame while it still thought itself unconnected: on loopback the channel could connect
#: before pvapy's connection callback was set, which then never came. The subscriber now
#: checks the connection after setting the callback and takes a first value as proof.
FIRST_CONNECTION = 60.0


def start_recon(ca, server, timeout: float = FIRST_CONNECTION) -> None:
    """StartRecon (put without waiting) and wait until the server follows the beamline.

    On failure the message says what the server waits for, and whether an independent PVA
    client (p4p) finds that channel, to tell an unanswered search from a missing channel.
    """
    ca.put_nowait("StartRecon", 1)
    wait_until(lambda: server.ready, timeout, lambda: f"the server connected to the beamline: "
                                                      f"{ca.text('ReconStatus')!r}; {_pva_probe(server)}")
    assert ca.text("StartRecon") == "Acquire"


def _pva_probe(server) -> str:
    image = server.image_stream
    if image is None:
        return "no image subscriber yet"
    from p4p.client.thread import Context

    with Context("pva") as ctx:
        try:
            ctx.get(image.channel, timeout=3.0)
            found = "found"
        except Exception as exc:  # a diagnosis: any failure is the answer
            found = f"not found ({type(exc).__name__})"
    receiver = getattr(image, "receiver", image)  # one channel: the subscriber receiving now
    channel = getattr(receiver, "_channel", None)
    state = f"channel says connected={channel.isConnected()}" if channel is not None else "no channel"
    return (f"p4p {found} {image.channel}; subscriber counters {image.counters}, "
            f"connected={image.connected} (ever={getattr(receiver, '_ever_connected', '?')}), "
            f"{state}")


def channel_defaults(stream_prefix: str, sim_prefix: str) -> dict[str, str]:
    """StreamServer keywords that point its channel names at the beamline ``sim_prefix``."""
    return dict(tomoscan_prefix=sim_prefix, image_pvap_name=sim_prefix + "PvaPluginPVPrefix",
                dark_pva_name=sim_prefix + "StreamDarkFields",
                flat_pva_name=sim_prefix + "StreamFlatFields",
                theta_pva_name=sim_prefix + "StreamTheta", recon_pva_name=stream_prefix + "Recon")


class Ca:
    """caget / caput on the PVs of one prefix (pyepics, no monitor cache)."""

    def __init__(self, prefix: str):
        self.prefix = prefix

    def get(self, suffix, **kw):
        value = epics.caget(self.prefix + suffix, timeout=PATIENCE, use_monitor=False, **kw)
        assert value is not None, f"no answer from {self.prefix}{suffix}"
        return value

    def text(self, suffix):
        # ask for the whole waveform: pyepics may otherwise reuse the length of an earlier,
        # shorter value and return a truncated message
        return self.get(suffix, as_string=True, count=STATUS_LENGTH)

    def put(self, suffix, value, wait=True, timeout=20.0):
        assert epics.caput(self.prefix + suffix, value, wait=wait, timeout=timeout) == 1, suffix

    def put_nowait(self, suffix, value, callback=None):
        pv = epics.get_pv(self.prefix + suffix)
        assert pv.wait_for_connection(PATIENCE), suffix
        pv.put(value, wait=False, use_complete=True, callback=callback)


def beamline_ports() -> dict:
    """``sim_port`` and ``stream_port`` of the suite (tests/conftest.py), as
    :func:`tomostream.demo.simulated_beamline` takes them."""
    return {"sim_port": int(os.environ["TOMOSTREAM_TEST_SIM_PORT"]),
            "stream_port": int(os.environ["TOMOSTREAM_TEST_STREAM_PORT"])}
