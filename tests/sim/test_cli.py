"""``tomostream sim`` as a real process: help text, start, answer on CA, stop on SIGINT."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

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
