"""What a stream session is given by its server: a frozen configuration and a link.

A :class:`~.session.StreamSession` never sees the :class:`~.stream_server.StreamServer`: the
server hands each StartRecon a :class:`SessionConfig` (its settings at that moment) and a
:class:`ServerLink` (the few things the session may do to it), so the session can be read, and
driven, on its own.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SessionConfig:
    """How one StartRecon runs (the server's settings when it started).

    Attributes
    ----------
    backend : {"auto", "numpy", "cupy"}
        Compute backend of the reconstructor.
    batch_max : int
        Most frames pushed into the reconstructor in one call.
    min_interval : float [s]
        Shortest time between two published updates.
    queue_size : int
        Frames the image subscriber keeps before dropping the oldest.
    markers : bool
        Draw the lines where the slices cross.
    receive_process : bool
        Receive the detector frames in a child process where one can run.
    frame_type_window : float [s]
        How late a FrameType change may arrive after the frames it concerns.
    """

    backend: str = "auto"
    batch_max: int = 64
    min_interval: float = 1.0 / 30.0
    queue_size: int = 256
    markers: bool = True
    receive_process: bool = True
    frame_type_window: float = 0.1


@dataclass(frozen=True)
class ServerLink:
    """What a session may do to its server; every callable may be called from the worker.

    Attributes
    ----------
    value : callable
        ``value(suffix)``: a TomoStream PV's value.
    set_pvs : callable
        ``set_pvs({suffix: value}, validate=False)``: write PVs (``validate``: as a client).
    status : callable
        ``status(text)``: ReconStatus and the log.
    set_frame_size : callable
        ``set_frame_size(width, height)``: the frame size the IOC checks slice positions with.
    commands : queue.SimpleQueue
        ``(suffix, value)`` of accepted IOC writes (``("stop", None)`` when the server stops).
    stopping : threading.Event
        Set when the server stops.
    publisher : callable
        ``publisher()``: the current publisher of the slices.
    publisher_failed : callable
        ``publisher_failed(exc)``: the publishing process cannot run; publish from the worker.
    """

    value: Callable[[str], Any]
    set_pvs: Callable[..., None]
    status: Callable[[str], None]
    set_frame_size: Callable[[int, int], None]
    commands: queue.SimpleQueue
    stopping: threading.Event
    publisher: Callable[[], Any]
    publisher_failed: Callable[[Exception], None]
