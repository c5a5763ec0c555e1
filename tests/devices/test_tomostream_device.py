"""TomoStream device against a real TomoStream IOC (caproto) over Channel Access."""

from __future__ import annotations

import pytest
from ophyd import Kind
from ophyd.utils import WaitTimeoutError

from tomostream.devices import FILTER_NAMES, TomoStream, destroy_devices
from tomostream.errors import BadParameter

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def device(tomostream_ioc):
    prefix, *_ = tomostream_ioc
    dev = TomoStream(prefix, name="ts")
    dev.wait_for_connection(timeout=30)
    yield dev
    destroy_devices(dev)


def test_every_pv_name_is_served_by_the_ioc(tomostream_ioc):
    prefix, group, _ = tomostream_ioc
    dev = TomoStream(prefix, name="ts")
    names = {getattr(dev, c).pvname for c in dev.component_names if hasattr(getattr(dev, c), "pvname")}
    assert names <= set(group.pvdb)
    # every PV of the IOC has a component (nothing the IOC serves is out of reach)
    served = {name for name in group.pvdb if "." not in name}
    assert served == names
    destroy_devices(dev)


def test_filter_names_are_the_states_the_ioc_serves(device):
    # what a client reads over Channel Access, in index order, as the APS record has them
    assert tuple(device.filter_type.metadata["enum_strs"]) == FILTER_NAMES


def test_kinds_give_a_clean_baseline(device):
    config = device.read_configuration()
    assert {"ts_center", "ts_filter_type", "ts_ortho_x", "ts_recon_pva_name"} <= set(config)
    reading = device.read()
    assert {"ts_recon_time", "ts_buffer_size", "ts_frames_dropped", "ts_server_running"} <= set(reading)
    assert not set(config) & set(reading)
    assert "ts_recon" not in reading and "ts_start_recon" not in reading
    assert set(device.hints["fields"]) == {"ts_recon_time", "ts_frames_used"}
    assert device.recon.kind == Kind.omitted
    desc = device.describe()
    assert desc["ts_frames_lost"]["dtype"] == "integer"
    assert desc["ts_server_running"]["dtype"] == "string"


def test_set_recon_changes_settings_at_once(device):
    status = device.set_recon(center=31.5, filter="shepp-logan", ortho=(3, 4, 5), rot=(1.0, 2.0, 3.0),
                              zoom=2.5)
    status.wait(10)
    assert device.center.get(use_monitor=False) == 31.5
    assert device.filter_type.get(use_monitor=False) == "Shepp-logan"
    assert [device.ortho_x.get(use_monitor=False), device.ortho_y.get(use_monitor=False),
            device.ortho_z.get(use_monitor=False)] == [3, 4, 5]
    assert device.rot_z.get(use_monitor=False) == 3.0
    assert device.zoom.get(use_monitor=False) == 2.5
    device.set_recon().wait(1)  # nothing to change is fine


@pytest.mark.parametrize("kwargs, match", [
    ({"filter": "gauss"}, "FilterType='gauss'"),
    ({"center": float("nan")}, "Center=nan"),
    ({"ortho": (1, 2)}, "ortho="),
    ({"ortho": (1, -2, 3)}, ">= 0"),
    ({"zoom": 0.5}, "Zoom=0.5"),
    ({"zoom": float("inf")}, "Zoom=inf"),
])
def test_set_recon_refuses_bad_values(device, kwargs, match):
    with pytest.raises(BadParameter, match=match):
        device.set_recon(**kwargs)


def test_start_recon_put_completes_when_the_server_finishes(device, tomostream_ioc):
    _, group, thread = tomostream_ioc
    status = device.start_recon.set(1)
    with pytest.raises(WaitTimeoutError):
        status.wait(0.3)  # the busy record holds the put while the reconstruction runs
    assert device.start_recon.get(use_monitor=False) == 1
    thread.run_coroutine(group.control.finished())  # what the stream server does when it stops
    status.wait(30)
    assert status.success
    assert device.start_recon.get(use_monitor=False) == 0
