"""The stream server: TomoScan stream in, three live slices out.

``StreamServer`` serves the TomoStream IOC (Channel Access, caproto, in a thread of this
process) and, while ``StartRecon`` is busy, follows a TomoScan streaming scan:

- over Channel Access (pyepics), the TomoScan IOC's ``FrameType`` and ``FirstProjid`` and the
  PV named by ``ImagePVAPName`` (whose value is the detector's PVA plugin prefix);
- over PV Access (pvapy), the detector images (``<plugin prefix>Image``) and the dark field,
  flat field and angle table channels.

Projection frames (``FrameType`` Projection when the frame was taken) are batched into an
:class:`~tomostream.recon.OrthoReconstructor`; the three slices are served as one NTNDArray
on ``ReconPVAName`` at a bounded rate. Parameters (center, filter, slice positions, ...) take
effect on the next update; a new dark, flat, angle table or frame size starts the buffer over.
Nothing here is fatal to the server: bad frames are counted, vanished servers are reported in
``ReconStatus`` and followed again when they come back.

Threads: the IOC's event loop (caproto), one worker that owns the reconstructor and all
stream connections, and a heartbeat that keeps ``Watchdog`` up while the worker lives. The IOC
hands accepted writes to the worker through a queue; the worker writes status PVs through the
IOC loop (``IocThread.run_coroutine``).
"""

from __future__ import annotations

import argparse
import bisect
import collections
import logging
import queue
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .errors import BadFrame, TomostreamError
from .ioc.tomostream_ioc import WATCHDOG_RESET, ClosingIocThread, TomoStreamIOC
from .pva.subscriber import missing_ids

log = logging.getLogger(__name__)

#: uniqueId counters: detectors that wrap at 65535, and signed 32-bit ones.
WRAP_16 = 1 << 16
WRAP_31 = 1 << 31
#: Frames of one new size in a row that mean the detector geometry changed (binning).
NEW_SIZE_RUN = 4
#: Slow PVs (counters, BufferSize) are refreshed at most this often while frames flow [s].
STATUS_PERIOD = 0.25
#: Longest the worker sleeps waiting for a frame before it looks at commands again [s].
IDLE_WAIT = 0.1
#: How late a FrameType change may reach us after the frames it concerns [s]: frames are
#: held this long, and a frame within this much of a change of FrameType is not used.
FRAME_TYPE_WINDOW = 0.1
#: Seconds between heartbeats (Watchdog set to WATCHDOG_RESET); well under WATCHDOG_RESET.
HEARTBEAT_PERIOD = 1.5
#: States of TomoScan's FrameType (mbbi), by index.
FRAME_TYPES = ("DarkField", "FlatField", "Projection")
PROJECTION = "Projection"

DEFAULT_PVS = {
    "tomoscan_prefix": "TomoScanPVPrefix",
    "image_pvap_name": "ImagePVAPName",
    "dark_pva_name": "DarkPVAName",
    "flat_pva_name": "FlatPVAName",
    "theta_pva_name": "ThetaPVAName",
    "recon_pva_name": "ReconPVAName",
}

#: PV suffix -> effect of a change while streaming.
PARAM_PVS = ("Center", "FilterType", "Dezinger", "OrthoX", "OrthoY", "OrthoZ", "RotX", "RotY",
             "RotZ", "Energy", "Distance", "Alpha", "PixelSize")
CHANNEL_PVS = tuple(DEFAULT_PVS.values())


def buffer_size_from_theta(theta: np.ndarray) -> int:
    """Number of frames that cover 180 degrees of an angle table.

    Parameters
    ----------
    theta : ndarray [degrees]
        Angle of each frame of the scan (continuous or back-and-forth).

    Returns
    -------
    int
        ``round(180 / step)`` with ``step`` the typical non-zero angle step, at most
        ``len(theta)`` and at least 1.
    """
    theta = np.asarray(theta, dtype=np.float64)
    steps = np.abs(np.diff(theta))
    steps = steps[np.isfinite(steps) & (steps > 0)]
    if steps.size == 0:
        return max(1, min(1, theta.size))
    size = int(round(180.0 / float(np.median(steps))))
    return max(1, min(size, theta.size))


