"""The rotation axis found live: ``tomostream sim --center X`` (a real process, noise on) and a
StreamServer on loopback; CenterEstimate and CenterAuto read and written over Channel Access."""

from __future__ import annotations

import math
import os
import signal
import subprocess

import epics
import pytest
from helpers import start_recon, wait_until

from tomostream.sim.cli import spawn

TRUE_CENTER = 60.7          # [pixels] of a 128-pixel detector: 3.3 pixels left of the middle
TOLERANCE = 0.25            # [pixels]


@pytest.fixture
def sim_process(sim_prefix, unique_prefix, sim_ca_port):
    """``tomostream sim --center TRUE_CENTER`` at 128^2, 1 degree per frame, no inclusion."""
    proc = spawn(["--prefix", sim_prefix, "--plugin-prefix", unique_prefix + "Pva1:", "--size", "128",
                  "--center", str(TRUE_CENTER), "--step", "1", "--fps", "100", "--num-angles", "90",
                  "--inclusion", "none", "--photons", "2000"],
                 env=dict(os.environ, EPICS_CA_SERVER_PORT=str(sim_ca_port)),
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pv = epics.get_pv(sim_prefix + "ScanStatus")
        wait_until(lambda: proc.poll() is not None or pv.connected, 60.0, "the simulator answering")
        assert proc.poll() is None, proc.communicate()
        yield proc
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)


def settled(server) -> bool:
    """Whether the last estimate was made from every frame the reconstruction has taken."""
    return server.center_estimated_at == server.counters.get("FramesUsed")


def test_center_estimate_and_center_auto_follow_the_true_axis(server, sim_process, ca, sim_ca):
    ca.put("Center", 64.0)
    start_recon(ca, server)
    assert math.isnan(ca.get("CenterEstimate"))              # no frames yet

    # a scan of 90 degrees: the buffer never covers half a turn, so there is no estimate
    sim_ca.put("StartScan", 1, timeout=60.0)
    wait_until(lambda: ca.get("FramesUsed") >= 80 and settled(server), 30.0,
               lambda: f"90 degrees taken: FramesUsed {ca.get('FramesUsed')}")
    assert math.isnan(ca.get("CenterEstimate"))

    # 200 degrees: one half turn and more (the first frames may race the new angle table)
    sim_ca.put("NumAngles", 200)
    sim_ca.put("StartScan", 1, timeout=60.0)
    wait_until(lambda: math.isfinite(ca.get("CenterEstimate")) and settled(server), 30.0,
               lambda: f"an estimate; BufferSize {ca.get('BufferSize')}, "
                       f"ReconStatus {ca.text('ReconStatus')!r}")
    estimate = ca.get("CenterEstimate")
    assert abs(estimate - TRUE_CENTER) <= TOLERANCE
    assert ca.get("Center") == pytest.approx(64.0)            # CenterAuto is No: left alone

    ca.put("CenterAuto", "Yes")
    wait_until(lambda: ca.get("Center") == pytest.approx(estimate), 30.0,
               lambda: f"Center {ca.get('Center')} following CenterEstimate {estimate}")
    wait_until(lambda: server.reconstructor.params.center == pytest.approx(estimate), 30.0,
               "the reconstruction using the new Center")
    assert abs(ca.get("Center") - TRUE_CENTER) <= TOLERANCE
