"""Fixtures of the reliability tests: a stream server, a small simulated beamline, CA helpers."""

from __future__ import annotations

from contextlib import closing

import pytest
from helpers import channel_defaults, stopped_after
from rel_helpers import StatusLog, make_sim

from tomostream.server import StreamServer


@pytest.fixture
def make_server(stream_prefix, sim_prefix, stream_ca_port):
    """``make_server(**options)``: a started StreamServer (NumPy backend), stopped at the end."""
    def start(**options):
        kw = dict(ca_port=stream_ca_port, backend="numpy", markers=False)
        kw.update(channel_defaults(stream_prefix, sim_prefix))
        kw.update(options)
        return StreamServer(stream_prefix, **kw).start()

    yield from stopped_after(start)


@pytest.fixture
def beamline(sim_prefix, unique_prefix, sim_ca_port):
    with make_sim(sim_prefix, unique_prefix, sim_ca_port) as sim:
        yield sim




@pytest.fixture
def status(stream_prefix):
    """Every value ReconStatus takes (a CA monitor)."""
    with closing(StatusLog(stream_prefix + "ReconStatus")) as log:
        yield log
