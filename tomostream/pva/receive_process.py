"""Receive detector frames in a child process, so that a busy interpreter never delays them.

pvapy hands each update it receives to Python, and so waits for the receiving process's GIL.
In the stream server that GIL is shared with the worker, the IOC and the CA clients: at
2048^2 and 350 frames/s beside two busy threads, an in-process subscriber received 313
frames/s and lost 265 of 3,000 (``python -m tomostream.pva.bench --busy 2``), while alone it
lost none. Here a child process (a Python of its own, :func:`_child_main`, started by
:mod:`.launcher`) runs the :class:`~tomostream.pva.subscriber.ImageSubscriber` and nothing
else. It copies every good frame into a ring in shared memory (:mod:`.ring`) and tells the
parent about each frame in a few bytes over a socket (:mod:`.wire`). The parent reads these
notices in large blocks (one wait for the GIL per block, not per frame) and queues the frames
as read-only views of their slots. A frame size or type the ring does not fit makes a new ring.

:class:`ProcessImageSubscriber` offers what every frame source offers
(:class:`~tomostream.pva.stream.ImageStream`). A child that dies is replaced and uniqueIds
are counted across the gap; when it cannot start, or dies too often, ``failed`` says why and
``on_failed`` is called: :func:`~tomostream.pva.receiving.open_image_stream` then receives in
this process instead.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

import numpy as np

from ..background import Background
from ..errors import TomostreamError
from . import shm
from .frame_queue import FrameQueue
from .launcher import Child, child_wire, launch
from .ledger import IdLedger
from .monitor import ChannelState
from .ntnda import Frame
from .ring import HELD_FRAMES, RING_BYTES, Ring, ring_slots, unlink_rings
from .subscriber import ImageSubscriber
from .wire import Dropped, Fatal, FrameIn, NewRing, Ready, State, Wire

log = logging.getLogger(__name__)

#: A child that ends more than MAX_RESTARTS times within RESTART_WINDOW [s] is not replaced.
MAX_RESTARTS = 3
RESTART_WINDOW = 60.0
#: How often the child reports its counters while no frames come [s].
STATE_PERIOD = 0.25
#: How often the parent's reader wakes to notice stop() [s].
_POLL_S = 0.05
#: Exit code of a child that gave up (no room for a ring).
_GAVE_UP = 3


class _EveryId:
    """The child's stand-in for the parent's :class:`~tomostream.pva.ledger.IdLedger`: every
    id passes, and the parent judges them (it sees the other channels' too)."""

    @staticmethod
    def see(unique_id: int) -> bool:
        return True


class _RingWriter(ImageSubscriber):
    """The receiving process's subscriber: good frames go into a ring and a notice to the
    parent; status texts and counters go to the parent too."""

    def __init__(self, channel: str, wire: Wire, *, monitor_queue: int, slots: int,
                 ring_bytes: int, last_id: int | None, ledger: bool = False):
        super().__init__(channel, queue_size=1, monitor_queue=monitor_queue,
                         last_unique_id=last_id, ledger=_EveryId() if ledger else None)
        self._wire = wire
        self._slots, self._ring_bytes = slots, ring_bytes
        self._ring: Ring | None = None
        self._rings: list[Ring] = []
        self._ring_ids = itertools.count()
        self._last_state = 0.0
        #: Set when the child cannot go on (no room for a ring, parent gone).
        self.gave_up = threading.Event()

    def send(self, message: tuple) -> None:
        try:
            self._wire.send(message)
        except OSError:  # the parent has gone
            self.gave_up.set()

    def _state(self, text: str | None = None) -> None:
        self._last_state = time.monotonic()
        self.send(State(dict(self.counters), self.connected, self._last_id, text))

    def _status(self, text: str) -> None:
        log.info(text)
        self._state(text)

    def _check_monitor(self) -> None:
        super()._check_monitor()
        if time.monotonic() - self._last_state >= STATE_PERIOD:
            self._state()

    def _ring_for(self, array: np.ndarray) -> Ring | None:
        if self._ring is not None and self._ring.fits(array):
            return self._ring
        if self.gave_up.is_set():
            return None
        slots = ring_slots(array.nbytes, self._slots, self._ring_bytes)
        try:
            ring = Ring.create(next(self._ring_ids), array.shape, array.dtype, slots)
        except TomostreamError as exc:
            self._give_up(str(exc))
            return None
        self._ring = ring
        self._rings.append(ring)
        self.send(NewRing(ring.id, ring.path, ring.shape, ring.dtype.str, ring.slots))
        # frames keep coming while the rest of the ring takes its memory (2 GB took 3 s)
        threading.Thread(target=ring.prepare, name="ring space", daemon=True).start()
        return ring

    def _give_up(self, reason: str) -> None:
        self.send(Fatal(reason))
        self.gave_up.set()

    def _slot(self, ring: Ring | None) -> int | None:
        """A slot of ``ring`` with room for a frame, now held; None when the parent holds every
        slot there is room for."""
        while ring is not None and (slot := ring.take()) is not None:
            try:
                ring.reserve(slot)
                return slot
            except TomostreamError as exc:
                usable = ring.usable
                if not usable:
                    self._give_up(str(exc))
                    return None
                if usable == ring.slots - 1:  # the first slot given up: say so once
                    self._status(f"{self.channel}: {exc}; going on with fewer frames")
        return None

    def _keep(self, frame: Frame) -> None:
        ring = self._ring_for(frame.array)
        slot = self._slot(ring)
        self._last_id = frame.unique_id
        if slot is None:  # the parent holds every slot: it has fallen behind
            self.counters["dropped"] += 1
            self.send(Dropped(frame.unique_id))
            return
        ring.write(slot, frame.array)
        self.counters["received"] += 1
        self.send(FrameIn(ring.id, slot, frame.unique_id, frame.timestamp, frame.received,
                          dict(self.counters), self.connected))

    def close(self) -> None:
        for ring in self._rings:
            ring.close()
        self._rings.clear()


def _child_main(fd: int, config: dict) -> int:  # pragma: no cover - runs in the child process
    """Receive ``config['channel']`` into rings until the parent closes ``fd`` or goes away."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # the parent died: clean up
    wire = child_wire(fd)
    writer = _RingWriter(config["channel"], wire, monitor_queue=config["monitor_queue"],
                         slots=config["slots"], ring_bytes=config["ring_bytes"],
                         last_id=config["last_id"], ledger=config["ledger"])
    writer.send(Ready(os.getpid()))
    writer.start()
    try:
        while not writer.gave_up.is_set():
            try:
                wire.receive(0.2)  # the parent sends nothing: only its end matters
            except EOFError:
                return 0  # the parent closed its end
        return _GAVE_UP
    finally:
        writer.stop()
        writer.close()


class ProcessImageSubscriber(FrameQueue, ChannelState):
    """Frames of an areaDetector NTNDArray channel, received by a child process.

    Parameters
    ----------
    channel, queue_size, monitor_queue, last_unique_id, queue, ledger
        As for :class:`~tomostream.pva.subscriber.ImageSubscriber` (``monitor_queue``: the
        updates pvapy may hold in the child before it copies them).
    on_status : callable, optional
        ``on_status(text)``: connection changes, bad frames, the child's end and replacement,
        from this object's reader thread.
    ring_bytes : int
        Most shared memory a ring of frames takes [bytes]; a ring has ``queue_size +``
        :data:`~tomostream.pva.ring.HELD_FRAMES` slots when that fits. When the caller holds
        every slot (it fell behind), new frames are dropped and counted.
    on_failed : callable, optional
        ``on_failed(subscriber, why)`` once frames are no longer received (see ``failed``),
        from the reader thread as it ends; not after :meth:`stop`.

    Attributes
    ----------
    counters : dict of str to int
        Those of :class:`~tomostream.pva.subscriber.ImageSubscriber`, summed over the
        children.
    connected : bool
        Whether the child's channel is connected now.
    failed : str or None
        Why frames are no longer received (the child could not start, gave up or died more
        than :data:`MAX_RESTARTS` times within :data:`RESTART_WINDOW`).
    process_restarts : int
        Children that ended and were replaced.
    """

    def __init__(self, channel: str, queue_size: int = 32, *, monitor_queue: int = 100,
                 on_status: Callable[[str], None] | None = None, ring_bytes: int = RING_BYTES,
                 last_unique_id: int | None = None, queue: FrameQueue | None = None,
                 ledger: IdLedger | None = None,
                 on_failed: Callable[[ProcessImageSubscriber, str], None] | None = None):
        self._init_channel(channel, monitor_queue, on_status)
        self._init_queue(queue_size, queue)
        self._ledger = ledger
        self.ring_bytes = int(ring_bytes)
        self.on_failed = on_failed
        self.counters: dict[str, int] = dict.fromkeys(ImageSubscriber._COUNTERS, 0)
        self.failed: str | None = None
        self.process_restarts = 0
        self._last_id = last_unique_id
        self._carried = dict.fromkeys(ImageSubscriber._COUNTERS, 0)  # of children gone
        self._child_counts = dict(self._carried)
        self._dropped = 0
        self._repeats = 0  # frames the child received that the ledger found repeated
        self._rings: dict[int, Ring] = {}
        self._child: Child | None = None
        self._fatal: str | None = None
        self._ends: list[float] = []
        self._reader = Background()

    # -- public ------------------------------------------------------------------------------
    def start(self) -> ProcessImageSubscriber:
        """Start the child and return at once (it connects later; ``failed`` says if it
        cannot).

        Raises
        ------
        TomostreamError
            When this machine has no shared memory for the frames.
        """
        if self._reader.running:
            return self
        if not shm.available():
            raise TomostreamError(f"no {shm.SHM_DIR}: frames cannot be received by a child process")
        # the child ends with the thread that starts it (childproc), so the reader starts it
        self._reader.start(self._run, f"pva-receiver {self.channel}")
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the child and the reader (idempotent); frames already queued stay readable."""
        if self._reader.stop(timeout):
            self._set_connected(False)

    @property
    def last_unique_id(self) -> int | None:
        """uniqueId of the last good frame received (queued or dropped since); None before any."""
        return self._last_id

    @property
    def pid(self) -> int | None:
        """Process id of the current child (None when none runs)."""
        return None if self._child is None else self._child.pid

    def __enter__(self) -> ProcessImageSubscriber:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- the reader thread -------------------------------------------------------------------
    def _run(self) -> None:
        stopping = self._reader.stopping
        try:
            while not stopping.is_set() and self.failed is None:
                if self._child is None:
                    self._spawn()
                    continue
                try:
                    messages = self._child.wire.receive(_POLL_S)
                except EOFError:
                    self._ended()
                    continue
                if messages:
                    self._handle(messages)
        finally:
            self._end_child()
        if self.failed is not None and self.on_failed is not None and not stopping.is_set():
            self.on_failed(self, self.failed)

    def _spawn(self) -> None:
        config = {"channel": self.channel, "monitor_queue": self.monitor_queue,
                  "slots": self.queue_size + HELD_FRAMES, "ring_bytes": self.ring_bytes,
                  "last_id": self._last_id, "ledger": self._ledger is not None}
        try:
            child = launch(__name__, "_child_main", config, who="receiving process")
            ready = child.wait_ready(self._reader.stopping)
        except TomostreamError as exc:
            self._fail(str(exc))
            return
        if not ready:  # stopped meanwhile
            child.end()
            return
        self._child, self._fatal = child, None
        log.info("%s received by process %d", self.channel, child.pid)

    def _handle(self, messages: list) -> None:
        frames, texts, connected = [], [], self.connected
        counts, last_id = self._child_counts, self._last_id
        for message in messages:
            match message:
                case FrameIn():
                    counts, connected, last_id = message.counters, message.connected, message.unique_id
                    self._take(message, frames)
                case Dropped(unique_id):
                    if self._ledger is not None:
                        self._ledger.see(unique_id)
                case State():
                    counts, connected, last_id = message.counters, message.connected, message.last_id
                    if message.text:
                        texts.append(message.text)
                case NewRing():
                    self._map(message)
                case Fatal(reason):
                    self._fatal = reason
        with self._ready:
            self._child_counts = counts
            for frame in frames:
                if len(self._frames) >= self.queue_size:
                    self._frames.popleft()
                    self._dropped += 1
                self._frames.append(frame)
            self._last_id = last_id
            self._update_counters()
            if frames:
                self._ready.notify_all()
        self._set_connected(connected)
        for text in texts:
            self._status(text)

    def _take(self, notice: FrameIn, frames: list[Frame]) -> None:
        """Add the frame of ``notice`` to ``frames`` unless the ledger finds it repeated."""
        ring = self._rings.get(notice.ring)
        if ring is None:  # its ring could not be mapped: the child is ending
            return
        if self._ledger is None or self._ledger.see(notice.unique_id):
            frames.append(Frame(ring.frame(notice.slot), notice.unique_id, notice.timestamp,
                                notice.received))
        else:  # a repeat, counted by the ledger: not received after all
            ring.release(notice.slot)
            self._repeats += 1

    def _map(self, new: NewRing) -> None:
        """Map the child's new ring (it replaces the last one)."""
        try:
            self._rings = {new.ring: Ring.attach(new.ring, new.path, new.shape, new.dtype,
                                                 new.slots)}
        except OSError as exc:
            self._fatal = f"cannot map the frames of the receiving process: {exc}"
            self._child.proc.terminate()
        finally:
            shm.unlink(new.path)  # mapped by both: the name is no longer needed

    def _update_counters(self) -> None:
        counters = {k: self._carried[k] + self._child_counts.get(k, 0) for k in self._carried}
        counters["dropped"] += self._dropped
        counters["received"] -= self._repeats
        self.counters = counters

    def _ended(self) -> None:
        """The child has gone: count it, and replace it unless it gave up or ends too often."""
        code = self._end_child()
        now = time.monotonic()
        self._ends = [t for t in self._ends if now - t < RESTART_WINDOW] + [now]
        if self._fatal is not None:
            self._fail(self._fatal)
        elif len(self._ends) > MAX_RESTARTS:
            self._fail(f"the receiving process ended {len(self._ends)} times within "
                       f"{RESTART_WINDOW:.0f} s (last exit code {code})")
        else:
            self.process_restarts += 1
            self._status(f"{self.channel}: receiving process ended (exit code {code}): "
                         "starting another")

    def _end_child(self) -> int | None:
        """Close the child's socket, wait for it to end (kill it if it does not), remove the
        rings it left; its counters are kept. Returns its exit code."""
        if self._child is None:
            return None
        child, self._child = self._child, None
        code = child.end()
        unlink_rings(child.pid)
        with self._ready:
            for key in self._carried:
                self._carried[key] += self._child_counts.get(key, 0)
            self._child_counts = {}
            self._update_counters()
        self._set_connected(False)
        return code

    def _fail(self, reason: str) -> None:
        self.failed = reason
        self._status(f"{self.channel}: {reason}")
