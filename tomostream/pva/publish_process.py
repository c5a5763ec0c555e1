"""Publish the slices from a child process, so that encoding never holds the server's GIL.

Turning a 2048^2 ortho image (50 MB of float32) into an NTNDArray copies it into a block
pvapy allocates afresh for every update; pvapy holds the GIL while it does, and a block of
that size comes straight from the kernel, page by page. On an H100 host that took 36 ms per
update (13 ms with transparent huge pages), during which the stream server's worker and its
image subscriber stood still. Here a child process (started by :mod:`.launcher`) serves the
channel: the server writes each image into one of two shared-memory buffers and sends a few
bytes (:mod:`.wire`); the child draws the marker lines, encodes, posts and answers. The child
runs with glibc's huge-page malloc (``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``, glibc 2.35
and later; ignored elsewhere).

Both publishers below have one interface, used by the stream server's worker:
:meth:`buffer` (a free image buffer, or None while both are in flight), :meth:`submit`,
:meth:`results` (finished publications as :class:`Published`) and :meth:`close`.
:class:`InlinePublisher` does the same in the calling thread, where no child can run
(no ``/dev/shm``) or when asked.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import mmap
import os
import time

import numpy as np

from ..errors import TomostreamError
from . import shm
from .launcher import Child, child_wire, launch
from .wire import Close, Done, Forget, Map, Mapped, Publish, Ready

log = logging.getLogger(__name__)

#: Image buffers per publisher: one being filled while the other is published.
SLOTS = 2
#: glibc tunable that backs large malloc blocks with transparent huge pages.
HUGETLB = "glibc.malloc.hugetlb=1"
#: glibc mallopt parameters, and how much free heap the child keeps [bytes].
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
KEEP_FREE = 1 << 30


@dataclasses.dataclass(frozen=True)
class Published:
    """One finished publication.

    Attributes
    ----------
    token : object
        What :meth:`submit` was given.
    unique_id : int or None
        uniqueId served; None when it failed.
    time : float
        When the update was posted (or failed) [s since the POSIX epoch].
    seconds : float
        Time the publication took (markers, encoding, post) [s].
    error : str or None
        Why it failed.
    """

    token: object
    unique_id: int | None
    time: float
    seconds: float
    error: str | None = None


def child_env(env: dict | None = None) -> dict:
    """``env`` (default: this process's) with glibc's huge-page malloc tunable added."""
    env = dict(os.environ if env is None else env)
    tunables = [t for t in env.get("GLIBC_TUNABLES", "").split(":") if t]
    if not any(t.startswith("glibc.malloc.hugetlb=") for t in tunables):
        tunables.append(HUGETLB)
    env["GLIBC_TUNABLES"] = ":".join(tunables)
    return env


def keep_freed_blocks() -> bool:
    """Make glibc serve every block from the heap and keep up to :data:`KEEP_FREE` of freed
    memory there; True if it could (glibc).

    pvapy allocates a new block for every image it encodes (50 MB at 2048^2). glibc gives a
    block that large its own mapping and returns it to the kernel when freed, so each update
    starts on fresh pages (36 ms for a 50 MB copy on an H100 host, 13 ms with huge pages).
    Served from the heap, the next image lands in the pages the last but one freed. Only for
    the publishing process, whose few large blocks come and go in step.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, KEEP_FREE))


class _Slot:
    """A float32 image buffer of a fixed shape; in shared memory (:mod:`.shm`) when ``shared``."""

    def __init__(self, shape: tuple[int, int], shared: bool):
        self.shape = shape
        self.busy = False
        self.id = None
        if shared:
            self.path, self._map = shm.create(int(np.prod(shape)) * 4, what="image buffer")
            self.array = np.frombuffer(self._map, np.float32, int(np.prod(shape))).reshape(shape)
        else:
            self.path, self._map = None, None
            self.array = np.empty(shape, np.float32)

    def unlink(self) -> None:
        shm.unlink(self.path)
        self.path = None

    def close(self) -> None:
        self.unlink()
        self.array = None
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:  # a caller still holds a view; the mapping ends with it
                pass
            self._map = None


