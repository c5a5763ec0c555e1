"""Test-wide set-up: every EPICS server and client of the suite stays on loopback.

Channel Access clients (pyepics, caproto) read their address list once per process, so the
CA search ports of the two kinds of IOC the suite runs (the simulated TomoScan IOC and the
TomoStream IOC) are chosen here, before any EPICS library is imported, and exported for the
fixtures. A restarted IOC reuses its port.
"""

from __future__ import annotations

import os
import tempfile
import uuid

import pytest
from helpers import Ca, wait_until

from tomostream.epics_env import apply_env, free_port, loopback_env

SIM_CA_PORT = int(os.environ.get("TOMOSTREAM_TEST_SIM_PORT") or free_port())
STREAM_CA_PORT = int(os.environ.get("TOMOSTREAM_TEST_STREAM_PORT") or free_port())
apply_env(loopback_env(ca_ports=(SIM_CA_PORT, STREAM_CA_PORT)))
os.environ.setdefault("TOMOSTREAM_TEST_SIM_PORT", str(SIM_CA_PORT))
os.environ.setdefault("TOMOSTREAM_TEST_STREAM_PORT", str(STREAM_CA_PORT))
# servers started by the tests (autosave files, catalogs) write here, never in the home folder
os.environ.setdefault("TOMOSTREAM_DATA_DIR", tempfile.mkdtemp(prefix="tomostream-test-data-"))


def _gpu_available() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no CuPy, no driver, no device: all mean "no GPU here"
        return False


GPU = _gpu_available()


def pytest_collection_modifyitems(config, items):
    if GPU:
        return
    skip = pytest.mark.skip(reason="needs CuPy and a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def sim_ca_port() -> int:
    """CA search port for the simulated TomoScan IOC."""
    return SIM_CA_PORT


@pytest.fixture
def stream_ca_port() -> int:
    """CA search port for the TomoStream IOC."""
    return STREAM_CA_PORT


@pytest.fixture
def unique_prefix() -> str:
    """A random PV prefix root, so concurrent runs never see each other's PVs."""
    return f"t{uuid.uuid4().hex[:8]}:"


@pytest.fixture(name="wait_until")
def wait_until_fixture():
    """:func:`helpers.wait_until`: poll a predicate, fail the test after a timeout."""
    return wait_until


@pytest.fixture
def stream_prefix(unique_prefix):
    """PV prefix of a stream server under test."""
    return f"{unique_prefix}TS:"


@pytest.fixture
def sim_prefix(unique_prefix):
    """PV prefix of a simulated beamline under test."""
    return f"{unique_prefix}SIM:"


@pytest.fixture
def ca(stream_prefix):
    """Channel Access shorthands on the stream server's PVs."""
    return Ca(stream_prefix)


@pytest.fixture
def sim_ca(sim_prefix):
    """Channel Access shorthands on the simulated TomoScan's PVs."""
    return Ca(sim_prefix)
