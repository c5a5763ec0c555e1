"""TomoScanStream device against the simulated TomoScan streaming IOC."""

from __future__ import annotations

import pytest

from tomostream.devices import TomoScanStream, destroy_devices
from tomostream.sim import SimBeamline

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def sim(unique_prefix, sim_ca_port, tmp_path):
    with SimBeamline(prefix=f"{unique_prefix}TSS:", plugin_prefix=f"{unique_prefix}Pva1:", width=32,
                     height=16, fps=50.0, num_angles=50, ca_port=sim_ca_port, data_dir=tmp_path) as beamline:
        yield beamline


def test_pv_names_kinds_and_busy_records(sim, tmp_path):
    dev = TomoScanStream(sim.prefix, name="tomoscan")
    try:
        dev.wait_for_connection(timeout=30)
        names = {getattr(dev, c).pvname for c in dev.component_names}
        assert names <= set(sim.ioc.pvdb)  # every component names a PV the IOC serves
        config = dev.read_configuration()
        assert config["tomoscan_pva_plugin_prefix"]["value"] == f"{sim.plugin_prefix}"
        assert config["tomoscan_file_path"]["value"] == str(tmp_path)
        reading = dev.read()
        assert {"tomoscan_scan_status", "tomoscan_stream_file_name"} <= set(reading)
        assert not set(config) & set(reading)
        # a capture is a busy record: the Status finishes when the file is closed
        dev.stream_num_capture.set(3).wait(30)
        dev.stream_pre_count.set(0).wait(30)
        scan = dev.start_scan.set(1)
        dev.stream_capture.set(1).wait(20)
        assert dev.stream_file_name.get(use_monitor=False).endswith(".h5")
        assert dev.stream_num_captured.get(use_monitor=False) == 3
        scan.wait(20)  # 50 frames at 50 frames/s
        assert dev.start_scan.get(use_monitor=False) == 0
    finally:
        destroy_devices(dev)
