"""Open the stream of detector frames: where and how it is received is decided here alone.

:func:`open_image_stream` takes the channels the detector's NDPluginPva plugins serve and
returns an :class:`~tomostream.pva.stream.ImageStream`: one channel as a
:class:`~tomostream.pva.stream.FallbackStream`, several as a
:class:`~tomostream.pva.scatter.ScatterSubscriber` of such streams. Each channel is received in
a child process when ``process`` is true and it can be, else in this one; a child that fails
later is replaced by a subscriber in this process without losing queued frames or counts.
What was decided is said through ``on_status``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .ring import RING_BYTES
from .scatter import ScatterSubscriber, checked_channels
from .stream import FallbackStream, ImageStream


def open_image_stream(channels: Sequence[str], *, process: bool, queue_size: int = 32,
                      on_status: Callable[[str], None] | None = None,
                      last_unique_id: int | None = None, ring_bytes: int = RING_BYTES,
                      monitor_queue: int = 100) -> ImageStream:
    """A started stream of the frames served on ``channels``.

    Parameters
    ----------
    channels : sequence of str
        NTNDArray channels of one detector, e.g. ``["2bmSP1:Pva1:Image"]``; several when its
        frames are spread over several plugins (:mod:`.scatter`).
    process : bool
        Receive each channel in a child process (:mod:`.receive_process`) where it can be.
    queue_size : int
        Frames kept for ``get`` (all channels together); when full, the oldest is dropped.
    on_status : callable, optional
        ``on_status(text)``: connection changes, bad frames, and each channel received in this
        process instead of a child ("receiving <channel> in the server process: <why>").
    last_unique_id : int, optional
        uniqueId of the last frame received before (frames missed since count as lost).
    ring_bytes : int
        Most shared memory each receiving process's ring takes [bytes].
    monitor_queue : int
        Updates pvapy may hold per channel.

    Raises
    ------
    BadParameter
        When ``channels`` is empty, or names a channel twice.
    """
    channels = checked_channels(channels)
    kw = dict(process=process, on_status=on_status, last_unique_id=last_unique_id,
              ring_bytes=ring_bytes, monitor_queue=monitor_queue)
    if len(channels) > 1:
        return ScatterSubscriber(channels, queue_size, **kw).start()
    return FallbackStream(channels[0], queue_size, **kw).start()
