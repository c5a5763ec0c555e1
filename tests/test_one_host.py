"""The README's one-host block, pasted into a shell as written, shows the slices to a client.

The block is read from README.md (the test fails when the README drifts) and run by bash as
real processes (``tomostream sim &`` and ``tomostream serve``), from an environment with no
EPICS variable of the suite's: only what the block exports. Clients (caproto-put, pyepics,
p4p) run as their own processes with just those exports. Every search and connection stays
on loopback.

The block names the CA search ports 5064 and 5066. Another CA server of this host already
bound to one of them (an IOC, another run of this test) would answer or split the searches,
so then, and only then, fresh free ports are put in their place in the block's text. PV
Access keeps 5076: loopback servers share it by design.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from helpers import wait_until

from tomostream.epics_env import free_port

pytestmark = pytest.mark.timeout(600)

README = Path(__file__).resolve().parents[1] / "README.md"
#: Names the block's commands serve by default (the README names them beside the block).
RECON = "2bmb:TomoStream:StreamRecon"
IMAGE = "2bmSP1:Pva1:Image"
#: Seconds a loaded 2-core host may need for each step (starting Python processes, the first
#: reconstruction); the test moves on as soon as each step is done.
STEP = 240.0
PVA_SEARCH_PORT = 5076


def fenced_blocks(text: str) -> list[str]:
    """The contents of the ``` fenced blocks of a Markdown text."""
    blocks, current = [], None
    for line in text.splitlines():
        if line.startswith("```"):
            if current is None:
                current = []
            else:
                blocks.append("\n".join(current) + "\n")
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def one_host_block() -> str:
    found = [b for b in fenced_blocks(README.read_text())
             if "tomostream sim &" in b and "tomostream serve" in b]
    assert len(found) == 1, "README.md has no (or more than one) block starting sim & and serve"
    return found[0]


def udp_port_taken(port: int) -> bool:
    """Whether any socket is bound to UDP ``port`` on loopback (or all interfaces)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        try:
            udp.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def with_free_ports(block: str) -> tuple[str, dict[int, int]]:
    """``block`` with each CA port it names that is taken here replaced by a free one."""
    swaps = {}
    for port in sorted({int(p) for p in re.findall(r"\b(50\d\d)\b", block)}):
        if port != PVA_SEARCH_PORT and udp_port_taken(port):
            swaps[port] = free_port()
    for old, new in swaps.items():
        block = re.sub(rf"\b{old}\b", str(new), block)
    return block, swaps


def clean_env() -> dict[str, str]:
    """This environment without any EPICS or tomostream variable (the suite sets its own), with
    this checkout's ``tomostream`` and clients first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EPICS_", "TOMOSTREAM_"))}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def exported(block: str, env: dict[str, str]) -> dict[str, str]:
    """The variables the block's ``export`` lines set, as bash sees them."""
    exports = "\n".join(line for line in block.splitlines() if line.startswith("export "))
    out = subprocess.run(["bash", "-c", exports + "\nenv -0"], env=env, capture_output=True,
                         check=True, timeout=60).stdout.decode()
    after = dict(item.split("=", 1) for item in out.split("\0") if "=" in item)
    return {k: v for k, v in after.items() if env.get(k) != v and k.startswith("EPICS_")}


# A p4p client in its own process: the reconstruction once one has been published (uniqueId
# above 0, pixels not all equal), and whether the simulator's detector channel is found too.
P4P_CLIENT = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    from p4p.client.thread import Context

    recon, image, limit = sys.argv[1], sys.argv[2], float(sys.argv[3])
    with Context("pva") as ctx:
        deadline, last = time.monotonic() + limit, "nothing"
        while time.monotonic() < deadline:
            try:
                value = ctx.get(recon, timeout=10.0)
            except Exception as exc:
                last = repr(exc)
                continue
            data = np.asarray(value)
            last = f"uniqueId {value.raw.uniqueId}, shape {data.shape}, spread {np.ptp(data)}"
            if value.raw.uniqueId > 0 and np.ptp(data) > 0:
                frame = ctx.get(image, timeout=30.0)
                print(json.dumps({"shape": list(data.shape), "uniqueId": value.raw.uniqueId,
                                  "image_shape": list(np.asarray(frame).shape)}))
                sys.exit(0)
            time.sleep(1.0)
        sys.exit(f"no reconstruction on {recon} within {limit} s: {last}")
