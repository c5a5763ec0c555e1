"""One StartRecon of the stream server: the worker's loop and the reconstructor's life.

A :class:`StreamSession` is created and run by the server's worker thread when StartRecon
goes busy and returns when it is aborted or the server stops. It follows the TomoScan IOC over
Channel Access (:class:`~.tomoscan.TomoScanWatch`) and the detector, dark, flat and angle
channels over PV Access, lets a :class:`~.gate.FrameGate` judge each frame, batches the
projection frames into an :class:`~tomostream.recon.OrthoReconstructor` (built again when the
frame size or the angle table changes) and hands the slices to the publisher when a
:class:`~.pacing.Pacer` says one is due.

The session knows its server only through a :class:`SessionConfig` (frozen at StartRecon) and
a :class:`ServerLink` (what it may do to the server: say, write PVs, read commands). The frame
path never waits on the IOC: what it decides to say in ReconStatus, and the slice positions it
places for a new frame size, are written between steps of the loop.
"""

from __future__ import annotations

import collections
import logging
import queue
import time

import numpy as np

from ..errors import BadFrame, BadParameter, TomostreamError
from ..pva.fields import read_field, read_theta
from ..pva.receiving import open_image_stream
from ..pva.scatter import plugin_prefixes
from ..pva.subscriber import LatestValue
from ..recon import OrthoReconstructor
from .axis import AxisFollower
from .frames import Counters, LatencyStats, buffer_size_from_theta
from .gate import Action, FrameGate, Skip
from .link import ServerLink, SessionConfig
from .pacing import Pacer
from .settings import centred, engine_params, rescaled
from .staging import FrameStager
from .tomoscan import TomoScanWatch

log = logging.getLogger(__name__)

#: Slow PVs (counters, BufferSize) are refreshed at most this often while frames flow [s].
STATUS_PERIOD = 0.25
#: Longest the worker sleeps waiting for a frame before it looks at commands again [s].
IDLE_WAIT = 0.1
#: Longest a session's end waits for its publications in flight [s].
PUBLISH_DRAIN = 5.0
#: Shortest time between two ReconStatus reports of refused frames [s].
REFUSAL_PERIOD = 1.0
#: PVs whose change takes effect on the next published update.
PARAM_PVS = ("Center", "FilterType", "Dezinger", "OrthoX", "OrthoY", "OrthoZ", "RotX", "RotY",
             "RotZ", "Zoom", "Energy", "Distance", "Alpha", "PixelSize", "RingRemoval")
#: PVs naming the beamline's channels, read at StartRecon.
CHANNEL_PVS = ("TomoScanPVPrefix", "ImagePVAPName", "ImagePlugins", "DarkPVAName", "FlatPVAName",
               "ThetaPVAName")


