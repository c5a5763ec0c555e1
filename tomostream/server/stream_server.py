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
stream connections, and a heartbeat that keeps ``Watchdog`` up while the worker lives (and
drops ``ServerRunning`` at once when it has died), reports the engine's fall-backs after a
device failure, publishes the frame counters while the worker is stuck in a long step, and
returns freed heap memory to the OS (:mod:`.heap`). The
IOC hands accepted writes to the worker through a queue; the worker writes status PVs through
the IOC loop (``IocThread.run_coroutine``). The slices are encoded and served by a child
process (:mod:`tomostream.pva.publish_process`): the worker only writes each image into
shared memory. The detector frames are received by another
(:mod:`tomostream.pva.receive_process`) and reach the worker through shared memory too.

Access: the IOC binds ``interfaces`` and may let only ``write_hosts`` write its PVs
(:mod:`tomostream.ioc.access`).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Mapping, Sequence

from ..errors import TomostreamError
from ..ioc import IocThread
from ..ioc.autosave import Autosave
from ..ioc.tomostream_ioc import TomoStreamIOC
from ..pva.publish_process import InlinePublisher, ProcessPublisher
from ..recon.warmup import warm_up
from .frames import LatencyStats
from .heartbeat import Heartbeat
from .link import ServerLink, SessionConfig
from .session import StreamSession

log = logging.getLogger(__name__)

#: How late a FrameType change may reach us after the frames it concerns [s]: frames are
#: held this long, and a frame within this much of a change of FrameType is not used.
#: FrameType (CA) and frames (PVA) carry the beamline's timestamps, so this need only
#: cover the delivery of one CA update, but on a busy 2-core machine that took over 20 ms
#: (dark frames leaked into the buffer); it adds to the latency of every frame.
FRAME_TYPE_WINDOW = 0.1
#: Keyword defaults of StreamServer -> PV suffix.
DEFAULT_PVS = {
    "tomoscan_prefix": "TomoScanPVPrefix",
    "image_pvap_name": "ImagePVAPName",
    "image_plugins": "ImagePlugins",
    "dark_pva_name": "DarkPVAName",
    "flat_pva_name": "FlatPVAName",
    "theta_pva_name": "ThetaPVAName",
    "recon_pva_name": "ReconPVAName",
}


