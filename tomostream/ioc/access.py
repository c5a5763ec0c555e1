"""Who may reach and who may write the Channel Access servers of tomostream.

Two site controls, shared by the TomoStream IOC and the simulated TomoScan IOC:

- **Interfaces.** A server listens only on the addresses it is given
  (:func:`server_interfaces`: an explicit list, else ``EPICS_CAS_INTF_ADDR_LIST``, else
  loopback); :func:`bind_env` gives the matching Channel Access and PV Access variables, so
  pvapy servers of the same process bind the same addresses.
- **Write allow-list.** :func:`restrict_writes` leaves every PV readable by anyone and lets
  only the listed hosts write. The host of a client is the IP address of its TCP connection
  (:class:`ClientAddressContext`), never the name the client reports about itself, which any
  client may choose (EPICS calls this ``asCheckClientIP``). Host names in the list are
  resolved to addresses once, when the list is made.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterable, Mapping, Sequence

from caproto import AccessRights
from caproto.asyncio.server import Context, VirtualCircuit

from ..errors import BadParameter

#: Where servers listen when nothing says otherwise.
LOOPBACK = "127.0.0.1"
#: Listen on every interface.
ALL_INTERFACES = "0.0.0.0"


def split_hosts(text: str | Iterable[str] | None) -> list[str]:
    """Host names or addresses from ``"a, b c"`` or an iterable of such strings ([] for None)."""
    if text is None:
        return []
    items = [text] if isinstance(text, str) else list(text)
    return [h for item in items for h in item.replace(",", " ").split() if h]


def server_interfaces(interfaces: str | Sequence[str] | None = None, *,
                      default: str = LOOPBACK) -> list[str]:
    """Addresses a server binds: ``interfaces``, else ``EPICS_CAS_INTF_ADDR_LIST``, else ``default``.

    Raises
    ------
    BadParameter
        An entry that is not an IPv4/IPv6 address.
    """
    chosen = split_hosts(interfaces) or split_hosts(os.environ.get("EPICS_CAS_INTF_ADDR_LIST")) \
        or [default]
    for address in chosen:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise BadParameter(f"interface {address!r} is not an IP address") from None
    return chosen


def bind_env(interfaces: Sequence[str]) -> dict[str, str]:
    """Environment variables that make CA and PVA servers of this process bind ``interfaces``.

    pvAccess (pvapy) binds one address only (a list is refused with "EPICS_PVAS_INTF_ADDR_LIST
    contains invalid IP"): PV Access binds the first. Servers bound to loopback only send
    their Channel Access beacons to loopback too, not to the network's broadcast address.
    """
    env = {"EPICS_CAS_INTF_ADDR_LIST": " ".join(interfaces),
           "EPICS_PVAS_INTF_ADDR_LIST": interfaces[0]}
    if all(ipaddress.ip_address(a).is_loopback for a in interfaces):
        env.update(EPICS_CAS_BEACON_ADDR_LIST=" ".join(interfaces),
                   EPICS_CAS_AUTO_BEACON_ADDR_LIST="NO")
    return env


def resolve_hosts(hosts: Iterable[str]) -> frozenset[str]:
    """IP addresses of ``hosts`` (names or addresses).

    Raises
    ------
    BadParameter
        A name that does not resolve.
    """
    addresses: set[str] = set()
    for host in hosts:
        try:
            addresses.add(str(ipaddress.ip_address(host)))
            continue
        except ValueError:
            pass
        try:
            infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        except OSError as exc:
            raise BadParameter(f"write host {host!r} does not resolve: {exc}") from None
        addresses.update(str(ipaddress.ip_address(info[4][0])) for info in infos)
    return frozenset(addresses)


class ClientAddressCircuit(VirtualCircuit):
    """A server-side CA circuit whose ``client_hostname`` is the peer's IP address.

    The name a client reports (``HostNameRequest``) is kept in ``reported_hostname`` for logs
    only; access decisions see the address the connection really comes from.
    """

    reported_hostname: str | None = None

    @property
    def client_hostname(self) -> str:
        return str(self.circuit.address[0])

    @client_hostname.setter
    def client_hostname(self, name: str | None) -> None:
        self.reported_hostname = name


class ClientAddressContext(Context):
    """caproto's asyncio server context, with :class:`ClientAddressCircuit` circuits."""

    CircuitClass = ClientAddressCircuit


class WriteAllowList:
    """Write access for the listed hosts only; reads stay open to everyone.

    Parameters
    ----------
    hosts : iterable of str
        Host names or IP addresses allowed to write. Loopback clients are not allowed
        unless listed (``127.0.0.1`` or ``localhost``).

    Attributes
    ----------
    hosts : tuple of str
        The hosts as given.
    addresses : frozenset of str
        Their IP addresses.
    """

    def __init__(self, hosts: Iterable[str]):
        self.hosts = tuple(split_hosts(list(hosts)))
        if not self.hosts:
            raise BadParameter("write_hosts is empty: give at least one host, or None for no limit")
        self.addresses = resolve_hosts(self.hosts)

    def allows(self, host: str | None) -> bool:
        """Whether a client at ``host`` (IP address) may write."""
        if host is None:
            return False
        try:
            return str(ipaddress.ip_address(host)) in self.addresses
        except ValueError:
            return False

    def rights(self, base: AccessRights, host: str | None) -> AccessRights:
        """``base`` rights of a PV, without WRITE when ``host`` is not listed."""
        return base if self.allows(host) else base & ~AccessRights.WRITE

    def __repr__(self) -> str:
        return f"WriteAllowList({list(self.hosts)!r})"


def restrict_writes(pvdb: Mapping[str, object], hosts: Iterable[str] | WriteAllowList) -> WriteAllowList:
    """Let only ``hosts`` write the PVs of ``pvdb``; everyone may still read them.

    Each channel's ``check_access`` (which caproto asks when a client connects and before each
    write) is wrapped: read-only PVs stay read-only, writable ones lose WRITE for unlisted
    clients. Serve ``pvdb`` with :class:`ClientAddressContext` so the host is the client's real
    address (``IocThread`` does).

    Returns
    -------
    WriteAllowList
        The policy applied.
    """
    policy = hosts if isinstance(hosts, WriteAllowList) else WriteAllowList(hosts)
    for channel in {id(c): c for c in pvdb.values()}.values():
        base = channel.check_access

        def check_access(hostname, username, _base=base):
            return policy.rights(_base(hostname, username), hostname)

        channel.check_access = check_access
    return policy