def projection_index(unique_id: int, first_projid: int, table_size: int) -> int | None:
    """Row of the angle table for a frame, or None when the frame is outside the table.

    ``uniqueId - FirstProjid``, taken modulo 65536 when both ids are 16-bit (detectors that
    wrap their counter at 65535) and modulo 2**31 otherwise.

    Parameters
    ----------
    unique_id : int
        ``uniqueId`` of the frame.
    first_projid : int
        TomoScan's ``FirstProjid``: uniqueId of the first projection of the scan.
    table_size : int
        Length of the angle table.
    """
    wrap = WRAP_16 if 0 <= unique_id < WRAP_16 and 0 <= first_projid < WRAP_16 else WRAP_31
    index = (unique_id - first_projid) % wrap
    return index if index < table_size else None


class FrameTypeHistory:
    """When TomoScan's ``FrameType`` changed, to tell the type of a frame by its timestamp.

    Frames and FrameType updates travel on different protocols, so a frame may be handled
    before or after the FrameType change that preceded it arrives. Both carry timestamps of
    the beamline's clocks: a frame is of the type in force when it was taken. Thread-safe.
    """

    def __init__(self, keep: int = 64):
        self._times: list[float] = []
        self._types: list[str] = []
        self._keep = keep
        self._lock = threading.Lock()

    def record(self, timestamp: float, frame_type: str) -> None:
        """Note that FrameType became ``frame_type`` at ``timestamp`` [s since the epoch]."""
        with self._lock:
            at = bisect.bisect_right(self._times, timestamp)
            self._times.insert(at, timestamp)
            self._types.insert(at, frame_type)
            del self._times[:-self._keep], self._types[:-self._keep]

    def type_at(self, timestamp: float) -> str | None:
        """FrameType in force at ``timestamp`` (the latest known when 0); None if never known."""
        with self._lock:
            if not self._types:
                return None
            if timestamp <= 0:
                return self._types[-1]
            at = bisect.bisect_right(self._times, timestamp)
            return self._types[max(at - 1, 0)]

    def only(self, frame_type: str, start: float, end: float) -> bool:
        """Whether FrameType was ``frame_type`` throughout ``[start, end]`` [s since the epoch]."""
        with self._lock:
            if not self._types:
                return False
            first = max(bisect.bisect_right(self._times, start) - 1, 0)
            last = bisect.bisect_right(self._times, end)
            return all(t == frame_type for t in self._types[first:max(last, first + 1)])


def dezinger_radius(state: str) -> int:
    """Median radius [pixels] of a Dezinger PV state ("None" -> 0, "Radius 3" -> 3)."""
    return 0 if state == "None" else int(state.split()[-1])


@dataclass
class Counters:
    """Frame counts of one StartRecon, as shown in the Frames* PVs."""

    received: int = 0
    used: int = 0
    dropped: int = 0
    lost: int = 0
    bad: int = 0
    not_projection: int = 0
    outside_theta: int = 0
    #: uniqueIds skipped just before the first frame of a scan: the detector ran between
    #: scans; not frames lost from a scan.
    between_scans: int = 0
    #: Counts of subscribers already closed in this session (channel changed, reconnect).
    closed: dict = field(default_factory=dict)

    def pvs(self, subscriber) -> dict[str, int]:
        sub = dict(subscriber.counters) if subscriber is not None else {}

        def total(key: str) -> int:
            return sub.get(key, 0) + self.closed.get(key, 0)

        return {
            "FramesReceived": total("received") + total("bad"),
            "FramesUsed": self.used,
            "FramesDropped": total("dropped"),
            "FramesLost": max(total("lost") - self.between_scans, 0),
            "FramesBad": total("bad") + self.bad,
        }

    def retire(self, subscriber) -> None:
        """Keep the counts of a subscriber about to be closed."""
        for key, value in subscriber.counters.items():
            self.closed[key] = self.closed.get(key, 0) + value


@dataclass
class LatencyStats:
    """Seconds from a frame's timestamp to the publication of the slices that contain it."""

    samples: list = field(default_factory=list)
    updates: int = 0

    def add(self, frame_times: Sequence[float], published: float) -> None:
        self.updates += 1
        self.samples.extend(published - t for t in frame_times if t > 0)

    def percentiles(self) -> dict[str, float]:
        if not self.samples:
            return {}
        data = np.asarray(self.samples)
        return {"p50": float(np.percentile(data, 50)), "p99": float(np.percentile(data, 99)),
                "max": float(data.max()), "count": int(data.size)}


