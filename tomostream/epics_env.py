"""EPICS network settings in one place.

Several EPICS servers on one host (the simulated beamline beside the stream server, or a test
suite) need care: Channel Access servers sharing UDP port 5064 are not all found by unicast
searches, so each CA server gets its own port and clients list every ``host:port``. PV Access
servers bound to loopback find each other on the shared search port 5076: a server that
receives a unicast search forwards it to the others over local multicast. A pvAccess server
bound to all interfaces listens on none of loopback, so a client restricted to 127.0.0.1 never
finds it (see :func:`serving_report`). These helpers build the standard environment variables
that pyepics, caproto, pvapy and p4p all read, and say what a client must export.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterable, Mapping, Sequence

LOOPBACK = "127.0.0.1"
#: Default Channel Access search port (UDP) of a server.
CA_SERVER_PORT = 5064
#: Default PV Access search port (UDP, "broadcast port") of a server.
PVA_BROADCAST_PORT = 5076


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


def ca_server_port(port: int | None = None, env: Mapping[str, str] | None = None) -> int:
    """CA search port a server takes: ``port`` if given (not 0), else ``EPICS_CA_SERVER_PORT``,
    else 5064."""
    env = os.environ if env is None else env
    return int(port or env.get("EPICS_CA_SERVER_PORT") or CA_SERVER_PORT)


def pva_server_port(env: Mapping[str, str] | None = None) -> int:
    """PVA search port (UDP) a pvAccess server of this process answers on:
    ``EPICS_PVAS_BROADCAST_PORT``, else ``EPICS_PVA_BROADCAST_PORT``, else 5076."""
    env = os.environ if env is None else env
    return int(env.get("EPICS_PVAS_BROADCAST_PORT") or env.get("EPICS_PVA_BROADCAST_PORT")
               or PVA_BROADCAST_PORT)


def serving_report(command: str, *, interfaces: Sequence[str], ca_port: int, ca_pvs: str,
                   pva_channels: Iterable[str], pva_port: int | None = None) -> str:
    """What a server command prints at start-up: where it serves and how a client finds it.

    Parameters
    ----------
    command : str
        Who speaks, e.g. ``"tomostream sim"``.
    interfaces : sequence of str
        Addresses the CA server binds; the PVA server binds the first (pvAccess takes one).
    ca_port : int
        CA search port (UDP) of the server.
    ca_pvs : str
        The CA PVs served, in words (``"2bmb:TomoStream:*"``).
    pva_channels : iterable of str
        The PV Access channels served.
    pva_port : int, optional
        PVA search port (UDP); default :func:`pva_server_port`.
    """
    pva_port = pva_server_port() if pva_port is None else int(pva_port)
    pva_host = interfaces[0]
    wildcard = pva_host in ("0.0.0.0", "::")
    loopback = not wildcard and all(ipaddress.ip_address(a).is_loopback for a in interfaces)
    ca_where = "all interfaces" if "0.0.0.0" in interfaces else ", ".join(interfaces)
    pva_where = "all interfaces but loopback" if wildcard else pva_host
    lines = [f"{command}: serving on {ca_where}" + (" (loopback: this host only)" if loopback else ""),
             f"  Channel Access  {ca_pvs}  search port {ca_port} (UDP) on {ca_where}",
             f"  PV Access       {', '.join(pva_channels)}  search port {pva_port} (UDP) on {pva_where}"]
    host = "HOST" if wildcard else pva_host
    pva_list = host if pva_port == PVA_BROADCAST_PORT else f"{host}:{pva_port}"
    exports = (f'export EPICS_CA_AUTO_ADDR_LIST=NO EPICS_CA_ADDR_LIST="{host}:{ca_port}" '
               f"EPICS_PVA_AUTO_ADDR_LIST=NO EPICS_PVA_ADDR_LIST={pva_list}")
    if wildcard:
        lines += ["  clients on this subnet find them with EPICS_CA_AUTO_ADDR_LIST and "
                  "EPICS_PVA_AUTO_ADDR_LIST left at YES; any client with (HOST: this host's "
                  "network address):",
                  f"    {exports}",
                  "  a client limited to loopback (EPICS_PVA_ADDR_LIST=127.0.0.1) does NOT find the "
                  "PV Access channels; on one host use --interfaces 127.0.0.1 for every server"]
    else:
        lines += ["  a client finds them with:", f"    {exports}"]
    lines.append("  (beside other CA servers, EPICS_CA_ADDR_LIST lists each one's host:port)")
    return "\n".join(lines)