class StreamServer:
    """TomoStream IOC + streaming ortho-slice reconstruction, in this process.

    ``backend``, ``batch_max``, ``max_rate``, ``queue_size``, ``markers``, ``receive_process``
    and ``frame_type_window`` are read at each StartRecon (:meth:`session_config`): changing
    one of these attributes takes effect at the next.

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
    publish_process : bool
        Publish the slices from a child process (:mod:`tomostream.pva.publish_process`), so
        that encoding 50 MB images never stalls the worker; False: from the worker thread.
    receive_process : bool
        Receive the detector frames in a child process
        (:mod:`tomostream.pva.receive_process`), so that a busy worker never delays them;
        False (or where no child can run): in this process.
    frame_type_window : float [s]
        How late a FrameType change may arrive after the frames it concerns. Frames wait this
        long before use, and frames taken within this time of a FrameType change are skipped,
        so no dark or flat frame enters the reconstruction.
    interfaces : sequence of str, optional
        Addresses the IOC binds (``EPICS_CAS_INTF_ADDR_LIST``, else loopback, by default). The
        PVA server of the slices binds ``EPICS_PVAS_INTF_ADDR_LIST``
        (:func:`tomostream.ioc.access.bind_env` makes both agree).
    write_hosts : sequence of str, optional
        Hosts (names or IP addresses) allowed to write the TomoStream PVs; every host may read
        them. None: no limit.
    autosave : path, optional
        Autosave file (:mod:`tomostream.ioc.autosave`): the settings are restored from it at
        :meth:`start`, after ``defaults`` and before ``overrides``, and written to it on
        change; ReconStatus says what was restored, or why the file was not used. None: no
        autosave.
    overrides : mapping, optional
        Start-up values applied after the autosave restore, so they win over the file (the
        options given on the command line), by keyword or suffix as ``defaults``.
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
    arrival : LatencyStats
        Delays from a frame's timestamp to its arrival in the worker (the transport's share of
        ``latency``), of the current StartRecon.
    receive : LatencyStats
        Delays from a frame's timestamp to its decoding by the image subscriber: the part of
        ``arrival`` spent before the server has the frame (detector, network, PV Access).
    commands : queue.SimpleQueue
        ``(suffix, value)`` of accepted IOC writes, for the worker (and its session).
    stopping : threading.Event
        Set by :meth:`stop`.
    degraded : int
        Device failures (GPU out of memory, CUDA errors) the reconstruction engine answered
        with smaller batches or the CPU; each is reported in ReconStatus.
    autosave : Autosave or None
        The settings file in use (valid after :meth:`start`).
    """

    def __init__(self, prefix: str = "2bmb:TomoStream:", ca_port: int = 0, backend: str = "auto", *,
                 batch_max: int = 64, max_rate: float = 30.0, queue_size: int = 256,
                 markers: bool = True, publish_process: bool = True, receive_process: bool = True,
                 frame_type_window: float = FRAME_TYPE_WINDOW,
                 interfaces: Sequence[str] | None = None, write_hosts: Sequence[str] | None = None,
                 autosave: str | os.PathLike | None = None, overrides: Mapping | None = None,
                 **defaults):
        self.prefix = prefix
        self.ca_port = ca_port
        self.backend = backend
        self.batch_max = int(batch_max)
        self.min_interval = 1.0 / float(max_rate)
        self.queue_size = int(queue_size)
        self.markers = bool(markers)
        self.publish_process = bool(publish_process)
        self.receive_process = bool(receive_process)
        self.frame_type_window = float(frame_type_window)
        self.interfaces = None if interfaces is None else list(interfaces)
        self.write_hosts = None if write_hosts is None else list(write_hosts)
        self.defaults = {DEFAULT_PVS.get(k, k): v for k, v in defaults.items()}
        self.overrides = {DEFAULT_PVS.get(k, k): v for k, v in (overrides or {}).items()}
        self.autosave_path = autosave
        self.autosave: Autosave | None = None
        self.ioc: TomoStreamIOC | None = None
        self._ioc_thread: IocThread | None = None
        self.commands: queue.SimpleQueue = queue.SimpleQueue()
        self.stopping = threading.Event()
        #: Set once the worker has compiled the reconstruction kernels (:meth:`start` waits).
        self.warm = threading.Event()
        self._worker: threading.Thread | None = None
        self._heartbeat: Heartbeat | None = None
        #: Serves ReconPVAName: a ProcessPublisher or an InlinePublisher (valid after start).
        self.publisher: ProcessPublisher | InlinePublisher | None = None
        self._publisher_note = ""
        self._restored_note = ""
        self._session: StreamSession | None = None

    # -- life cycle --------------------------------------------------------------------------
    def start(self) -> StreamServer:
        """Serve the IOC and start the worker; returns when the PVs answer and the worker has
        compiled the reconstruction kernels (ReconStatus says so meanwhile)."""
        self.ioc = TomoStreamIOC(self.prefix, listener=self._on_ioc_write)
        self._ioc_thread = IocThread(self.ioc.pvdb, port=self.ca_port, interfaces=self.interfaces,
                                     name=f"ioc {self.prefix}", write_hosts=self.write_hosts).start()
        if self.defaults:
            self._ioc_thread.run_coroutine(self.ioc.apply(self.defaults))
        self._restored_note = self._restore_settings()
        if self.overrides:
            self._ioc_thread.run_coroutine(self.ioc.apply(self.overrides))
        if self.autosave is not None:
            self.autosave.start()
        self.publisher = self._new_publisher()
        self.stopping.clear()
        self.warm.clear()
        self._worker = threading.Thread(target=self._work, name="tomostream-worker", daemon=True)
        self._worker.start()
        self._heartbeat = Heartbeat(self._worker, lambda: self._session, self.set_pvs, self.status,
                                    self.stopping).start()
        while not self.warm.wait(0.1) and self._worker.is_alive():
            pass
        return self

    def _restore_settings(self) -> str:
        """Restore the autosaved settings; return the note for ReconStatus ("" without autosave)."""
        if self.autosave_path is None:
            return ""
        self.autosave = Autosave(self.ioc, self.autosave_path, on_error=self.status)
        note = self._ioc_thread.run_coroutine(self.autosave.restore())
        log.info("autosave: %s", note)
        return f"; {note}"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop streaming, the worker, the PVA server and the IOC (idempotent)."""
        if self._worker is None:
            return
        self.stopping.set()
        self.commands.put(("stop", None))
        self._worker.join(timeout)
        self._heartbeat.join(timeout)
        self._worker = None
        if self.autosave is not None:
            self.autosave.stop()
        self.publisher.close()
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
    def image_stream(self):
        """The detector image channel's subscriber of the current (or last) StartRecon, None
        before one: its ``channel``, ``counters``, ``queued`` and, when frames are received in a
        child process, that process's ``pid``."""
        session = self._session
        return None if session is None else session.image

    @property
    def reconstructor(self):
        """The reconstruction engine of the current (or last) StartRecon (its ``backend``,
        ``params``, ``filled``), None before one has taken a frame."""
        session = self._session
        return None if session is None else session.rec

    @property
    def center_estimated_at(self) -> int | None:
        """Frames used (FramesUsed) when CenterEstimate was last computed; None before."""
        session = self._session
        inputs = None if session is None else session.axis.inputs
        return None if inputs is None else inputs[1]

    @property
    def degraded(self) -> int:
        """Device failures the engine answered with smaller batches or the CPU, since the last
        :meth:`start`."""
        return 0 if self._heartbeat is None else self._heartbeat.degraded

    @property
    def running(self) -> bool:
        """Whether the worker thread is alive."""
        return self._worker is not None and self._worker.is_alive()

    @property
    def latency(self) -> LatencyStats:
        """Frame-to-publication delays of the current (or last) StartRecon."""
        return self._stats("latency")

    @property
    def arrival(self) -> LatencyStats:
        """Delays from a frame's timestamp to the worker, of the current (or last) StartRecon."""
        return self._stats("arrival")

    @property
    def receive(self) -> LatencyStats:
        """Delays from a frame's timestamp to its decoding, of the current (or last) StartRecon."""
        return self._stats("receive")

    def _stats(self, name: str) -> LatencyStats:
        session = self._session
        return LatencyStats() if session is None else getattr(session, name)

    def session_config(self) -> SessionConfig:
        """The settings the next StartRecon runs with (the attributes as they are now)."""
        return SessionConfig(backend=self.backend, batch_max=self.batch_max,
                             min_interval=self.min_interval, queue_size=self.queue_size,
                             markers=self.markers, receive_process=self.receive_process,
                             frame_type_window=self.frame_type_window)

    def _link(self) -> ServerLink:
        def set_frame_size(width: int, height: int) -> None:
            self.ioc.frame_width, self.ioc.frame_height = width, height

        return ServerLink(value=self.ioc.value, set_pvs=self.set_pvs, status=self.status,
                          set_frame_size=set_frame_size, commands=self.commands,
                          stopping=self.stopping, publisher=lambda: self.publisher,
                          publisher_failed=self.publisher_failed)

    # -- IOC side ----------------------------------------------------------------------------
    def _on_ioc_write(self, suffix: str, value) -> None:
        """IOC listener (runs in the IOC loop): hand the write to the worker."""
        self.commands.put((suffix, value))

    def set_pvs(self, values: dict, validate: bool = False) -> None:
        """Write ``{suffix: value}`` as the server (no validation), from any thread but the
        IOC loop; waits until written. Does nothing once the IOC has stopped. ``validate``:
        write as a client would, through the PVs' checks, and hand the change to the worker."""
        try:
            self._ioc_thread.run_coroutine((self.ioc.apply if validate else self.ioc.update)(values))
        except (RuntimeError, TimeoutError, AttributeError) as exc:  # IOC stopping
            log.debug("could not update %s: %s", list(values), exc)

    def status(self, text: str) -> None:
        """Show ``text`` in ReconStatus (and the log), from any thread but the IOC loop."""
        log.info("%s", text)
        self.set_pvs({"ReconStatus": text[:255]})

    # -- worker ------------------------------------------------------------------------------
    def _warm_up(self) -> None:
        """Compile the reconstruction kernels before any frame comes (a StartRecon waits),
        so the first frames of a scan are not dropped while they compile."""
        self.status("Starting: compiling the reconstruction kernels (seconds on the first run "
                    "on this machine, then cached)")
        try:
            backend, seconds = warm_up(self.backend)
        except Exception as exc:  # the session will meet it again and report it there
            log.exception("warming up the reconstruction engine failed")
            note = f" (warming up the {self.backend} engine failed: {type(exc).__name__}: {exc})"
        else:
            log.info("reconstruction kernels (%s) ready in %.2f s", backend, seconds)
            note = ""
        self.set_pvs({"ReconStatus": ("Stopped: ready" + self._restored_note + self._publisher_note
                                      + note)[:255]})
        self.warm.set()

    def _work(self) -> None:
        self._warm_up()
        while not self.stopping.is_set():
            suffix, value = self.commands.get()
            if suffix == "StartRecon":
                try:
                    self._session = StreamSession(self.session_config(), self._link())
                    self._session.run()
                except Exception as exc:  # never leave StartRecon busy
                    log.exception("streaming stopped by an error")
                    self.status(f"Stopped: error {type(exc).__name__}: {exc}")
                finally:
                    self._finish_start_recon()

    def _finish_start_recon(self) -> None:
        """Complete the StartRecon put; a slow or stopping IOC loop must not end the worker."""
        try:
            self._ioc_thread.run_coroutine(self.ioc.control.finished())
        except (RuntimeError, TimeoutError) as exc:
            log.warning("could not complete StartRecon: %s", exc)

    def _new_publisher(self) -> ProcessPublisher | InlinePublisher:
        """The publishing process, or (asked for, or where it cannot start) the worker thread;
        the reason for the latter goes into ``self._publisher_note``."""
        self._publisher_note = ""
        if self.publish_process:
            try:
                return ProcessPublisher().start()
            except TomostreamError as exc:
                self._publisher_note = f" (slices published from the worker thread: {exc})"
                log.warning("%s: publishing from the worker thread", exc)
        return InlinePublisher()

    def publisher_failed(self, exc: Exception) -> None:
        """The publishing process cannot run here: publish from the worker from now on."""
        self.status(f"Running: {exc}; publishing from the worker thread instead")
        old = self.publisher
        old.close()
        self.publisher = InlinePublisher(unique_ids=old.unique_ids)
