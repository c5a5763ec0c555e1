"""A StreamServer on the stream CA port whose channel names point at ``<prefix>SIM:``."""

from __future__ import annotations

import pytest
from stream_helpers import Ca, wait_until

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
def server(stream_prefix, sim_prefix, stream_ca_port):
    """A started StreamServer (NumPy backend) following the beamline at ``sim_prefix``."""
    sim = sim_prefix
    srv = StreamServer(stream_prefix, ca_port=stream_ca_port, backend="numpy",
                       tomoscan_prefix=sim, image_pvap_name=sim + "PvaPluginPVPrefix",
                       dark_pva_name=sim + "StreamDarkFields", flat_pva_name=sim + "StreamFlatFields",
                       theta_pva_name=sim + "StreamTheta", recon_pva_name=stream_prefix + "Recon")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def ca(stream_prefix):
    return Ca(stream_prefix)


@pytest.fixture
def sim_ca(sim_prefix):
    return Ca(sim_prefix)
