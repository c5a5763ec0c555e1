"""The catalog server of a beamline: Tiled on PostgreSQL with an API key, captures read in place.

One session (the IPython profile, simulated beamline, in its own process) records a stream scan
with a capture into the server; this process, another session, reads it back. Then the bad
cases: a wrong or missing API key, and a server that goes down mid-run and comes back.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import stamina
from bluesky import RunEngine
from bluesky import plan_stubs as bps
from bluesky import preprocessors as bpp
from bluesky.plans import count
from deploy_servers import REPO, remote_catalog
from ophyd.sim import SynAxis, SynGauss

from tomostream.epics_env import free_port
from tomostream.errors import AccessDenied, ConnectionLost
from tomostream.io import catalog as cat
from tomostream.io import open_catalog, read_capture

pytestmark = pytest.mark.timeout(300)

#: Seconds the writing session may take: start Python, the simulated beamline, one scan.
SESSION = 240


def session_config(path: Path, uri: str, data_dir: Path, prefix: str) -> Path:
    """A profile configuration: simulated beamline, the catalog server at ``uri``."""
    path.write_text(f"""
[beamline]
tomoscan_prefix = ""
tomostream_prefix = ""
[catalog]
uri = "{uri}"
api_key = ""
data_dir = "{data_dir}"
[simulation]
prefix = "{prefix}"
width = 64
height = 32
fps = 100.0
step = 1.0
num_angles = 720
backend = "numpy"
""")
    return path


@pytest.fixture(scope="module")
def written(tiled, data_dir, deploy_dir):
    """uid of a stream scan with one capture, recorded by a profile session in its own process
    (API key from TILED_API_KEY, as a service would give it)."""
    prefix = f"dep{os.getpid()}:"
    config = session_config(deploy_dir / "session.toml", tiled.uri, data_dir, prefix)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EPICS_", "TOMOSTREAM_", "TILED_"))}
    env.update(TOMOSTREAM_CONFIG=str(config), TOMOSTREAM_DATA_DIR=str(data_dir),
               TILED_API_KEY=tiled.api_key, TOMOSTREAM_SIM_PORT=str(free_port()),
               TOMOSTREAM_STREAM_PORT=str(free_port()), MPLBACKEND="Agg")
    command = ("(uid,) = RE(stream_scan(tomoscan, tomostream, capture_when=lambda image: True, "
               "max_captures=1, num_capture=20, pre_count=8, poll_period=0.25, md={'sample': 'deploy'})); "
               "print('RESULT', uid)")
    ipython = Path(sys.executable).with_name("ipython")
    done = subprocess.run([str(ipython), f"--profile-dir={REPO / 'profile'}", "--no-banner", "-c", command],
                          env=env, capture_output=True, text=True, timeout=SESSION, cwd=deploy_dir)
    results = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert results, done.stdout[-2000:] + done.stderr[-3000:] + tiled.service.log()
    return results[0]


def test_a_run_written_by_one_session_is_read_by_another_captures_as_arrays(tiled, written, data_dir):
    with remote_catalog(tiled) as catalog:
        check_written_run(catalog, written, data_dir)


def check_written_run(catalog, written, data_dir):
    run = catalog[written]
    assert run.metadata["start"]["sample"] == "deploy"
    assert run.metadata["stop"]["exit_status"] == "success"
    assert len(run["primary"].read()["tomostream_frames_used"]) >= 1

    main = Path(str(run["captures"].read()["captures_file"].values[0]))
    assert main.parent == data_dir / "captures"               # read where the simulator wrote it
    capture = read_capture(main)
    assert capture.pre_count == 8
    frames = run["capture"]["capture_projections"].read()     # served by Tiled from the HDF5 files
    assert isinstance(frames, np.ndarray) and frames.shape == capture.projections.shape
    np.testing.assert_array_equal(frames, capture.projections)
    np.testing.assert_allclose(run["capture"]["capture_theta"].read(), capture.theta)
    slices = run["captures"]["captures_slices"].read()        # the snapshot, in the readable storage
    assert slices.shape == (1, 64, 192) and np.isfinite(slices).all()
    assert cat.spooled_runs(cat.spool_dir(data_dir)) == []   # the catalog took the run: no journal kept
    # the databroker v1 view of the same server
    assert cat.broker_view(catalog)[written].start["sample"] == "deploy"


def test_a_wrong_or_missing_api_key_is_refused_naming_the_server_and_the_key_to_check(tiled):
    with pytest.raises(AccessDenied) as refused:
        open_catalog(tiled.uri, api_key="not-the-key")
    message = str(refused.value)
    assert tiled.uri in message and "single_user_api_key" in message and "TILED_API_KEY" in message
    with pytest.raises(AccessDenied, match="needs an API key and none was given"):
        open_catalog(tiled.uri)


def _det():
    return SynGauss("det", SynAxis(name="motor"), "motor", center=0, Imax=1, sigma=1)


def test_a_catalog_server_down_keeps_runs_in_the_spool_and_they_are_replayed(tiled, tmp_path):
    spool = tmp_path / "spool"
    with remote_catalog(tiled) as catalog:
        cut, offline, down = write_while_the_server_goes_down(tiled, catalog, spool)
    message = str(down.value)
    assert tiled.uri in message and "systemctl status tomostream-catalog" in message
    assert {p.stem for p in cat.spooled_runs(spool)} == {cut, offline}

    tiled.start()                                # back, on the same PostgreSQL
    with remote_catalog(tiled) as catalog:
        assert sorted(cat.replay_spool(catalog, spool)) == sorted([cut, offline])
        assert catalog[cut].metadata["stop"]["exit_status"] == "success"
        assert np.asarray(catalog[cut]["primary"]["det"].read()).shape == (2,)   # before and after
        assert np.asarray(catalog[offline]["primary"]["det"].read()).shape == (3,)
    assert cat.spooled_runs(spool) == []


def write_while_the_server_goes_down(tiled, catalog, spool):
    """A run during which the server stops, then a run of a session that found it down."""
    engine = RunEngine({})
    engine.subscribe(cat.catalog_writer(catalog, spool))
    det = _det()

    @bpp.run_decorator(md={"purpose": "interrupted"})
    def interrupted():
        yield from bps.trigger_and_read([det])
        tiled.service.stop()                     # the catalog server goes down mid-run
        yield from bps.trigger_and_read([det])

    with stamina.set_testing(True, attempts=1):  # the client's retries only delay the failure
        (cut,) = engine(interrupted())
        assert engine.state == "idle"            # the run ended normally: the catalog is no part of it
        with pytest.raises(ConnectionLost) as down:   # a session starting now hears at once
            open_catalog(tiled.uri, api_key=tiled.api_key)
        offline_engine = RunEngine({})
        offline_engine.subscribe(cat.catalog_writer(None, spool))   # what the profile then does
        (offline,) = offline_engine(count([det], num=3))
    return cut, offline, down
