"""Receive detector frames in a child process, so that a busy interpreter never delays them.

pvapy hands each update it receives to Python, and so waits for the receiving process's GIL.
In the stream server that GIL is shared with the worker, the IOC and the CA clients: at
2048^2 and 350 frames/s beside two busy threads, an in-process subscriber received 313
frames/s and lost 265 of 3,000 (``python -m tomostream.pva.bench --busy 2``), while alone it
lost none. Here a child process (a Python of its own, :func:`_child_main`) runs the
:class:`~tomostream.pva.subscriber.ImageSubscriber` and nothing else. It copies every good
frame into a *ring*: a file in shared memory (:mod:`.shm`) of equal slots, one byte of state
per slot, then the frames; a slot takes its memory when it is first used. It tells the parent
about each frame in a few bytes over a socket. The parent reads these notices in large blocks
(one wait for the GIL per block, not per frame) and queues the frames as read-only views of
their slots; a slot is free again when the frame and every view of it are gone. A frame size
or type the ring does not fit makes a new ring.

:class:`ProcessImageSubscriber` has the interface of
:class:`~tomostream.pva.subscriber.ImageSubscriber` (:meth:`~ProcessImageSubscriber.get`,
:meth:`~ProcessImageSubscriber.drain`, ``counters``, ``connected``, ...). A child that dies is
replaced and uniqueIds are counted across the gap; when it cannot start, or dies too often,
``failed`` says why and the caller receives in its own process instead.
"""

from __future__ import annotations

import glob
import itertools
import json
import logging
import os
import pickle
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable

import numpy as np

from ..childproc import popen_with_parent
from ..errors import TomostreamError
from . import shm
from .ledger import IdLedger
from .ntnda import Frame
from .subscriber import ChannelState, FrameQueue, ImageSubscriber

log = logging.getLogger(__name__)

#: Most shared memory one ring of frames takes [bytes]: 256 frames of 2048^2 uint16, as many
#: as the stream server's queue holds (a slot takes its memory when first used).
RING_BYTES = 2 << 30
#: Frames the caller may hold beyond its queue (taken and not yet released): the stream
#: server holds a batch and the frames waiting for their FrameType.
HELD_FRAMES = 128
#: Fewest slots a ring is made with.
MIN_SLOTS = 8
#: Longest the start of the receiving process (Python, NumPy, pvapy) may take [s].
START_TIMEOUT = 30.0
#: A child that ends more than MAX_RESTARTS times within RESTART_WINDOW [s] is not replaced.
MAX_RESTARTS = 3
RESTART_WINDOW = 60.0
#: How often the child reports its counters while no frames come [s].
STATE_PERIOD = 0.25
#: How often the parent's reader wakes to notice stop() [s], and how much it reads at once.
_POLL_S = 0.05
_READ_BYTES = 1 << 20
#: Exit code of a child that gave up (no room for a ring).
_GAVE_UP = 3
_HEADER = struct.Struct("!I")
#: The child's program. (``-m`` would run this module a second time beside the copy that
#: ``tomostream.pva`` imports, and runpy warns of that.)
_CHILD = ("import json, logging, sys; from tomostream.pva.receive_process import _child_main; "
          "logging.basicConfig(level=logging.WARNING); "
          "sys.exit(_child_main(int(sys.argv[1]), json.loads(sys.argv[2])))")