class StreamSession:
    """One StartRecon: connections, reconstructor and counters, run by the worker thread.

    Parameters
    ----------
    config : SessionConfig
        How the session runs.
    link : ServerLink
        What it may do to the server.

    Attributes
    ----------
    counters : Counters
        Frame counts of this StartRecon.
    latency, arrival, receive : LatencyStats
        Frame-to-publication delays, delays to the worker, delays to the subscriber.
    image : ImageSubscriber or None
        The detector images' subscriber.
    rec : OrthoReconstructor or None
        The engine, from the first usable frame on.
    waiting : str or None
        What the session still needs before it can reconstruct ("connections" at first).
    finished : bool
        Set when the loop has ended.
    """

    def __init__(self, config: SessionConfig, link: ServerLink):
        self.config = config
        self.link = link
        self.counters = Counters()
        self.latency = LatencyStats()
        self.arrival = LatencyStats()
        self.receive = LatencyStats()
        self.gate = FrameGate(config.frame_type_window)
        self.pacer = Pacer(config.min_interval, link.status, link.set_pvs, self.latency)
        #: A plugin prefix that cannot name ImagePlugins plugins (reported once).
        self.plugin_prefix_refused: str | None = None
        #: NDPluginPva plugins the frames are spread over (ImagePlugins at StartRecon).
        self.image_plugins = int(link.value("ImagePlugins"))
        self.tomoscan: TomoScanWatch | None = None
        self.image = None
        self.dark = self.flat = self.theta = None
        self.rec = None
        self.shape: tuple[int, int] | None = None
        #: Last dark/flat/theta objects seen on the channels, and the values in use.
        self.seen: dict = {"theta": None, "dark": None, "flat": None}
        self.used: dict = {"theta": None, "dark": None, "flat": None}
        self.last_refusal = -REFUSAL_PERIOD
        #: Host buffer the frames of a push are stacked in (see _stage), and who copies them.
        self.staging: np.ndarray | None = None
        self.stager = FrameStager()
        self.last_status = 0.0
        #: ReconStatus texts and PV writes decided while frames are handled, made by
        #: :meth:`_flush` between steps, so the frame path never waits on the IOC.
        self.messages: queue.SimpleQueue = queue.SimpleQueue()
        self.pv_writes: dict = {}
        self.abort = False
        self.finished = False
        #: (monotonic time due, frame): frames waiting for late FrameType changes.
        self.held: collections.deque = collections.deque()
        self.waiting: str | None = "connections"
        #: CenterEstimate and CenterAuto.
        self.axis = AxisFollower(link.value, link.set_pvs)

    # -- connections -------------------------------------------------------------------------
    def connect(self) -> None:
        """Watch the TomoScan IOC over CA and subscribe to dark, flat and theta over PVA."""
        value, note = self.link.value, self.messages.put
        self.tomoscan = TomoScanWatch(value("TomoScanPVPrefix"), value("ImagePVAPName"), note)
        self.dark = LatestValue(value("DarkPVAName"), read_field, on_status=note).start()
        self.flat = LatestValue(value("FlatPVAName"), read_field, on_status=note).start()
        self.theta = LatestValue(value("ThetaPVAName"), read_theta, on_status=note).start()

    def close(self) -> None:
        self.pacer.drain(self.link.publisher(), PUBLISH_DRAIN)
        if self.tomoscan is not None:
            self.tomoscan.close()
        for sub in (self.image, self.dark, self.flat, self.theta):
            if sub is not None:
                sub.stop()
        self.stager.close()

    def _follow_image(self) -> None:
        """(Re)subscribe to the detector images when the plugin prefix is (newly) known."""
        prefix = self.tomoscan.plugin_prefix
        if prefix is None:
            return
        try:
            channels = [p + "Image" for p in plugin_prefixes(prefix, self.image_plugins)]
        except BadParameter as exc:
            if self.plugin_prefix_refused != prefix:
                self.plugin_prefix_refused = prefix
                self.link.status(f"Running: cannot follow the detector: {exc}")
            return
        channel = ", ".join(channels)
        if self.image is not None:
            if self.image.channel == channel:
                return
            self.counters.retire(self.image)
            self.image.stop()
        # where the frames are received (a child process, else this one) is decided there
        self.image = open_image_stream(channels, process=self.config.receive_process,
                                       queue_size=self.config.queue_size,
                                       on_status=self.messages.put)
        self.link.status(f"Running: following {channel}")

    # -- main loop ---------------------------------------------------------------------------
    def run(self) -> None:
        stopping = self.link.stopping
        self.link.status("Running: connecting")
        try:
            self.connect()
            while not (self.abort or stopping.is_set()):
                self._handle_commands()
                self._follow_image()
                self._handle_fields()
                frames = self._next_batch()
                if frames:
                    self._process(frames)
                self._flush()
                self._maybe_publish()
                self.axis.step(self.rec, self.counters.used, self.used)
                self._maybe_report()
        finally:
            self.finished = True
            self.close()
            self._flush()
            self._report_counters()
            self.link.status("Stopped")

    def _handle_commands(self) -> None:
        while True:
            try:
                suffix, _value = self.link.commands.get_nowait()
            except queue.Empty:
                break
            if suffix in ("AbortRecon", "stop"):
                self.abort = True
            elif suffix in PARAM_PVS:
                self._apply_params()
            elif suffix == "ReconPVAName":
                self.pacer.changed()  # the next update goes to the new channel
            elif suffix in CHANNEL_PVS:
                self.link.status(f"{suffix} changed: takes effect at the next StartRecon")

    def _flush(self) -> None:
        """Make the PV writes and say the ReconStatus texts decided since the last flush."""
        if self.pv_writes:
            writes, self.pv_writes = self.pv_writes, {}
            self.link.set_pvs(writes)
        while True:
            try:
                self.link.status(self.messages.get_nowait())
            except queue.Empty:
                break

    def _next_batch(self) -> list:
        """Frames that have waited ``frame_type_window`` (so their FrameType is known), oldest first."""
        if self.image is None:
            self.link.stopping.wait(IDLE_WAIT)
            return []
        batch_max, window = self.config.batch_max, self.config.frame_type_window
        now = time.monotonic()
        wait = IDLE_WAIT
        if self.held:
            wait = min(wait, self.held[0][0] - now)
        due = self.pacer.wait(now, self.link.publisher().full)
        if due is not None:
            wait = min(wait, due)
        room = max(batch_max - len(self.held), 1)
        first = self.image.get(timeout=max(wait, 0.0)) if wait > 0 or not self.held else None
        arrived = ([first] if first is not None else []) + self.image.drain(room - 1)
        if arrived:
            self.arrival.add([frame.timestamp for frame in arrived], time.time())
            self.receive.add_delays([frame.received - frame.timestamp for frame in arrived
                                     if frame.timestamp > 0 and frame.received > 0])
        due = time.monotonic() + window
        self.held.extend((due, frame) for frame in arrived)
        now = time.monotonic()
        ready = []
        while self.held and self.held[0][0] <= now and len(ready) < batch_max:
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
            if value.shape == self.shape and self._set_field(kind, value):
                # the buffer keeps its raw frames: they are normalised again with the new field
                # at the next image, so the slices stay up through a retake
                self.pacer.changed()
                self.messages.put(f"Running: new {kind} field: the {self.rec.filled} buffered "
                                 f"frames normalised with it")

    def _set_field(self, kind: str, value: np.ndarray) -> bool:
        """Give the reconstructor a dark or flat field; whether it differed from the last one."""
        if self.used[kind] is not None and np.array_equal(value, self.used[kind]):
            return False
        try:
            getattr(self.rec, f"set_{kind}")(value)
        except BadFrame as exc:
            self.messages.put(f"Running: {kind} field refused: {exc}")
            return False
        self.used[kind] = value
        return True

    def _build(self, height: int, width: int, why: str) -> None:
        """A new reconstructor for ``height`` x ``width`` frames and the current angle table."""
        old = self.shape
        theta = self.theta.value
        size = buffer_size_from_theta(theta)
        self.rec = OrthoReconstructor(width=width, height=height, buffer_size=size,
                                      backend=self.config.backend)
        self.shape = (height, width)
        self.used = {"theta": theta, "dark": None, "flat": None}
        self.link.set_frame_size(width, height)
        for kind in ("dark", "flat"):
            value = getattr(self, kind).value
            if value is not None and value.shape == self.shape:
                self._set_field(kind, value)
        moved = centred(self.link.value, width, height) if old is None else \
            rescaled(self.link.value, old, self.shape) if old != self.shape else {}
        self.pv_writes.update(moved)
        self._apply_params()
        self.pacer.changed()
        self.messages.put(f"Running: {why}: {width}x{height} frames, {size} in 180 degrees "
                         f"({self.rec.backend} backend)")

    def _value(self, suffix: str):
        """A TomoStream PV's value, with the writes not made yet."""
        return self.pv_writes[suffix] if suffix in self.pv_writes else self.link.value(suffix)

    def _apply_params(self) -> None:
        if self.rec is None:
            return
        try:
            self.rec.set_params(**engine_params(self._value, self.shape[1], self.shape[0]))
        except (TomostreamError, ValueError) as exc:
            self.messages.put(f"Running: parameter refused by the reconstruction: {exc}")
        self.pacer.changed()

    def _take(self, frame) -> bool:
        """Whether ``frame`` is of the reconstructor's format, acting on the gate's verdict:
        the first frame builds the reconstructor, a new size builds it again, a frame of
        another format alone is refused (counted in FramesBad, said in ReconStatus)."""
        array = frame.array
        fields = (getattr(self.dark.value, "shape", None), getattr(self.flat.value, "shape", None))
        verdict = self.gate.check_format(array, fields)
        if verdict.action is Action.BUILD:
            self._build(*array.shape, "started")
        elif verdict.action is Action.RESIZE:
            self._build(*array.shape, "frame size changed")
        elif verdict.action is Action.RETYPE:
            self.messages.put(f"Running: {verdict.why}")
        elif verdict.action is Action.REFUSE:
            self._refuse(frame, verdict.why)
            return False
        return True

    def _refuse(self, frame, why: str, count: int = 1) -> None:
        """Count ``count`` frames as bad and say why in ReconStatus (at most every
        ``REFUSAL_PERIOD`` seconds, so a stream of bad frames does not flood it)."""
        self.counters.bad += count
        now = time.monotonic()
        if now - self.last_refusal >= REFUSAL_PERIOD:
            self.last_refusal = now
            self.messages.put(f"Running: frame uniqueId {frame.unique_id} refused: {why} "
                             f"({self.counters.bad} refused in this run)")

    def _process(self, frames: list) -> None:
        t0 = time.perf_counter()
        kept, angles, times = [], [], []
        tomoscan = self.tomoscan
        for frame in frames:
            self.counters.between_scans += self.gate.skipped_before_scan(frame.unique_id,
                                                                         tomoscan.first_projid)
            refusal = self.gate.dtype_refusal(frame.array)
            if refusal is not None:
                self._refuse(frame, refusal)
                continue
            if self.theta.value is None or tomoscan.first_projid is None:  # not yet usable
                self.counters.not_projection += 1
                continue
            if not self._take(frame):
                continue
            angle = self.gate.angle(frame.unique_id, frame.timestamp, self.theta.value,
                                    tomoscan.first_projid, tomoscan.frame_types)
            if angle is Skip.NOT_PROJECTION:
                self.counters.not_projection += 1
                continue
            if angle is Skip.OUTSIDE_THETA:
                self.counters.outside_theta += 1
                continue
            if kept and (frame.array.shape, frame.array.dtype) != (kept[-1].shape, kept[-1].dtype):
                # the format changed in this batch
                self._push(kept, angles, times)
                kept, angles, times = [], [], []
            kept.append(frame.array)
            angles.append(angle)
            times.append(frame.timestamp)
        if kept:
            self._push(kept, angles, times)
        self.pacer.add_work(time.perf_counter() - t0)

    def _push(self, arrays: list, angles: list, times: list) -> None:
        if arrays[0].shape != self.shape:
            self.counters.bad += len(arrays)
            return
        try:
            self.rec.push(self._stage(arrays), np.asarray(angles, dtype=np.float64))
        except Exception as exc:  # a batch the engine cannot take never ends the stream
            if not isinstance(exc, BadFrame | ValueError):
                log.exception("%d frames refused by the reconstruction", len(arrays))
            self.counters.bad += len(arrays)
            self.messages.put(f"Running: {len(arrays)} frames refused: {type(exc).__name__}: {exc}")
            return
        self.counters.used += len(arrays)
        self.pacer.changed(times)

    def _stage(self, arrays: list) -> np.ndarray:
        """``arrays`` stacked in the reconstructor's host buffer (page-locked on a GPU, so the
        frames are copied once on the host, not twice)."""
        k, dtype = len(arrays), arrays[0].dtype
        buf = self.staging
        if buf is None or buf.shape[0] < k or buf.shape[1:] != arrays[0].shape or buf.dtype != dtype:
            buf = self.staging = self.rec.host_frames(max(k, self.config.batch_max), dtype)
        return self.stager.stack(arrays, buf)

    def _maybe_publish(self) -> None:
        """Hand the current slices to the publisher when they changed and one is due."""
        publisher = self.link.publisher()
        self.pacer.collect(publisher)
        if self.rec is None or not self.pacer.due(time.monotonic()):
            return
        try:
            published = self.pacer.publish(self.rec, publisher, self.link.value("ReconPVAName"),
                                           self.config.markers)
        except TomostreamError as exc:  # the publishing process cannot start here
            self.link.publisher_failed(exc)
            return
        if published:
            self.pacer.collect(publisher)

    def _maybe_report(self) -> None:
        if time.monotonic() - self.last_status >= STATUS_PERIOD:
            self._report_counters()
            waiting = self._waiting_for()
            if waiting != self.waiting:
                self.link.status(f"Running: waiting for {waiting}" if waiting else
                                 f"Running: connected, reconstructing from {self.image.channel}")
            self.waiting = waiting

    def _waiting_for(self) -> str | None:
        """What the session still needs before it can reconstruct, if anything."""
        tomoscan = self.tomoscan
        missing = tomoscan.waiting_for()
        if missing is not None:
            return missing
        if self.image is None:
            return f"the detector plugin prefix in {tomoscan.image_pvap_name} (CA)"
        if not self.image.connected:
            return f"{self.image.channel} (PVA)"
        if self.theta.value is None:
            return f"the angle table on {self.theta.channel} (PVA)"
        if not tomoscan.scan_known:
            return f"FrameType and FirstProjid of {tomoscan.tomoscan_prefix} (CA)"
        return None

    def _report_counters(self) -> None:
        values = self.counters.pvs(self.image)
        if self.rec is not None:
            values["BufferSize"] = f"{self.rec.filled}/{self.rec.buffer_size}"
        self.link.set_pvs(values)
        self.last_status = time.monotonic()
