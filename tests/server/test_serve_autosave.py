"""``tomostream serve`` keeps its settings across restarts; names can be given on its command line."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

import epics
import pytest
from helpers import Ca, wait_until

from tomostream.ioc.autosave import END, autosave_path


@contextlib.contextmanager
def serve(prefix, port, *options, data_dir):
    """``tomostream serve`` in a child process until the block ends (then SIGINT)."""
    env = {**os.environ, "TOMOSTREAM_DATA_DIR": str(data_dir)}
    proc = subprocess.Popen([sys.executable, "-m", "tomostream.cli", "serve", "--prefix", prefix,
                             "--ca-port", str(port), "--backend", "numpy", *options],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        ca = Ca(prefix)
        for suffix in ("ServerRunning", "Center", "ReconStatus"):   # found again after a restart
            pv = epics.get_pv(prefix + suffix)
            wait_until(lambda pv=pv: pv.connected or proc.poll() is not None, 60.0, "the served IOC")
        assert proc.poll() is None, proc.stderr.read()
        wait_until(lambda: ca.text("ServerRunning") == "Running", 10.0, "its heartbeat")
        wait_until(lambda: ca.text("ReconStatus").startswith("Stopped: ready"), 60.0,
                   lambda: f"its kernels compiled: {ca.text('ReconStatus')!r}")
        yield ca
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


@pytest.fixture
def prefix(unique_prefix):
    return f"{unique_prefix}CLI:"


def test_settings_survive_a_restart_and_the_command_line_wins(prefix, stream_ca_port, tmp_path):
    path = autosave_path(tmp_path, prefix)                  # the default place
    with serve(prefix, stream_ca_port, "--dark-pva-name", "cli:Dark", "--sample-y-pv-name", "cli:m9",
               data_dir=tmp_path) as ca:
        assert "no autosave file yet" in ca.text("ReconStatus")
        assert ca.get("DarkPVAName") == "cli:Dark" and ca.get("SampleYPVName") == "cli:m9"
        ca.put("Center", 33.5)
        ca.put("FilterType", 2)
        ca.put("ThetaPVAName", "saved:Theta")
        ca.put("DarkPVAName", "saved:Dark")
        wait_until(lambda: path.exists() and f"{prefix}ThetaPVAName saved:Theta" in path.read_text(),
                   20.0, "the settings in the autosave file")
    with serve(prefix, stream_ca_port, "--autosave", str(path), "--dark-pva-name", "cli:Dark2",
               data_dir=tmp_path / "elsewhere") as ca:
        assert "settings restored from" in ca.text("ReconStatus")
        assert ca.get("Center") == pytest.approx(33.5)
        assert ca.get("FilterType", as_string=True) == "Ramp"
        assert ca.get("ThetaPVAName") == "saved:Theta"
        assert ca.get("DarkPVAName") == "cli:Dark2"                 # given: wins over the file
        assert ca.get("ReconPVAName") == prefix + "StreamRecon"     # saved default, restored
        assert ca.get("SampleYPVName") == "cli:m9"                  # given before, restored
    with serve(prefix, stream_ca_port, "--no-autosave", data_dir=tmp_path) as ca:
        assert ca.get("Center") == 0.0 and ca.get("ThetaPVAName") == "2bmb:TomoScanStream:StreamTheta"
        assert ca.get("MctOpticsPVPrefix") == "2bm:MCTOptics:" and ca.get("SampleYPVName") == "2bmb:m25"
        ca.put("Center", 7.0)
    assert f"{prefix}Center 33.5" in path.read_text()              # untouched


def test_a_corrupt_autosave_file_is_reported_and_the_defaults_used(prefix, stream_ca_port, tmp_path):
    path = tmp_path / "settings.sav"
    path.write_text(f"{prefix}Center 12\n{prefix}FilterType 2\n")        # no {END}: cut short
    with serve(prefix, stream_ca_port, "--autosave", str(path), "--tomoscan-prefix", "x:TS:",
               data_dir=tmp_path) as ca:
        status = ca.text("ReconStatus")
        assert "cut short" in status and "defaults used" in status, status
        assert ca.get("Center") == 0.0 and ca.get("FilterType", as_string=True) == "Parzen"
        assert ca.get("FlatPVAName") == "x:TS:StreamFlatFields"       # names follow the prefix
        wait_until(lambda: path.exists() and path.read_text().rstrip().endswith(END), 20.0,
                   "a fresh autosave file")
    assert path.with_name("settings.sav.corrupt").exists()
