"""The simulated TomoScan streaming IOC: the Channel Access face of the simulated beamline.

Record names, types and enum strings are those of the APS TomoScan IOC with its streaming
records (see the class docstring). Putters validate and either return the value or refuse
it (``SkipWrite``) with a message in StreamMessage; commands go to a controller (the
:class:`~tomostream.sim.beamline.SimBeamline`) that runs the scan in its own thread and sends
status back through :meth:`TomoScanStreamIOC.post`, a thread-safe queue drained in the IOC's
event loop.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Protocol

from caproto import ChannelType, SkipWrite
from caproto.server import PVGroup, SubGroup, pvproperty

from ..errors import TomostreamError
from ..io.dxfile import check_file_name
from ..ioc.records import (
    DONE_ACQUIRE,
    NO_YES,
    STOPPED_RUNNING,
    WATCHDOG_PERIOD,
    WATCHDOG_RESET,
    count_down,
    follow_watchdog,
)
from ..vocabulary import FRAME_TYPES
from .scan import SCAN_TYPES

BINNINGS = ("1x", "2x", "4x")
DONE_CAPTURE = ("Done", "Capture")
DONE_SYNC = ("Done", "Sync")
TEXT_LENGTH = 256
PATH_LENGTH = 1024
MAX_ANGLES = 10_000_000


class Controller(Protocol):
    """What the IOC asks of the beamline (all methods thread-safe, none blocking)."""

    def start_scan(self) -> Future: ...
    def abort(self) -> None: ...
    def retake(self, kind: str) -> Future: ...
    def capture(self) -> Future: ...
    def stop_capture(self) -> None: ...
    def sync(self) -> None: ...
    def set_binning(self, binning: int) -> None: ...
    def set_fps(self, fps: float) -> None: ...
    def set_first_projid(self, value: int) -> None: ...


def _text(value: str, length: int = TEXT_LENGTH, **kwargs) -> pvproperty:
    """A waveform of char holding text (what TomoScan's status and file PVs are).

    Served as a CHAR array (not as a 40-character DBR_STRING), so paths of any length up to
    ``length`` survive; clients read it as a string (pyepics ``as_string=True``).
    """
    return pvproperty(value=value, dtype=ChannelType.CHAR, max_length=length, string_encoding="latin-1",
                      record="waveform", **kwargs)


def _stringout(value: str, **kwargs) -> pvproperty:
    return pvproperty(value=value, dtype=ChannelType.STRING, record="stringout", **kwargs)


def _enum(value: str, strings: tuple[str, ...], record: str, **kwargs) -> pvproperty:
    return pvproperty(value=value, enum_strings=strings, dtype=ChannelType.ENUM, record=record, **kwargs)


class _Part(PVGroup):
    """A SubGroup that reports refusals in StreamMessage and reaches the controller."""

    async def _refuse(self, message: str):
        await self.parent.report(message)
        raise SkipWrite()

    @property
    def controller(self) -> Controller:
        return self.parent.controller

    async def _keep(self, instance, value, why: str):
        """A put to a record the simulator fixes: refused (saying ``why``) unless unchanged."""
        if value != instance.value:
            await self._refuse(f"{instance.pvspec.name}{why.format(value=value, fixed=instance.value)}: "
                               f"refused")
        return value

    async def _busy(self, instance, start):
        """Run a busy command: show it active, await the controller's future, complete."""
        try:
            future = start()
        except TomostreamError as exc:
            await self._refuse(str(exc))
        await instance.write(instance.enum_strings[1], verify_value=False)
        try:
            await asyncio.wrap_future(future)
        except TomostreamError as exc:
            await self.parent.report(str(exc))
        await self.parent.flush()        # status posted before the end is out before completion
        return "Done"

    async def _command(self, instance, value, start, running: str, stop=None):
        """A put to a busy command record (Done / its active state, ``enum_strings[1]``).

        The active state runs ``start`` as :meth:`_busy` does, refused with the message
        ``running`` while the command already runs; any other value is written, and calls
        ``stop`` (if given) when the command was running.
        """
        active = instance.enum_strings[1]
        if value != active:
            if stop is not None and instance.value == active:
                stop()
            return value
        if instance.value == active:
            await self._refuse(running)
        return await self._busy(instance, start)


class ScanSettings(_Part):
    """TomoScan scan settings (latched when a scan starts)."""

    RotationStart = pvproperty(value=0.0, record="ao", units="degrees", precision=3,
                               doc="angle of the first projection [degrees]")
    RotationStep = pvproperty(value=0.5, record="ao", units="degrees", precision=4,
                              doc="angle advanced per frame [degrees], non-zero")
    NumAngles = pvproperty(value=1500, record="longout", units="frames",
                           doc=f"frames of the scan = length of theta, 1..{MAX_ANGLES}")
    ExposureTime = pvproperty(value=0.005, record="ao", units="s", precision=5,
                              doc="frame period [s]; the frame rate is 1/ExposureTime")
    StreamScanType = _enum("continuous", SCAN_TYPES, "bo", doc="backforth or continuous rotation")
    FirstProjid = pvproperty(value=0, record="longout",
                             doc="uniqueId of the first projection of the scan")

    @RotationStart.putter
    async def RotationStart(self, instance, value):
        if not math.isfinite(value):
            await self._refuse(f"RotationStart={value} is not a finite angle: refused")
        return value

    @RotationStep.putter
    async def RotationStep(self, instance, value):
        if not math.isfinite(value) or value == 0 or abs(value) > 90:
            await self._refuse(f"RotationStep={value} must be non-zero and within +-90 degrees: refused")
        return value

    @NumAngles.putter
    async def NumAngles(self, instance, value):
        if not 1 <= value <= MAX_ANGLES:
            await self._refuse(f"NumAngles={value} must be in 1..{MAX_ANGLES}: refused")
        return value

    @ExposureTime.putter
    async def ExposureTime(self, instance, value):
        try:
            self.controller.set_fps(1.0 / value if value > 0 else math.inf)
        except TomostreamError as exc:
            await self._refuse(f"ExposureTime={value}: {exc}")
        return value

    @FirstProjid.putter
    async def FirstProjid(self, instance, value):
        try:
            self.controller.set_first_projid(int(value))
        except TomostreamError as exc:
            await self._refuse(str(exc))
        return value


class ScanControl(_Part):
    """Start / abort, frame type and the server heartbeat."""

    StartScan = _enum("Done", DONE_ACQUIRE, "busy",
                      doc="Acquire starts rotating and streaming; the put completes when the scan ends")
    AbortScan = _enum("No", NO_YES, "bo", doc="Yes stops the scan")
    FrameType = _enum("Projection", FRAME_TYPES, "mbbi", doc="what the detector is streaming now")
    ScanStatus = _text("Idle", doc="what the scan is doing")
    Watchdog = pvproperty(value=0.0, record="calcout",
                          doc=f"decremented each {WATCHDOG_PERIOD:g} s, set to {WATCHDOG_RESET} by the "
                              "server")
    ServerRunning = _enum("Stopped", STOPPED_RUNNING, "bi", read_only=True,
                          doc="Running while Watchdog > 0")

    @StartScan.putter
    async def StartScan(self, instance, value):
        return await self._command(instance, value, self.controller.start_scan,
                                   "StartScan: a scan is already running", stop=self.controller.abort)

    @AbortScan.putter
    async def AbortScan(self, instance, value):
        if value == "Yes":
            self.controller.abort()
        return "No"

    @FrameType.putter
    async def FrameType(self, instance, value):
        await self._refuse("FrameType is set by the scan (StreamRetakeDark / StreamRetakeFlat): refused")

    @Watchdog.putter
    async def Watchdog(self, instance, value):
        return await follow_watchdog(self.ServerRunning, value)

    @Watchdog.scan(period=WATCHDOG_PERIOD)
    async def Watchdog(self, instance, async_lib):
        await count_down(instance)

    @ScanStatus.startup
    async def ScanStatus(self, instance, async_lib):
        await self.parent.serve_updates()


class Files(_Part):
    """Where captures go and the HDF5 locations recorded in them."""

    FilePath = _text("", PATH_LENGTH, doc="existing writable folder for captures")
    FileName = _text("stream", doc="capture name; the HDF5 plugin numbers it: <FileName>_<number>.h5")
    HDF5ProjectionLocation = _stringout("/exchange/data", doc="dataset of the projections")
    HDF5DarkLocation = _stringout("/exchange/data_dark", doc="dataset of the dark fields")
    HDF5FlatLocation = _stringout("/exchange/data_white", doc="dataset of the flat fields")

    @FileName.putter
    async def FileName(self, instance, value):
        try:
            check_file_name(value)
        except TomostreamError as exc:
            await self._refuse(str(exc))
        return value

    async def _fixed(self, instance, value):
        return await self._keep(instance, value, "={value!r}: the simulator always writes {fixed!r}")

    HDF5ProjectionLocation.putter(_fixed)
    HDF5DarkLocation.putter(_fixed)
    HDF5FlatLocation.putter(_fixed)


class Stream(_Part):
    """Streaming records: capture, retakes, binning, PVA prefixes and messages."""

    StreamCapture = _enum("Done", DONE_CAPTURE, "busy",
                          doc="Capture saves the next StreamNumCapture projections to <base> and the "
                              "circular buffer to circular_buffer_<base>; the put completes when both "
                              "are written (the fields are added afterwards); skipped unless "
                              "StreamMessage reads Done")
    StreamNumCapture = pvproperty(value=100, record="longout", units="frames",
                                  doc="projections to save after the trigger, >= 1")
    StreamNumCaptured = pvproperty(value=0, record="longout", units="frames", read_only=True,
                                   doc="projections saved so far by this capture")
    StreamNumTotalCaptured = pvproperty(value=0, record="longout", units="frames", read_only=True,
                                        doc="projections saved by all captures")
    StreamPreCount = pvproperty(value=0, record="longout", units="frames",
                                doc="projections from before the trigger to save as well, >= 0")
    StreamPreCounted = pvproperty(value=0, record="longout", units="frames", read_only=True,
                                  doc="frames the circular buffer holds now (at most StreamPreCount)")
    StreamRetakeDark = _enum("Done", DONE_CAPTURE, "busy",
                             doc="retake dark fields while rotating, into FilePath/dark_fields.h5")
    StreamRetakeFlat = _enum("Done", DONE_CAPTURE, "busy",
                             doc="retake flat fields while rotating, into FilePath/flat_fields.h5")
    StreamBinning = _enum("1x", BINNINGS, "mbbo", doc="binning of frames, dark and flat")
    StreamMessage = _text("Done", doc="Done, or the capture / retake running (or a refusal)")
    StreamCBStatusMessage = _text("", doc="stream status: frames, uniqueId, angle")
    StreamFileName = _text("", PATH_LENGTH, read_only=True,
                           doc="base name (no folder) of the last capture's main file, in FilePath")
    PvaStreamPVPrefix = _stringout("", doc="prefix of StreamDarkFields, StreamFlatFields, StreamTheta")
    PvaPluginPVPrefix = _stringout("", doc="detector's PVA plugin prefix; image channel = value + Image")
    StreamSync = _enum("Done", DONE_SYNC, "bo", doc="Sync rebroadcasts theta (after a speed change)")

    @StreamCapture.putter
    async def StreamCapture(self, instance, value):
        return await self._command(instance, value, self.controller.capture,
                                   "StreamCapture: a capture is already running",
                                   stop=self.controller.stop_capture)

    async def _retake(self, instance, value, kind: str):
        return await self._command(instance, value, lambda: self.controller.retake(kind),
                                   f"{instance.pvspec.name}: a {kind} retake is already running")

    @StreamRetakeDark.putter
    async def StreamRetakeDark(self, instance, value):
        return await self._retake(instance, value, "dark")

    @StreamRetakeFlat.putter
    async def StreamRetakeFlat(self, instance, value):
        return await self._retake(instance, value, "flat")

    @StreamNumCapture.putter
    async def StreamNumCapture(self, instance, value):
        if value < 1:
            await self._refuse(f"StreamNumCapture={value} must be at least 1: refused")
        return value

    @StreamPreCount.putter
    async def StreamPreCount(self, instance, value):
        ring = self.parent.ring_size
        if not 0 <= value <= ring:
            await self._refuse(f"StreamPreCount={value} must be in 0..{ring}: refused")
        return value

    @StreamBinning.putter
    async def StreamBinning(self, instance, value):
        try:
            self.controller.set_binning(int(value.rstrip("x")))
        except TomostreamError as exc:
            await self._refuse(str(exc))
        return value

    @StreamSync.putter
    async def StreamSync(self, instance, value):
        if value == "Sync":
            self.controller.sync()
        return "Done"

    async def _fixed(self, instance, value):
        return await self._keep(instance, value, " is fixed by the detector configuration ({fixed!r})")

    PvaStreamPVPrefix.putter(_fixed)
    PvaPluginPVPrefix.putter(_fixed)


class TomoScanStreamIOC(PVGroup):
    """Simulated TomoScan streaming IOC (TomoScan + tomoscan_stream records).

    PVs (prefix + suffix), record type, units:

    Scan settings: RotationStart (ao, degrees), RotationStep (ao, degrees per frame),
    NumAngles (longout, frames = length of theta), ExposureTime (ao, s; frame rate =
    1/ExposureTime), StreamScanType (bo: backforth, continuous), FirstProjid (longout;
    uniqueId of the scan's first projection, written at scan start; a put while idle sets the
    detector counter).

    Scan control: StartScan (busy Done/Acquire; put completes when the scan ends or is
    aborted), AbortScan (bo No/Yes), FrameType (mbbi DarkField/FlatField/Projection, read
    only), ScanStatus (waveform of char), Watchdog (calcout, decremented each second, set to 5
    by the simulator), ServerRunning (bi Stopped/Running).

    Files: FilePath, FileName (waveform of char), HDF5ProjectionLocation, HDF5DarkLocation,
    HDF5FlatLocation (stringout).

    Streaming: StreamCapture (busy Done/Capture; put completes when the capture's files are
    written), StreamNumCapture, StreamNumCaptured, StreamNumTotalCaptured, StreamPreCount,
    StreamPreCounted (longout, frames; the circular buffer's fill), StreamRetakeDark /
    StreamRetakeFlat (busy Done/Capture), StreamBinning (mbbo 1x/2x/4x), StreamMessage, StreamCBStatusMessage,
    StreamFileName (waveform of char), PvaStreamPVPrefix, PvaPluginPVPrefix (stringout),
    StreamSync (bo Done/Sync).

    Refused writes leave the PV unchanged and say why in StreamMessage.

    Parameters
    ----------
    prefix : str
        PV prefix, e.g. ``2bmb:TomoScanStream:``.
    controller : Controller
        The beamline that carries out commands.
    ring_size : int
        Projections kept for StreamPreCount.
    """

    settings = SubGroup(ScanSettings, prefix="")
    control = SubGroup(ScanControl, prefix="")
    files = SubGroup(Files, prefix="")
    stream = SubGroup(Stream, prefix="")

    def __init__(self, prefix: str, *, controller: Controller, ring_size: int = 1000, **kwargs):
        super().__init__(prefix, **kwargs)
        self.controller = controller
        self.ring_size = int(ring_size)
        self._queue: asyncio.Queue | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def report(self, message: str) -> None:
        """Show ``message`` in StreamMessage (truncated to the waveform) and log it."""
        self.log.info("%s", message)
        await self.stream.StreamMessage.write(message[:TEXT_LENGTH - 1])

    def value(self, suffix: str):
        """Current value of ``prefix + suffix`` (safe to read from any thread)."""
        return self.pvdb[self.prefix + suffix].value

    async def update(self, values: Mapping[str, object], timestamp: float | None = None) -> None:
        """Write ``{suffix: value}`` as the IOC (no putter), in order.

        ``timestamp`` [s since the epoch] stamps the new values with the moment the change
        happened rather than the moment the IOC loop got to it.
        """
        stamp = {} if timestamp is None else {"timestamp": timestamp}
        for suffix, value in values.items():
            if suffix == "StreamMessage":
                await self.report(str(value))
                continue
            channel = self.pvdb[self.prefix + suffix]
            if channel.value != value:
                await channel.write(value, verify_value=False, **stamp)

    def post(self, values: Mapping[str, object], timestamp: float | None = None) -> None:
        """Queue ``{suffix: value}`` writes from any thread; applied in order by the IOC loop.

        Give ``timestamp`` (``time.time()`` when the change happened) for values whose time
        clients compare with other data, such as FrameType against frame timestamps.
        """
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._queue.put_nowait, (dict(values), timestamp))

    async def flush(self) -> None:
        """Wait until every update posted so far has been applied."""
        if self._queue is not None:
            await self._queue.join()

    async def serve_updates(self) -> None:
        """Apply posted updates and beat the heartbeat (the simulator is its own server)."""
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            while True:
                values, timestamp = await self._queue.get()
                try:
                    await self.update(values, timestamp)
                except Exception:   # one bad status update must not stop the others
                    self.log.exception("status update %r failed", values)
                finally:
                    self._queue.task_done()
        finally:
            heartbeat.cancel()

    async def _heartbeat(self) -> None:
        while True:
            await self.control.Watchdog.write(WATCHDOG_RESET)
            await asyncio.sleep(2 * WATCHDOG_PERIOD)