def ring_slots(frame_bytes: int, wanted: int, ring_bytes: int = RING_BYTES) -> int:
    """Slots of a ring for frames of ``frame_bytes``: ``wanted``, as far as ``ring_bytes``
    allows, and at least :data:`MIN_SLOTS`."""
    return max(MIN_SLOTS, min(int(wanted), int(ring_bytes) // shm.align(frame_bytes)))


class _Ring:
    """Frame slots of one shape and dtype in a shared file: a state byte per slot (1 while the
    parent holds the frame in it, 2 when there was no room for it), then the slots, each
    starting on a page. The receiving process gives a slot its space when it first uses it."""

    def __init__(self, ring_id: int, path: str, mapping, shape: tuple[int, int], dtype, slots: int,
                 fd: int | None = None):
        self.id, self.path, self.slots = ring_id, path, slots
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        self.stride = shm.align(self.nbytes)
        self.offset = shm.align(slots)
        self._map = mapping
        self._fd = fd
        self._fd_lock = threading.Lock()  # prepare() and close() in different threads
        self.states = np.frombuffer(mapping, np.uint8, slots)
        self._reserved = np.zeros(slots, bool)
        self._cursor = 0

    @property
    def what(self) -> str:
        return f"ring of {self.slots} frames {self.shape[1]}x{self.shape[0]}"

    @classmethod
    def create(cls, ring_id: int, shape: tuple[int, int], dtype, slots: int) -> _Ring:
        """A new ring (in the receiving process), its slots not yet given space;
        :class:`TomostreamError` when there is not even room for its state bytes."""
        stride = shm.align(int(np.prod(shape)) * np.dtype(dtype).itemsize)
        path, mapping = shm.create(shm.align(slots) + slots * stride,
                                   prefix=f"tomostream-rx-{os.getpid()}-", reserve=False)
        fd = os.open(path, os.O_RDWR)
        ring = cls(ring_id, path, mapping, shape, dtype, slots, fd)
        try:
            shm.reserve(fd, 0, ring.offset, ring.what)
        except TomostreamError:
            ring.close()
            raise
        return ring

    @classmethod
    def attach(cls, ring_id: int, path: str, shape, dtype, slots: int) -> _Ring:
        """The ring another process made."""
        return cls(ring_id, path, shm.attach(path, populate=False), shape, dtype, slots)

    def fits(self, array: np.ndarray) -> bool:
        return array.shape == self.shape and array.dtype == self.dtype

    @property
    def usable(self) -> int:
        """Slots not given up for want of room."""
        return int(np.count_nonzero(self.states != 2))

    def _start(self, slot: int) -> int:
        return self.offset + slot * self.stride

    def _flat(self, slot: int, writable: bool) -> np.ndarray:
        start = self._start(slot)
        view = memoryview(self._map)[start:start + self.nbytes]
        return np.frombuffer(view if writable else view.toreadonly(), self.dtype)

    def take(self) -> int | None:
        """A free slot, now marked held (the next after the last one taken); None if none."""
        free = np.flatnonzero(self.states == 0)
        if not free.size:
            return None
        later = free[free >= self._cursor]
        slot = int(later[0] if later.size else free[0])
        self.states[slot] = 1
        self._cursor = slot + 1
        return slot

    def _give_space(self, slot: int) -> None:
        """Give ``slot`` its space if it has none yet; :class:`TomostreamError` when no room."""
        if not self._reserved[slot]:
            shm.reserve(self._fd, self._start(slot), self.stride, self.what)
            self._reserved[slot] = True

    def reserve(self, slot: int) -> None:
        """Give a taken slot its space if it has none yet; when there is no room, the slot is
        given up and :class:`TomostreamError` raised."""
        try:
            self._give_space(slot)
        except TomostreamError:
            self.states[slot] = 2
            raise

    def prepare(self) -> None:
        """Give every slot its space ahead of use, stopping at the first without room (that
        one is met, given up and reported when it is taken). Run in a thread of its own; the
        space is taken with the GIL released."""
        for slot in range(self.slots):
            with self._fd_lock:
                if self._fd is None:  # closed meanwhile
                    return
                try:
                    self._give_space(slot)
                except TomostreamError:
                    return

    def write(self, slot: int, array: np.ndarray) -> None:
        np.copyto(self._flat(slot, True).reshape(self.shape), array)

    def frame(self, slot: int) -> np.ndarray:
        """The frame in ``slot``, read-only; the slot is released when it and every view of it
        are gone (views of a NumPy array keep its first array alive, not the array itself)."""
        flat = self._flat(slot, False)
        weakref.finalize(flat, self.release, slot)
        return flat.reshape(self.shape)

    def release(self, slot: int) -> None:
        """Free ``slot`` (its frame is not, or no longer, used)."""
        self.states[slot] = 0

    def close(self) -> None:
        """Unlink the file and drop this mapping (views still held keep theirs)."""
        shm.unlink(self.path)
        with self._fd_lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
        self.states = None
        try:
            self._map.close()
        except BufferError:
            pass


def _send(sock: socket.socket, lock: threading.Lock, message) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    with lock:
        sock.sendall(_HEADER.pack(len(data)) + data)


class _Inbox:
    """Messages framed by :func:`_send`, taken out of a stream read in arbitrary blocks."""

    def __init__(self):
        self._buf = bytearray()

    def feed(self, data: bytes) -> list:
        self._buf += data
        messages, pos, end = [], 0, len(self._buf)
        while end - pos >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self._buf, pos)
            if end - pos - _HEADER.size < size:
                break
            start = pos + _HEADER.size
            messages.append(pickle.loads(self._buf[start:start + size]))
            pos = start + size
        del self._buf[:pos]
        return messages


class _EveryId:
    """The child's stand-in for the parent's :class:`~tomostream.pva.ledger.IdLedger`: every
    id passes, and the parent judges them (it sees the other channels' too)."""

    @staticmethod
    def see(unique_id: int) -> bool:
        return True


class _RingWriter(ImageSubscriber):
    """The receiving process's subscriber: good frames go into a ring and a notice to the
    parent; status texts and counters go to the parent too."""

    def __init__(self, channel: str, sock: socket.socket, *, monitor_queue: int, slots: int,
                 ring_bytes: int, last_id: int | None, ledger: bool = False):
        super().__init__(channel, queue_size=1, monitor_queue=monitor_queue,
                         last_unique_id=last_id, ledger=_EveryId() if ledger else None)
        self._sock, self._lock = sock, threading.Lock()
        self._slots, self._ring_bytes = slots, ring_bytes
        self._ring: _Ring | None = None
        self._rings: list[_Ring] = []
        self._ring_ids = itertools.count()
        self._last_state = 0.0
        #: Set when the child cannot go on (no room for a ring, parent gone).
        self.gave_up = threading.Event()

    def send(self, message) -> None:
        try:
            _send(self._sock, self._lock, message)
        except OSError:  # the parent has gone
            self.gave_up.set()

    def _state(self, text: str | None = None) -> None:
        self._last_state = time.monotonic()
        self.send(("state", dict(self.counters), self.connected, self._last_id, text))

    def _status(self, text: str) -> None:
        log.info(text)
        self._state(text)

    def _check_monitor(self) -> None:
        super()._check_monitor()
        if time.monotonic() - self._last_state >= STATE_PERIOD:
            self._state()

    def _ring_for(self, array: np.ndarray) -> _Ring | None:
        if self._ring is not None and self._ring.fits(array):
            return self._ring
        if self.gave_up.is_set():
            return None
        slots = ring_slots(array.nbytes, self._slots, self._ring_bytes)
        try:
            ring = _Ring.create(next(self._ring_ids), array.shape, array.dtype, slots)
        except TomostreamError as exc:
            self._give_up(str(exc))
            return None
        self._ring = ring
        self._rings.append(ring)
        self.send(("ring", ring.id, ring.path, ring.shape, ring.dtype.str, ring.slots))
        # frames keep coming while the rest of the ring takes its memory (2 GB took 3 s)
        threading.Thread(target=ring.prepare, name="ring space", daemon=True).start()
        return ring

    def _give_up(self, reason: str) -> None:
        self.send(("fatal", reason))
        self.gave_up.set()

    def _slot(self, ring: _Ring | None) -> int | None:
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
            self.send(("dropped", frame.unique_id))
            return
        ring.write(slot, frame.array)
        self.counters["received"] += 1
        self.send(("frame", ring.id, slot, frame.unique_id, frame.timestamp, frame.received,
                   dict(self.counters), self.connected))

    def close(self) -> None:
        for ring in self._rings:
            ring.close()
        self._rings.clear()


def _child_main(fd: int, config: dict) -> int:  # pragma: no cover - runs in the child process
    """Receive ``config['channel']`` into rings until the parent closes ``fd`` or goes away."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # the parent died: clean up
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a terminal is for the parent
    sock = socket.socket(fileno=fd)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    writer = _RingWriter(config["channel"], sock, monitor_queue=config["monitor_queue"],
                         slots=config["slots"], ring_bytes=config["ring_bytes"],
                         last_id=config["last_id"], ledger=config["ledger"])
    writer.send(("ready", os.getpid()))
    writer.start()
    try:
        while not writer.gave_up.is_set():
            readable, _, _ = select.select([sock], [], [], 0.2)
            if readable and not sock.recv(4096):
                return 0  # the parent closed its end
        return _GAVE_UP
    finally:
        writer.stop()
        writer.close()


def start_image_subscriber(channel: str, *, process: bool, on_fallback: Callable[[str], None],
                           ring_bytes: int = RING_BYTES, **kw) -> ImageSubscriber | ProcessImageSubscriber:
    """A started subscriber to ``channel``: in a child process (whose ring takes at most
    ``ring_bytes``) when ``process`` and it can be, else in this one, saying why through
    ``on_fallback(text)``. ``kw`` go to either class."""
    if process:
        try:
            return ProcessImageSubscriber(channel, ring_bytes=ring_bytes, **kw).start()
        except TomostreamError as exc:
            on_fallback(f"receiving {channel} in the server process: {exc}")
    return ImageSubscriber(channel, **kw).start()


class ProcessImageSubscriber(FrameQueue, ChannelState):
    """Frames of an areaDetector NTNDArray channel, received by a child process.

    Parameters
    ----------
    channel : str
        PVA channel name, e.g. ``"2bmSP1:Pva1:Image"``.
    queue_size : int
        Frames kept for :meth:`get`; when full, the oldest is dropped (``counters['dropped']``).
    monitor_queue : int
        Updates pvapy may hold in the child before it copies them.
    on_status : callable, optional
        ``on_status(text)``: connection changes, bad frames, the child's end and replacement,
        from this object's reader thread.
    ring_bytes : int
        Most shared memory a ring of frames takes [bytes]; a ring has ``queue_size +``
        :data:`HELD_FRAMES` slots when that fits. When the caller holds every slot (it fell
        behind), new frames are dropped and counted.
    last_unique_id : int, optional
        uniqueId of the last frame received before (frames missed since count as lost).
    queue, ledger : optional
        A frame queue and an :class:`~tomostream.pva.ledger.IdLedger` shared with the
        subscribers of other channels, as for :class:`~tomostream.pva.subscriber.ImageSubscriber`.

    Attributes
    ----------
    counters : dict of str to int
        Those of :class:`~tomostream.pva.subscriber.ImageSubscriber`, summed over the
        children.
    connected : bool
        Whether the child's channel is connected now.
    failed : str or None
        Why frames are no longer received (the child could not start, gave up or died more
        than :data:`MAX_RESTARTS` times within :data:`RESTART_WINDOW`); receive in this process
        then.
    process_restarts : int
        Children that ended and were replaced.
    """

    def __init__(self, channel: str, queue_size: int = 32, *, monitor_queue: int = 100,
                 on_status: Callable[[str], None] | None = None, ring_bytes: int = RING_BYTES,
                 last_unique_id: int | None = None, queue: FrameQueue | None = None,
                 ledger: IdLedger | None = None):
        self._init_channel(channel, monitor_queue, on_status)
        self._init_queue(queue_size, queue)
        self._ledger = ledger
        self.ring_bytes = int(ring_bytes)
        self.counters: dict[str, int] = dict.fromkeys(ImageSubscriber._COUNTERS, 0)
        self.failed: str | None = None
        self.process_restarts = 0
        self._last_id = last_unique_id
        self._carried = dict.fromkeys(ImageSubscriber._COUNTERS, 0)  # of children gone
        self._child = dict(self._carried)
        self._dropped = 0
        self._repeats = 0  # frames the child received that the ledger found repeated
        self._rings: dict[int, _Ring] = {}
        self._proc: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        self._inbox = _Inbox()
        self._started_at = 0.0
        self._child_ready = False
        self._fatal: str | None = None
        self._ends: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- public ------------------------------------------------------------------------------
    def start(self) -> ProcessImageSubscriber:
        """Start the child and return at once (it connects later; ``failed`` says if it
        cannot).

        Raises
        ------
        TomostreamError
            When this machine has no shared memory for the frames.
        """
        if self._thread is not None:
            return self
        if not shm.available():
            raise TomostreamError(f"no {shm.SHM_DIR}: frames cannot be received by a child process")
        self._stop.clear()
        # the child ends with the thread that starts it (childproc), so the reader starts it
        self._thread = threading.Thread(target=self._run, name=f"pva-receiver {self.channel}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the child and the reader (idempotent); frames already queued stay readable."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout)
        self._thread = None
        self._set_connected(False)

    @property
    def last_unique_id(self) -> int | None:
        """uniqueId of the last good frame received (queued or dropped since); None before any."""
        return self._last_id

    @property
    def pid(self) -> int | None:
        """Process id of the current child (None when none runs)."""
        return None if self._proc is None else self._proc.pid

    def __enter__(self) -> ProcessImageSubscriber:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- the reader thread -------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stop.is_set() and self.failed is None:
                if self._proc is None:
                    self._spawn()
                    continue
                try:
                    data = self._sock.recv(_READ_BYTES)
                except TimeoutError:
                    if not self._child_ready and time.monotonic() - self._started_at > START_TIMEOUT:
                        self._fail(f"the receiving process did not start within "
                                   f"{START_TIMEOUT:.0f} s")
                    continue
                except OSError:
                    data = b""
                if data:
                    self._handle(self._inbox.feed(data))
                else:
                    self._ended()
        finally:
            self._end_child()

    def _spawn(self) -> None:
        config = {"channel": self.channel, "monitor_queue": self.monitor_queue,
                  "slots": self.queue_size + HELD_FRAMES, "ring_bytes": self.ring_bytes,
                  "last_id": self._last_id, "ledger": self._ledger is not None}
        parent, child = socket.socketpair()
        try:
            self._proc = popen_with_parent(
                [sys.executable, "-c", _CHILD, str(child.fileno()), json.dumps(config)],
                pass_fds=(child.fileno(),))
        except OSError as exc:
            parent.close()
            self._fail(f"cannot start the receiving process: {exc}")
            return
        finally:
            child.close()
        parent.settimeout(_POLL_S)
        self._sock, self._inbox = parent, _Inbox()
        self._started_at, self._child_ready, self._fatal = time.monotonic(), False, None

    def _handle(self, messages: list) -> None:
        frames, texts, connected = [], [], self.connected
        child, last_id = self._child, self._last_id
        for message in messages:
            kind = message[0]
            if kind == "frame":
                _, ring_id, slot, uid, stamp, received, child, connected = message
                last_id = uid
                ring = self._rings.get(ring_id)
                if ring is None:  # its ring could not be mapped: the child is ending
                    continue
                if self._ledger is None or self._ledger.see(uid):
                    frames.append(Frame(ring.frame(slot), uid, stamp, received))
                else:  # a repeat, counted by the ledger: not received after all
                    ring.release(slot)
                    self._repeats += 1
            elif kind == "dropped":
                if self._ledger is not None:
                    self._ledger.see(message[1])
            elif kind == "state":
                _, child, connected, last_id, text = message
                if text:
                    texts.append(text)
            elif kind == "ring":
                _, ring_id, path, shape, dtype, slots = message
                try:
                    self._rings = {ring_id: _Ring.attach(ring_id, path, shape, dtype, slots)}
                except OSError as exc:
                    self._fatal = f"cannot map the frames of the receiving process: {exc}"
                    self._proc.terminate()
                finally:
                    shm.unlink(path)  # mapped by both: the name is no longer needed
            elif kind == "ready":
                self._child_ready = True
                log.info("%s received by process %d", self.channel, message[1])
            elif kind == "fatal":
                self._fatal = message[1]
        with self._ready:
            self._child = child
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

    def _update_counters(self) -> None:
        counters = {k: self._carried[k] + self._child.get(k, 0) for k in self._carried}
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
        elif not self._child_ready:
            self._fail(f"the receiving process ended as it started (exit code {code})")
        else:
            self.process_restarts += 1
            self._status(f"{self.channel}: receiving process ended (exit code {code}): "
                         "starting another")

    def _end_child(self) -> int | None:
        """Close the child's socket, wait for it to end (kill it if it does not), remove the
        rings it left; its counters are kept. Returns its exit code."""
        if self._proc is None:
            return None
        proc, self._proc = self._proc, None
        self._sock.close()
        try:
            code = proc.wait(5.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait(5.0)
        for path in glob.glob(os.path.join(shm.SHM_DIR, f"tomostream-rx-{proc.pid}-*")):
            shm.unlink(path)
        with self._ready:
            for key in self._carried:
                self._carried[key] += self._child.get(key, 0)
            self._child = {}
            self._update_counters()
        self._set_connected(False)
        return code

    def _fail(self, reason: str) -> None:
        self.failed = reason
        self._status(f"{self.channel}: {reason}")
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
