"""A simulated beamline, the stream server and an embedded catalog, shared by a module."""

from __future__ import annotations

import uuid

import pytest
from helpers import beamline_ports

from tomostream.demo import simulated_beamline
from tomostream.devices import TomoScanStream, TomoStream, destroy_devices
from tomostream.io import catalog as cat

#: Frames per scan and frame rate: a scan lasts NUM_ANGLES / FPS seconds.
NUM_ANGLES = 1200
FPS = 100.0


@pytest.fixture(scope="module")
def catalog_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("catalog")
    yield path
    cat.close_catalog(path)


@pytest.fixture(scope="module")
def catalog(catalog_dir):
    return cat.open_catalog(data_dir=catalog_dir)


@pytest.fixture(scope="module")
def beamline(catalog_dir):
    root = f"t{uuid.uuid4().hex[:8]}:"
    with simulated_beamline(root, width=64, height=32, fps=FPS, step=1.0, num_angles=NUM_ANGLES,
                            capture_dir=cat.capture_dir(catalog_dir),
                            **beamline_ports()) as bl:
        yield bl


@pytest.fixture(scope="module")
def devices(beamline):
    tomoscan = TomoScanStream(beamline.tomoscan_prefix, name="tomoscan")
    tomostream = TomoStream(beamline.tomostream_prefix, name="tomostream")
    tomoscan.wait_for_connection(timeout=30)
    tomostream.wait_for_connection(timeout=30)
    yield tomoscan, tomostream
    destroy_devices(tomostream, tomoscan)
