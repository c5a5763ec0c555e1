"""The IPython profile starts a session (simulated beamline) under ``ipython -c``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tomostream.epics_env import free_port

pytestmark = pytest.mark.timeout(150)

REPO = Path(__file__).resolve().parents[1]


def test_profile_starts_and_runs_a_short_scan(tmp_path, unique_prefix):
    config = (REPO / "profile" / "tomostream.toml").read_text()
    config = config.replace('prefix = "sim:"', f'prefix = "{unique_prefix}"')
    config = config.replace('num_angles = 1440', 'num_angles = 300')
    (tmp_path / "tomostream.toml").write_text(config)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EPICS_", "TOMOSTREAM_"))}
    env.update(TOMOSTREAM_CONFIG=str(tmp_path / "tomostream.toml"),
               TOMOSTREAM_DATA_DIR=str(tmp_path / "data"),
               TOMOSTREAM_SIM_PORT=str(free_port()), TOMOSTREAM_STREAM_PORT=str(free_port()),
               MPLBACKEND="Agg")
    command = ("(uid,) = RE(stream_scan(tomoscan, tomostream, duration=1.0, poll_period=0.3)); "
               "print('RESULT', catalog[uid].metadata['stop']['exit_status'], tomostream.name, "
               "db[-1].start['uid'] == uid)")
    ipython = Path(sys.executable).with_name("ipython")
    done = subprocess.run([str(ipython), f"--profile-dir={REPO / 'profile'}", "--no-banner", "-c", command],
                          env=env, capture_output=True, text=True, timeout=140, cwd=tmp_path)
    assert "RESULT success tomostream True" in done.stdout, done.stdout[-2000:] + done.stderr[-3000:]
    assert f"simulated beamline {unique_prefix}TomoScanStream:" in done.stdout
