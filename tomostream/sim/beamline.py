"""SimBeamline: a simulated TomoScan streaming instrument on real EPICS traffic.

One object owns

- the TomoScan streaming IOC (:class:`~tomostream.sim.ioc.TomoScanStreamIOC`, caproto, in an
  IOC thread on its own CA port),
- a PV Access server with the detector image channel ``<plugin_prefix>Image`` and the
  channels ``<pva_prefix>StreamDarkFields``, ``StreamFlatFields`` and ``StreamTheta``,
- the acquisition thread that rotates the simulated stage and streams frames at the frame
  rate, paced by a monotonic clock (it sleeps until each frame is due; no busy wait),
- a ring buffer of recent projections and a writer thread for captures (DXfiles),
- the sample stages and the optics (:mod:`tomostream.sim.stages`: motor records and an
  mctoptics IOC, served by the same IOC thread); the projections follow them.

See :mod:`tomostream.sim.scan` for how uniqueIds and angles relate, and
:mod:`tomostream.sim.detector` for how frames are made.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import BadParameter, CaptureError, TomostreamError
from ..io.capture import circular_buffer_path
from ..io.dxfile import check_directory, check_file_name, next_capture_path
from ..ioc import IocThread
from ..pva.fields import field_pv, theta_pv
from ..pva.ntnda import restamp, to_ntnda
from ..pva.scatter import plugin_prefixes
from ..pva.server import PvaChannels
from ..unique_ids import unique_id
from .detector import BINNINGS, DetectorOptions, FrameSource
from .files import FIELD_DATASETS, FIELD_FILES, add_fields, write_fields, write_projections
from .ioc import TomoScanStreamIOC
from .scan import SCAN_TYPES, Inclusion, angle_table
from .stages import SampleStages, StageOptions

log = logging.getLogger(__name__)

MAX_FPS = 10_000.0
RING_MB = 256.0
STATUS_PERIOD = 0.25   # [s] between counter / status updates sent to the IOC


#: StreamMessage when no capture or retake is running; anything else makes TomoScan skip one.
IDLE = "Done"


@dataclass
class _Capture:
    """An armed capture: frames gathered by the acquisition thread."""

    num: int
    path: Path          # main file <FilePath>/<base>
    future: Future
    pre: list = field(default_factory=list)
    frames: list = field(default_factory=list)
    stop: bool = False


@dataclass
class _Retake:
    kind: str           # "dark" or "flat"
    count: int
    future: Future
    frames: list = field(default_factory=list)


class SimBeamline:
    """A simulated TomoScan streaming beamline: caproto IOC + PVA detector + captures.

    Parameters
    ----------
    prefix : str
        TomoScan PV prefix, e.g. ``2bmb:TomoScanStream:``.
    plugin_prefix : str
        The detector's PVA plugin prefix; images on ``plugin_prefix + "Image"``.
    image_plugins : int
        NDPluginPva plugins the frames are spread over, in turn, as an NDPluginScatter in front
        of them does; their prefixes count up from ``plugin_prefix``'s number (``2bmSP1:Pva1:``,
        ``2bmSP1:Pva2:``, ...), each serving its ``Image`` channel.
    width, height : int [pixels]
        Frame size (multiples of 4, up to 4096).
    fps : float [frames/s]
        Frame rate (ExposureTime = 1/fps).
    step : float [degrees]
        RotationStep.
    ca_port : int
        Channel Access search port of the IOC (0 = EPICS_CA_SERVER_PORT or 5064).
    data_dir : path, optional
        Initial FilePath for captures.
    pva_prefix : str, optional
        PvaStreamPVPrefix (prefix of the dark/flat/theta channels); ``prefix`` by default.
    num_angles : int
        Initial NumAngles (frames per scan).
    scan_type : {"continuous", "backforth"}
    sweep : int, optional
        Frames per back-and-forth sweep (180 degrees by default).
    first_projid : int
        uniqueId of the first frame the detector streams.
    wrap_unique_id : bool
        Wrap uniqueId at 65535 (to 0) like 16-bit detector counters.
    num_dark, num_flat : int
        Frames averaged into a dark / flat field.
    ring_size : int, optional
        Capacity of the circular buffer (the most StreamPreCount may ask); by default what fits
        in 256 MiB (at most 2000).
    field_copy_delay : float [s]
        How long the field-copy thread of a capture waits before it copies ``dark_fields.h5`` /
        ``flat_fields.h5`` and adds ``/exchange/data_dark`` / ``data_white`` to the capture's
        files. TomoScan's thread may still run after StreamCapture reads Done; a delay
        reproduces that for readers that must wait for complete files.
    dtype : {"uint16", "uint8", "float32"}
    photons, zingers, center, column_errors, read_noise, intensity, cache_mb, seed
        Detector options, see :class:`~tomostream.sim.detector.DetectorOptions`.
    inclusion : {"grow", "move"} or Inclusion or None
        The part of the sample that changes during each scan.
    interfaces : sequence of str, optional
        Addresses the IOC binds (``EPICS_CAS_INTF_ADDR_LIST``, else loopback, by default); the
        PVA channels bind ``EPICS_PVAS_INTF_ADDR_LIST``.
    write_hosts : sequence of str, optional
        Hosts (names or IP addresses) allowed to write the TomoScan PVs; every host may read.
        None: no limit.
    stages : StageOptions, optional
        The sample stages and optics served beside the TomoScan IOC (2-BM's names by default);
        at their start positions and lens the frames are those of a beamline without them.
    """

    def __init__(self, prefix: str = "2bmb:TomoScanStream:", plugin_prefix: str = "2bmSP1:Pva1:",
                 width: int = 512, height: int = 512, fps: float = 200.0, step: float = 0.5,
                 ca_port: int = 0, data_dir: str | Path | None = None, *, pva_prefix: str | None = None,
                 num_angles: int = 1500, scan_type: str = "continuous", sweep: int | None = None,
                 first_projid: int = 1, wrap_unique_id: bool = False, num_dark: int = 10,
                 num_flat: int = 10, ring_size: int | None = None, dtype: str = "uint16",
                 photons: float = 0.0, zingers: float = 0.0, center: float | None = None,
                 read_noise: float = 2.0, intensity: float | None = None, cache_mb: float = 512.0,
                 inclusion: str | Inclusion | None = "grow", seed: int = 0,
                 interfaces: Sequence[str] | None = None, write_hosts: Sequence[str] | None = None,
                 image_plugins: int = 1, field_copy_delay: float = 0.0, column_errors: float = 0.0,
                 stages: StageOptions | None = None):
        if scan_type not in SCAN_TYPES:
            raise BadParameter(f"scan_type={scan_type!r} is not one of {SCAN_TYPES}")
        if num_dark < 1 or num_flat < 1:
            raise BadParameter(f"num_dark={num_dark}, num_flat={num_flat} must be at least 1")
        if isinstance(inclusion, str):
            inclusion = _named_inclusion(inclusion, width, height, num_angles)
        self.options = DetectorOptions(width=width, height=height, dtype=dtype, intensity=intensity,
                                       photons=photons, read_noise=read_noise, zingers=zingers,
                                       center=center, inclusion=inclusion,
                                       cache_mb=cache_mb, seed=seed, column_errors=column_errors)
        self.source = FrameSource(self.options)
        self.stages = SampleStages(stages or StageOptions())
        self._refresh: threading.Thread | None = None   # caches the frames of a new pose
        self._prebuilt_pose = self.source.cached_pose   # the pose of the NTNDArrays in _prebuilt
        self.prefix = prefix
        self.plugin_prefix = plugin_prefix
        self.pva_prefix = prefix if pva_prefix is None else pva_prefix
        #: The detector's image channels: one per NDPluginPva plugin, frames in turn.
        self.image_channels = [p + "Image" for p in plugin_prefixes(plugin_prefix, image_plugins)]
        self.image_channel = self.image_channels[0]
        self.dark_channel = self.pva_prefix + "StreamDarkFields"
        self.flat_channel = self.pva_prefix + "StreamFlatFields"
        self.theta_channel = self.pva_prefix + "StreamTheta"
        self.ca_port = int(ca_port)
        self.interfaces = None if interfaces is None else list(interfaces)
        self.write_hosts = None if write_hosts is None else list(write_hosts)
        self.sweep = sweep
        self.wrap_unique_id = bool(wrap_unique_id)
        self.num_dark, self.num_flat = int(num_dark), int(num_flat)
        frame_bytes = width * height * self.source.dtype.itemsize
        fit = int(min(2000, max(1, RING_MB * 2**20 // frame_bytes)))
        self.ring_size = int(ring_size) if ring_size else fit
        self._initial = {"RotationStep": float(step), "NumAngles": int(num_angles),
                         "StreamScanType": scan_type, "FirstProjid": int(first_projid),
                         "ExposureTime": 1.0 / float(fps), "PvaStreamPVPrefix": self.pva_prefix,
                         "PvaPluginPVPrefix": plugin_prefix,
                         "FilePath": str(data_dir) if data_dir is not None else ""}
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self.set_fps(fps)
        self._next_uid = int(first_projid)
        self._binning = 1
        self._lock = threading.Lock()              # ring, capture, retake, binning
        self._ring: collections.deque = collections.deque(maxlen=self.ring_size)
        self._capture: _Capture | None = None
        self._retake: _Retake | None = None
        self._abort = threading.Event()
        self._scan_thread: threading.Thread | None = None
        self._prepare_lock = threading.Lock()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="sim-capture")
        self._copier = ThreadPoolExecutor(1, thread_name_prefix="sim-field-copy")
        self.field_copy_delay = float(field_copy_delay)
        self._stopping = threading.Event()
        #: what StreamMessage shows: IDLE, or the capture / retake running
        self._activity = IDLE
        self._dark = self._flat = None
        self._fields: dict[str, np.ndarray] = {}   # frames of the current dark and flat
        self._theta = angle_table(scan_type, 0.0, step, num_angles, sweep)
        self.ioc = TomoScanStreamIOC(prefix, controller=self, ring_size=self.ring_size)
        self._ioc_thread: IocThread | None = None
        self.channels: PvaChannels | None = None
        self._pva_lock = threading.Lock()          # channels, _down, _last_pv
        self._down: set[str] = set()               # channels not served now (stop_pva)
        self._last_pv: dict = {}
        #: NTNDArrays of frames that repeat unchanged, by cached angle (see _frame_pv)
        self._prebuilt: dict[float, object] = {}
        #: frames published since start (all types) and time of the last one [monotonic s]
        self.frames_published = 0
        self.total_captured = 0

    # ------------------------------------------------------------------ life cycle
    def start(self, timeout: float = 10.0) -> SimBeamline:
        """Serve the PVA channels and the IOC; return when both answer."""
        self._take_fields()
        blank = np.zeros((self.options.height, self.options.width), self.source.dtype)
        self._last_pv = {**{name: to_ntnda(blank, 0) for name in self.image_channels},
                         self.dark_channel: field_pv(self._dark),
                         self.flat_channel: field_pv(self._flat),
                         self.theta_channel: theta_pv(self._theta)}
        self.channels = PvaChannels()
        for name, pv in self._last_pv.items():
            self.channels.add(name, pv)
        self._ioc_thread = IocThread({**self.ioc.pvdb, **self.stages.pvdb}, port=self.ca_port,
                                     interfaces=self.interfaces,
                                     name=f"sim-ioc {self.prefix}", write_hosts=self.write_hosts)
        try:
            self._ioc_thread.start(timeout)
            deadline = time.monotonic() + timeout
            while self.ioc._queue is None:         # the update queue runs in the IOC loop
                if time.monotonic() > deadline:
                    raise TimeoutError("the simulated IOC did not start its update queue")
                time.sleep(0.01)
            self._ioc_thread.run_coroutine(self.ioc.update(self._initial), timeout)
        except BaseException:
            self.stop()
            raise
        threading.Thread(target=self._prepare, args=(self._theta,), name="sim-prepare",
                         daemon=True).start()
        log.info("simulated beamline %s serving %s", self.prefix, ", ".join(self.image_channels))
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Abort any scan, finish pending capture writes, stop serving and free the ports."""
        self._abort.set()
        self._stopping.set()
        if self._scan_thread is not None:
            self._scan_thread.join(timeout)
        self._writer.shutdown(wait=True)
        self._copier.shutdown(wait=True)
        if self._ioc_thread is not None:
            self._ioc_thread.stop(timeout)
            self._ioc_thread = None
        if self.channels is not None:
            self.channels.stop()
            self.channels = None

    def __enter__(self) -> SimBeamline:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ PVA faults
    def stop_pva(self, channels: Sequence[str] | None = None) -> None:
        """Take PV Access channels away, as a crashed or restarting detector IOC does.

        Parameters
        ----------
        channels : sequence of str, optional
            Names of the channels to remove (e.g. ``[sim.dark_channel]``); None removes all of
            them (images, dark, flat and theta), as a detector IOC that restarts does. The
            server itself keeps running: a second pvapy server started in one process was
            found unreliably afterwards. The detector keeps running: frames taken meanwhile
            are not delivered (their uniqueIds are skipped), new dark, flat and angle tables
            are kept and served by :meth:`start_pva`.
        """
        with self._pva_lock:
            for name in (self._last_pv if channels is None else channels):
                if name not in self._last_pv:
                    raise BadParameter(f"{name!r} is not a channel of this beamline")
                if name not in self._down:
                    self.channels.remove(name)
                    self._down.add(name)

    def start_pva(self) -> None:
        """Serve again, with their latest values, the channels :meth:`stop_pva` took away."""
        with self._pva_lock:
            for name in sorted(self._down):
                self.channels.add(name, self._last_pv[name])
            self._down.clear()

    def _publish(self, name: str, pv) -> bool:
        """Post ``pv`` on channel ``name``; whether it was served (not taken away by stop_pva)."""
        with self._pva_lock:
            self._last_pv[name] = pv
            if name in self._down:
                return False
            self.channels.update(name, pv)
            return True

    @property
    def scanning(self) -> bool:
        return self._scan_thread is not None and self._scan_thread.is_alive()

    @property
    def theta(self) -> np.ndarray:
        """Angle table last published on StreamTheta [degrees]."""
        return self._theta

    @property
    def dark(self) -> np.ndarray:
        """Dark field last published (float32, binned)."""
        return self._dark

    @property
    def flat(self) -> np.ndarray:
        """Flat field last published (float32, binned)."""
        return self._flat

    # ------------------------------------------------------------------ controller API (IOC)
    def set_fps(self, fps: float) -> None:
        """Frame rate [frames/s], 0 < fps <= 10000 (ExposureTime = 1/fps)."""
        if not 0 < fps <= MAX_FPS:
            raise BadParameter(f"frame rate {fps} frames/s must be in (0, {MAX_FPS:g}]")
        self.fps = float(fps)
        self._requests.put(("fps", self.fps))

    def set_first_projid(self, value: int) -> None:
        if self.scanning:
            raise BadParameter(f"FirstProjid={value}: cannot change during a scan")
        if not 0 <= value < 2**31:
            raise BadParameter(f"FirstProjid={value} must be in 0..{2**31 - 1}")
        self._next_uid = value

    def set_binning(self, binning: int) -> None:
        if binning not in BINNINGS:
            raise BadParameter(f"StreamBinning={binning}x is not one of {BINNINGS}")
        with self._lock:
            if self._capture is not None:
                raise BadParameter(f"StreamBinning={binning}x: cannot change during a capture")
            if self._retake is not None:
                raise BadParameter(f"StreamBinning={binning}x: cannot change during a retake")
            changed = binning != self._binning
            self._binning = binning
        if changed and not self.scanning:
            self._publish_fields()

    def start_scan(self) -> Future:
        """Start a scan with the IOC's settings; the future completes when it ends."""
        if self.scanning:
            raise BadParameter("StartScan: a scan is already running")
        settings = {k: self.ioc.value(k) for k in
                    ("RotationStart", "RotationStep", "NumAngles", "StreamScanType")}
        theta = angle_table(settings["StreamScanType"], settings["RotationStart"],
                            settings["RotationStep"], settings["NumAngles"], self.sweep)
        done: Future = Future()
        self._abort.clear()
        self._scan_thread = threading.Thread(target=self._scan, args=(theta, done),
                                             name=f"sim-scan {self.prefix}", daemon=True)
        self._scan_thread.start()
        return done

    def abort(self) -> None:
        self._abort.set()

    def put(self, suffix: str, value) -> Future:
        """Write ``prefix + suffix`` through the IOC, as a client put would (validated, busy
        records included); the future completes with the put."""
        channel = self.ioc.pvdb[self.prefix + suffix]
        return asyncio.run_coroutine_threadsafe(channel.write(value), self._ioc_thread.loop)

    def retake(self, kind: str) -> Future:
        """Retake dark or flat fields while rotating, as TomoScan does (skipped unless idle)."""
        name = "StreamRetakeDark" if kind == "dark" else "StreamRetakeFlat"
        if not self.scanning:
            raise BadParameter(f"{name}: needs a running scan (StartScan)")
        future: Future = Future()
        activity = f"Capturing {kind} fields"
        with self._lock:
            busy = self._activity
            if busy == IDLE:
                self._activity = activity
                self._retake = _Retake(kind, self.num_dark if kind == "dark" else self.num_flat, future)
        if busy != IDLE:
            return _skipped(name, busy)
        self.ioc.post({"StreamMessage": activity})
        return future

    def capture(self) -> Future:
        """Capture as TomoScan does: the next StreamNumCapture projections to ``<base>``, the
        circular buffer's frames (at most StreamPreCount, all from before now) to
        ``circular_buffer_<base>``; skipped unless StreamMessage reads Done.

        The future completes with the main file's path once both files are written; the dark
        and flat fields are added afterwards by the field-copy thread.
        """
        directory = str(self.ioc.value("FilePath")).strip()
        file_name = str(self.ioc.value("FileName")).strip()
        check_directory(directory)
        check_file_name(file_name)
        num = int(self.ioc.value("StreamNumCapture"))
        pre_count = int(self.ioc.value("StreamPreCount"))
        path = next_capture_path(directory, file_name)   # the HDF5 plugin's next file
        future: Future = Future()
        with self._lock:
            busy = self._activity
            if busy == IDLE:
                self._activity = "Capturing projections"
                # the circular buffer stops filling; it restarts empty after the capture
                pre = list(self._ring)[-pre_count:] if pre_count else []
                self._ring.clear()
                self._capture = _Capture(num, path, future, pre=pre)
        if busy != IDLE:
            return _skipped("StreamCapture", busy)
        self.ioc.post({"StreamNumCaptured": 0, "StreamPreCounted": 0,
                       "StreamMessage": "Capturing projections"})
        return future

    def stop_capture(self) -> None:
        with self._lock:
            if self._capture is not None:
                self._capture.stop = True
        if not self.scanning:
            self._finish_capture("capture stopped")

    def sync(self) -> None:
        """Rebroadcast theta; during a scan, apply a changed RotationStep from now on."""
        if self.scanning:
            self._requests.put(("sync", None))
        else:
            self._publish_theta(self._theta)

    # ------------------------------------------------------------------ publishing
    def _take_fields(self) -> None:
        """Take dark and flat frames at the current binning; their averages are the fields."""
        for kind, make, count in (("dark", self.source.dark_frame, self.num_dark),
                                  ("flat", self.source.flat_frame, self.num_flat)):
            self._fields[kind] = np.stack([make(self._binning) for _ in range(count)])
        self._dark = np.mean(self._fields["dark"], axis=0, dtype=np.float32)
        self._flat = np.mean(self._fields["flat"], axis=0, dtype=np.float32)

    def _publish_fields(self) -> None:
        """Take new fields, broadcast them and save them to the field files (writer thread)."""
        self._take_fields()
        self._submit(self._writer, self._save_fields)
        self._publish(self.dark_channel, field_pv(self._dark))
        self._publish(self.flat_channel, field_pv(self._flat))

    def _publish_theta(self, theta: np.ndarray) -> None:
        self._theta = theta
        self._publish(self.theta_channel, theta_pv(theta))

    def _prepare(self, theta: np.ndarray, report: bool = True) -> None:
        def progress(done: int, total: int) -> None:
            self.ioc.post({"ScanStatus": f"Computing projections {done}/{total}"})

        with self._prepare_lock:
            self.source.pose = self.stages.pose()
            self.source.prepare(theta, progress if report else None)

    def _follow_stages(self, theta: np.ndarray) -> None:
        """Give the detector the stages' pose; once they stand still in a new one, cache its
        frames in the background (meanwhile frames are computed one by one). NTNDArrays built
        for another pose are not sent again."""
        self.source.pose = pose = self.stages.pose()
        if self.source.cached_pose != self._prebuilt_pose:
            self._prebuilt.clear()
            self._prebuilt_pose = self.source.cached_pose
        if (pose != self.source.cached_pose and self.stages.settled
                and (self._refresh is None or not self._refresh.is_alive())):
            self._refresh = threading.Thread(target=self._prepare, args=(theta, False), daemon=True,
                                             name="sim-prepare-pose")
            self._refresh.start()

    # ------------------------------------------------------------------ acquisition thread
    def _scan(self, theta: np.ndarray, done: Future) -> None:
        try:
            message = self._run_scan(theta)
            done.set_result(message)
        except Exception as exc:            # the scan ends; the IOC reports why
            log.exception("scan failed")
            self.ioc.post({"ScanStatus": "Failed", "StreamMessage": f"scan failed: {exc}"})
            done.set_exception(exc if isinstance(exc, TomostreamError) else CaptureError(str(exc)))
        finally:
            with self._lock:
                retake, self._retake = self._retake, None
            if retake is not None and not retake.future.done():
                self._set_activity(IDLE)
                retake.future.set_exception(BadParameter(f"retake of {retake.kind} stopped: scan ended"))
            self._finish_capture("scan ended")

    def _run_scan(self, theta: np.ndarray) -> str:
        self.ioc.post({"ScanStatus": "Preparing frames", "FrameType": "Projection"})
        self._prepare(theta)
        first = self._next_uid
        with self._lock:
            self._ring.clear()
        self._publish_fields()                     # binned as self._binning now
        self._publish_theta(theta)
        self.ioc.post({"FirstProjid": first, "ScanStatus": "Scanning"})
        log.info("%s: scan started, %d frames from uniqueId %d", self.prefix, theta.size, first)
        k, k_ref, t_ref = 0, 0, time.monotonic()
        fps = self.fps
        next_status = t_ref
        frame_type = "Projection"
        fields_binning = self._binning
        while k < theta.size and not self._abort.is_set():
            while not self._requests.empty():
                what, value = self._requests.get_nowait()
                if what == "fps":
                    fps, k_ref, t_ref = value, k, time.monotonic()
                elif what == "sync":
                    theta = self._resync(theta, k)
            due = t_ref + (k - k_ref) / fps
            wait = due - time.monotonic()
            if wait > 0 and self._abort.wait(wait):
                break
            uid = int(unique_id(first, k, self.wrap_unique_id))
            with self._lock:
                retake, binning = self._retake, self._binning
            if binning != fields_binning:          # binned dark and flat go with binned frames
                self._publish_fields()
                fields_binning = binning
            if retake is not None:
                if frame_type == "Projection":
                    frame_type = "DarkField" if retake.kind == "dark" else "FlatField"
                    # as at a beamline, FrameType changes (and is served) before the
                    # detector takes the first frame of the new type
                    self.ioc.post({"FrameType": frame_type}, timestamp=time.time())
                    self._ioc_thread.run_coroutine(self.ioc.flush(), timeout=2.0)
                make = self.source.dark_frame if retake.kind == "dark" else self.source.flat_frame
                frame = make(binning)
                retake.frames.append(frame)
                pv = to_ntnda(frame, uid, time.time())
            else:
                self._follow_stages(theta)
                frame = self.source.projection(theta[k], k, binning)
                pv = self._frame_pv(frame, uid, self.source.repeat_key(theta[k], k, binning))
            self._publish(self.image_channels[self.frames_published % len(self.image_channels)], pv)
            self.frames_published += 1
            if retake is not None:
                if len(retake.frames) >= retake.count:
                    self._end_retake(retake)
                    frame_type = "Projection"
            else:
                self._record(uid, float(theta[k]), frame)
            k += 1
            now = time.monotonic()
            if now >= next_status:
                next_status = now + STATUS_PERIOD
                self._post_status(k, theta, uid)
        self._next_uid = int(unique_id(first, k, self.wrap_unique_id))
        aborted = k < theta.size
        self._post_status(k, theta, int(unique_id(first, k - 1, self.wrap_unique_id)))
        message = f"scan {'aborted' if aborted else 'done'} after {k} of {theta.size} frames"
        log.info("%s: %s", self.prefix, message)
        self.ioc.post({"ScanStatus": "Aborted" if aborted else "Done"})
        return message

    def _frame_pv(self, frame: np.ndarray, uid: int, key: float | None):
        """NTNDArray of projection ``frame``. A frame that repeats unchanged (``key``: its cached
        angle) is built once and then only given a new uniqueId and time, as a detector's
        fixed-size buffers are: copying 8 MB per 2048^2 frame capped the rate near 230 frames/s."""
        now = time.time()
        if key is None:
            return to_ntnda(frame, uid, now)
        pv = self._prebuilt.get(key)
        if pv is None:
            if len(self._prebuilt) >= self.source.capacity:   # at most one cache's worth
                self._prebuilt.clear()
            pv = self._prebuilt[key] = to_ntnda(frame, uid, now)
            return pv
        return restamp(pv, uid, now)

    def _resync(self, theta: np.ndarray, k: int) -> np.ndarray:
        """Angle table with the current RotationStep applied from frame ``k`` on; publish it."""
        step = float(self.ioc.value("RotationStep"))
        if k > 0 and k < theta.size:
            rest = angle_table(str(self.ioc.value("StreamScanType")), float(theta[k - 1]) + step, step,
                               theta.size - k, self.sweep)
            theta = np.concatenate([theta[:k], rest])
            threading.Thread(target=self._prepare, args=(rest,), daemon=True).start()
        self._publish_theta(theta)
        log.info("%s: theta rebroadcast (%d angles)", self.prefix, theta.size)
        return theta

    def _end_retake(self, retake: _Retake) -> None:
        frames = np.stack(retake.frames)
        field_ = np.mean(frames, axis=0, dtype=np.float32)
        self._fields[retake.kind] = frames
        if retake.kind == "dark":
            self._dark = field_
        else:
            self._flat = field_
        with self._lock:
            self._retake = None
        self.ioc.post({"FrameType": "Projection"}, timestamp=time.time())
        self._publish(self.dark_channel if retake.kind == "dark" else self.flat_channel, field_pv(field_))
        log.info("%s: %s field retaken from %d frames", self.prefix, retake.kind, len(frames))

        def save() -> None:
            self._save_fields((retake.kind,))
            self._set_activity(IDLE)
            retake.future.set_result(None)

        self._submit(self._writer, save)

    def _save_fields(self, kinds=tuple(FIELD_DATASETS)) -> None:
        """Write the current fields to ``dark_fields.h5`` / ``flat_fields.h5`` in FilePath, as
        TomoScan does at a retake; without a usable FilePath, say so in the log only."""
        try:
            directory = check_directory(str(self.ioc.value("FilePath")).strip())
            for kind in kinds:
                write_fields(directory, kind, self._fields[kind])
        except TomostreamError as exc:
            log.warning("%s: fields not saved: %s", self.prefix, exc)

    def _set_activity(self, activity: str) -> None:
        with self._lock:
            self._activity = activity
        self.ioc.post({"StreamMessage": activity})

    def _submit(self, executor: ThreadPoolExecutor, work, *args) -> None:
        """Run ``work`` on ``executor``, or here once it has been shut down (at stop)."""
        try:
            executor.submit(work, *args)
        except RuntimeError:
            work(*args)

    def _record(self, uid: int, angle: float, frame: np.ndarray) -> None:
        """Feed an armed capture, else the circular buffer (which is paused during a capture)."""
        entry = (uid, angle, frame)
        with self._lock:
            cap = self._capture
            if cap is None:
                self._ring.append(entry)
            else:
                cap.frames.append(entry)
                full = len(cap.frames) >= cap.num or cap.stop
        if cap is not None and full:
            self._finish_capture("capture complete")

    def _post_status(self, k: int, theta: np.ndarray, uid: int) -> None:
        angle = float(theta[min(k, theta.size) - 1]) if k else float(theta[0])
        values = {"StreamCBStatusMessage": f"{k}/{theta.size} frames, uniqueId {uid}, angle {angle:.2f}"}
        with self._lock:
            if self._capture is not None:
                values["StreamNumCaptured"] = len(self._capture.frames)
            else:   # the circular buffer's fill, as CBCurrentQtyRBV
                values["StreamPreCounted"] = self.pre_counted
        self.ioc.post(values)

    @property
    def pre_counted(self) -> int:
        """Frames the circular buffer holds now for a capture (at most StreamPreCount)."""
        return min(len(self._ring), int(self.ioc.value("StreamPreCount")))

    # ------------------------------------------------------------------ captures
    def _finish_capture(self, reason: str) -> None:
        """Detach the armed capture (if any) and hand it to the writer thread."""
        with self._lock:
            cap, self._capture = self._capture, None
        if cap is None:
            return
        if not cap.frames and reason == "scan ended" and not cap.stop:
            with self._lock:                      # the HDF5 plugin waits for the next scan
                if self._capture is None:
                    self._capture = cap
                    return
        if not cap.frames:
            self._set_activity(IDLE)
            cap.future.set_exception(CaptureError(f"StreamCapture: {reason} before any frame was captured"))
            return
        self.ioc.post({"StreamNumCaptured": len(cap.frames)})
        self._submit(self._writer, self._write_capture, cap, reason)

    def _write_capture(self, cap: _Capture, reason: str) -> None:
        """Write the main file, then the circular-buffer file; as TomoScan does, the field-copy
        thread is handed each file as soon as it is written (so the main file may be complete
        before the circular-buffer file exists)."""
        metadata = {"instrument/detector/binning": int(self._binning),
                    "instrument/detector/exposure_time": 1.0 / self.fps}
        try:
            for path, entries in ((cap.path, cap.frames), (circular_buffer_path(cap.path), cap.pre)):
                if not entries:               # an empty circular buffer leaves no file
                    continue
                if path != cap.path:
                    self._set_activity("Capturing circular buffer")
                written = write_projections(path, np.stack([e[2] for e in entries]),
                                            [e[0] for e in entries], [e[1] for e in entries], metadata)
                self._submit(self._copier, self._copy_fields, [written])
        except TomostreamError as exc:
            message = f"StreamCapture failed: {exc}"
            log.error("%s", message)
            self._set_activity(IDLE)
            cap.future.set_exception(CaptureError(message))
            return
        self.total_captured += len(cap.frames) + len(cap.pre)
        log.info("%s: captured %d + %d projections to %s (%s)", self.prefix, len(cap.pre),
                 len(cap.frames), cap.path, reason)
        self.ioc.post({"StreamFileName": cap.path.name, "StreamNumTotalCaptured": self.total_captured})
        self._set_activity(IDLE)
        cap.future.set_result(cap.path)

    def _copy_fields(self, paths: list[Path]) -> None:
        """TomoScan's field-copy thread: after ``field_copy_delay``, ``dark_fields_<base>`` and
        ``flat_fields_<base>`` from the current field files, and the fields into each file."""
        self._stopping.wait(self.field_copy_delay)
        for path in paths:
            try:
                for kind in FIELD_DATASETS:
                    if not (path.parent / FIELD_FILES[kind]).exists():
                        write_fields(path.parent, kind, self._fields[kind])
                add_fields(path)
            except TomostreamError as exc:
                log.error("%s: dark and flat fields not added to %s: %s", self.prefix, path, exc)


def _skipped(name: str, activity: str) -> Future:
    """A command TomoScan ignores because StreamMessage is not Done: its busy record goes back."""
    log.warning("%s skipped: StreamMessage reads %r, not %r", name, activity, IDLE)
    future: Future = Future()
    future.set_result(None)
    return future


def _named_inclusion(name: str, width: int, height: int, num_angles: int) -> Inclusion | None:
    """The inclusion called ``name``: "grow", "move" or "none"."""
    frames = max(1, num_angles // 2)
    if name == "grow":
        return Inclusion.growing(width, height, frames=frames)
    if name == "move":
        r = max(2.0, width / 20)
        return Inclusion(x0=-0.25 * width, y0=0.0, z0=0.1 * height, r0=r, r1=r, x1=0.25 * width,
                         mu=4.0 / width, frames=frames)
    if name in ("none", ""):
        return None
    raise BadParameter(f"inclusion={name!r} is not one of 'grow', 'move', 'none'")
