"""Fixtures of the reliability tests: a stream server, a small simulated beamline, CA helpers."""

from __future__ import annotations

import pytest
from rel_helpers import Ca, StatusLog, channel_defaults, make_sim, wait_until

from tomostream.server import StreamServer


@pytest.fixture(name="wait_until")
def wait_until_fixture():
    return wait_until


@pytest.fixture
def stream_prefix(unique_prefix):
    return f"{unique_prefix}TS:"


@pytest.fixture
def sim_prefix(unique_prefix):
    return f"{unique_prefix}SIM:"


@pytest.fixture
def make_server(stream_prefix, sim_prefix, stream_ca_port):
    """``make_server(**options)``: a started StreamServer (NumPy backend), stopped at the end."""
    started = []

    def make(**options):
        kw = dict(ca_port=stream_ca_port, backend="numpy", markers=False)
        kw.update(channel_defaults(stream_prefix, sim_prefix))
        kw.update(options)
        srv = StreamServer(stream_prefix, **kw).start()
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()


@pytest.fixture
def beamline(sim_prefix, unique_prefix, sim_ca_port):
    with make_sim(sim_prefix, unique_prefix, sim_ca_port) as sim:
        yield sim


@pytest.fixture
def ca(stream_prefix):
    return Ca(stream_prefix)


@pytest.fixture
def sim_ca(sim_prefix):
    return Ca(sim_prefix)


@pytest.fixture
def status(stream_prefix):
    """Every value ReconStatus takes (a CA monitor)."""
    log = StatusLog(stream_prefix + "ReconStatus")
    yield log
    log.close()
