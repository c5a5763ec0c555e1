"""``tomostream sim`` as a real process: help text, start, answer on CA, stop on SIGINT."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from tomostream.sim.cli import main


def test_help_says_how_to_run_beside_the_server(capsys):
    try:
        main(["--help"])
    except SystemExit as exc:
        assert exc.code == 0
    out = capsys.readouterr().out
    assert "EPICS_CA_SERVER_PORT" in out and "EPICS_CA_ADDR_LIST" in out
    assert "StreamCapture" in out and "--fps" in out


def test_bad_option_is_a_clear_error(capsys):
    assert main(["--size", "30", "--ca-port", "1"]) == 1
    assert "width=30" in capsys.readouterr().err


def test_a_center_that_puts_the_sample_out_of_the_field_is_a_clear_error(capsys):
    assert main(["--size", "128", "--center", "20", "--ca-port", "1"]) == 1
    err = capsys.readouterr().err
    assert "center=20 pixels puts the sample" in err and "out of the 128-pixel field" in err


def test_runs_until_sigint_and_scans(sim_ca_port, unique_prefix, ca_for, wait):
    prefix = unique_prefix + "Cli:"
    env = dict(os.environ, EPICS_CA_SERVER_PORT=str(sim_ca_port))
    proc = subprocess.Popen([sys.executable, "-m", "tomostream.sim.cli", "--prefix", prefix,
                             "--plugin-prefix", unique_prefix + "P:", "--size", "32", "--fps", "50",
                             "--num-angles", "100000", "--start-scan"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ca = ca_for(prefix)
        wait(lambda: ca.get("StartScan") == "Acquire", timeout=30, what="scan running")
        assert ca.get("StreamCBStatusMessage").split("/")[0].isdigit()
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Ctrl-C" in out


# A parent starts a simulator with spawn(), waits until it serves, prints its pid and dies
# without cleaning up (SIGKILL): the simulator must not outlive it.
ORPHAN = textwrap.dedent("""
    import os, signal, subprocess, sys, time
    import epics
    from tomostream.sim.cli import spawn

    prefix = sys.argv[1]
    child = spawn(["--prefix", prefix, "--plugin-prefix", sys.argv[2], "--size", "32",
                   "--num-angles", "100"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while epics.caget(prefix + "ScanStatus", timeout=1.0) is None:
        assert time.monotonic() < deadline, "simulator never answered"
    print(child.pid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal: Linux only")
def test_spawned_simulator_ends_with_its_parent(sim_ca_port, unique_prefix, wait):
    env = dict(os.environ, EPICS_CA_SERVER_PORT=str(sim_ca_port))
    parent = subprocess.run([sys.executable, "-c", ORPHAN, unique_prefix + "Orphan:", unique_prefix + "OP:"],
                            env=env, capture_output=True, text=True, timeout=120)
    assert parent.returncode == -signal.SIGKILL, parent.stderr
    pid = int(parent.stdout.split()[-1])

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:
            with open(f"/proc/{pid}/stat") as f:    # a zombie waiting for init is gone too
                return f.read().split(")")[-1].split()[0] == "Z"
        except FileNotFoundError:
            return True

    try:
        wait(gone, timeout=20, what="the orphaned simulator to end")
    finally:
        if not gone():
            os.kill(pid, signal.SIGKILL)
