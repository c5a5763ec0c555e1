"""SimBeamline: a simulated TomoScan streaming instrument on real EPICS traffic.

One object assembles and runs

- the TomoScan streaming IOC (:class:`~tomostream.sim.ioc.TomoScanStreamIOC`, caproto, in an
  IOC thread on its own CA port), whose commands it carries out,
- the PV Access channels of the detector (:mod:`tomostream.sim.channels`): the image channel
  ``<plugin_prefix>Image`` and ``<pva_prefix>StreamDarkFields``, ``StreamFlatFields`` and
  ``StreamTheta``,
- the acquisition thread (:mod:`tomostream.sim.acquisition`) that rotates the simulated stage
  and streams frames at the frame rate,
- the circular buffer and the captures (:mod:`tomostream.sim.capture`), the dark and flat
  fields and their retakes (:mod:`tomostream.sim.fields`), sharing one streaming state
  (:mod:`tomostream.sim.state`),
- the sample stages and the optics (:mod:`tomostream.sim.stages`: motor records and an
  mctoptics IOC, served by the same IOC thread); the projections follow them.

See :mod:`tomostream.sim.scan` for how uniqueIds and angles relate, and
:mod:`tomostream.sim.detector` for how frames are made.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..errors import BadParameter
from ..ioc import IocThread
from ..pva.fields import field_pv, theta_pv
from ..pva.ntnda import to_ntnda
from ..pva.scatter import plugin_prefixes
from ..pva.server import PvaChannels
from .acquisition import Acquisition
from .capture import Recorder
from .channels import DetectorChannels
from .detector import BINNINGS, DetectorOptions, FrameSource
from .fields import Fields
from .ioc import TomoScanStreamIOC
from .scan import SCAN_TYPES, Inclusion, angle_table, named_inclusion
from .stages import SampleStages, StageOptions
from .state import StreamState

log = logging.getLogger(__name__)

RING_MB = 256.0


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
            inclusion = named_inclusion(inclusion, width, height, num_angles)
        self.options = DetectorOptions(width=width, height=height, dtype=dtype, intensity=intensity,
                                       photons=photons, read_noise=read_noise, zingers=zingers,
                                       center=center, inclusion=inclusion,
                                       cache_mb=cache_mb, seed=seed, column_errors=column_errors)
        self.source = FrameSource(self.options)
        self.stages = SampleStages(stages or StageOptions())
        self.prefix = prefix
        self.plugin_prefix = plugin_prefix
        self.pva_prefix = prefix if pva_prefix is None else pva_prefix
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
        self.ioc = TomoScanStreamIOC(prefix, controller=self, ring_size=self.ring_size)
        self._ioc_thread: IocThread | None = None
        self._state = StreamState(self.ioc.post, self.ring_size)
        self._pva = DetectorChannels([p + "Image" for p in plugin_prefixes(plugin_prefix, image_plugins)],
                                     self.pva_prefix, self.source.capacity)
        #: The detector's image channels: one per NDPluginPva plugin, frames in turn.
        self.image_channels = self._pva.image_channels
        self.image_channel = self.image_channels[0]
        self.dark_channel = self._pva.dark_channel
        self.flat_channel = self._pva.flat_channel
        self.theta_channel = self._pva.theta_channel
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="sim-capture")
        self._copier = ThreadPoolExecutor(1, thread_name_prefix="sim-field-copy")
        self._stopping = threading.Event()
        self._fields = Fields(prefix, self.ioc, self.source, self._state, self._pva, self._writer,
                              self.num_dark, self.num_flat)
        self._recorder = Recorder(prefix, self.ioc, self._state, self._fields, self._writer,
                                  self._copier, self._stopping, lambda: 1.0 / self.fps,
                                  field_copy_delay)
        self._acquisition = Acquisition(prefix, self.ioc, self._flush_ioc, self.source, self.stages,
                                        self._state, self._pva, self._fields, self._recorder,
                                        angle_table(scan_type, 0.0, step, num_angles, sweep), fps,
                                        first_projid, self.wrap_unique_id, sweep)

    # ------------------------------------------------------------------ life cycle
    def start(self, timeout: float = 10.0) -> SimBeamline:
        """Serve the PVA channels and the IOC; return when both answer."""
        self._fields.take()
        blank = np.zeros((self.options.height, self.options.width), self.source.dtype)
        self._pva.start({**{name: to_ntnda(blank, 0) for name in self.image_channels},
                         self.dark_channel: field_pv(self.dark),
                         self.flat_channel: field_pv(self.flat),
                         self.theta_channel: theta_pv(self.theta)})
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
        threading.Thread(target=self._acquisition.prepare, args=(self.theta,), name="sim-prepare",
                         daemon=True).start()
        log.info("simulated beamline %s serving %s", self.prefix, ", ".join(self.image_channels))
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Abort any scan, finish pending capture writes, stop serving and free the ports."""
        self._acquisition.abort()
        self._stopping.set()
        self._acquisition.join(timeout)
        self._writer.shutdown(wait=True)
        self._copier.shutdown(wait=True)
        if self._ioc_thread is not None:
            self._ioc_thread.stop(timeout)
            self._ioc_thread = None
        self._pva.stop()

    def __enter__(self) -> SimBeamline:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _flush_ioc(self) -> None:
        """Wait until the IOC has applied every update posted so far."""
        self._ioc_thread.run_coroutine(self.ioc.flush(), timeout=2.0)

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
        self._pva.stop_pva(channels)

    def start_pva(self) -> None:
        """Serve again, with their latest values, the channels :meth:`stop_pva` took away."""
        self._pva.start_pva()

    # ------------------------------------------------------------------ what it serves
    @property
    def channels(self) -> PvaChannels | None:
        """The PV Access server of the detector's channels (None unless started)."""
        return self._pva.server

    @property
    def scanning(self) -> bool:
        return self._acquisition.scanning

    @property
    def fps(self) -> float:
        """Frame rate [frames/s]."""
        return self._acquisition.fps

    @property
    def theta(self) -> np.ndarray:
        """Angle table last published on StreamTheta [degrees]."""
        return self._acquisition.theta

    @property
    def dark(self) -> np.ndarray:
        """Dark field last published (float32, binned)."""
        return self._fields.dark

    @property
    def flat(self) -> np.ndarray:
        """Flat field last published (float32, binned)."""
        return self._fields.flat

    @property
    def frames_published(self) -> int:
        """Frames published since start (all types)."""
        return self._pva.frames_published

    @property
    def total_captured(self) -> int:
        """Frames written by all captures (StreamNumTotalCaptured)."""
        return self._recorder.total_captured

    @property
    def pre_counted(self) -> int:
        """Frames the circular buffer holds now for a capture (at most StreamPreCount)."""
        return self._recorder.pre_counted

    @property
    def field_copy_delay(self) -> float:
        """How long [s] the field-copy thread of a capture waits (see the class docstring)."""
        return self._recorder.field_copy_delay

    @field_copy_delay.setter
    def field_copy_delay(self, delay: float) -> None:
        self._recorder.field_copy_delay = float(delay)

    # ------------------------------------------------------------------ controller API (IOC)
    def set_fps(self, fps: float) -> None:
        """Frame rate [frames/s], 0 < fps <= 10000 (ExposureTime = 1/fps)."""
        self._acquisition.set_fps(fps)

    def set_first_projid(self, value: int) -> None:
        self._acquisition.set_first_projid(value)

    def set_binning(self, binning: int) -> None:
        if binning not in BINNINGS:
            raise BadParameter(f"StreamBinning={binning}x is not one of {BINNINGS}")
        state = self._state
        with state.lock:
            if state.capture is not None:
                raise BadParameter(f"StreamBinning={binning}x: cannot change during a capture")
            if state.retake is not None:
                raise BadParameter(f"StreamBinning={binning}x: cannot change during a retake")
            changed = binning != state.binning
            state.binning = binning
        if changed and not self.scanning:
            self._fields.publish()

    def start_scan(self) -> Future:
        """Start a scan with the IOC's settings; the future completes when it ends."""
        return self._acquisition.start_scan()

    def abort(self) -> None:
        self._acquisition.abort()

    def put(self, suffix: str, value) -> Future:
        """Write ``prefix + suffix`` through the IOC, as a client put would (validated, busy
        records included); the future completes with the put."""
        channel = self.ioc.pvdb[self.prefix + suffix]
        return asyncio.run_coroutine_threadsafe(channel.write(value), self._ioc_thread.loop)

    def retake(self, kind: str) -> Future:
        """Retake dark or flat fields while rotating, as TomoScan does (skipped unless idle)."""
        return self._fields.retake(kind, self.scanning)

    def capture(self) -> Future:
        """Capture as TomoScan does: the next StreamNumCapture projections to ``<base>``, the
        circular buffer's frames (at most StreamPreCount, all from before now) to
        ``circular_buffer_<base>``; skipped unless StreamMessage reads Done.

        The future completes with the main file's path once both files are written; the dark
        and flat fields are added afterwards by the field-copy thread.
        """
        return self._recorder.capture()

    def stop_capture(self) -> None:
        self._recorder.stop_capture(self.scanning)

    def sync(self) -> None:
        """Rebroadcast theta; during a scan, apply a changed RotationStep from now on."""
        self._acquisition.sync()
