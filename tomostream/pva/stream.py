"""What every source of detector frames offers, and one channel received wherever it can be.

:class:`ImageStream` names what the stream server asks of a frame source; the subscribers of
one channel (:class:`~tomostream.pva.subscriber.ImageSubscriber`,
:class:`~tomostream.pva.receive_process.ProcessImageSubscriber`), this module's
:class:`FallbackStream` and the subscriber of several channels
(:class:`~tomostream.pva.scatter.ScatterSubscriber`) all offer it.
:func:`~tomostream.pva.receiving.open_image_stream` picks one.

:class:`FallbackStream` receives one channel in a child process, and in this process when
the child cannot start or fails later (gave up, died too often): the subscriber that takes
over fills the same queue (frames already queued stay), judges uniqueIds with the same
:class:`~tomostream.pva.ledger.IdLedger` or from the last id received (no frame counted lost
or repeated by the change), and the counters so far are kept.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Protocol, runtime_checkable

from ..errors import TomostreamError
from .frame_queue import FrameQueue
from .ledger import IdLedger
from .monitor import report
from .ntnda import Frame
from .receive_process import ProcessImageSubscriber
from .ring import RING_BYTES
from .subscriber import ImageSubscriber


@runtime_checkable
class ImageStream(Protocol):
    """A source of detector frames, as the stream server uses it.

    Attributes
    ----------
    channel : str
        The channel name (channels, comma-separated, for several).
    counters : dict of str to int
        ``received``, ``dropped``, ``lost``, ``bad``, ``reconnects``, ``resubscribes``,
        ``repeated``, ``restarts``, ``overflow``, as
        :class:`~tomostream.pva.subscriber.ImageSubscriber` counts them.
    connected : bool
        Whether the channel (every channel) is connected now.
    """

    channel: str
    counters: dict[str, int]
    connected: bool

    def start(self) -> ImageStream:
        """Start receiving; returns at once (the channel connects later)."""

    def stop(self, timeout: float = ...) -> None:
        """Stop receiving (idempotent); frames already queued stay readable."""

    def get(self, timeout: float | None = None) -> Frame | None:
        """The oldest queued frame, waiting up to ``timeout`` [s]; None if none came."""

    def drain(self, max_frames: int | None = None) -> list[Frame]:
        """Up to ``max_frames`` queued frames (all when None), oldest first, without waiting."""

    @property
    def queued(self) -> int:
        """Frames waiting in the queue."""

    def wait_connected(self, timeout: float) -> bool:
        """Wait up to ``timeout`` [s] for the channel to connect; whether it did."""

    @property
    def last_unique_id(self) -> int | None:
        """uniqueId of the last good frame received; None before any."""


def summed(counters: Iterable[dict[str, int]]) -> dict[str, int]:
    """The counters of several receivers, added key by key."""
    total: dict[str, int] = {}
    for counts in counters:
        for key, value in counts.items():
            total[key] = total.get(key, 0) + value
    return total


def fallback_text(channel: str, why: object) -> str:
    """The report of ``channel`` received in this process rather than a child, for ``why``."""
    return f"receiving {channel} in the server process: {why}"


class FallbackStream(FrameQueue):
    """One NTNDArray channel, received in a child process where it can be, else in this one.

    Parameters
    ----------
    channel, queue_size, monitor_queue, on_status, last_unique_id, queue, ledger
        As for :class:`~tomostream.pva.subscriber.ImageSubscriber`; ``on_status`` also hears
        of each change to this process (:func:`fallback_text`).
    process : bool
        Receive in a child process
        (:class:`~tomostream.pva.receive_process.ProcessImageSubscriber`) first.
    ring_bytes : int
        Most shared memory the child's ring of frames takes [bytes].

    Attributes
    ----------
    receiver : ImageSubscriber or ProcessImageSubscriber or None
        The subscriber that receives now (None before :meth:`start`).
    counters : dict of str to int
        The receivers', summed (those of one replaced are kept).
    """

    def __init__(self, channel: str, queue_size: int = 32, *, process: bool = True,
                 monitor_queue: int = 100, on_status: Callable[[str], None] | None = None,
                 ring_bytes: int = RING_BYTES, last_unique_id: int | None = None,
                 queue: FrameQueue | None = None, ledger: IdLedger | None = None):
        self._init_queue(queue_size, queue)
        self.channel = channel
        self.process = process
        self.ring_bytes = ring_bytes
        self.receiver: ImageSubscriber | ProcessImageSubscriber | None = None
        self._kw = dict(monitor_queue=monitor_queue, on_status=on_status, queue=self,
                        ledger=ledger)
        self._last_id = last_unique_id
        self._retired: dict[str, int] = {}
        self._lock = threading.Lock()  # a receiver replaced vs stop() and counters read
        self._stopped = False

    def start(self) -> FallbackStream:
        """Start receiving; returns at once (the channel connects later)."""
        with self._lock:
            stopped, self._stopped = self._stopped, False
            if self.receiver is not None:
                if stopped:
                    self.receiver.start()
                return self
            if self.process:
                child = ProcessImageSubscriber(self.channel, ring_bytes=self.ring_bytes,
                                               last_unique_id=self._last_id,
                                               on_failed=self._fall_back, **self._kw)
                try:
                    self.receiver = child.start()
                    return self
                except TomostreamError as exc:  # no shared memory here
                    self._status(fallback_text(self.channel, exc))
            self.receiver = ImageSubscriber(self.channel, last_unique_id=self._last_id,
                                            **self._kw).start()
        return self

    def _fall_back(self, failed: ProcessImageSubscriber, why: str) -> None:
        """Receive in this process from where ``failed`` (ended) left off."""
        with self._lock:
            if self._stopped or failed is not self.receiver:
                return
            self._retired = summed([self._retired, failed.counters])
            self.receiver = ImageSubscriber(self.channel, last_unique_id=failed.last_unique_id,
                                            **self._kw).start()
        self._status(fallback_text(self.channel, why))

    def stop(self, timeout: float = 5.0) -> None:
        """Stop receiving (idempotent); frames already queued stay readable."""
        with self._lock:
            self._stopped = True
            receiver = self.receiver
        if receiver is not None:
            receiver.stop(timeout)

    def _status(self, text: str) -> None:
        report(text, self._kw["on_status"], self.channel)

    @property
    def counters(self) -> dict[str, int]:
        with self._lock:
            now = [] if self.receiver is None else [self.receiver.counters]
            return summed([self._retired, *now])

    @property
    def connected(self) -> bool:
        return self.receiver is not None and self.receiver.connected

    def wait_connected(self, timeout: float) -> bool:
        """Wait up to ``timeout`` [s] for the channel to connect; return whether it did."""
        return self.receiver is not None and self.receiver.wait_connected(timeout)

    @property
    def last_unique_id(self) -> int | None:
        """uniqueId of the last good frame received; None before any."""
        return self._last_id if self.receiver is None else self.receiver.last_unique_id

    @property
    def pid(self) -> int | None:
        """Process id of the child that receives (None when received in this process)."""
        return getattr(self.receiver, "pid", None)

    def __enter__(self) -> FallbackStream:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
