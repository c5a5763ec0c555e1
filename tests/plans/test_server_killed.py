"""A stream server that dies mid-scan ends RE(stream_scan(...)) with a clear error, TomoScan stopped.

A module of its own: killing the server spends the module's beamline.
"""

from __future__ import annotations

import threading

import pytest
from bluesky import RunEngine
from helpers import wait_until

from tomostream.errors import ConnectionLost
from tomostream.plans import stream_scan

pytestmark = pytest.mark.timeout(120)


def test_server_killed_mid_scan_ends_the_run_with_a_clear_error(beamline, devices):
    tomoscan, tomostream = devices
    RE = RunEngine({})
    stops = []
    RE.subscribe(lambda name, doc: stops.append(doc) if name == "stop" else None)
    events = []

    def kill_after_two_readings(name, doc):
        if name == "event" and doc["seq_num"] == 2 and not events:
            events.append(doc)
            # the whole server goes, IOC and PVA channels with it, as when its process is killed
            threading.Thread(target=beamline.server.stop).start()

    RE.subscribe(kill_after_two_readings)
    # the server may be seen going in either order: ServerRunning Stopped, or its PVs gone
    with pytest.raises(ConnectionLost, match="stream server's PVs .* are gone|stream server stopped"):
        RE(stream_scan(tomoscan, tomostream, poll_period=0.2))
    (stop,) = stops
    assert stop["exit_status"] == "fail"
    assert "stream server" in stop["reason"]
    assert tomoscan.start_scan.get(use_monitor=False) == 0     # the scan was stopped all the same
    wait_until(lambda: not beamline.sim.scanning, 5.0, "the simulated scan stopped")
