"""The catalog: embedded Tiled server, persistence, databroker view, spool and replay."""

from __future__ import annotations

import numpy as np
import pytest
from bluesky import RunEngine
from bluesky.plans import count
from ophyd.sim import SynAxis, SynGauss

from tomostream.errors import ConnectionLost
from tomostream.io import catalog as cat
from tomostream.io import open_catalog


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("catalog")
    yield path
    cat.close_catalog(path)


def _det():
    motor = SynAxis(name="motor")
    return SynGauss("det", motor, "motor", center=0, Imax=1, sigma=1)


def test_runs_recorded_and_survive_restart(data_dir):
    catalog = open_catalog(data_dir=data_dir)
    assert "CatalogOfBlueskyRuns" in [s.name for s in catalog.specs]
    RE = RunEngine({})
    RE.subscribe(cat.catalog_writer(catalog))
    (uid,) = RE(count([_det()], num=3), sample="disc")
    run = catalog[uid]
    assert run.metadata["start"]["sample"] == "disc"
    assert run.metadata["stop"]["exit_status"] == "success"
    assert np.asarray(run["primary"]["det"].read()).shape == (3,)

    cat.close_catalog(data_dir)
    again = open_catalog(data_dir=data_dir)
    assert uid in again
    assert again[uid].metadata["stop"]["num_events"]["primary"] == 3


def test_databroker_view(data_dir):
    catalog = open_catalog(data_dir=data_dir)
    RE = RunEngine({})
    RE.subscribe(cat.catalog_writer(catalog))
    (uid,) = RE(count([_det()], num=2))
    header = cat.broker_view(catalog)[-1]
    assert header.start["uid"] == uid
    assert list(header.table()["det"]) == [1.0, 1.0]
    # the v1 view leaves the catalog, and clients opened later, reading runs as before
    for client in (catalog, open_catalog(data_dir=data_dir)):
        np.testing.assert_array_equal(client[uid]["primary"]["det"].read(), [1.0, 1.0])


def test_unreachable_uri_is_a_clear_error():
    import stamina

    from tomostream.epics_env import free_port

    uri = f"http://127.0.0.1:{free_port()}/api/v1"
    with stamina.set_testing(True, attempts=1), pytest.raises(ConnectionLost, match="127.0.0.1"):
        open_catalog(uri, api_key="secret")


def test_run_spooled_when_catalog_stops_mid_run_then_replayed(tmp_path):
    data_dir = tmp_path / "cat"
    catalog = open_catalog(data_dir=data_dir)
    spool = cat.spool_dir(data_dir)
    RE = RunEngine({})
    RE.subscribe(cat.catalog_writer(catalog, spool))

    def plan():
        det = _det()
        yield from count([det], num=1)
        # the catalog dies between two runs' worth of events, in the middle of this one
        from bluesky import plan_stubs as bps
        from bluesky import preprocessors as bpp

        @bpp.run_decorator(md={"purpose": "interrupted"})
        def inner():
            yield from bps.trigger_and_read([det])
            cat.close_catalog(data_dir)
            yield from bps.trigger_and_read([det])

        return (yield from inner())

    uids = RE(plan())
    assert len(uids) == 2
    files = cat.spooled_runs(spool)
    assert len(files) == 1
    lost_uid = uids[1]

    catalog = open_catalog(data_dir=data_dir)
    assert cat.replay_spool(catalog, spool) == [lost_uid]
    run = catalog[lost_uid]
    assert run.metadata["stop"]["exit_status"] == "success"
    assert np.asarray(run["primary"]["det"].read()).shape == (2,)
    assert cat.spooled_runs(spool) == []
    cat.close_catalog(data_dir)


KILLED_SESSION = """
import os, sys
from bluesky import RunEngine
from bluesky import plan_stubs as bps
from bluesky import preprocessors as bpp
from ophyd.sim import SynAxis, SynGauss
from tomostream.io.spool import catalog_writer

det = SynGauss("det", SynAxis(name="motor"), "motor", center=0, Imax=1, sigma=1)
RE = RunEngine({})
RE.subscribe(catalog_writer(None, sys.argv[1]))

@bpp.run_decorator(md={"purpose": "killed"})
def plan():
    yield from bps.trigger_and_read([det])
    yield from bps.trigger_and_read([det])
    os._exit(0)          # the process dies mid-run: no stop document, nothing cleaned up

RE(plan())
"""


def test_a_run_of_a_killed_session_is_replayed_closed_as_failed(tmp_path):
    import subprocess
    import sys

    from tomostream.io.spool import UNCLOSED_REASON

    spool = tmp_path / "spool"
    subprocess.run([sys.executable, "-c", KILLED_SESSION, str(spool)], check=True, timeout=120)
    (journal,) = cat.spooled_runs(spool)
    catalog = open_catalog(data_dir=tmp_path / "cat")
    try:
        assert cat.replay_spool(catalog, spool) == [journal.stem]
        run = catalog[journal.stem]
        assert run.metadata["start"]["purpose"] == "killed"
        stop = run.metadata["stop"]
        assert (stop["exit_status"], stop["reason"]) == ("fail", UNCLOSED_REASON)
        assert stop["num_events"] == {"primary": 2}
        assert np.asarray(run["primary"]["det"].read()).shape == (2,)
    finally:
        cat.close_catalog(tmp_path / "cat")


def test_replay_leaves_a_run_still_being_written_alone(tmp_path):
    import uuid

    uid = str(uuid.uuid4())
    spool = tmp_path / "spool"
    writer = cat.catalog_writer(None, spool)        # a session that found no catalog
    writer("start", {"uid": uid, "time": 1.0, "scan_id": 1})
    stop = {"uid": f"{uid}-stop", "run_start": uid, "time": 2.0,
            "exit_status": "success", "num_events": {}}
    catalog = open_catalog(data_dir=tmp_path / "cat")
    try:
        assert cat.replay_spool(catalog, spool) == []   # its journal is locked while the run is open
        assert [p.stem for p in cat.spooled_runs(spool)] == [uid]
        writer("stop", stop)
        assert cat.replay_spool(catalog, spool) == [uid]
        assert catalog[uid].metadata["stop"]["exit_status"] == "success"
    finally:
        writer("stop", stop)                            # idempotent: the run is closed once
        cat.close_catalog(tmp_path / "cat")