class _Buffers:
    """The image buffers of a publisher, re-made when the image shape changes."""

    def __init__(self, shared: bool):
        self.shared = shared
        self.slots: list[_Slot] = []
        self._next_id = 0

    def free(self, shape: tuple[int, int]) -> tuple[int, np.ndarray] | None:
        shape = tuple(int(s) for s in shape)
        if self.slots and self.slots[0].shape != shape:
            if any(s.busy for s in self.slots):
                return None  # the old shape is still being published
            self.close()
        if not self.slots:
            made: list[_Slot] = []
            try:
                while len(made) < SLOTS:
                    made.append(_Slot(shape, self.shared))
            except TomostreamError:
                for slot in made:
                    slot.close()
                raise
            for slot in made:
                slot.id, self._next_id = self._next_id, self._next_id + 1
            self.slots = made
        for slot in self.slots:
            if not slot.busy:
                return slot.id, slot.array
        return None

    def get(self, slot_id: int) -> _Slot:
        for slot in self.slots:
            if slot.id == slot_id:
                return slot
        raise TomostreamError(f"no image buffer {slot_id}: take one from buffer() first")

    def close(self) -> None:
        for slot in self.slots:
            slot.close()
        self.slots = []


class InlinePublisher:
    """Publish in the calling thread (no child process); the interface of
    :class:`ProcessPublisher`.

    ``unique_ids``: the last uniqueId of channels served before (by a publishing process this
    one replaces), so that they go on from there.
    """

    def __init__(self, unique_ids: dict[str, int] | None = None):
        from .server import PvaChannels

        self.unique_ids: dict[str, int] = dict(unique_ids or {})
        self._channels = PvaChannels()
        self._publishers: dict = {}
        self._buffers = _Buffers(shared=False)
        self._done: list[Published] = []

    #: Whether every buffer is being published (never: publication happens in submit).
    full = False
    in_flight = 0

    def buffer(self, shape: tuple[int, int]) -> tuple[int, np.ndarray] | None:
        """A free float32 image buffer of ``shape``: ``(slot, array)``."""
        return self._buffers.free(shape)

    def submit(self, slot: int, name: str, markers=None, n: int | None = None,
               nz: int | None = None, token=None, line_value: float | None = None) -> None:
        """Publish the image of ``slot`` on channel ``name`` (now: see :meth:`results`)."""
        image = self._buffers.get(slot).array
        done = _publish(self._channels, self._publishers, name, image, markers, n, nz,
                        self.unique_ids.get(name), token, line_value)
        if done.unique_id is not None:
            self.unique_ids[name] = done.unique_id
        self._done.append(done)

    def results(self, timeout: float = 0.0) -> list[Published]:
        """Publications finished since the last call."""
        done, self._done = self._done, []
        return done

    def close(self) -> None:
        self._channels.stop()
        self._buffers.close()


def _publish(channels, publishers: dict, name: str, image: np.ndarray, markers, n, nz,
             last_uid, token, line_value=None) -> Published:
    """Publish ``image`` on ``name`` (one channel at a time: a new name replaces the old);
    any failure is returned, not raised."""
    from .publisher import ReconPublisher

    t0 = time.perf_counter()
    try:
        pub = publishers.get(name)
        if pub is None:
            for old in list(publishers):
                publishers.pop(old).close()
            pub = publishers[name] = ReconPublisher(channels, name)
            if last_uid is not None:
                pub.unique_id = last_uid
        uid = pub.publish(image, markers=markers, n=n, nz=nz, line_value=line_value)
        return Published(token, uid, time.time(), time.perf_counter() - t0)
    except Exception as exc:  # noqa: BLE001 - reported to the caller, never fatal
        error = str(exc) if isinstance(exc, TomostreamError) else f"{type(exc).__name__}: {exc}"
        return Published(token, None, time.time(), time.perf_counter() - t0, error)


