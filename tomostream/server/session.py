"""One StartRecon of the stream server: connections, reconstructor, counters.

A :class:`StreamSession` is created and run by the server's worker thread when StartRecon
goes busy and returns when it is aborted or the server stops. It watches the TomoScan IOC over
Channel Access (pyepics callbacks only record values), follows the detector, dark, flat and
angle channels over PV Access, batches projection frames into an
:class:`~tomostream.recon.OrthoReconstructor` and publishes the slices at a bounded rate.
"""

from __future__ import annotations

import collections
import itertools
import logging
import queue
import threading
import time
from typing import TYPE_CHECKING

import numpy as np

from ..errors import BadFrame, BadParameter, TomostreamError
from ..pva.fields import read_field, read_theta
from ..pva.receive_process import start_image_subscriber
from ..pva.scatter import ScatterSubscriber, plugin_prefixes
from ..pva.subscriber import LatestValue
from ..recon import OrthoReconstructor
from ..recon.reconstructor import FRAME_DTYPES
from ..unique_ids import missing_ids, projection_index
from ..vocabulary import FRAME_TYPES, PROJECTION
from .axis import AxisFollower
from .frames import Counters, FrameTypeHistory, LatencyStats, buffer_size_from_theta, dezinger_radius
from .staging import FrameStager

if TYPE_CHECKING:
    from .stream_server import StreamServer

log = logging.getLogger(__name__)

#: Frames of one new size in a row that mean the detector geometry changed (binning).
NEW_SIZE_RUN = 4
#: A frame this few ids behind the newest is late (frames spread over several channels come
#: a little out of order), not the start of a new count.
SCAN_START_SLACK = 64
#: Slow PVs (counters, BufferSize) are refreshed at most this often while frames flow [s].
STATUS_PERIOD = 0.25
#: Longest the worker sleeps waiting for a frame before it looks at commands again [s].
IDLE_WAIT = 0.1
#: How often the worker looks for a finished publication while every image buffer is in
#: flight and the slices have changed [s].
PUBLISH_POLL = 0.002
#: Longest a session's end waits for its publications in flight [s].
PUBLISH_DRAIN = 5.0
#: Shortest time between two ReconStatus reports of refused frames [s].
REFUSAL_PERIOD = 1.0
#: Tokens that tie a publication's result to its frames (unique in the process).
_TOKENS = itertools.count()
#: PVs whose change takes effect on the next published update.
PARAM_PVS = ("Center", "FilterType", "Dezinger", "OrthoX", "OrthoY", "OrthoZ", "RotX", "RotY",
             "RotZ", "Zoom", "Energy", "Distance", "Alpha", "PixelSize", "RingRemoval")
#: PVs naming the beamline's channels, read at StartRecon.
CHANNEL_PVS = ("TomoScanPVPrefix", "ImagePVAPName", "ImagePlugins", "DarkPVAName", "FlatPVAName",
               "ThetaPVAName")


#: The server's own pyepics channels, by name, in a Channel Access context of their own: made
#: once, never disconnected (disconnecting from the worker thread while CA threads deliver
#: callbacks crashed the process), reused by the next session. pyepics shares one channel per
#: name and context, so in its initial context an ophyd device in the same process (a Bluesky
#: session beside the server) owns them too: its ``destroy`` clears the channel and unsets the
#: PV's context, which left a watch without values and its ``close`` raising "Expected CA
#: context is unset".
_CHANNELS: dict[str, object] = {}
_CHANNELS_LOCK = threading.Lock()
_CONTEXT: list = []


def _own_context():
    """The server's Channel Access context (made once, from a thread that holds no other)."""
    from epics import ca

    if not _CONTEXT:
        def make():
            if ca.current_context() is not None:  # loading libca attached its initial context
                ca.detach_context()
            ca.create_context()
            _CONTEXT.append(ca.current_context())
            ca.detach_context()

        maker = threading.Thread(target=make, name="tomostream-ca-context")
        maker.start()
        maker.join()
    return _CONTEXT[0]


def _channel(name: str):
    """The server's own monitored pyepics PV ``name`` (see :data:`_CHANNELS`)."""
    import epics
    from epics import ca

    with _CHANNELS_LOCK:
        pv = _CHANNELS.get(name)
        if pv is None:
            context = _own_context()
            previous = ca.current_context()
            if previous is not None:
                ca.detach_context()
            ca.attach_context(context)
            try:  # epics.pv.PV: never ophyd's subclass, which get_pv would hand out
                pv = _CHANNELS[name] = epics.pv.PV(name, form="time", auto_monitor=True)
            finally:
                ca.detach_context()
                if previous is not None:
                    ca.attach_context(previous)
        return pv


