"""The caller's side of a bounded queue of decoded frames, shared by the subscribers that fill it."""

from __future__ import annotations

import collections
import threading

from ..errors import BadParameter
from .ntnda import Frame


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