class _CaWatch:
    """A pyepics PV followed with callbacks; connection state reported to the worker."""

    def __init__(self, name: str, on_value, on_connection):
        import epics

        self.name = name
        self.pv = epics.PV(name, callback=on_value, connection_callback=on_connection,
                           form="time", auto_monitor=True)

    def close(self) -> None:
        self.pv.clear_callbacks()
        self.pv.disconnect()


class StreamServer:
    """TomoStream IOC + streaming ortho-slice reconstruction, in this process.

    Parameters
    ----------
    prefix : str
        PV prefix of the TomoStream IOC, e.g. ``"2bmb:TomoStream:"``.
    ca_port : int
        Channel Access search port of the IOC (0: ``EPICS_CA_SERVER_PORT``, default 5064).
    backend : {"auto", "numpy", "cupy"}
        Compute backend of the reconstructor.
    batch_max : int
        Most frames pushed into the reconstructor in one call.
    max_rate : float [Hz]
        Most published updates of the slices per second.
    queue_size : int
        Frames the image subscriber keeps for the worker before dropping the oldest.
    markers : bool
        Draw thin lines where the slices cross in the published image.
    frame_type_window : float [s]
        How late a FrameType change may arrive after the frames it concerns. Frames wait this
        long before use, and frames taken within this time of a FrameType change are skipped,
        so no dark or flat frame enters the reconstruction.
    **defaults
        Start-up values of the channel-name PVs: ``tomoscan_prefix``, ``image_pvap_name``,
        ``dark_pva_name``, ``flat_pva_name``, ``theta_pva_name``, ``recon_pva_name``; and of
        any other PV by its suffix (``Center=...``, ``FilterType="Ramp"``).

    Attributes
    ----------
    ioc : TomoStreamIOC
        The PV group (valid after :meth:`start`).
    latency : LatencyStats
        Frame-to-publication delays of the current StartRecon.
    """

    def __init__(self, prefix: str = "2bmb:TomoStream:", ca_port: int = 0, backend: str = "auto", *,
                 batch_max: int = 64, max_rate: float = 30.0, queue_size: int = 256,
                 markers: bool = True, frame_type_window: float = FRAME_TYPE_WINDOW, **defaults):
        self.prefix = prefix
        self.ca_port = ca_port
        self.backend = backend
        self.batch_max = int(batch_max)
        self.min_interval = 1.0 / float(max_rate)
        self.queue_size = int(queue_size)
        self.markers = bool(markers)
        self.frame_type_window = float(frame_type_window)
        self.defaults = {DEFAULT_PVS.get(k, k): v for k, v in defaults.items()}
        self.ioc: TomoStreamIOC | None = None
        self.latency = LatencyStats()
        self._ioc_thread: ClosingIocThread | None = None
        self._channels = None
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._worker: threading.Thread | None = None
        self._heartbeat: threading.Thread | None = None
        self._publisher = None
        self._publisher_name: str | None = None
        self._session: _Session | None = None

    # -- life cycle --------------------------------------------------------------------------
    def start(self) -> StreamServer:
        """Serve the IOC and start the worker; returns when the PVs answer."""
        from .pva.server import PvaChannels

        self.ioc = TomoStreamIOC(self.prefix, listener=self._on_ioc_write)
        self._ioc_thread = ClosingIocThread(self.ioc.pvdb, port=self.ca_port,
                                            name=f"ioc {self.prefix}").start()
        if self.defaults:
            self._ioc_thread.run_coroutine(self.ioc.apply(self.defaults))
        self._channels = PvaChannels()
        self._stopping.clear()
        self._worker = threading.Thread(target=self._work, name="tomostream-worker", daemon=True)
        self._worker.start()
        self._heartbeat = threading.Thread(target=self._beat, name="tomostream-heartbeat",
                                           daemon=True)
        self._heartbeat.start()
        self._set({"ReconStatus": "Stopped: ready"})
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop streaming, the worker, the PVA server and the IOC (idempotent)."""
        if self._worker is None:
            return
        self._stopping.set()
        self._commands.put(("stop", None))
        self._worker.join(timeout)
        self._heartbeat.join(timeout)
        self._worker = self._heartbeat = None
        if self._channels is not None:
            self._channels.stop()
        self._ioc_thread.stop()

    def __enter__(self) -> StreamServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def counters(self) -> dict[str, int]:
        """Frame counts of the current (or last) StartRecon: the Frames* PVs plus the frames
        skipped as not projections (``NotProjection``) or outside the angle table
        (``OutsideTheta``)."""
        session = self._session
        if session is None:
            return {}
        return {**session.counters.pvs(session.image),
                "NotProjection": session.counters.not_projection,
                "OutsideTheta": session.counters.outside_theta}

    @property
    def ready(self) -> bool:
        """Whether a StartRecon is running with every channel of the beamline connected."""
        session = self._session
        return session is not None and not session.finished and session.waiting is None

    @property
    def running(self) -> bool:
        """Whether the worker thread is alive."""
        return self._worker is not None and self._worker.is_alive()

    # -- IOC side ----------------------------------------------------------------------------
    def _on_ioc_write(self, suffix: str, value) -> None:
        """IOC listener (runs in the IOC loop): hand the write to the worker."""
        self._commands.put((suffix, value))

    def _set(self, values: dict) -> None:
        """Write PVs as the server, from the worker or heartbeat thread."""
        try:
            self._ioc_thread.run_coroutine(self.ioc.update(values))
        except (RuntimeError, TimeoutError, AttributeError) as exc:  # IOC stopping
            log.debug("could not update %s: %s", list(values), exc)

    def _status(self, text: str) -> None:
        log.info("%s", text)
        self._set({"ReconStatus": text[:255]})

    def _beat(self) -> None:
        while not self._stopping.is_set():
            if self._worker is not None and self._worker.is_alive():
                self._set({"Watchdog": WATCHDOG_RESET})
            self._stopping.wait(HEARTBEAT_PERIOD)

    # -- worker ------------------------------------------------------------------------------
    def _work(self) -> None:
        while not self._stopping.is_set():
            suffix, value = self._commands.get()
            if suffix == "StartRecon":
                try:
                    self._session = _Session(self)
                    self._session.run()
                except Exception as exc:  # never leave StartRecon busy
                    log.exception("streaming stopped by an error")
                    self._status(f"Stopped: error {type(exc).__name__}: {exc}")
                finally:
                    self._ioc_thread.run_coroutine(self.ioc.control.finished())

    def publisher(self, name: str):
        """The :class:`ReconPublisher` of channel ``name`` (a new name replaces the old channel)."""
        from .pva.publisher import ReconPublisher

        if self._publisher_name != name:
            if self._publisher_name is not None and self._publisher_name in self._channels:
                self._channels.remove(self._publisher_name)
            self._publisher = ReconPublisher(self._channels, name)
            self._publisher.draw_markers = self.markers
            self._publisher_name = name
        return self._publisher


class _Session:
    """One StartRecon: connections, reconstructor and counters, run by the worker thread."""

    def __init__(self, server: StreamServer):
        self.srv = server
        self.ioc = server.ioc
        self.counters = Counters()
        self.frame_types = FrameTypeHistory()
        self.first_projid: int | None = None
        self.last_uid: int | None = None
        self.plugin_prefix: str | None = None
        self.ca: list[_CaWatch] = []
        #: CA PVs of the TomoScan side not connected now.
        self.ca_down: set[str] = set()
        self.image = None
        self.dark = self.flat = self.theta = None
        self.rec = None
        self.shape: tuple[int, int] | None = None
        #: Last dark/flat/theta objects seen on the channels, and the values in use.
        self.seen: dict = {"theta": None, "dark": None, "flat": None}
        self.used: dict = {"theta": None, "dark": None, "flat": None}
        self.new_size: tuple[int, int] | None = None
        self.new_size_run = 0
        self.dirty = False
        self.last_publish = 0.0
        self.last_status = 0.0
        self.work_time = 0.0
        self.pending_times: list[float] = []
        self.messages: queue.SimpleQueue = queue.SimpleQueue()
        self.abort = False
        self.finished = False
        #: (monotonic time due, frame): frames waiting for late FrameType changes.
        self.held: collections.deque = collections.deque()
        self.waiting: str | None = "connections"
        server.latency = LatencyStats()

    # -- connections -------------------------------------------------------------------------
    def _value(self, suffix: str):
        return self.ioc.value(suffix)

    def connect(self) -> None:
        """Watch the TomoScan IOC over CA and subscribe to dark, flat and theta over PVA."""
        from .pva.fields import read_field, read_theta
        from .pva.subscriber import LatestValue

        prefix = self._value("TomoScanPVPrefix")
        note = self.messages.put
        self.ca_down = {prefix + "FrameType", prefix + "FirstProjid", self._value("ImagePVAPName")}
        self.ca = [
            _CaWatch(prefix + "FrameType", self._on_frame_type, self._on_ca_connection),
            _CaWatch(prefix + "FirstProjid", self._on_first_projid, self._on_ca_connection),
            _CaWatch(self._value("ImagePVAPName"), self._on_plugin_prefix, self._on_ca_connection),
        ]
        self.dark = LatestValue(self._value("DarkPVAName"), read_field, on_status=note).start()
        self.flat = LatestValue(self._value("FlatPVAName"), read_field, on_status=note).start()
        self.theta = LatestValue(self._value("ThetaPVAName"), read_theta, on_status=note).start()

    def close(self) -> None:
        for watch in self.ca:
            watch.close()
        for sub in (self.image, self.dark, self.flat, self.theta):
            if sub is not None:
                sub.stop()

    # pyepics callbacks (CA client threads): record, never block
    def _on_frame_type(self, value=None, timestamp=None, **kw) -> None:
        name = FRAME_TYPES[value] if isinstance(value, int) and 0 <= value < len(FRAME_TYPES) else str(value)
        self.frame_types.record(float(timestamp or time.time()), name)

    def _on_first_projid(self, value=None, **kw) -> None:
        self.first_projid = int(value)

    def _on_plugin_prefix(self, char_value=None, **kw) -> None:
        self.plugin_prefix = str(char_value)

    def _on_ca_connection(self, pvname=None, conn=None, **kw) -> None:
        if conn:
            self.ca_down.discard(pvname)
        else:
            self.ca_down.add(pvname)
        self.messages.put(f"{pvname} {'connected' if conn else 'disconnected'}")

    def _follow_image(self) -> None:
        """(Re)subscribe to the detector images when the plugin prefix is (newly) known."""
        from .pva.subscriber import ImageSubscriber

        prefix = self.plugin_prefix
        if prefix is None:
            return
        channel = prefix + "Image"
        if self.image is not None:
            if self.image.channel == channel:
                return
            self.counters.retire(self.image)
            self.image.stop()
        self.image = ImageSubscriber(channel, queue_size=self.srv.queue_size,
                                     on_status=self.messages.put).start()
        self.srv._status(f"Running: following {channel}")

    # -- main loop ---------------------------------------------------------------------------
    def run(self) -> None:
        srv = self.srv
        srv._status("Running: connecting")
        try:
            self.connect()
            while not (self.abort or srv._stopping.is_set()):
                self._handle_commands()
                self._follow_image()
                self._handle_fields()
                frames = self._next_batch()
                if frames:
                    self._process(frames)
                self._maybe_publish()
                self._maybe_report()
        finally:
            self.finished = True
            self.close()
            self._report_counters()
            srv._status("Stopped")

    def _handle_commands(self) -> None:
        while True:
            try:
                suffix, value = self.srv._commands.get_nowait()
            except queue.Empty:
                break
            if suffix in ("AbortRecon", "stop"):
                self.abort = True
            elif suffix in PARAM_PVS:
                self._apply_params()
            elif suffix == "RingRemoval" and value != "None":
                self.srv._status(f"RingRemoval={value!r} is not available in this server: ignored")
            elif suffix == "ReconPVAName":
                self.dirty = True  # the next update goes to the new channel
            elif suffix in CHANNEL_PVS:
                self.srv._status(f"{suffix} changed: takes effect at the next StartRecon")
        while True:
            try:
                self.srv._status(self.messages.get_nowait())
            except queue.Empty:
                break

    def _next_batch(self) -> list:
        """Frames that have waited ``frame_type_window`` (so their FrameType is known), oldest first."""
        if self.image is None:
            self.srv._stopping.wait(IDLE_WAIT)
            return []
        now = time.monotonic()
        wait = IDLE_WAIT
        if self.held:
            wait = min(wait, self.held[0][0] - now)
        if self.dirty:
            wait = min(wait, self.last_publish + self.srv.min_interval - now)
        room = max(self.srv.batch_max - len(self.held), 1)
        first = self.image.get(timeout=max(wait, 0.0)) if wait > 0 or not self.held else None
        arrived = ([first] if first is not None else []) + self.image.drain(room - 1)
        due = time.monotonic() + self.srv.frame_type_window
        self.held.extend((due, frame) for frame in arrived)
        now = time.monotonic()
        ready = []
        while self.held and self.held[0][0] <= now and len(ready) < self.srv.batch_max:
            ready.append(self.held.popleft()[1])
        return ready

    # -- reconstruction ----------------------------------------------------------------------
    def _handle_fields(self) -> None:
        """React to a new angle table, dark or flat field (a re-sent equal one changes nothing)."""
        theta = self.theta.value
        if theta is not None and theta is not self.seen["theta"]:
            self.seen["theta"] = theta
            if self.rec is not None and not np.array_equal(theta, self.used["theta"]):
                self._build(*self.shape, "new angle table")
        for kind in ("dark", "flat"):
            value = getattr(self, kind).value
            if value is None or value is self.seen[kind]:
                continue
            self.seen[kind] = value
            if self.rec is None:
                continue
            if value.shape != self.shape:
                self.new_size = value.shape  # the detector geometry is changing
            elif self._set_field(kind, value):
                self.rec.reset()
                self.dirty = True
                self.srv._status(f"Running: new {kind} field, buffer restarted")

    def _set_field(self, kind: str, value: np.ndarray) -> bool:
        """Give the reconstructor a dark or flat field; whether it differed from the last one."""
        if self.used[kind] is not None and np.array_equal(value, self.used[kind]):
            return False
        try:
            getattr(self.rec, f"set_{kind}")(value)
        except BadFrame as exc:
            self.srv._status(f"Running: {kind} field refused: {exc}")
            return False
        self.used[kind] = value
        return True

    def _build(self, height: int, width: int, why: str) -> None:
        """A new reconstructor for ``height`` x ``width`` frames and the current angle table."""
        from .recon import OrthoReconstructor

        old = self.shape
        theta = self.theta.value
        size = buffer_size_from_theta(theta)
        self.rec = OrthoReconstructor(width=width, height=height, buffer_size=size,
                                      backend=self.srv.backend)
        self.shape = (height, width)
        self.used = {"theta": theta, "dark": None, "flat": None}
        self.ioc.frame_width, self.ioc.frame_height = width, height
        for kind in ("dark", "flat"):
            value = getattr(self, kind).value
            if value is not None and value.shape == self.shape:
                self._set_field(kind, value)
        if old is not None and old != self.shape:
            self._rescale(old[1], old[0], width, height)
        elif old is None:
            self._place(width, height)
        self._apply_params()
        self.dirty = True
        self.srv._status(f"Running: {why}: {width}x{height} frames, {size} in 180 degrees "
                         f"({self.rec.backend} backend)")

    def _place(self, width: int, height: int) -> None:
        """First frames of a session: an unset (0) or out-of-frame Center or slice position
        goes to the middle of the frame."""
        values = {}
        if not 0 < self._value("Center") < width:
            values["Center"] = width / 2.0
        ortho = [self._value(s) for s in ("OrthoX", "OrthoY", "OrthoZ")]
        for suffix, v, size in zip(("OrthoX", "OrthoY", "OrthoZ"), ortho, (width, width, height),
                                   strict=True):
            if not any(ortho) or not 0 <= v < size:
                values[suffix] = size // 2
        if values:
            self.srv._set(values)

    def _rescale(self, w0: int, h0: int, w1: int, h1: int) -> None:
        """Keep Center and OrthoX/Y/Z on the same sample features after a size change."""
        fx, fz = w1 / w0, h1 / h0
        clamp = lambda v, n: int(min(max(round(v), 0), n - 1))  # noqa: E731
        self.srv._set({
            "Center": min(max(self._value("Center") * fx, 0.0), w1 - 1.0),
            "OrthoX": clamp(self._value("OrthoX") * fx, w1),
            "OrthoY": clamp(self._value("OrthoY") * fx, w1),
            "OrthoZ": clamp(self._value("OrthoZ") * fz, h1),
        })

    def _apply_params(self) -> None:
        if self.rec is None:
            return
        h, w = self.shape
        clamp = lambda v, n: int(min(max(int(v), 0), n - 1))  # noqa: E731
        v = self._value
        try:
            self.rec.set_params(
                center=float(v("Center")), filter=v("FilterType"),
                dezinger=dezinger_radius(v("Dezinger")),
                ortho=(clamp(v("OrthoX"), w), clamp(v("OrthoY"), w), clamp(v("OrthoZ"), h)),
                rot=(float(v("RotX")), float(v("RotY")), float(v("RotZ"))),
                energy=float(v("Energy")), distance=float(v("Distance")),
                alpha=float(v("Alpha")), pixel_size=float(v("PixelSize")))
        except (TomostreamError, ValueError) as exc:
            self.srv._status(f"Running: parameter refused by the reconstruction: {exc}")
        self.dirty = True

    def _angle(self, frame) -> float | None:
        """The angle [degrees] of a projection frame, else None (counted)."""
        theta = self.theta.value
        lag = self.srv.frame_type_window
        ts = frame.timestamp
        if not (self.frame_types.only(PROJECTION, ts - lag, ts + lag) if ts > 0 else
                self.frame_types.type_at(0) == PROJECTION):
            self.counters.not_projection += 1
            return None
        index = projection_index(frame.unique_id, self.first_projid, theta.size)
        if index is None:
            self.counters.outside_theta += 1
            return None
        return float(theta[index])

    def _check_size(self, frame) -> bool:
        """Whether ``frame`` fits the reconstructor; follows a change of detector size."""
        shape = frame.array.shape
        if self.rec is not None and shape == self.shape:
            self.new_size_run = 0
            return True
        if self.rec is None:
            self._build(*shape, "started")
            return True
        if shape == self.new_size:
            self.new_size_run += 1
        else:
            self.new_size, self.new_size_run = shape, 1
        if self.new_size_run >= NEW_SIZE_RUN or shape in (getattr(self.dark.value, "shape", None),
                                                          getattr(self.flat.value, "shape", None)):
            self._build(*shape, "frame size changed")
            self.new_size_run = 0
            return True
        self.counters.bad += 1
        return False

    def _process(self, frames: list) -> None:
        t0 = time.perf_counter()
        kept, angles, times = [], [], []
        for frame in frames:
            if self.last_uid is not None and frame.unique_id == self.first_projid:
                self.counters.between_scans += missing_ids(self.last_uid, frame.unique_id) or 0
            self.last_uid = frame.unique_id
            if frame.array.dtype not in (np.uint8, np.uint16, np.float32):
                self.counters.bad += 1
                continue
            if self.theta.value is None or self.first_projid is None:  # not yet usable
                self.counters.not_projection += 1
                continue
            if not self._check_size(frame):
                continue
            angle = self._angle(frame)
            if angle is None:
                continue
            if kept and frame.array.shape != kept[-1].shape:  # geometry changed in this batch
                self._push(kept, angles, times)
                kept, angles, times = [], [], []
            kept.append(frame.array)
            angles.append(angle)
            times.append(frame.timestamp)
        if kept:
            self._push(kept, angles, times)
        self.work_time += time.perf_counter() - t0

    def _push(self, arrays: list, angles: list, times: list) -> None:
        if arrays[0].shape != self.shape:
            self.counters.bad += len(arrays)
            return
        try:
            self.rec.push(np.stack(arrays), np.asarray(angles, dtype=np.float64))
        except (BadFrame, ValueError) as exc:
            self.counters.bad += len(arrays)
            self.srv._status(f"Running: {len(arrays)} frames refused: {exc}")
            return
        self.counters.used += len(arrays)
        self.pending_times.extend(times)
        self.dirty = True

    def _maybe_publish(self) -> None:
        now = time.monotonic()
        if not self.dirty or self.rec is None or now - self.last_publish < self.srv.min_interval:
            return
        t0 = time.perf_counter()
        image = self.rec.image()
        p = self.rec.params
        try:
            self.srv.publisher(self._value("ReconPVAName")).publish(image, markers=tuple(p.ortho))
        except TomostreamError as exc:
            self.srv._status(f"Running: cannot publish the slices: {exc}")
        published = time.time()
        self.srv.latency.add(self.pending_times, published)
        self.pending_times = []
        self.work_time += time.perf_counter() - t0
        self.srv._set({"ReconTime": round(self.work_time, 6)})
        self.work_time = 0.0
        self.dirty = False
        self.last_publish = time.monotonic()

    def _maybe_report(self) -> None:
        if time.monotonic() - self.last_status >= STATUS_PERIOD:
            self._report_counters()
            waiting = self._waiting_for()
            if waiting != self.waiting:
                self.srv._status(f"Running: waiting for {waiting}" if waiting else
                                 f"Running: connected, reconstructing from {self.image.channel}")
            self.waiting = waiting

    def _waiting_for(self) -> str | None:
        """What the session still needs before it can reconstruct, if anything."""
        if self.ca_down:
            return ", ".join(sorted(self.ca_down)) + " (CA)"
        if self.plugin_prefix is None or self.image is None:
            return f"the detector plugin prefix in {self._value('ImagePVAPName')} (CA)"
        if self.image is not None and not self.image.connected:
            return f"{self.image.channel} (PVA)"
        if self.theta.value is None:
            return f"the angle table on {self.theta.channel} (PVA)"
        if self.first_projid is None or self.frame_types.type_at(0) is None:
            return f"FrameType and FirstProjid of {self._value('TomoScanPVPrefix')} (CA)"
        return None

    def _report_counters(self) -> None:
        values = self.counters.pvs(self.image)
        if self.rec is not None:
            values["BufferSize"] = f"{self.rec.filled}/{self.rec.buffer_size}"
        self.srv._set(values)
        self.last_status = time.monotonic()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tomostream serve",
        description="Serve the TomoStream IOC and reconstruct three orthogonal slices of a "
                    "TomoScan stream in real time; the slices are served over PV Access "
                    "(ReconPVAName) for ImageJ's EPICS_NTNDA_Viewer or any PVA client.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "EPICS environment:\n"
            "  The IOC serves Channel Access on EPICS_CAS_INTF_ADDR_LIST (all interfaces by\n"
            "  default) and search port --ca-port (EPICS_CA_SERVER_PORT, default 5064). The\n"
            "  server is also a CA client of the TomoScan IOC and a PVA client of the detector:\n"
            "  EPICS_CA_ADDR_LIST / EPICS_PVA_ADDR_LIST must reach them.\n\n"
            "Beside the simulated beamline on one host (two CA servers need two ports):\n"
            "  export EPICS_CA_AUTO_ADDR_LIST=NO EPICS_CA_ADDR_LIST='127.0.0.1:5064 127.0.0.1:5066'\n"
            "  export EPICS_PVA_AUTO_ADDR_LIST=NO EPICS_PVA_ADDR_LIST=127.0.0.1\n"
            "  tomostream sim --ca-port 5064 &\n"
            "  tomostream serve --ca-port 5066 --prefix 2bmb:TomoStream:\n"
            "  caput 2bmb:TomoStream:StartRecon 1; caput 2bmb:TomoScanStream:StartScan 1\n\n"
            + (TomoStreamIOC.__doc__ or "")
        ),
    )
    parser.add_argument("--prefix", default="2bmb:TomoStream:", help="IOC PV prefix [%(default)s]")
    parser.add_argument("--ca-port", type=int, default=0,
                        help="CA search port of the IOC (0: EPICS_CA_SERVER_PORT or 5064)")
    parser.add_argument("--backend", choices=("auto", "numpy", "cupy"), default="auto",
                        help="reconstruction backend [%(default)s]")
    parser.add_argument("--tomoscan-prefix", default="2bmb:TomoScanStream:",
                        help="initial TomoScanPVPrefix [%(default)s]")
    parser.add_argument("--recon-pva-name", default=None,
                        help="initial ReconPVAName [<prefix>StreamRecon]")
    parser.add_argument("--max-rate", type=float, default=30.0,
                        help="most published updates per second [%(default)s]")
    parser.add_argument("--log-level", default="INFO", help="logging level [%(default)s]")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``tomostream serve``: run the stream server until Ctrl-C (SIGINT) or SIGTERM."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    tomoscan = args.tomoscan_prefix
    defaults = {
        "tomoscan_prefix": tomoscan,
        "image_pvap_name": tomoscan + "PvaPluginPVPrefix",
        "dark_pva_name": tomoscan + "StreamDarkFields",
        "flat_pva_name": tomoscan + "StreamFlatFields",
        "theta_pva_name": tomoscan + "StreamTheta",
        "recon_pva_name": args.recon_pva_name or args.prefix + "StreamRecon",
    }
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    with StreamServer(args.prefix, ca_port=args.ca_port, backend=args.backend,
                      max_rate=args.max_rate, **defaults) as server:
        log.info("TomoStream IOC %s serving; Ctrl-C stops", server.prefix)
        while not done.wait(3600):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
