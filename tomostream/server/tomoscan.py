"""What the stream server follows of the TomoScan IOC over Channel Access.

:class:`TomoScanWatch` follows three PVs with pyepics callbacks, which only record values (they
run in CA client threads and never block): TomoScan's ``FrameType`` (with the time of each
change, so frames can be matched to the type in force when they were taken), ``FirstProjid``
(the uniqueId of a scan's first projection) and the PV named by ``ImagePVAPName`` (whose value
is the detector's PVA plugin prefix). Connection changes are said through ``on_message``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ..vocabulary import FRAME_TYPES
from .frames import FrameTypeHistory

#: The server's own pyepics channels, by name, in a Channel Access context of their own: made
#: once, never disconnected (disconnecting from the worker thread while CA threads deliver
#: callbacks crashed the process), reused by the next session. pyepics shares one channel per
#: name and context, so in its initial context an ophyd device in the same process (a Bluesky
#: session beside the server) owns them too: its ``destroy`` clears the channel and unsets the
#: PV's context, which left a watch without values and its ``close`` raising "Expected CA
#: context is unset".
_CHANNELS: dict[str, object] = {}
_CHANNELS_LOCK = threading.Lock()
_CONTEXT: list = []


def _own_context():
    """The server's Channel Access context (made once, from a thread that holds no other)."""
    from epics import ca

    if not _CONTEXT:
        def make():
            if ca.current_context() is not None:  # loading libca attached its initial context
                ca.detach_context()
            ca.create_context()
            _CONTEXT.append(ca.current_context())
            ca.detach_context()

        maker = threading.Thread(target=make, name="tomostream-ca-context")
        maker.start()
        maker.join()
    return _CONTEXT[0]


def _channel(name: str):
    """The server's own monitored pyepics PV ``name`` (see :data:`_CHANNELS`)."""
    import epics
    from epics import ca

    with _CHANNELS_LOCK:
        pv = _CHANNELS.get(name)
        if pv is None:
            context = _own_context()
            previous = ca.current_context()
            if previous is not None:
                ca.detach_context()
            ca.attach_context(context)
            try:  # epics.pv.PV: never ophyd's subclass, which get_pv would hand out
                pv = _CHANNELS[name] = epics.pv.PV(name, form="time", auto_monitor=True)
            finally:
                ca.detach_context()
                if previous is not None:
                    ca.attach_context(previous)
        return pv


class _CaWatch:
    """A pyepics PV followed with callbacks; connection state reported to the worker.

    The PV is the server's own (:func:`_channel`) and is never disconnected. Closing the watch
    removes its callbacks, and the next session reuses the channel.
    """

    def __init__(self, name: str, on_value, on_connection):
        self.name = name
        self.pv = _channel(name)
        self._on_connection = on_connection
        self.pv.connection_callbacks.append(on_connection)
        self._index = self.pv.add_callback(on_value)
        if self.pv.connected:  # a reused channel: its connection and value events have passed
            on_connection(pvname=name, conn=True, pv=self.pv)
            if self.pv.value is not None:  # connected, first monitor value maybe not yet in
                on_value(pvname=name, value=self.pv.value, char_value=self.pv.char_value,
                         timestamp=self.pv.timestamp)

    def close(self) -> None:
        self.pv.remove_callback(self._index)
        if self._on_connection in self.pv.connection_callbacks:
            self.pv.connection_callbacks.remove(self._on_connection)


class TomoScanWatch:
    """FrameType, FirstProjid and the detector's plugin prefix, followed over Channel Access.

    Parameters
    ----------
    tomoscan_prefix : str
        PV prefix of the TomoScan IOC, e.g. ``"2bmb:TomoScan:"``.
    image_pvap_name : str
        The PV whose value is the detector's PVA plugin prefix (``ImagePVAPName``).
    on_message : callable
        ``on_message(text)``: a PV connected or disconnected (from a CA client thread).

    Attributes
    ----------
    frame_types : FrameTypeHistory
        FrameType by the time of each change.
    first_projid : int or None
        FirstProjid; None before its first value.
    plugin_prefix : str or None
        The detector's plugin prefix; None while ImagePVAPName is empty or not connected yet.
    down : set of str
        The PVs not connected now.
    """

    def __init__(self, tomoscan_prefix: str, image_pvap_name: str,
                 on_message: Callable[[str], None]):
        self.tomoscan_prefix = tomoscan_prefix
        self.image_pvap_name = image_pvap_name
        self.frame_types = FrameTypeHistory()
        self.first_projid: int | None = None
        self.plugin_prefix: str | None = None
        self._on_message = on_message
        frame_type, first_projid = tomoscan_prefix + "FrameType", tomoscan_prefix + "FirstProjid"
        self.down: set[str] = {frame_type, first_projid, image_pvap_name}
        self._watches = [
            _CaWatch(frame_type, self._on_frame_type, self._on_connection),
            _CaWatch(first_projid, self._on_first_projid, self._on_connection),
            _CaWatch(image_pvap_name, self._on_plugin_prefix, self._on_connection),
        ]

    def close(self) -> None:
        """Remove the callbacks (the channels stay, for the next session)."""
        for watch in self._watches:
            watch.close()

    def waiting_for(self) -> str | None:
        """What is missing on the TomoScan side, if anything (frames are not usable without)."""
        down = self.down.copy()  # one step under the GIL; CA threads change the set
        if down:
            return ", ".join(sorted(down)) + " (CA)"
        if self.plugin_prefix is None:
            return f"the detector plugin prefix in {self.image_pvap_name} (CA)"
        return None

    @property
    def scan_known(self) -> bool:
        """Whether FirstProjid and FrameType have values."""
        return self.first_projid is not None and self.frame_types.type_at(0) is not None

    # pyepics callbacks (CA client threads): record, never block
    def _on_frame_type(self, value=None, timestamp=None, **kw) -> None:
        name = FRAME_TYPES[value] if isinstance(value, int) and 0 <= value < len(FRAME_TYPES) else str(value)
        self.frame_types.record(float(timestamp or time.time()), name)

    def _on_first_projid(self, value=None, **kw) -> None:
        self.first_projid = int(value)

    def _on_plugin_prefix(self, char_value=None, **kw) -> None:
        self.plugin_prefix = str(char_value).strip() or None  # empty: no detector yet

    def _on_connection(self, pvname=None, conn=None, **kw) -> None:
        if conn:
            self.down.discard(pvname)
        else:
            self.down.add(pvname)
        self._on_message(f"{pvname} {'connected' if conn else 'disconnected'}")
