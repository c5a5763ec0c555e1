"""The simulated detector's PV Access channels: images, dark, flat and theta.

The images go out on ``<plugin>Image`` of each NDPluginPva plugin in turn (as an
NDPluginScatter in front of them spreads them); the averaged dark and flat fields and the angle
table on ``<PvaStreamPVPrefix>StreamDarkFields``, ``StreamFlatFields`` and ``StreamTheta``.
Channels can be taken away and served again, as a crashed or restarting detector IOC does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import numpy as np

from ..errors import BadParameter
from ..pva.ntnda import restamp, to_ntnda
from ..pva.server import PvaChannels


class DetectorChannels:
    """The PV Access side of the simulated beamline.

    Parameters
    ----------
    image_channels : sequence of str
        The image channel of each NDPluginPva plugin, in the order frames go out.
    pva_prefix : str
        PvaStreamPVPrefix: prefix of the dark, flat and theta channels.
    capacity : int [frames]
        The most NTNDArrays of repeating frames kept for re-sending (the detector cache's size).
    """

    def __init__(self, image_channels: Sequence[str], pva_prefix: str, capacity: int):
        self.image_channels = list(image_channels)
        self.dark_channel = pva_prefix + "StreamDarkFields"
        self.flat_channel = pva_prefix + "StreamFlatFields"
        self.theta_channel = pva_prefix + "StreamTheta"
        self.capacity = int(capacity)
        self.server: PvaChannels | None = None
        self._lock = threading.Lock()              # server, _down, _last_pv
        self._down: set[str] = set()               # channels not served now (stop_pva)
        self._last_pv: dict = {}
        #: NTNDArrays of frames that repeat unchanged, by cached angle (see frame_pv)
        self._prebuilt: dict[float, object] = {}
        #: frames published since start (all types)
        self.frames_published = 0

    def start(self, values: dict) -> None:
        """Serve every channel with its first value (``{name: NTNDArray or PvObject}``)."""
        self._last_pv = dict(values)
        self.server = PvaChannels()
        for name, pv in self._last_pv.items():
            self.server.add(name, pv)

    def stop(self) -> None:
        """Stop serving."""
        if self.server is not None:
            self.server.stop()
            self.server = None

    def stop_pva(self, channels: Sequence[str] | None = None) -> None:
        """Take the channels named (all when None) away; see
        :meth:`~tomostream.sim.beamline.SimBeamline.stop_pva`."""
        with self._lock:
            for name in (self._last_pv if channels is None else channels):
                if name not in self._last_pv:
                    raise BadParameter(f"{name!r} is not a channel of this beamline")
                if name not in self._down:
                    self.server.remove(name)
                    self._down.add(name)

    def start_pva(self) -> None:
        """Serve again, with their latest values, the channels :meth:`stop_pva` took away."""
        with self._lock:
            for name in sorted(self._down):
                self.server.add(name, self._last_pv[name])
            self._down.clear()

    def publish(self, name: str, pv) -> bool:
        """Post ``pv`` on channel ``name``; whether it was served (not taken away by stop_pva)."""
        with self._lock:
            self._last_pv[name] = pv
            if name in self._down:
                return False
            self.server.update(name, pv)
            return True

    def publish_frame(self, frame: np.ndarray, uid: int, key: float | None = None) -> None:
        """Send ``frame`` with uniqueId ``uid`` on the next plugin's image channel."""
        channel = self.image_channels[self.frames_published % len(self.image_channels)]
        self.publish(channel, self.frame_pv(frame, uid, key))
        self.frames_published += 1

    def frame_pv(self, frame: np.ndarray, uid: int, key: float | None):
        """NTNDArray of ``frame``. A frame that repeats unchanged (``key``: its cached angle) is
        built once and then only given a new uniqueId and time, as a detector's fixed-size
        buffers are: copying 8 MB per 2048^2 frame capped the rate near 230 frames/s."""
        now = time.time()
        if key is None:
            return to_ntnda(frame, uid, now)
        pv = self._prebuilt.get(key)
        if pv is None:
            if len(self._prebuilt) >= self.capacity:   # at most one cache's worth
                self._prebuilt.clear()
            pv = self._prebuilt[key] = to_ntnda(frame, uid, now)
            return pv
        return restamp(pv, uid, now)

    def forget_frames(self) -> None:
        """Drop the NTNDArrays of repeating frames (their pixels changed)."""
        self._prebuilt.clear()
