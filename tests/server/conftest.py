"""A StreamServer on the stream CA port whose channel names point at ``<prefix>SIM:``."""

from __future__ import annotations

import pytest
from helpers import channel_defaults

from tomostream.server import StreamServer


@pytest.fixture
def server(stream_prefix, sim_prefix, stream_ca_port):
    """A started StreamServer (NumPy backend) following the beamline at ``sim_prefix``."""
    srv = StreamServer(stream_prefix, ca_port=stream_ca_port, backend="numpy",
                       **channel_defaults(stream_prefix, sim_prefix))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
