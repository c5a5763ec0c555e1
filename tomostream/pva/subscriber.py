"""Subscribers to PV Access channels that never block the PV Access client threads.

Each subscriber runs a pvapy queueing monitor (``Channel.qMonitor``): pvapy's own threads only
push received structures into a bounded ``PvObjectQueue``, and one consumer thread of ours
decodes them, taking a backlog in a row without giving the GIL up in between. (The callback
monitor, ``subscribe`` + ``startMonitor``, tops out near 75 updates/s; the queueing monitor
keeps up with thousands of frames/s.)

- :class:`ImageSubscriber` decodes NTNDArray frames into a bounded queue for the caller: when
  the caller falls behind, the oldest frames are dropped and counted; gaps in ``uniqueId`` are
  counted as frames lost upstream, including the wraps at 65535 and at 2**31.
- :class:`LatestValue` keeps only the newest parsed value of a slow channel (dark field, flat
  field, angle table).

Both survive a server restart (pvapy reconnects the channel and the monitor by itself), count
reconnections and report connection changes through an optional ``on_status(text)`` callback,
called from the consumer thread.

:mod:`tomostream.pva.receive_process` runs an :class:`ImageSubscriber` in a child process and
hands its frames over through shared memory, with the same interface.
"""

from __future__ import annotations

import atexit
import collections
import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

import pvaccess as pva

from ..errors import BadFrame, BadParameter
from ..unique_ids import missing_ids
from .ledger import IdLedger
from .ntnda import Frame, from_ntnda

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How often the consumer thread wakes up to notice stop() and connection changes [s].
_POLL_S = 0.05
#: A (re)connected channel delivers its current value at once; when none came within this
#: time [s], the monitor is started again (pvapy occasionally leaves it idle after a server
#: restart).
_RESUBSCRIBE_S = 1.0
#: Bad-frame messages are reported through on_status at most this often [s].
_BAD_REPORT_S = 1.0
#: A channel unconnected this long [s] is searched for anew (a new pvapy channel): a first
#: search on loopback has stayed unanswered for 20-50 s at times while the server was there.
#: The wait doubles after each renewal, up to :data:`_RENEW_MAX_S`.
_RENEW_S = 5.0
_RENEW_MAX_S = 60.0


#: Monitors started and not yet stopped.
_LIVE: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _stop_live_monitors() -> None:
    """Stop the monitors still running when the interpreter exits.

    A pvapy thread that calls into Python (a connection callback as servers go away) while
    the interpreter finalizes is ended inside C++ code that swallows the unwind, and glibc
    aborts the process ("FATAL: exception not rethrown") after all else went well.
    """
    for monitor in list(_LIVE):
        try:
            monitor.stop(timeout=0.5)
        except Exception as exc:  # exiting anyway: say so, do not stop the others
            log.debug("stopping the monitor of %s at exit: %s", monitor.channel, exc)


def report(text: str, on_status: Callable[[str], None] | None, channel: str) -> None:
    """Log ``text`` and hand it to ``on_status`` (a callback that fails is logged, not raised)."""
    log.info(text)
    if on_status is not None:
        try:
            on_status(text)
        except Exception:
            log.exception("on_status callback failed for %s", channel)


class ChannelState:
    """What every subscriber of a channel has: the channel's name, the updates pvapy may hold,
    status reports, and whether the channel is connected (set from any thread)."""

    def _init_channel(self, channel: str, monitor_queue: int,
                      on_status: Callable[[str], None] | None) -> None:
        if not channel:
            raise BadParameter("PVA channel name is empty")
        if monitor_queue < 1:
            raise BadParameter(f"monitor_queue={monitor_queue} must be >= 1")
        self.channel = channel
        self.monitor_queue = monitor_queue
        self.on_status = on_status
        self.connected = False
        self._connected_event = threading.Event()

    def _set_connected(self, connected: bool) -> None:
        self.connected = bool(connected)
        if connected:
            self._connected_event.set()
        else:
            self._connected_event.clear()

    def wait_connected(self, timeout: float) -> bool:
        """Wait up to ``timeout`` [s] for the channel to connect; return whether it did."""
        return self._connected_event.wait(timeout)

    def _status(self, text: str) -> None:
        report(text, self.on_status, self.channel)