def _describe_format(fmt: tuple) -> str:
    """``(shape, dtype)`` as "uint16 64x32 frames" (width x height)."""
    shape, dtype = fmt
    size = "x".join(str(v) for v in shape[::-1]) if shape else "scalar"
    return f"{dtype} {size} frames"


def _describe(array: np.ndarray) -> str:
    """A frame's format as "a float32 64x32 frame"."""
    return "a " + _describe_format((array.shape, array.dtype))[:-1]


class _CaWatch:
    """A pyepics PV followed with callbacks; connection state reported to the worker.

    The PV is the server's own (:func:`_channel`) and is never disconnected. Closing the watch
    removes its callbacks, and the next session reuses the channel.
    """

    def __init__(self, name: str, on_value, on_connection):
        self.name = name
        self.pv = _channel(name)
        self._on_connection = on_connection
        self.pv.connection_callbacks.append(on_connection)
        self._index = self.pv.add_callback(on_value)
        if self.pv.connected:  # a reused channel: its connection and value events have passed
            on_connection(pvname=name, conn=True, pv=self.pv)
            if self.pv.value is not None:  # connected, first monitor value maybe not yet in
                on_value(pvname=name, value=self.pv.value, char_value=self.pv.char_value,
                         timestamp=self.pv.timestamp)

    def close(self) -> None:
        self.pv.remove_callback(self._index)
        if self._on_connection in self.pv.connection_callbacks:
            self.pv.connection_callbacks.remove(self._on_connection)


