"""Frames of one detector spread over several PV Access channels.

One pvAccess connection carries a little over 2 GB/s of 2048^2 frames on the H100 hosts the
benchmarks ran on, whichever client library receives (pvapy or p4p) and however its buffers
are sized, while raw TCP on the same loopback carries 3.9 GB/s and several connections carry
more together (docs/benchmarks.md). A detector that must go faster spreads its frames over
several NDPluginPva plugins: areaDetector's NDPluginScatter hands each frame to the next
plugin with room, so each plugin's channel carries about one frame in N, over a connection of
its own. :class:`ScatterSubscriber` receives those channels (each in a process of its own,
:mod:`.receive_process`, where it can: :class:`~tomostream.pva.stream.FallbackStream`) into one
frame queue, and counts uniqueIds over the whole stream with one
:class:`~tomostream.pva.ledger.IdLedger`.

The plugins are named as areaDetector's startup scripts name them: their prefixes count up
from the first one's number (``2bmSP1:Pva1:``, ``2bmSP1:Pva2:``, ...), see
:func:`plugin_prefixes`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence

from ..errors import BadParameter
from ..vocabulary import MAX_PLUGINS
from .frame_queue import FrameQueue
from .ledger import IdLedger
from .ring import RING_BYTES
from .stream import FallbackStream, summed

_LAST_NUMBER = re.compile(r"^(.*?)(\d+)(\D*)$")


def plugin_prefixes(prefix: str, count: int) -> list[str]:
    """Prefixes of ``count`` NDPluginPva plugins, counted up from the first one's number.

    >>> plugin_prefixes("2bmSP1:Pva1:", 3)
    ['2bmSP1:Pva1:', '2bmSP1:Pva2:', '2bmSP1:Pva3:']

    Raises
    ------
    BadParameter
        When ``count`` is outside 1..:data:`MAX_PLUGINS`, or is above 1 and ``prefix`` has no
        number to count up from.
    """
    count = int(count)
    if not 1 <= count <= MAX_PLUGINS:
        raise BadParameter(f"{count} image plugins: must be 1..{MAX_PLUGINS}")
    if count == 1:
        return [prefix]
    match = _LAST_NUMBER.match(prefix)
    if match is None:
        raise BadParameter(f"plugin prefix {prefix!r} has no number to count {count} plugins "
                           "up from (e.g. 2bmSP1:Pva1:)")
    head, number, tail = match.groups()
    return [f"{head}{int(number) + k}{tail}" for k in range(count)]


def checked_channels(channels: Sequence[str]) -> tuple[str, ...]:
    """``channels`` as a tuple, refused (:class:`~tomostream.errors.BadParameter`) when empty,
    when one is empty, or when one is named twice."""
    channels = tuple(channels)
    if not channels or len(set(channels)) != len(channels) or not all(channels):
        raise BadParameter(f"channels {list(channels)}: need one or more distinct names")
    return channels


class ScatterSubscriber(FrameQueue):
    """Frames of one stream spread over several NTNDArray channels, in one queue.

    It is an :class:`~tomostream.pva.stream.ImageStream`. Frames come in the order they
    arrive, which across channels is nearly, not exactly, the order of their uniqueIds.

    Parameters
    ----------
    channels : sequence of str
        The channels, e.g. ``["2bmSP1:Pva1:Image", "2bmSP1:Pva2:Image"]``.
    queue_size : int
        Frames kept for :meth:`get` (all channels together); when full, the oldest is dropped.
    monitor_queue : int
        Updates pvapy may hold per channel.
    on_status : callable, optional
        ``on_status(text)``: the channels' reports, and the fall-backs below.
    process : bool
        Receive each channel in a child process where it can be
        (:class:`~tomostream.pva.stream.FallbackStream`): a channel whose process fails (or
        cannot start) is received in this process instead, and the others go on.
    ring_bytes : int
        Most shared memory each receiving process's ring takes [bytes].
    last_unique_id : int, optional
        uniqueId of the last frame received before.

    Attributes
    ----------
    channel : str
        The channels, comma-separated (for messages, and to compare with another set).
    counters : dict of str to int
        Those of :class:`~tomostream.pva.subscriber.ImageSubscriber`: ``received``,
        ``dropped``, ``bad``, ... summed over the channels;
        ``lost``, ``repeated`` and ``restarts`` counted over the whole stream by
        :attr:`ledger`.
    ledger : IdLedger
        The stream's uniqueIds.
    """

    def __init__(self, channels: Sequence[str], queue_size: int = 32, *, monitor_queue: int = 100,
                 on_status: Callable[[str], None] | None = None, process: bool = True,
                 ring_bytes: int = RING_BYTES, last_unique_id: int | None = None):
        channels = checked_channels(channels)
        self._init_queue(queue_size)
        self.channels = channels
        self.channel = ", ".join(channels)
        self.monitor_queue = monitor_queue
        self.on_status = on_status
        self.process = process
        self.ring_bytes = ring_bytes
        self.ledger = IdLedger(last_unique_id)
        self._subs: list[FallbackStream] = []

    # -- public ------------------------------------------------------------------------------
    def start(self) -> ScatterSubscriber:
        """Start receiving every channel; returns at once (they connect later)."""
        if not self._subs:
            self._subs = [FallbackStream(channel, process=self.process, queue=self,
                                         ledger=self.ledger, monitor_queue=self.monitor_queue,
                                         on_status=self.on_status, ring_bytes=self.ring_bytes)
                          for channel in self.channels]
        for sub in self._subs:
            sub.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every channel (idempotent); frames already queued stay readable, and ids still
        missing count as lost."""
        for sub in self._subs:
            sub.stop(timeout)
        self.ledger.settle()

    @property
    def counters(self) -> dict[str, int]:
        counters = summed(sub.counters for sub in self._subs)
        counters.update(lost=self.ledger.lost, repeated=self.ledger.repeated,
                        restarts=self.ledger.restarts)
        return counters

    @property
    def connected(self) -> bool:
        """Whether every channel is connected."""
        return bool(self._subs) and all(sub.connected for sub in self._subs)

    def wait_connected(self, timeout: float) -> bool:
        """Wait up to ``timeout`` [s] for every channel to connect; return whether they did."""
        deadline = time.monotonic() + timeout
        return all(sub.wait_connected(max(deadline - time.monotonic(), 0.0)) for sub in self._subs)

    @property
    def last_unique_id(self) -> int | None:
        return self.ledger.last_unique_id

    @property
    def receivers(self) -> tuple:
        """The current subscriber of each channel, in the order of :attr:`channels`."""
        return tuple(sub.receiver for sub in self._subs)

    def __enter__(self) -> ScatterSubscriber:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