class _Monitor(ChannelState):
    """A queueing pvapy monitor on one channel and the thread that consumes it.

    Subclasses implement :meth:`_consume`; everything else (connection tracking, status
    reports, start/stop) lives here.
    """

    _COUNTERS: tuple[str, ...] = ("received", "bad", "reconnects", "resubscribes")

    def __init__(self, channel: str, *, monitor_queue: int = 100,
                 on_status: Callable[[str], None] | None = None):
        self._init_channel(channel, monitor_queue, on_status)
        self.counters: dict[str, int] = dict.fromkeys(self._COUNTERS, 0)
        self._ever_connected = False
        self._was_connected = False
        self._events: collections.deque[bool] = collections.deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._channel: pva.Channel | None = None
        self._pvq: pva.PvObjectQueue | None = None
        self._request = f"record[queueSize={monitor_queue}]field()"
        self._waiting_since: float | None = None
        self._last_bad_report = -_BAD_REPORT_S
        #: When the channel was last searched for, and the wait before the next search [s].
        self._searched_at = 0.0
        self._renew_after = _RENEW_S
        #: Searches renewed for a channel that stayed unconnected.
        self.renewals = 0
        self._generation = 0

    # -- runs in a pvapy thread: record and return, never block ------------------------------
    def _on_connection(self, is_connected: bool) -> None:
        self._set_connected(is_connected)
        self._events.append(bool(is_connected))

    def _open_channel(self) -> None:
        """A new pvapy channel monitored into the queue (its callbacks count while it is the
        newest). The callback must not hold the channel: pvapy keeps the callback, and a
        channel kept alive by its own callback outlives ``stop`` and calls into Python while
        the interpreter exits (glibc then aborts the process)."""
        self._generation += 1
        generation = self._generation

        def on_connection(is_connected: bool) -> None:
            if generation == self._generation:
                self._on_connection(is_connected)

        self._channel = pva.Channel(self.channel)
        # the monitor first: a connection callback set before qMonitor may be called by pvapy
        # from inside qMonitor, on this thread, without the GIL, which aborts the process
        # (seen at StartRecon once dark and flat fields are served). A connection made before
        # the callback was set is taken from the values, or from isConnected (_check_search).
        self._channel.qMonitor(self._pvq, self._request)
        self._channel.setConnectionCallback(on_connection)
        self._searched_at = time.monotonic()

    # -- runs in the consumer thread ---------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                pv = self._pvq.get(_POLL_S)
            except pva.QueueEmpty:
                pv = None
            # Connection events are recorded before the values that follow them reach the
            # queue, so handling them first keeps their order.
            self._handle_events()
            if pv is None:
                self._check_monitor()
                continue
            if not self.connected and self._channel.isConnected():
                # Values flow and the channel says it is connected, but no callback said so:
                # pvapy missed it (on loopback the channel can connect before the callback is
                # set, and a callback of False has been seen with values flowing after it).
                self._on_connection(True)
                self._handle_events()
            while pv is not None:
                self._waiting_since = None
                try:
                    self._consume(pv)
                except Exception:  # a bug in a callback must not end the subscription
                    log.exception("error while handling an update of %s", self.channel)
                pv = self._next_queued()
                self._handle_events()

    def _handle_events(self) -> None:
        while self._events:
            is_connected = self._events.popleft()
            self._waiting_since = time.monotonic() if is_connected else None
            self._searched_at, self._renew_after = time.monotonic(), _RENEW_S
            if is_connected == self._was_connected:
                continue  # e.g. the connection callback repeated by a monitor restart
            self._was_connected = is_connected
            if is_connected:
                if self._ever_connected:
                    self.counters["reconnects"] += 1
                    self._status(f"{self.channel} reconnected "
                                 f"({self.counters['reconnects']} reconnections)")
                else:
                    self._status(f"{self.channel} connected")
                self._ever_connected = True
            elif self._ever_connected:
                self._status(f"{self.channel} disconnected")

    def _next_queued(self) -> pva.PvObject | None:
        """The next update already queued, or None; taken without letting the GIL go.

        Waiting for an update gives the GIL up, and taking it back waits for whichever thread
        holds it (up to the interpreter's switch interval, 5 ms) next to a busy worker. Once
        per frame, that lost half of a 2,000 frames/s stream beside one busy thread
        (``python -m tomostream.pva.bench --busy 1``); updates already queued are therefore
        taken in a row.
        """
        if self._stop.is_set():
            return None
        try:
            return self._pvq.get()
        except pva.QueueEmpty:
            return None

    def _check_monitor(self) -> None:
        if not self.connected:
            self._check_search()
            return
        if (self._waiting_since is None
                or time.monotonic() - self._waiting_since < _RESUBSCRIBE_S):
            return
        self._waiting_since = time.monotonic()
        self.counters["resubscribes"] += 1
        log.warning("%s connected but silent for %.1f s: restarting its monitor", self.channel,
                    _RESUBSCRIBE_S)
        self._channel.stopMonitor()
        self._channel.qMonitor(self._pvq, self._request)

    def _check_search(self) -> None:
        """Search anew for a channel unconnected for ``_renew_after`` seconds."""
        if time.monotonic() - self._searched_at < self._renew_after:
            return
        if self._channel.isConnected():  # connected, but no callback said so: take its word
            self._on_connection(True)
            self._handle_events()
            return
        self.renewals += 1
        log.warning("%s unconnected for %.0f s: searching for it anew", self.channel,
                    self._renew_after)
        self._renew_after = min(2 * self._renew_after, _RENEW_MAX_S)
        old = self._channel
        self._open_channel()
        try:
            old.stopMonitor()
        except pva.PvaException as exc:
            log.debug("stopMonitor(%s): %s", self.channel, exc)

    def _bad(self, exc: BadFrame) -> None:
        self.counters["bad"] += 1
        now = time.monotonic()
        if now - self._last_bad_report >= _BAD_REPORT_S:
            self._last_bad_report = now
            self._status(f"{self.channel}: bad update ({self.counters['bad']} so far): {exc}")

    def _consume(self, pv: pva.PvObject) -> None:
        raise NotImplementedError

    # -- public ------------------------------------------------------------------------------
    def start(self):
        """Start monitoring; returns at once (the channel may connect later)."""
        if self._thread is not None:
            return self
        self._stop.clear()
        self._pvq = pva.PvObjectQueue(self.monitor_queue)
        self._renew_after = _RENEW_S
        self._open_channel()
        self._thread = threading.Thread(target=self._run, name=f"pva-monitor {self.channel}",
                                        daemon=True)
        self._thread.start()
        _LIVE.add(self)
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop monitoring and join the consumer thread (idempotent)."""
        if self._thread is None:
            return
        _LIVE.discard(self)
        self._stop.set()
        try:
            self._channel.stopMonitor()
        except pva.PvaException as exc:
            log.debug("stopMonitor(%s): %s", self.channel, exc)
        self._thread.join(timeout)
        self._thread = None
        self._channel = None
        self._was_connected = False
        self._set_connected(False)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class FrameQueue:
    """The caller's side of a bounded queue of decoded frames: :meth:`get`, :meth:`drain`,
    :attr:`queued`. The class that fills ``_frames`` (under ``_ready``) drops the oldest when
    it holds ``queue_size``. Subscribers of several channels that feed one consumer share the
    queue of one ``FrameQueue(queue_size)``."""

    def __init__(self, queue_size: int):
        self._init_queue(queue_size)

    def _init_queue(self, queue_size: int, shared: FrameQueue | None = None) -> None:
        """A queue of its own, or ``shared``'s (then ``queue_size`` is that one's)."""
        if shared is not None:
            self.queue_size, self._frames, self._ready = shared.queue_size, shared._frames, shared._ready
            return
        if queue_size < 1:
            raise BadParameter(f"queue_size={queue_size} must be >= 1")
        self.queue_size = queue_size
        self._frames: collections.deque[Frame] = collections.deque()
        self._ready = threading.Condition()

    def get(self, timeout: float | None = None) -> Frame | None:
        """The oldest queued frame, waiting up to ``timeout`` [s] (None: forever); None if none came."""
        with self._ready:
            if not self._ready.wait_for(lambda: self._frames, timeout):
                return None
            return self._frames.popleft()

    def drain(self, max_frames: int | None = None) -> list[Frame]:
        """Up to ``max_frames`` queued frames (all when None), oldest first, without waiting."""
        with self._ready:
            count = len(self._frames) if max_frames is None else min(max_frames, len(self._frames))
            return [self._frames.popleft() for _ in range(count)]

    @property
    def queued(self) -> int:
        """Frames waiting in the queue."""
        return len(self._frames)


class ImageSubscriber(_Monitor, FrameQueue):
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


class LatestValue(_Monitor, Generic[T]):
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