class StreamSession:
    """One StartRecon: connections, reconstructor and counters, run by the worker thread.

    Parameters
    ----------
    server : StreamServer
        The server whose IOC, commands, publisher and status PVs the session uses.
    """

    def __init__(self, server: StreamServer):
        self.srv = server
        self.ioc = server.ioc
        self.counters = Counters()
        self.frame_types = FrameTypeHistory()
        self.first_projid: int | None = None
        #: Newest uniqueId processed before FirstProjid.
        self.last_uid: int | None = None
        self.plugin_prefix: str | None = None
        #: A plugin prefix that cannot name ImagePlugins plugins (reported once).
        self.plugin_prefix_refused: str | None = None
        #: NDPluginPva plugins the frames are spread over (ImagePlugins at StartRecon).
        self.image_plugins = int(self._value("ImagePlugins"))
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
        #: (shape, dtype) of the frames the reconstructor takes, and of frames of another
        #: format coming in a row (a detector that changed binning or data type).
        self.format: tuple | None = None
        self.new_format: tuple | None = None
        self.new_format_run = 0
        self.last_refusal = -REFUSAL_PERIOD
        self.dirty = False
        self.last_publish = 0.0
        #: Worker seconds the last publication took (the image; with an InlinePublisher, all).
        self.publish_cost = 0.0
        #: token -> (frame times, worker seconds) of publications in flight.
        self.publications: dict = {}
        #: Host buffer the frames of a push are stacked in (see _stage), and who copies them.
        self.staging: np.ndarray | None = None
        self.stager = FrameStager()
        self.last_status = 0.0
        self.work_time = 0.0
        self.pending_times: list[float] = []
        self.messages: queue.SimpleQueue = queue.SimpleQueue()
        self.abort = False
        self.finished = False
        #: (monotonic time due, frame): frames waiting for late FrameType changes.
        self.held: collections.deque = collections.deque()
        self.waiting: str | None = "connections"
        #: CenterEstimate and CenterAuto.
        self.axis = AxisFollower(server)
        server.latency = LatencyStats()
        server.arrival = LatencyStats()
        server.receive = LatencyStats()

    # -- connections -------------------------------------------------------------------------
    def _value(self, suffix: str):
        return self.ioc.value(suffix)

    def connect(self) -> None:
        """Watch the TomoScan IOC over CA and subscribe to dark, flat and theta over PVA."""
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
        deadline = time.monotonic() + PUBLISH_DRAIN
        while self.publications and self.srv.publisher.in_flight and time.monotonic() < deadline:
            self._collect(timeout=0.2)
        for watch in self.ca:
            watch.close()
        for sub in (self.image, self.dark, self.flat, self.theta):
            if sub is not None:
                sub.stop()
        self.stager.close()

    # pyepics callbacks (CA client threads): record, never block
    def _on_frame_type(self, value=None, timestamp=None, **kw) -> None:
        name = FRAME_TYPES[value] if isinstance(value, int) and 0 <= value < len(FRAME_TYPES) else str(value)
        self.frame_types.record(float(timestamp or time.time()), name)

    def _on_first_projid(self, value=None, **kw) -> None:
        self.first_projid = int(value)

    def _on_plugin_prefix(self, char_value=None, **kw) -> None:
        self.plugin_prefix = str(char_value).strip() or None  # empty: no detector yet

    def _on_ca_connection(self, pvname=None, conn=None, **kw) -> None:
        if conn:
            self.ca_down.discard(pvname)
        else:
            self.ca_down.add(pvname)
        self.messages.put(f"{pvname} {'connected' if conn else 'disconnected'}")

    def _follow_image(self) -> None:
        """(Re)subscribe to the detector images when the plugin prefix is (newly) known, and
        receive in this process when the receiving process has failed."""
        prefix = self.plugin_prefix
        if prefix is None:
            return
        try:
            channels = [p + "Image" for p in plugin_prefixes(prefix, self.image_plugins)]
        except BadParameter as exc:
            if self.plugin_prefix_refused != prefix:
                self.plugin_prefix_refused = prefix
                self.srv.status(f"Running: cannot follow the detector: {exc}")
            return
        channel = ", ".join(channels)
        failed = getattr(self.image, "failed", None)
        if self.image is not None:
            if self.image.channel == channel and not failed:
                return
            self.counters.retire(self.image)
            self.image.stop()
        if failed:
            due = time.monotonic() + self.srv.frame_type_window
            self.held.extend((due, frame) for frame in self.image.drain())
            self.image = self._subscribe(channels, process=False,
                                         last_unique_id=self.image.last_unique_id)
            self.srv.status(f"Running: receiving {channel} in the server process: {failed}")
            return
        self.image = self._subscribe(channels, process=self.srv.receive_process)
        self.srv.status(f"Running: following {channel}")

    def _subscribe(self, channels: list[str], process: bool, last_unique_id: int | None = None):
        """A started subscriber to ``channels``: one :class:`ScatterSubscriber` for several;
        for one, in a child process when ``process`` and it can be
        (:mod:`tomostream.pva.receive_process`), else in this one."""
        kw = dict(queue_size=self.srv.queue_size, on_status=self.messages.put,
                  last_unique_id=last_unique_id)
        if len(channels) > 1:
            return ScatterSubscriber(channels, process=process, **kw).start()
        return start_image_subscriber(channels[0], process=process,
                                      on_fallback=lambda text: self.srv.status("Running: " + text),
                                      **kw)

    # -- main loop ---------------------------------------------------------------------------
    def run(self) -> None:
        srv = self.srv
        srv.status("Running: connecting")
        try:
            self.connect()
            while not (self.abort or srv.stopping.is_set()):
                self._handle_commands()
                self._follow_image()
                self._handle_fields()
                frames = self._next_batch()
                if frames:
                    self._process(frames)
                self._maybe_publish()
                self.axis.step(self)
                self._maybe_report()
        finally:
            self.finished = True
            self.close()
            self._report_counters()
            srv.status("Stopped")

    def _handle_commands(self) -> None:
        while True:
            try:
                suffix, _value = self.srv.commands.get_nowait()
            except queue.Empty:
                break
            if suffix in ("AbortRecon", "stop"):
                self.abort = True
            elif suffix in PARAM_PVS:
                self._apply_params()
            elif suffix == "ReconPVAName":
                self.dirty = True  # the next update goes to the new channel
            elif suffix in CHANNEL_PVS:
                self.srv.status(f"{suffix} changed: takes effect at the next StartRecon")
        while True:
            try:
                self.srv.status(self.messages.get_nowait())
            except queue.Empty:
                break

    def _next_batch(self) -> list:
        """Frames that have waited ``frame_type_window`` (so their FrameType is known), oldest first."""
        if self.image is None:
            self.srv.stopping.wait(IDLE_WAIT)
            return []
        now = time.monotonic()
        wait = IDLE_WAIT
        if self.held:
            wait = min(wait, self.held[0][0] - now)
        if self.dirty:
            due = self.last_publish + self.publish_interval - now
            wait = min(wait, max(due, PUBLISH_POLL) if self.srv.publisher.full else due)
        room = max(self.srv.batch_max - len(self.held), 1)
        first = self.image.get(timeout=max(wait, 0.0)) if wait > 0 or not self.held else None
        arrived = ([first] if first is not None else []) + self.image.drain(room - 1)
        if arrived:
            self.srv.arrival.add([frame.timestamp for frame in arrived], time.time())
            self.srv.receive.add_delays([frame.received - frame.timestamp for frame in arrived
                                         if frame.timestamp > 0 and frame.received > 0])
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
            if value.shape == self.shape and self._set_field(kind, value):
                # the buffer keeps its raw frames: they are normalised again with the new field
                # at the next image, so the slices stay up through a retake
                self.dirty = True
                self.srv.status(f"Running: new {kind} field: the {self.rec.filled} buffered frames "
                                f"normalised with it")

    def _set_field(self, kind: str, value: np.ndarray) -> bool:
        """Give the reconstructor a dark or flat field; whether it differed from the last one."""
        if self.used[kind] is not None and np.array_equal(value, self.used[kind]):
            return False
        try:
            getattr(self.rec, f"set_{kind}")(value)
        except BadFrame as exc:
            self.srv.status(f"Running: {kind} field refused: {exc}")
            return False
        self.used[kind] = value
        return True

    def _build(self, height: int, width: int, why: str) -> None:
        """A new reconstructor for ``height`` x ``width`` frames and the current angle table."""
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
        self.srv.status(f"Running: {why}: {width}x{height} frames, {size} in 180 degrees "
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
            self.srv.set_pvs(values)

    def _rescale(self, w0: int, h0: int, w1: int, h1: int) -> None:
        """Keep Center and OrthoX/Y/Z on the same sample features after a size change."""
        fx, fz = w1 / w0, h1 / h0
        clamp = lambda v, n: int(min(max(round(v), 0), n - 1))  # noqa: E731
        self.srv.set_pvs({
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
                rot=(float(v("RotX")), float(v("RotY")), float(v("RotZ"))), zoom=float(v("Zoom")),
                energy=float(v("Energy")), distance=float(v("Distance")),
                alpha=float(v("Alpha")), pixel_size=float(v("PixelSize")),
                ring_removal=v("RingRemoval"))
        except (TomostreamError, ValueError) as exc:
            self.srv.status(f"Running: parameter refused by the reconstruction: {exc}")
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

    def _check_format(self, frame) -> bool:
        """Whether ``frame`` fits the reconstructor, following a detector that changed its
        frame size (binning) or data type: ``NEW_SIZE_RUN`` frames of the new format in a row,
        or a new size the dark or flat field already has. A frame of another format alone is
        refused (counted in FramesBad, said in ReconStatus)."""
        array = frame.array
        fmt = (array.shape, array.dtype)
        if self.rec is not None and fmt == self.format:
            self.new_format_run = 0
            return True
        if self.rec is None:
            self._build(*array.shape, "started")
            self.format = fmt
            return True
        if fmt == self.new_format:
            self.new_format_run += 1
        else:
            self.new_format, self.new_format_run = fmt, 1
        fields = (getattr(self.dark.value, "shape", None), getattr(self.flat.value, "shape", None))
        resized = array.shape != self.shape
        if self.new_format_run >= NEW_SIZE_RUN or (resized and array.shape in fields):
            if resized:
                self._build(*array.shape, "frame size changed")
            else:
                self.srv.status(f"Running: the detector now sends {array.dtype} frames "
                                f"(was {self.format[1]})")
            self.format, self.new_format_run = fmt, 0
            return True
        self._refuse(frame, f"{_describe(array)} in a stream of {_describe_format(self.format)}")
        return False

    def _refuse(self, frame, why: str, count: int = 1) -> None:
        """Count ``count`` frames as bad and say why in ReconStatus (at most every
        ``REFUSAL_PERIOD`` seconds, so a stream of bad frames does not flood it)."""
        self.counters.bad += count
        now = time.monotonic()
        if now - self.last_refusal >= REFUSAL_PERIOD:
            self.last_refusal = now
            self.srv.status(f"Running: frame uniqueId {frame.unique_id} refused: {why} "
                            f"({self.counters.bad} refused in this run)")

    def _note_scan_start(self, uid: int) -> None:
        """Count the ids the detector skipped between the last scan and this one (no loss).

        ``last_uid`` is the newest id before FirstProjid. Frames spread over several channels
        come a little out of order, so frames just after FirstProjid that come before it, and
        late frames a little behind the newest, leave it as it is."""
        fp, last = self.first_projid, self.last_uid
        if fp is not None and uid == fp:
            if last is not None and last != fp:
                self.counters.between_scans += missing_ids(last, fp) or 0
            self.last_uid = fp
            return
        if fp is not None and missing_ids(uid, fp) is None:
            return  # a frame of the scan
        late = None if last is None else missing_ids(uid, last)
        if late is None or late >= SCAN_START_SLACK:
            self.last_uid = uid

    def _process(self, frames: list) -> None:
        t0 = time.perf_counter()
        kept, angles, times = [], [], []
        for frame in frames:
            self._note_scan_start(frame.unique_id)
            if frame.array.dtype not in FRAME_DTYPES:
                self._refuse(frame, f"{_describe(frame.array)}: the reconstruction takes "
                                    f"{', '.join(map(str, FRAME_DTYPES))} frames")
                continue
            if self.theta.value is None or self.first_projid is None:  # not yet usable
                self.counters.not_projection += 1
                continue
            if not self._check_format(frame):
                continue
            angle = self._angle(frame)
            if angle is None:
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
        self.work_time += time.perf_counter() - t0

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
            self.srv.status(f"Running: {len(arrays)} frames refused: {type(exc).__name__}: {exc}")
            return
        self.counters.used += len(arrays)
        self.pending_times.extend(times)
        self.dirty = True

    def _stage(self, arrays: list) -> np.ndarray:
        """``arrays`` stacked in the reconstructor's host buffer (page-locked on a GPU, so the
        frames are copied once on the host, not twice)."""
        k, dtype = len(arrays), arrays[0].dtype
        buf = self.staging
        if buf is None or buf.shape[0] < k or buf.shape[1:] != arrays[0].shape or buf.dtype != dtype:
            buf = self.staging = self.rec.host_frames(max(k, self.srv.batch_max), dtype)
        return self.stager.stack(arrays, buf)

    @property
    def publish_interval(self) -> float:
        """Seconds between published updates: at most ``max_rate`` per second, and publishing
        takes at most half of the worker's time."""
        return max(self.srv.min_interval, 2.0 * self.publish_cost)

    def _maybe_publish(self) -> None:
        """Hand the current slices to the publisher when they changed and one is due."""
        self._collect()
        now = time.monotonic()
        if not self.dirty or self.rec is None or now - self.last_publish < self.publish_interval:
            return
        pub = self.srv.publisher
        t0 = time.perf_counter()
        try:
            got = pub.buffer(self.rec.image_shape)
            if got is None:  # every buffer in flight
                return
            slot, canvas = got
            self.rec.image(out=canvas)
            token = next(_TOKENS)
            self.publications[token] = (self.pending_times, self.work_time + time.perf_counter() - t0)
            markers = self.rec.crossing if self.srv.markers else None
            pub.submit(slot, self._value("ReconPVAName"), markers=markers, n=self.rec.width,
                       nz=self.rec.height, token=token, line_value=self.rec.peak)
        except TomostreamError as exc:  # the publishing process cannot start here
            self.srv.publisher_failed(exc)
            return
        self.publish_cost = time.perf_counter() - t0
        self.work_time = 0.0
        self.pending_times = []
        self.dirty = False
        self.last_publish = time.monotonic()
        self._collect()

    def _collect(self, timeout: float = 0.0) -> None:
        """Record the publications finished: latency, ReconTime, failures in ReconStatus."""
        for done in self.srv.publisher.results(timeout):
            times, work = self.publications.pop(done.token, ([], 0.0))
            if done.error is not None:
                self.srv.status(f"Running: cannot publish the slices: {done.error}")
            else:
                self.srv.latency.add(times, done.time)
            self.srv.set_pvs({"ReconTime": round(work + done.seconds, 6)})

    def _maybe_report(self) -> None:
        if time.monotonic() - self.last_status >= STATUS_PERIOD:
            self._report_counters()
            waiting = self._waiting_for()
            if waiting != self.waiting:
                self.srv.status(f"Running: waiting for {waiting}" if waiting else
                                 f"Running: connected, reconstructing from {self.image.channel}")
            self.waiting = waiting

    def _waiting_for(self) -> str | None:
        """What the session still needs before it can reconstruct, if anything."""
        down = self.ca_down.copy()  # one step under the GIL; CA threads change the set
        if down:
            return ", ".join(sorted(down)) + " (CA)"
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
        self.srv.set_pvs(values)
        self.last_status = time.monotonic()
