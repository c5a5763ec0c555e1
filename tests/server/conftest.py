"""A StreamServer on the stream CA port, and Channel Access helpers for the tests."""

from __future__ import annotations

import time

import epics
import pytest

from tomostream.server import StreamServer


def wait_until(predicate, timeout=10.0, what="condition"):
    """Poll ``predicate`` until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not reached within {timeout} s")
        time.sleep(0.05)


class Ca:
    """caget / caput on the PVs of one prefix (pyepics, no monitor cache)."""

    def __init__(self, prefix: str):
        self.prefix = prefix

    def get(self, suffix, **kw):
        value = epics.caget(self.prefix + suffix, timeout=5.0, use_monitor=False, **kw)
        assert value is not None, f"no answer from {self.prefix}{suffix}"
        return value

    def text(self, suffix):
        return self.get(suffix, as_string=True)

    def put(self, suffix, value, wait=True):
        assert epics.caput(self.prefix + suffix, value, wait=wait, timeout=10.0) == 1, suffix

    def put_nowait(self, suffix, value, callback=None):
        pv = epics.get_pv(self.prefix + suffix)
        assert pv.wait_for_connection(5.0), suffix
        pv.put(value, wait=False, use_complete=True, callback=callback)


@pytest.fixture(name="wait_until")
def wait_until_fixture():
    return wait_until


@pytest.fixture
def stream_prefix(unique_prefix):
    return f"{unique_prefix}TS:"


@pytest.fixture
def server(stream_prefix, stream_ca_port, unique_prefix):
    """A started StreamServer whose channel names point at ``<unique_prefix>SIM:``."""
    sim = f"{unique_prefix}SIM:"
    srv = StreamServer(stream_prefix, ca_port=stream_ca_port, backend="numpy",
                       tomoscan_prefix=sim, image_pvap_name=sim + "PvaPluginPVPrefix",
                       dark_pva_name=sim + "StreamDarkFields", flat_pva_name=sim + "StreamFlatFields",
                       theta_pva_name=sim + "StreamTheta", recon_pva_name=stream_prefix + "Recon")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def ca(stream_prefix):
    return Ca(stream_prefix)
