"""PV Access channels served from this process, through one shared pvapy server.

The simulated detector (image, dark, flat, theta) and the stream server (reconstruction) each
own one :class:`PvaChannels`. pvapy keeps the records of every ``PvaServer`` in one
process-wide database, so two servers in one process would each answer for every channel
(clients warn "More than one channel ... detected" and pick either); all
:class:`PvaChannels` of a process therefore share one server, started with the first and
stopped at exit. Errors from pvapy become tomostream errors that name the channel.
"""

from __future__ import annotations

import atexit
import threading

import pvaccess as pva

from ..errors import BadParameter


class _SharedServer:
    """The process's one ``pvaccess.PvaServer``: started on first use, stopped at exit.

    It is not stopped when its last user leaves: a pvapy server started in a process where
    another had been stopped was at times never found by clients (a channel searched for
    20 s without an answer), so a process starts one server at most.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._server: pva.PvaServer | None = None

    def get(self) -> pva.PvaServer:
        with self._lock:
            if self._server is None:
                self._server = pva.PvaServer()
            return self._server

    def close(self) -> None:
        """Stop the server (at interpreter exit)."""
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            server.stop()


_SHARED = _SharedServer()
# after the monitors (atexit runs last-registered first; the subscriber module registers later)
atexit.register(_SHARED.close)


class PvaChannels:
    """Channels served by the process's PV Access server (started on first use).

    The server listens on the interfaces of ``EPICS_PVAS_INTF_ADDR_LIST`` (see
    :mod:`tomostream.epics_env`). Methods are thread-safe.

    Examples
    --------
    >>> with PvaChannels() as channels:              # doctest: +SKIP
    ...     channels.add("2bmSP1:Pva1:Image", to_ntnda(image, 1))
    ...     channels.update("2bmSP1:Pva1:Image", to_ntnda(image, 2))
    """

    def __init__(self) -> None:
        self._server = _SHARED.get()
        self._names: set[str] = set()
        self._lock = threading.Lock()
        self._stopped = False

    @property
    def names(self) -> tuple[str, ...]:
        """Names of the channels served, sorted."""
        with self._lock:
            return tuple(sorted(self._names))

    def __contains__(self, name: str) -> bool:
        with self._lock:
            return name in self._names

    def add(self, name: str, pv: pva.PvObject) -> None:
        """Serve a new channel ``name`` whose structure and first value are ``pv`` (copied:
        ``pv`` stays the caller's to change and post again).

        Raises
        ------
        BadParameter
            When ``name`` is empty or already served (here or by another user of the server).
        """
        if not name:
            raise BadParameter("PVA channel name is empty")
        with self._lock:
            if self._server.hasRecord(name):  # this object's channels and everyone else's
                raise BadParameter(f"PVA channel {name!r} is already served")
            # pvapy makes the object it is given the record: changing it later (restamp) would
            # post once per field set, the new uniqueId over the record's old pixels.
            self._server.addRecord(name, pv.copy())
            self._names.add(name)

    def update(self, name: str, pv: pva.PvObject) -> None:
        """Post a new value on channel ``name``; monitors receive it.

        Raises
        ------
        BadParameter
            When ``name`` is not served or ``pv`` has another structure than the channel.
        """
        with self._lock:
            if name not in self._names:
                raise BadParameter(f"PVA channel {name!r} is not served here")
            try:
                self._server.update(name, pv)
            except ValueError as exc:
                raise BadParameter(f"PVA channel {name!r}: new value does not match its structure "
                                   f"({exc})") from None

    def remove(self, name: str) -> None:
        """Stop serving channel ``name``; its clients see a disconnect.

        Raises
        ------
        BadParameter
            When ``name`` is not served.
        """
        with self._lock:
            if name not in self._names:
                raise BadParameter(f"PVA channel {name!r} is not served here")
            self._server.removeRecord(name)
            self._names.discard(name)

    def stop(self) -> None:
        """Remove every channel of this object (idempotent); the server runs on for the others."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            for name in self._names:  # the server's other records belong to other users
                self._server.removeRecord(name)
            self._names.clear()

    def __enter__(self) -> PvaChannels:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