""")

PYEPICS_PUT = "import epics, sys; sys.exit(0 if epics.caput(sys.argv[1], 1, connection_timeout=60) else 1)"


def group_processes(pgid: int) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid:
                found.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return found


def stop_group(pgid: int) -> None:
    """SIGINT (Ctrl-C) to the block's processes, then SIGKILL to what is left after 60 s."""
    procs = group_processes(pgid)
    for proc in procs:
        try:
            proc.send_signal(signal.SIGINT)
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=60)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=30)


def is_loopback(address: str) -> bool:
    return ipaddress.ip_address(address).is_loopback


def off_loopback(pgid: int, ca_ports: set[int]) -> list[str]:
    """Sockets of the block's processes that reach beyond loopback.

    Every TCP socket (listening or connected) must be on loopback and every peer too; the CA
    search ports ``ca_ports`` bound to loopback only. A UDP socket may be bound to another
    interface only on the PV Access port: pvAccess clients listen there for beacons on every
    interface (they send nothing through it). Unbound-address UDP sockets on other ports are
    the clients' search sockets, which send only to their address lists.
    """
    bad = []
    for proc in group_processes(pgid):
        try:
            connections = proc.net_connections(kind="inet4")
        except psutil.Error:
            continue
        for c in connections:
            where = f"{proc.name()}[{proc.pid}] {c.laddr} -> {c.raddr or '-'}"
            if c.raddr and not is_loopback(c.raddr.ip):
                bad.append(where)
            elif c.type == socket.SOCK_STREAM and not is_loopback(c.laddr.ip):
                bad.append(where)
            elif c.type == socket.SOCK_DGRAM and not is_loopback(c.laddr.ip) \
                    and c.laddr.port != PVA_SEARCH_PORT and c.laddr.ip != "0.0.0.0":
                bad.append(where)
            elif c.type == socket.SOCK_DGRAM and c.laddr.ip == "0.0.0.0" and c.laddr.port in ca_ports:
                bad.append(where)  # a server's search port open to the network
    return bad


