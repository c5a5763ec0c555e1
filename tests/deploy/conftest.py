"""A beamline's catalog server for each deployment test module: PostgreSQL + ``tiled serve config``.

Started once per module (a few seconds for PostgreSQL, about ten for Tiled on a loaded 2-core
machine) and stopped after it.
"""

from __future__ import annotations

import pytest
from deploy_servers import make_tiled, start_postgres


@pytest.fixture(scope="module")
def deploy_dir(tmp_path_factory):
    """Logs and server state of the module."""
    return tmp_path_factory.mktemp("deploy")


@pytest.fixture(scope="module")
def data_dir(deploy_dir):
    """A session's data folder: captures, snapshots and spool (the catalog server reads the
    first two, as deploy/tiled/config.yml lists them)."""
    path = deploy_dir / "session"
    for name in ("captures", "snapshots"):
        (path / name).mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def postgres(deploy_dir):
    pg = start_postgres(deploy_dir)
    yield pg
    pg.stop()


@pytest.fixture(scope="module")
def tiled(postgres, deploy_dir, data_dir):
    """The catalog server of deploy/tiled/config.yml, on PostgreSQL, with an API key."""
    server = make_tiled(postgres, deploy_dir / "tiled", data_dir / "captures", data_dir / "snapshots")
    try:
        yield server.start()
    finally:
        server.service.stop()
