"""A ring of detector frames in shared memory, written by one process and read by another.

A ring is a file in shared memory (:mod:`.shm`) of equal slots: one byte of state per slot,
then the frames, each slot starting on a page. The receiving process writes each good frame
into a free slot; the process it hands the frame to reads it as a read-only view, and the slot
is free again when the frame and every view of it are gone. A slot takes its memory when it is
first used; a frame size or type the ring does not fit needs a new ring.
"""

from __future__ import annotations

import glob
import os
import threading
import weakref

import numpy as np

from ..errors import TomostreamError
from . import shm

#: Most shared memory one ring of frames takes [bytes]: 256 frames of 2048^2 uint16, as many
#: as the stream server's queue holds (a slot takes its memory when first used).
RING_BYTES = 2 << 30
#: Frames the caller may hold beyond its queue (taken and not yet released): the stream
#: server holds a batch and the frames waiting for their FrameType.
HELD_FRAMES = 128
#: Fewest slots a ring is made with.
MIN_SLOTS = 8
#: Start of the name of a ring's file: the process that made it, then the ring's number.
_PREFIX = "tomostream-rx-{pid}-"


def ring_slots(frame_bytes: int, wanted: int, ring_bytes: int = RING_BYTES) -> int:
    """Slots of a ring for frames of ``frame_bytes``: ``wanted``, as far as ``ring_bytes``
    allows, and at least :data:`MIN_SLOTS`."""
    return max(MIN_SLOTS, min(int(wanted), int(ring_bytes) // shm.align(frame_bytes)))


class Ring:
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
    def create(cls, ring_id: int, shape: tuple[int, int], dtype, slots: int) -> Ring:
        """A new ring (in the receiving process), its slots not yet given space;
        :class:`TomostreamError` when there is not even room for its state bytes."""
        stride = shm.align(int(np.prod(shape)) * np.dtype(dtype).itemsize)
        path, mapping = shm.create(shm.align(slots) + slots * stride,
                                   prefix=_PREFIX.format(pid=os.getpid()), reserve=False)
        fd = os.open(path, os.O_RDWR)
        ring = cls(ring_id, path, mapping, shape, dtype, slots, fd)
        try:
            shm.reserve(fd, 0, ring.offset, ring.what)
        except TomostreamError:
            ring.close()
            raise
        return ring

    @classmethod
    def attach(cls, ring_id: int, path: str, shape, dtype, slots: int) -> Ring:
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


def unlink_rings(pid: int) -> None:
    """Remove the files of the rings process ``pid`` made (mappings still held keep theirs)."""
    for path in glob.glob(os.path.join(shm.SHM_DIR, _PREFIX.format(pid=pid) + "*")):
        shm.unlink(path)