def test_readme_one_host_block_shows_the_slices_to_a_loopback_client(tmp_path):
    block, swaps = with_free_ports(one_host_block())
    if swaps:
        print(f"CA ports taken on this host, replaced in the block: {swaps}")
    env = clean_env()
    exports = exported(block, env)
    assert exports["EPICS_CA_AUTO_ADDR_LIST"] == "NO" and exports["EPICS_PVA_AUTO_ADDR_LIST"] == "NO"
    ca_list, pva_list = exports["EPICS_CA_ADDR_LIST"].split(), exports["EPICS_PVA_ADDR_LIST"].split()
    assert all(is_loopback(entry.split(":")[0]) for entry in ca_list + pva_list), exports
    client_env = {**env, **exports}

    log_path = tmp_path / "block.log"
    with open(log_path, "w") as log:
        shell = subprocess.Popen(["bash", "-c", block], env=env, stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        def started() -> bool:
            assert shell.poll() is None, f"the block ended ({shell.returncode}):\n{log_path.read_text()}"
            text = log_path.read_text()
            return "tomostream sim: serving" in text and "tomostream serve: serving" in text \
                and "TomoStream IOC" in text

        wait_until(started, STEP, lambda: f"sim and serve started:\n{log_path.read_text()}")

        # each says where it serves (loopback) and what a client must export: what the block exports
        text = log_path.read_text()
        assert text.count("(loopback: this host only)") == 2, text
        said = [{k: v.strip('"') for k, v in re.findall(r'(EPICS_\w+)=("[^"]*"|\S+)', line)}
                for line in text.splitlines() if line.strip().startswith("export ")]
        assert len(said) == 2, text
        for client in said:
            assert client["EPICS_CA_AUTO_ADDR_LIST"] == client["EPICS_PVA_AUTO_ADDR_LIST"] == "NO"
            assert set(client["EPICS_CA_ADDR_LIST"].split()) <= set(ca_list), client
            assert client["EPICS_PVA_ADDR_LIST"].split() == pva_list, client

        def client(*args: str) -> str:
            """Run a client with only the exports; its output, or a failure with the servers' log."""
            start = time.monotonic()
            try:
                done = subprocess.run(args, env=client_env, capture_output=True, text=True,
                                      timeout=STEP + 120)
            except subprocess.TimeoutExpired:
                done = None
            if done is None or done.returncode != 0:
                said = "timed out" if done is None else done.stdout + done.stderr
                pytest.fail(f"{args[0]} {args[-1]}: {said}\nafter {time.monotonic() - start:.0f} s; "
                            f"servers said:\n{log_path.read_text()[-4000:]}")
            return done.stdout

        # a scan, started by a caproto client and a pyepics client with only the exports
        # (no CA repeater: caproto-put would leave one running, holding our pipes)
        put = client("caproto-put", "--no-repeater", "--timeout", "60", "2bmb:TomoStream:StartRecon", "1")
        assert "Acquire" in put, put
        client(sys.executable, "-c", PYEPICS_PUT, "2bmb:TomoScanStream:StartScan")

        # p4p, with only the exports, receives the slices (and finds the detector channel too)
        viewer = client(sys.executable, "-c", P4P_CLIENT, RECON, IMAGE, str(STEP))
        got = json.loads(viewer.strip().splitlines()[-1])
        height, width = got["shape"]
        assert width == 3 * height  # Z | Y | X side by side
        assert got["image_shape"][0] > 0

        assert off_loopback(shell.pid, {int(entry.split(":")[1]) for entry in ca_list}) == []
    finally:
        stop_group(shell.pid)  # Ctrl-C, as a terminal sends it to the whole foreground group
        shell.wait(timeout=60)
    assert group_processes(shell.pid) == []
    assert shell.returncode == 0 and "Traceback" not in log_path.read_text(), log_path.read_text()


def test_a_server_on_all_interfaces_tells_loopback_clients_they_will_not_find_it():
    from tomostream.epics_env import serving_report

    text = serving_report("tomostream serve", interfaces=["0.0.0.0"], ca_port=5066,
                          ca_pvs="P:*", pva_channels=["P:StreamRecon"], pva_port=5076)
    assert "all interfaces but loopback" in text and "--interfaces 127.0.0.1" in text
    assert 'EPICS_CA_ADDR_LIST="HOST:5066"' in text and "does NOT find" in text
    text = serving_report("tomostream sim", interfaces=["127.0.0.1"], ca_port=5064,
                          ca_pvs="S:*", pva_channels=["D:Image"], pva_port=5077)
    assert "(loopback: this host only)" in text and "EPICS_PVA_ADDR_LIST=127.0.0.1:5077" in text


def test_servers_bound_to_loopback_keep_their_beacons_there_and_pva_takes_one_address():
    from tomostream.ioc.access import bind_env

    env = bind_env(["127.0.0.1"])
    assert env["EPICS_CAS_BEACON_ADDR_LIST"] == "127.0.0.1"
    assert env["EPICS_CAS_AUTO_BEACON_ADDR_LIST"] == "NO"
    env = bind_env(["10.1.2.3", "127.0.0.1"])  # pvAccess refuses a list: it binds the first
    assert env["EPICS_CAS_INTF_ADDR_LIST"] == "10.1.2.3 127.0.0.1"
    assert env["EPICS_PVAS_INTF_ADDR_LIST"] == "10.1.2.3"
    assert "EPICS_CAS_BEACON_ADDR_LIST" not in env  # beacons go to the networks served
