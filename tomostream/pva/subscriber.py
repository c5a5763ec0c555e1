"""Subscribers to PV Access channels that never block the PV Access client threads.

Each runs a queueing monitor (:class:`~tomostream.pva.monitor.Monitor`), which survives a
server restart, counts reconnections and reports connection changes through an optional
``on_status(text)`` callback, called from the consumer thread.

- :class:`ImageSubscriber` decodes NTNDArray frames into a bounded queue for the caller
  (:class:`~tomostream.pva.frame_queue.FrameQueue`): when the caller falls behind, the oldest
  frames are dropped and counted; gaps in ``uniqueId`` are counted as frames lost upstream,
  including the wraps at 65535 and at 2**31.
- :class:`LatestValue` keeps only the newest parsed value of a slow channel (dark field, flat
  field, angle table).

:mod:`tomostream.pva.receive_process` runs an :class:`ImageSubscriber` in a child process and
hands its frames over through shared memory, with the same interface.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, TypeVar

import pvaccess as pva

from ..errors import BadFrame
from ..unique_ids import missing_ids
from .frame_queue import FrameQueue
from .ledger import IdLedger
from .monitor import Monitor
from .ntnda import Frame, from_ntnda

T = TypeVar("T")


class ImageSubscriber(Monitor, FrameQueue):
    """Frames of an areaDetector NTNDArray channel, decoded into a bounded queue.

    Parameters
    ----------
    channel : str
        PVA channel name, e.g. ``"2bmSP1:Pva1:Image"``.
    queue_size : int
        Decoded frames kept for :meth:`get`; when full, the oldest is dropped
        (``counters['dropped']``).
    monitor_queue : int
        Updates pvapy may hold before our thread decodes them (pvRequest ``queueSize`` and
        ``PvObjectQueue`` length). Memory is bounded by ``queue_size + 2 * monitor_queue``
        frames.
    on_status : callable, optional
        ``on_status(text)``: connection changes and bad frames, from the consumer thread.
    last_unique_id : int, optional
        uniqueId of the last frame received before (by a subscriber this one replaces):
        frames missed since count as lost.
    queue : FrameQueue, optional
        Put frames in this queue, shared with subscribers of other channels, rather than in
        one of this subscriber's own (``queue_size`` is then that queue's).
    ledger : IdLedger, optional
        Judge uniqueIds with this :class:`~tomostream.pva.ledger.IdLedger`, shared with the
        subscribers of the other channels the stream is spread over; ``lost``, ``repeated``
        and ``restarts`` are then the ledger's to count, not this subscriber's.

    Attributes
    ----------
    counters : dict of str to int
        ``received`` (good frames decoded), ``dropped`` (discarded because the caller fell
        behind), ``lost`` (uniqueIds never received), ``bad`` (malformed NTNDArrays),
        ``reconnects``, ``resubscribes`` (monitor restarted because a connected channel stayed
        silent), ``repeated`` (same uniqueId again, e.g. the value a restarted
        server re-sends), ``restarts`` (uniqueId went back: a new acquisition) and
        ``overflow`` (updates the client's queue turned away because this process's consumer
        thread was behind: the share of ``lost`` lost here rather than upstream).
    connected : bool
        Whether the channel is connected now.
    """

    _COUNTERS = ("received", "dropped", "lost", "bad", "reconnects", "resubscribes", "repeated",
                 "restarts", "overflow")

    def __init__(self, channel: str, queue_size: int = 32, *, monitor_queue: int = 100,
                 on_status: Callable[[str], None] | None = None,
                 last_unique_id: int | None = None, queue: FrameQueue | None = None,
                 ledger: IdLedger | None = None):
        super().__init__(channel, monitor_queue=monitor_queue, on_status=on_status)
        self._init_queue(queue_size, queue)
        self._last_id = last_unique_id
        self._ledger = ledger

    def _consume(self, pv: pva.PvObject) -> None:
        frame = self._decode(pv)
        if frame is not None:
            self._keep(frame)

    def _decode(self, pv: pva.PvObject) -> Frame | None:
        """The frame in ``pv``, its uniqueId counted against the last one; None when it is bad
        or repeats the last one (both counted)."""
        try:
            self.counters["overflow"] = self._pvq.getCounters()["nRejected"]
            frame = from_ntnda(pv, received=time.time())
        except BadFrame as exc:
            self._bad(exc)
            return None
        if self._ledger is not None:
            return frame if self._ledger.see(frame.unique_id) else None
        if self._last_id is not None:
            if frame.unique_id == self._last_id:
                self.counters["repeated"] += 1
                return None
            gap = missing_ids(self._last_id, frame.unique_id)
            if gap is None:
                self.counters["restarts"] += 1
            else:
                self.counters["lost"] += gap
        return frame

    def _keep(self, frame: Frame) -> None:
        """Queue a decoded frame for the caller."""
        with self._ready:
            if len(self._frames) >= self.queue_size:
                self._frames.popleft()
                self.counters["dropped"] += 1
            self._frames.append(frame)
            self.counters["received"] += 1
            self._last_id = frame.unique_id
            self._ready.notify()

    @property
    def last_unique_id(self) -> int | None:
        """uniqueId of the last good frame received (queued or dropped since); None before any."""
        return self._last_id


class LatestValue(Monitor, Generic[T]):
    """The newest value of a slow channel (dark field, flat field, angle table).

    Parameters
    ----------
    channel : str
        PVA channel name.
    parse : callable
        ``parse(pv) -> value``, e.g. :func:`tomostream.pva.fields.read_field`; a
        :class:`~tomostream.errors.BadFrame` it raises is counted in ``counters['bad']`` and
        the previous value kept.
    on_change : callable, optional
        ``on_change(value)`` after each new value, from the consumer thread.
    on_status : callable, optional
        ``on_status(text)``: connection changes and bad values.
    monitor_queue : int
        Updates pvapy may hold before our thread reads them; only the newest is parsed.

    Attributes
    ----------
    value : object or None
        The latest parsed value; None until one arrives.
    version : int
        Incremented on each new value (0: none yet).
    counters : dict of str to int
        ``received``, ``bad``, ``reconnects``, ``resubscribes``.
    """

    def __init__(self, channel: str, parse: Callable[[pva.PvObject], T], *,
                 on_change: Callable[[T], None] | None = None,
                 on_status: Callable[[str], None] | None = None, monitor_queue: int = 16):
        super().__init__(channel, monitor_queue=monitor_queue, on_status=on_status)
        self.parse = parse
        self.on_change = on_change
        self.value: T | None = None
        self.version = 0

    def _consume(self, pv: pva.PvObject) -> None:
        while True:  # only the newest queued update matters
            try:
                pv = self._pvq.get()
            except pva.QueueEmpty:
                break
        try:
            value = self.parse(pv)
        except BadFrame as exc:
            self._bad(exc)
            return
        self.value = value
        self.version += 1
        self.counters["received"] += 1
        if self.on_change is not None:
            self.on_change(value)
