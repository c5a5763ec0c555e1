"""StreamServer without a beamline: IOC defaults, heartbeat, start/abort, bad input."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import threading

import epics
import numpy as np
import pytest
from helpers import Ca, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tomostream.server import (
    FrameTypeHistory,
    buffer_size_from_theta,
    dezinger_radius,
    main,
    projection_index,
)
from tomostream.server.frames import Counters, LatencyStats


def test_buffer_size_is_the_frames_of_180_degrees():
    assert buffer_size_from_theta(np.arange(0, 360, 0.5)) == 360
    assert buffer_size_from_theta(np.arange(0, 90, 0.5)) == 180  # table shorter than 180 deg
    sweep = np.arange(0, 180, 1.0)
    assert buffer_size_from_theta(np.concatenate([sweep, sweep[::-1], sweep])) == 180
    assert buffer_size_from_theta(np.array([5.0])) == 1


def test_projection_index_handles_the_uniqueid_wraps():
    assert projection_index(110, 100, 50) == 10
    assert projection_index(160, 100, 50) is None
    assert projection_index(4, 65530, 100) == 10  # 65535 -> 0 wrap
    assert projection_index(3, 2**31 - 7, 100) == 10  # 2**31 -> 0 wrap
    assert projection_index(99, 100, 50) is None  # before the scan: far outside the table


def test_frame_type_history_answers_by_time():
    h = FrameTypeHistory()
    assert h.type_at(5.0) is None
    h.record(10.0, "Projection")
    h.record(20.0, "DarkField")
    h.record(15.0, "FlatField")  # arrived late: sorted by time
    assert h.type_at(12.0) == "Projection"
    assert h.type_at(16.0) == "FlatField"
    assert h.type_at(25.0) == "DarkField"
    assert h.type_at(0.0) == "DarkField"  # no timestamp: the latest
    assert h.type_at(1.0) == "Projection"  # before every change: the oldest known
    assert h.only("Projection", 10.5, 14.0)
    assert not h.only("Projection", 14.0, 15.5)  # a flat field starts inside the window
    assert not h.only("Projection", 21.0, 30.0)


def test_latency_stats_keep_numbering_when_trimmed():
    stats = LatencyStats(keep=10)
    for k in range(30):
        stats.add([100.0 + k], 100.0 + k + 0.5)   # every frame 0.5 s late
    assert stats.count == 30 and len(stats.samples) <= 10
    assert stats.percentiles(25, 30) == {"p50": 0.5, "p99": 0.5, "max": 0.5, "count": 5}
    assert stats.percentiles(0, 5) == {}            # trimmed away
    stats.add([0.0], 200.0)                          # no timestamp: no sample
    assert stats.count == 30
    stats.add_delays([0.25, 0.75])                   # delays measured frame by frame
    assert stats.count == 32 and stats.percentiles(30, 32)["max"] == 0.75


def test_counters_subtract_ids_skipped_between_scans():
    class Sub:
        counters = {"received": 50, "bad": 2, "dropped": 3, "lost": 40}

    c = Counters(used=45, bad=1, between_scans=35)
    assert c.pvs(Sub) == {"FramesReceived": 52, "FramesUsed": 45, "FramesDropped": 3,
                          "FramesLost": 5, "FramesBad": 3}
    c.retire(Sub)
    assert c.pvs(None)["FramesReceived"] == 52


def test_dezinger_states():
    assert [dezinger_radius(s) for s in ("None", "Radius 2", "Radius 4")] == [0, 2, 4]


def test_defaults_and_heartbeat(server, ca, stream_prefix, unique_prefix, wait_until):
    assert ca.get("TomoScanPVPrefix") == f"{unique_prefix}SIM:"
    assert ca.get("ReconPVAName") == stream_prefix + "Recon"
    wait_until(lambda: ca.text("ServerRunning") == "Running", 5.0, "ServerRunning Running")
    assert ca.get("Watchdog") > 0
    # start() returns once the kernels are compiled, so no frame of a first scan waits for them
    assert server.warm.is_set()
    assert ca.text("ReconStatus").startswith("Stopped: ready")


def test_start_waits_for_the_beamline_and_abort_completes_the_put(server, ca, wait_until):
    done = threading.Event()
    ca.put_nowait("StartRecon", 1, callback=lambda **kw: done.set())
    wait_until(lambda: "waiting for" in ca.text("ReconStatus"), 10.0, "a waiting message")
    assert "PvaPluginPVPrefix" in ca.text("ReconStatus")
    assert ca.text("StartRecon") == "Acquire"
    assert not done.is_set()
    ca.put("AbortRecon", 1)
    assert done.wait(10.0)
    assert ca.text("StartRecon") == "Done"
    assert ca.text("AbortRecon") == "No"
    assert ca.text("ReconStatus").startswith("Stopped")
    assert server.running


def test_cli_help_explains_the_environment(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "EPICS_CA_ADDR_LIST" in out and "tomostream sim" in out and "OrthoX" in out


# -- random writes ---------------------------------------------------------------------------
FLOAT_PVS = ("Center", "CenterTweak", "CenterTweakUp", "CenterTweakDown", "RotX", "RotY", "RotZ",
             "Zoom", "Energy", "Distance", "Alpha", "PixelSize")
INT_PVS = ("OrthoX", "OrthoY", "OrthoZ")
ENUM_PVS = {"FilterType": 4, "Dezinger": 4, "RingRemoval": 2}
STRING_PVS = ("ImagePVAPName", "DarkPVAName", "FlatPVAName", "ThetaPVAName", "ReconPVAName",
              "TomoScanPVPrefix")

floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64),
                   st.floats(-1e4, 1e4))
writes = st.one_of(
    st.tuples(st.sampled_from(FLOAT_PVS + ("Watchdog",)), floats),
    st.tuples(st.sampled_from(("StartRecon", "AbortRecon")), st.integers(0, 5)),
    st.tuples(st.sampled_from(INT_PVS), st.integers(-2**31, 2**31 - 1)),
    st.tuples(st.sampled_from(sorted(ENUM_PVS)), st.integers(0, 15)),
    st.tuples(st.sampled_from(STRING_PVS),
              st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=39)),
)


def commands(server, ca, suffix, value):
    """A random write to StartRecon, AbortRecon or Watchdog: the server goes on."""
    if suffix == "StartRecon":
        ca.put_nowait(suffix, value)
        if value == 1:
            wait_until(lambda: ca.text("StartRecon") == "Acquire", 5.0, "StartRecon busy")
    else:
        ca.put(suffix, value)
    if value > 1 and suffix != "Watchdog":
        wait_until(lambda: f"{suffix}={value} is not one of" in ca.text("ReconStatus"), 5.0,
                   "a refusal message")
    ca.put("AbortRecon", 1)
    wait_until(lambda: ca.text("StartRecon") == "Done", 10.0, "StartRecon done")
    assert server.running
    wait_until(lambda: ca.text("ServerRunning") == "Running", 5.0, "the heartbeat")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(write=writes)
def test_random_writes_are_accepted_clamped_or_refused_with_a_message(server, ca, write):
    suffix, value = write
    if suffix in ("StartRecon", "AbortRecon", "Watchdog"):
        commands(server, ca, suffix, value)
        return
    before = ca.get(suffix, as_string=suffix in ENUM_PVS)
    ca.put(suffix, value)
    after = ca.get(suffix, as_string=suffix in ENUM_PVS)
    status = ca.text("ReconStatus")
    assert server.running
    if suffix in FLOAT_PVS:
        assert math.isfinite(after)
        if suffix in ("CenterTweakUp", "CenterTweakDown"):
            return
        if not (math.isfinite(value) and after == pytest.approx(value)):
            assert suffix in status, (suffix, value, after, status)
    elif suffix in INT_PVS:
        assert 0 <= after
        if after != value:
            assert f"{suffix}={value}" in status
    elif suffix in ENUM_PVS:
        states = [s for s in ("Parzen", "Shepp-logan", "Ramp", "Butterworth")]
        if after == before and value >= ENUM_PVS[suffix]:
            assert f"{suffix}={value}" in status, (suffix, value, status)
        assert after != "" and (suffix != "FilterType" or after in states)
    else:
        if after != value.strip():
            assert suffix in status, (suffix, value, after, status)


def test_serve_command_runs_until_sigint(unique_prefix, stream_ca_port, wait_until):
    prefix = f"{unique_prefix}CLI:"
    proc = subprocess.Popen([sys.executable, "-m", "tomostream.cli", "serve", "--prefix", prefix,
                             "--ca-port", str(stream_ca_port), "--backend", "numpy"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        ca = Ca(prefix)
        running = epics.get_pv(prefix + "ServerRunning")
        wait_until(lambda: running.connected, 60.0, "the served IOC")
        wait_until(lambda: ca.text("ServerRunning") == "Running", 10.0, "its heartbeat")
        assert ca.get("ReconPVAName") == prefix + "StreamRecon"
        assert ca.get("TomoScanPVPrefix") == "2bmb:TomoScanStream:"
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
