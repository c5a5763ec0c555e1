"""A PV Access image (NTNDArray channel) as a read-only ophyd signal.

A pvapy queueing monitor (:class:`tomostream.pva.subscriber.LatestValue`) keeps the newest
frame; the signal's value is that frame as a 2-D numpy array, its timestamp the frame's. Every
new frame runs the signal's subscriptions, so a live view can follow it; a plan reads it like
any other signal to record a snapshot.
"""

from __future__ import annotations

import threading
import time

import numpy as np
from ophyd.signal import SignalRO

from ..errors import ConnectionLost, TomostreamTimeout


class PvaImageSignal(SignalRO):
    """The latest frame of an NTNDArray PVA channel.

    Parameters
    ----------
    channel : str, optional
        PVA channel, e.g. ``"2bmb:TomoStream:StreamRecon"``. When None, the channel is read
        from the sibling signal named by ``channel_from`` on first use.
    channel_from : str, optional
        Attribute of the parent device holding the channel name (e.g. ``"recon_pva_name"``).
    name : str
        Signal name (data key).
    connection_timeout : float
        Seconds to wait for the channel and the first frame [s].
    """

    def __init__(self, channel: str | None = None, *, channel_from: str | None = None,
                 name: str, connection_timeout: float = 5.0, **kwargs):
        super().__init__(name=name, value=None, **kwargs)
        self._channel = channel
        self._channel_from = channel_from
        self.connection_timeout = connection_timeout
        self._monitor = None
        self._lock = threading.Lock()
        self._new_frame = threading.Condition()
        self.unique_id: int | None = None
        self.version = 0

    @property
    def channel(self) -> str:
        """PVA channel this signal follows."""
        if self._channel is None and self._channel_from is not None:
            self._channel = getattr(self.parent, self._channel_from).get()
        if not self._channel:
            raise ConnectionLost(f"{self.name}: no PVA channel name configured")
        return self._channel

    def start(self) -> PvaImageSignal:
        """Start following the channel (idempotent)."""
        from ..pva.ntnda import from_ntnda
        from ..pva.subscriber import LatestValue

        with self._lock:
            if self._monitor is None:
                self._monitor = LatestValue(self.channel, from_ntnda, on_change=self._on_frame)
                self._monitor.start()
        return self

    def stop(self) -> None:
        """Stop following the channel."""
        with self._lock:
            monitor, self._monitor = self._monitor, None
        if monitor is not None:
            monitor.stop()

    def destroy(self) -> None:
        self.stop()
        super().destroy()

    def _on_frame(self, frame) -> None:
        with self._new_frame:
            self.unique_id = frame.unique_id
            self.version += 1
            self._new_frame.notify_all()
        self._readback = frame.array
        self._metadata["timestamp"] = frame.timestamp or time.time()
        self._run_subs(sub_type=self.SUB_VALUE, old_value=None, value=frame.array,
                       timestamp=self._metadata["timestamp"])

    def wait_for_frame(self, after: int = 0, timeout: float | None = None) -> np.ndarray:
        """Wait until a frame newer than version ``after`` has arrived and return it.

        Raises
        ------
        TomostreamTimeout
            If none arrives within ``timeout`` [s] (default ``connection_timeout``).
        """
        self.start()
        timeout = self.connection_timeout if timeout is None else timeout
        with self._new_frame:
            if not self._new_frame.wait_for(lambda: self.version > after, timeout):
                raise TomostreamTimeout(f"{self.name}: no image on PVA channel {self.channel!r} "
                                        f"within {timeout:g} s")
        return self._readback

    def get(self, **kwargs) -> np.ndarray:
        """The latest frame (waits for the first one) as a 2-D array (height, width)."""
        if self._readback is None:
            return self.wait_for_frame(0)
        return self._readback

    def describe(self) -> dict:
        value = self.get()
        return {self.name: {"source": f"PVA:{self.channel}", "dtype": "array",
                            "dtype_numpy": value.dtype.str, "shape": list(value.shape)}}


def split_slices(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split the published ``(rows, 3n)`` image into its Z, Y and X slices (views).

    Returns
    -------
    z, y, x : ndarray
        Columns ``[0, n)``, ``[n, 2n)`` and ``[2n, 3n)`` of ``image``.
    """
    n = image.shape[1] // 3
    return image[:, :n], image[:, n:2 * n], image[:, 2 * n:3 * n]
