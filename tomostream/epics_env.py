"""EPICS network settings in one place.

Several EPICS servers on one host (the simulated beamline beside the stream server, or a test
suite) need care: Channel Access servers sharing UDP port 5064 are not all found by unicast
searches, so each CA server gets its own port and clients list every ``host:port``. PV Access
servers find each other without that. These helpers build the standard environment variables
that pyepics, caproto, pvapy and p4p all read.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Mapping

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """Return a port number currently free for both TCP and UDP on ``host``."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = tcp.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind((host, port))
            except OSError:
                continue
        return port
    raise OSError(f"no free TCP+UDP port found on {host}")


def loopback_env(ca_ports: Iterable[int] = (), *, host: str = LOOPBACK) -> dict[str, str]:
    """Environment variables that keep CA and PVA traffic on ``host``.

    Parameters
    ----------
    ca_ports : iterable of int
        Search ports of the Channel Access servers clients must find (one per CA server).
        Empty means the default port 5064 only.
    host : str
        Interface address the servers bind and the clients search.
    """
    ports = list(ca_ports)
    addr_list = " ".join(f"{host}:{p}" for p in ports) if ports else host
    return {
        "EPICS_CA_AUTO_ADDR_LIST": "NO",
        "EPICS_CA_ADDR_LIST": addr_list,
        "EPICS_CAS_INTF_ADDR_LIST": host,
        "EPICS_CAS_BEACON_ADDR_LIST": host,
        "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO",
        "EPICS_PVA_AUTO_ADDR_LIST": "NO",
        "EPICS_PVA_ADDR_LIST": host,
        "EPICS_PVAS_INTF_ADDR_LIST": host,
    }


def apply_env(env: Mapping[str, str]) -> None:
    """Set ``env`` in this process, before any EPICS client library reads it."""
    os.environ.update(env)