class ProcessPublisher:
    """Serve the slices from a child process; images travel through shared memory.

    The child is started by :meth:`start` or the first :meth:`buffer`, and again after it has
    died (its end is reported as a failed :class:`Published`); it ends with this process
    (:mod:`tomostream.childproc`: with the thread that started it, so start it from one that
    lives as long as the publisher; the stream server starts it from the thread that starts the
    server, and restarts it from its worker). uniqueIds continue across a restart.

    Examples
    --------
    >>> pub = ProcessPublisher()                          # doctest: +SKIP
    >>> slot, image = pub.buffer((512, 1536))
    >>> image[:] = ortho_image
    >>> pub.submit(slot, "2bmb:TomoStream:StreamRecon", markers=(256, 256, 256))
    >>> pub.results(timeout=1.0)
    [Published(token=None, unique_id=1, time=..., seconds=0.004, error=None)]
    """

    def __init__(self):
        if not shm.available():
            raise TomostreamError(f"no {shm.SHM_DIR}: the slices cannot be published from a child "
                                  "process")
        self._child: Child | None = None
        self._buffers = _Buffers(shared=True)
        self._mapped: set[int] = set()   # slot ids the child has mapped
        self._jobs: dict[int, object] = {}  # slot id -> token, in flight
        #: Last uniqueId served on each channel (they go on after a restart).
        self.unique_ids: dict[str, int] = {}
        self._done: list[Published] = []

    @property
    def in_flight(self) -> int:
        """Publications submitted and not finished."""
        return len(self._jobs)

    @property
    def full(self) -> bool:
        """Whether every buffer is being published (:meth:`buffer` would return None)."""
        return len(self._jobs) >= SLOTS

    @property
    def pid(self) -> int | None:
        """Process id of the child (None before it starts)."""
        return None if self._child is None else self._child.pid

    def _start(self) -> None:
        child = launch(__name__, "_child_main", {}, who="publishing process", env=child_env())
        # wait for its PVA server: a start-up (a second of CPU) that ran on into the first
        # frames took CPU time from their reception and lost some
        child.wait_ready()
        self._child = child
        self._mapped.clear()
        log.info("slices published by process %d", child.pid)

    def start(self) -> ProcessPublisher:
        """Start the child now (else the first :meth:`buffer` does) and return once it serves:
        its start-up (a Python interpreter, NumPy, pvapy) then does not coincide with the first
        frames.

        Raises
        ------
        TomostreamError
            When the child cannot be started or does not answer within
            :data:`~tomostream.pva.launcher.START_TIMEOUT`.
        """
        if self._child is None or not self._child.alive:
            self._restart()
        return self

    def buffer(self, shape: tuple[int, int]) -> tuple[int, np.ndarray] | None:
        """A free float32 image buffer of ``shape`` in shared memory, ``(slot, array)``; None
        while every buffer is being published. Write the image into it, then :meth:`submit`."""
        self.start()
        got = self._buffers.free(shape)
        for slot_id in self._mapped - {s.id for s in self._buffers.slots}:  # re-made buffers
            self._send(Forget(slot_id))
            self._mapped.discard(slot_id)
        return got

    def _restart(self) -> None:
        if self._child is not None:
            code = self._fail_jobs()
            log.warning("publishing process ended (exit code %s): starting another", code)
            self._buffers.close()  # their files are unlinked: the next child gets new ones
        self._start()

    def _send(self, message: tuple) -> None:
        try:
            self._child.wire.send(message)
        except OSError as exc:  # the child has gone: the next buffer() restarts it
            log.warning("publishing process unreachable: %s", exc)

    def submit(self, slot: int, name: str, markers=None, n: int | None = None,
               nz: int | None = None, token=None, line_value: float | None = None) -> None:
        """Publish the image of buffer ``slot`` on channel ``name``; the buffer is busy (not
        handed out again) until :meth:`results` has returned its publication.

        ``markers`` ``(ix, iy, iz)``: draw the slice-crossing lines; ``n``, ``nz``: the slice
        sizes and ``line_value`` the value of the lines (see :meth:`ReconPublisher.publish`);
        ``token``: returned with the result.
        """
        buf = self._buffers.get(slot)
        if slot not in self._mapped:
            self._send(Map(slot, buf.path, buf.shape))
            self._mapped.add(slot)
        buf.busy = True
        self._jobs[slot] = token
        markers = None if markers is None else tuple(int(m) for m in markers)
        self._send(Publish(slot, name, markers, n, nz, self.unique_ids.get(name), line_value))

    def results(self, timeout: float = 0.0) -> list[Published]:
        """Publications finished since the last call; waits up to ``timeout`` [s] for one when
        some are in flight."""
        if self._child is not None and self._jobs:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    for message in self._child.wire.receive(max(deadline - time.monotonic(), 0.0)):
                        self._receive(message)
                except EOFError:
                    self._fail_jobs()  # the next buffer() starts another child
                    break
                if not self._jobs or self._done or time.monotonic() >= deadline:
                    break
        done, self._done = self._done, []
        return done

    def _fail_jobs(self) -> int:
        """The child has gone: fail what it had (its buffers are free again); its exit code."""
        code = self._child.end()  # killed if not gone after all, only unreachable
        for slot_id, token in self._jobs.items():
            self._done.append(Published(token, None, time.time(), 0.0,
                                        f"publishing process ended (exit code {code})"))
            self._buffers.get(slot_id).busy = False
        self._jobs.clear()
        return code

    def _receive(self, message: Mapped | Done) -> None:
        if isinstance(message, Mapped):
            self._buffers.get(message.slot).unlink()  # the child holds the mapping: no name needed
            return
        token = self._jobs.pop(message.slot)
        self._buffers.get(message.slot).busy = False
        if message.unique_id is not None:
            self.unique_ids[message.name] = message.unique_id
        self._done.append(Published(token, message.unique_id, message.time, message.seconds,
                                    message.error))

    def close(self, timeout: float = 10.0) -> None:
        """Stop serving (the child removes its channel and ends) and free the buffers."""
        if self._child is not None:
            self._send(Close())
            self._child.end(timeout)
            self._child = None
        self._jobs.clear()
        self._buffers.close()


