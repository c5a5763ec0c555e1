"""One pvapy PV Access server holding any number of channels.

The simulated detector (image, dark, flat, theta) and the stream server (reconstruction) each
own one :class:`PvaChannels`. Errors from pvapy become tomostream errors that name the channel.
"""

from __future__ import annotations

import threading

import pvaccess as pva

from ..errors import BadParameter


class PvaChannels:
    """A started ``pvaccess.PvaServer`` and the channels it serves.

    The server listens on the interfaces of ``EPICS_PVAS_INTF_ADDR_LIST`` (see
    :mod:`tomostream.epics_env`). Methods are thread-safe.

    Examples
    --------
    >>> with PvaChannels() as channels:              # doctest: +SKIP
    ...     channels.add("2bmSP1:Pva1:Image", to_ntnda(image, 1))
    ...     channels.update("2bmSP1:Pva1:Image", to_ntnda(image, 2))
    """

    def __init__(self) -> None:
        self._server = pva.PvaServer()
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
        """Serve a new channel ``name`` whose structure and first value are ``pv``.

        Raises
        ------
        BadParameter
            When ``name`` is empty or already served.
        """
        if not name:
            raise BadParameter("PVA channel name is empty")
        with self._lock:
            if name in self._names:
                raise BadParameter(f"PVA channel {name!r} is already served")
            self._server.addRecord(name, pv)
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
        """Remove every channel and stop the server (idempotent)."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            self._server.removeAllRecords()
            self._names.clear()
            self._server.stop()

    def __enter__(self) -> PvaChannels:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
