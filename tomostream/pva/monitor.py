"""A pvapy queueing monitor of one channel and the thread that consumes it.

pvapy's own threads only push received structures into a bounded ``PvObjectQueue``
(``Channel.qMonitor``), and one consumer thread of ours takes them, a backlog in a row without
giving the GIL up in between. (The callback monitor, ``subscribe`` + ``startMonitor``, tops out
near 75 updates/s; the queueing monitor keeps up with thousands of frames/s.)

:class:`Monitor` keeps the channel alive: it tracks connections (and counts reconnections),
restarts a monitor that stays silent once connected, searches anew for a channel that stays
unconnected, and reports all that through ``on_status(text)``. The subscribers of
:mod:`.subscriber` say what is done with each update.
"""

from __future__ import annotations

import atexit
import collections
import logging
import threading
import time
import weakref
from collections.abc import Callable

import pvaccess as pva

from ..errors import BadFrame, BadParameter

log = logging.getLogger(__name__)

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


class Monitor(ChannelState):
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
