"""Access: servers bind only the configured interfaces; a write allow-list keeps reads open."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import epics
import pytest
from caproto import AccessRights
from helpers import Ca, wait_until
from rel_helpers import make_sim

from tomostream.epics_env import free_port
from tomostream.errors import BadParameter
from tomostream.ioc import IocThread
from tomostream.ioc.access import WriteAllowList, bind_env, server_interfaces, split_hosts
from tomostream.ioc.tomostream_ioc import TomoStreamIOC

#: An address of the documentation range (RFC 5737): never this test's client.
OTHER_HOST = "192.0.2.77"


def accepts(thread: IocThread, host: str) -> bool:
    """Whether the IOC accepts a TCP connection on ``host``; an accepted one is closed again
    and its end seen by the IOC, so nothing is left open when it stops."""
    with socket.socket() as s:
        s.settimeout(2.0)
        if s.connect_ex((host, thread.tcp_port)) != 0:
            return False
        wait_until(lambda: thread.client_count == 1, 5.0, "the circuit opened")
    wait_until(lambda: thread.client_count == 0, 5.0, "the circuit closed")
    return True


def assert_write_refused(pv: epics.PV, value) -> None:
    """A put through pyepics (ophyd's CA layer) is refused by the server."""
    assert not pv.write_access
    with pytest.raises(epics.ca.CASeverityException, match="Write access denied"):
        pv.put(value, wait=True, timeout=5.0)


def test_allow_list_parsing_and_resolution():
    assert split_hosts("a, b  c") == ["a", "b", "c"]
    assert split_hosts(["a,b", "c"]) == ["a", "b", "c"]
    policy = WriteAllowList(["localhost", OTHER_HOST])
    assert policy.allows("127.0.0.1") and policy.allows(OTHER_HOST)
    assert not policy.allows("192.0.2.78") and not policy.allows(None) and not policy.allows("x")
    rw = AccessRights.READ | AccessRights.WRITE
    assert policy.rights(rw, "10.1.1.1") == AccessRights.READ
    assert policy.rights(AccessRights.READ, "127.0.0.1") == AccessRights.READ  # read-only stays
    with pytest.raises(BadParameter, match="no-such-host.invalid"):
        WriteAllowList(["no-such-host.invalid"])
    with pytest.raises(BadParameter, match="empty"):
        WriteAllowList([])
    with pytest.raises(BadParameter, match="'eth0' is not an IP address"):
        server_interfaces("eth0")
    assert server_interfaces(None) == ["127.0.0.1"]  # the suite's EPICS_CAS_INTF_ADDR_LIST
    assert bind_env(["127.0.0.1"])["EPICS_PVAS_INTF_ADDR_LIST"] == "127.0.0.1"


def test_ioc_listens_only_on_its_interface(unique_prefix):
    """Bound to 127.0.0.2, the IOC is not reachable on 127.0.0.1 (same host, other address)."""
    port = free_port("127.0.0.2")
    ioc = TomoStreamIOC(f"{unique_prefix}BIND:")
    with IocThread(ioc.pvdb, port=port, interfaces=["127.0.0.2"], name="bind") as thread:
        assert accepts(thread, "127.0.0.2")
        assert not accepts(thread, "127.0.0.1")


def test_unlisted_client_reads_but_cannot_write(make_server, ca, stream_prefix, wait_until):
    server = make_server(write_hosts=[OTHER_HOST])
    center = epics.PV(stream_prefix + "Center")
    assert center.wait_for_connection(5.0)
    wait_until(lambda: center.read_access and not center.write_access, 5.0, "read-only rights")
    assert_write_refused(center, 12.0)
    assert ca.get("Center") == 0.0 and server.ioc.value("Center") == 0.0
    assert ca.text("ServerRunning") in ("Running", "Stopped")  # reads of status PVs work
    assert ca.get("ReconPVAName") == stream_prefix + "Recon"
    start = epics.PV(stream_prefix + "StartRecon")
    assert start.wait_for_connection(5.0)
    assert_write_refused(start, 1)
    assert server.ioc.value("StartRecon") == "Done"
    assert server.running


def test_listed_host_writes(make_server, ca, stream_prefix, wait_until):
    server = make_server(write_hosts=["localhost"])
    center = epics.PV(stream_prefix + "Center")
    assert center.wait_for_connection(5.0)
    wait_until(lambda: center.write_access, 5.0, "write rights")
    ca.put("Center", 12.0)
    assert ca.get("Center") == 12.0 and server.ioc.value("Center") == 12.0
    status = epics.PV(stream_prefix + "ReconStatus")
    assert status.wait_for_connection(5.0)
    assert status.read_access and not status.write_access      # read-only PVs stay read-only


def test_serve_command_passes_interfaces_and_write_hosts(unique_prefix, stream_ca_port, wait_until):
    prefix = f"{unique_prefix}CLI:"
    proc = subprocess.Popen([sys.executable, "-m", "tomostream.cli", "serve", "--prefix", prefix,
                             "--ca-port", str(stream_ca_port), "--backend", "numpy",
                             "--interfaces", "127.0.0.1", "--write-hosts", OTHER_HOST],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        ca = Ca(prefix)
        center = epics.PV(prefix + "Center")
        wait_until(lambda: center.connected, 60.0, "the served IOC")
        assert ca.get("TomoScanPVPrefix") == "2bmb:TomoScanStream:"
        wait_until(lambda: not center.write_access, 5.0, "read-only rights")
        assert_write_refused(center, 7.0)
        assert ca.get("Center") == 0.0
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err


def test_serve_command_refuses_a_bad_interface():
    out = subprocess.run([sys.executable, "-m", "tomostream.cli", "serve", "--interfaces", "eth0"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "'eth0' is not an IP address" in out.stderr


def test_simulated_tomoscan_ioc_takes_the_same_allow_list(sim_prefix, unique_prefix, sim_ca_port,
                                                          wait_until):
    with make_sim(sim_prefix, unique_prefix, sim_ca_port, write_hosts=[OTHER_HOST]):
        step = epics.PV(sim_prefix + "RotationStep")
        assert step.wait_for_connection(5.0)
        wait_until(lambda: step.read_access and not step.write_access, 5.0, "read-only rights")
        assert_write_refused(step, 1.0)
        assert Ca(sim_prefix).get("RotationStep") == 3.0


def test_sim_command_refuses_a_bad_interface():
    out = subprocess.run([sys.executable, "-m", "tomostream.cli", "sim", "--interfaces", "eth0"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "'eth0' is not an IP address" in out.stderr