def _child_main(fd: int, config: dict) -> int:  # pragma: no cover - runs in the child process
    """Serve publications sent over ``fd`` until told to close or the parent goes away
    (``config``: nothing yet)."""
    from .server import PvaChannels

    wire = child_wire(fd)
    if not keep_freed_blocks():
        log.info("not glibc: each image is encoded into fresh memory")
    channels = PvaChannels()
    publishers: dict = {}
    images: dict[int, tuple[mmap.mmap, np.ndarray]] = {}
    try:
        wire.send(Ready(os.getpid()))
        while True:
            for message in wire.receive(None):
                match message:
                    case Close():
                        return 0
                    case Map(slot, path, shape):
                        mapped = shm.attach(path)
                        array = np.frombuffer(mapped, np.float32, int(np.prod(shape))).reshape(shape)
                        images[slot] = (mapped, array)
                        wire.send(Mapped(slot))
                    case Forget(slot):
                        images.pop(slot, None)
                    case Publish(slot, name, markers, n, nz, last_uid, line_value):
                        done = _publish(channels, publishers, name, images[slot][1], markers, n, nz,
                                        last_uid, None, line_value)
                        wire.send(Done(slot, name, done.unique_id, done.time, done.seconds,
                                       done.error))
    except (EOFError, OSError):  # the parent has gone
        return 0
    finally:
        channels.stop()
