"""The TomoStream IOC: the Channel Access face of the stream server.

The PV names, record types and enum strings are those of the APS TomoStream IOC, so existing
screens, autosave files and scripts keep working. The group validates every write (refusing
or clamping it, with a message in ``ReconStatus``), runs the watchdog, and hands accepted
changes to a listener (the stream server) that lives in another thread. The settings groups
(names, parameters) are in :mod:`.settings`; the status and control groups and the IOC itself
are here.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping

from caproto import ChannelType
from caproto.server import PVGroup, SubGroup, pvproperty

from ..errors import BadParameter
from .records import DONE_ACQUIRE, NO_YES, WATCHDOG_RESET, CheckedEnum, server_running, stringout, watchdog
from .settings import (
    DEZINGER_RADII,
    DEZINGER_TYPES,
    RING_REMOVAL_TYPES,
    ZOOM_NAMES,
    ChannelNames,
    OpticalZoom,
    Part,
    ReconParams,
)

__all__ = ["DEZINGER_RADII", "DEZINGER_TYPES", "RING_REMOVAL_TYPES", "STATUS_LENGTH", "ZOOM_NAMES",
           "ChannelNames", "CheckedEnum", "Listener", "TomoStreamIOC"]

STATUS_LENGTH = 256

# Listener signature: (PV suffix, accepted value) -> None, called in the IOC's event loop.
Listener = Callable[[str, object], None]


class ReconState(Part):
    """What the server reports: status text, timing, buffer fill and frame counters."""

    ReconStatus = pvproperty(value="Stopped", dtype=ChannelType.CHAR, max_length=STATUS_LENGTH,
                             record="waveform", read_only=True,
                             doc="status text of the server")
    ReconTime = pvproperty(value=0.0, record="ao", units="s", precision=4, read_only=True,
                           doc="seconds per published update of the three slices")
    BufferSize = stringout("0/0", read_only=True,
                            doc='"filled/size" of the 180 degree buffer [frames]')
    FramesReceived = pvproperty(value=0, record="longin", units="frames", read_only=True,
                                doc="frames received from the detector")
    FramesUsed = pvproperty(value=0, record="longin", units="frames", read_only=True,
                            doc="projections pushed into the reconstruction")
    FramesDropped = pvproperty(value=0, record="longin", units="frames", read_only=True,
                               doc="frames dropped because the server fell behind")
    FramesLost = pvproperty(value=0, record="longin", units="frames", read_only=True,
                            doc="frames missing from the uniqueId sequence")
    FramesBad = pvproperty(value=0, record="longin", units="frames", read_only=True,
                           doc="malformed frames or frames of the wrong size, skipped")


class AxisFinding(Part):
    """The rotation axis found from the buffered frames while the sample turns."""

    CenterEstimate = pvproperty(value=math.nan, record="ao", units="pixels", precision=2,
                                read_only=True,
                                doc="rotation axis found from the 180 degree buffer, a detector "
                                    "column as Center [pixels]; NaN until the buffer allows one")
    CenterAuto = pvproperty(value="No", enum_strings=NO_YES, dtype=CheckedEnum, record="bo",
                            doc="Yes: Center follows CenterEstimate")

    @CenterAuto.putter
    async def CenterAuto(self, instance, value):
        return await self._accept("CenterAuto", value)


class Control(Part):
    """Start / stop and the server heartbeat."""

    StartRecon = pvproperty(value="Done", enum_strings=DONE_ACQUIRE, dtype=CheckedEnum,
                            record="busy", doc="Acquire starts streaming; put completes when it stops")
    AbortRecon = pvproperty(value="No", enum_strings=NO_YES, dtype=CheckedEnum, record="bo",
                            doc="Yes stops the streaming reconstruction")
    Watchdog = watchdog(f"the server sets it to {WATCHDOG_RESET}")
    ServerRunning = server_running()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._stopped: asyncio.Event | None = None

    @StartRecon.putter
    async def StartRecon(self, instance, value):
        if value != "Acquire":
            if instance.value == "Acquire":
                self.parent.notify("AbortRecon", "Yes")
            return value
        if instance.value == "Acquire":
            await self._refuse("StartRecon: the reconstruction is already running")
        self._stopped = asyncio.Event()
        await instance.write("Acquire", verify_value=False)
        self.parent.notify("StartRecon", "Acquire")
        await self._stopped.wait()
        self._stopped = None
        return "Done"

    async def finished(self) -> None:
        """Complete the StartRecon put (the stream has stopped)."""
        if self._stopped is not None:
            self._stopped.set()
        elif self.StartRecon.value != "Done":
            await self.StartRecon.write("Done", verify_value=False)
        await self.AbortRecon.write("No", verify_value=False)

    @AbortRecon.putter
    async def AbortRecon(self, instance, value):
        if value == "Yes":
            self.parent.notify("AbortRecon", "Yes")
        return value


class TomoStreamIOC(PVGroup):
    """TomoStream IOC: live ortho-slice reconstruction of a TomoScan stream.

    PVs (prefix + suffix), record type, units:

    Channels (stringout): TomoScanPVPrefix, ImagePVAPName (a CA PV on the TomoScan side whose
    value is the detector's PVA plugin prefix; image channel = value + "Image"), DarkPVAName,
    FlatPVAName, ThetaPVAName, ReconPVAName; ImagePlugins (longout, 1..8: the NDPluginPva
    plugins an NDPluginScatter spreads the frames over, prefixes counted up from the first's).

    Optical zoom (names, stringout): MctOpticsPVPrefix (the mctoptics IOC), SampleTomo0degPVName,
    SampleTomo90degPVName, SampleYPVName (motor records of the sample stages); LensChangeSync (bo
    No/Yes: a lens change by ``zoom_to`` without a region brings the slices' crossing to the
    rotation axis). Read by the ``zoom_to`` plan; the server itself moves nothing.

    Reconstruction (taking effect live): Center (ao, pixels), CenterTweak (ao, pixels),
    CenterTweakUp / CenterTweakDown (calcout: Center +/-= CenterTweak), FilterType (mbbo:
    Parzen, Shepp-logan, Ramp, Butterworth), Dezinger (mbbo: 0 None, 1 Radius 2, 2 Radius 3,
    3 Radius 4; a pixel more than 30% above the median of its neighbourhood is replaced by
    it), RingRemoval (mbbo: None, fw), OrthoX / OrthoY / OrthoZ (longout, pixels), RotX /
    RotY / RotZ (ao, degrees), Zoom (ao, 1..16: the slices magnified about their crossing
    point, image size unchanged), Energy (ao, keV), Distance (ao, mm), Alpha (ao; tomopy's
    retrieve_phase scale; 0 = no phase retrieval), PixelSize (ao, um). An unset Center (0)
    or all-zero OrthoX/Y/Z go to the middle of the first frames; all four follow a change of
    frame size (binning). RingRemoval fw subtracts from every frame the column stripes of the
    buffer's mean frame (streaming counterpart of Fourier-wavelet stripe removal).

    Rotation axis: CenterEstimate (ao, pixels, read-only; the axis found from the buffered
    frames, NaN until they cover 180 degrees), CenterAuto (bo No/Yes; Yes: Center follows
    CenterEstimate).

    Status (read-only): ReconStatus (waveform of char), ReconTime (ao, s), BufferSize
    (stringout "filled/size"), FramesReceived, FramesUsed, FramesDropped, FramesLost,
    FramesBad (longin, frames).

    Control: StartRecon (busy Done/Acquire; the put completes when streaming stops),
    AbortRecon (bo No/Yes), Watchdog (calcout, decremented each second, set to 5 by the
    server), ServerRunning (bi Stopped/Running, Running while Watchdog > 0).

    Writes that make no sense are refused (NaN, unknown enum index, a malformed PV name) or
    clamped into range (slice positions beyond the frame, a center outside it); either way
    ReconStatus says what happened.

    Parameters
    ----------
    prefix : str
        PV prefix, e.g. ``2bmb:TomoStream:``.
    listener : callable, optional
        ``listener(suffix, value)``, called in the IOC's event loop after each accepted write
        of a setting and on ``StartRecon`` / ``AbortRecon``. It must not block.
    """

    channels = SubGroup(ChannelNames, prefix="")
    zoom = SubGroup(OpticalZoom, prefix="")
    params = SubGroup(ReconParams, prefix="")
    state = SubGroup(ReconState, prefix="")
    axis = SubGroup(AxisFinding, prefix="")
    control = SubGroup(Control, prefix="")

    def __init__(self, prefix: str, *, listener: Listener | None = None, **kwargs):
        super().__init__(prefix, **kwargs)
        self.listener = listener
        #: Frame geometry [pixels] used to clamp Center and OrthoX/Y/Z; None until known.
        self.frame_width: int | None = None
        self.frame_height: int | None = None

    def notify(self, suffix: str, value) -> None:
        """Hand an accepted write to the listener."""
        if self.listener is not None:
            self.listener(suffix, value)

    async def report(self, message: str) -> None:
        """Show ``message`` in ReconStatus (truncated to the waveform length) and log it."""
        self.log.info("%s", message)
        await self.state.ReconStatus.write(message[:STATUS_LENGTH - 1])

    def channel(self, suffix: str):
        """The ChannelData of the PV ``prefix + suffix``."""
        return self.pvdb[self.prefix + suffix]

    def value(self, suffix: str):
        """Current value of the PV ``prefix + suffix`` (safe to call from any thread)."""
        return self.pvdb[self.prefix + suffix].value

    async def apply(self, values: Mapping[str, object]) -> None:
        """Write ``{suffix: value}`` through the putters (validated), e.g. start-up defaults."""
        for suffix, value in values.items():
            if self.prefix + suffix not in self.pvdb:
                raise BadParameter(f"TomoStream has no PV {suffix!r}")
            await self.channel(suffix).write(value)

    async def update(self, values: Mapping[str, object]) -> None:
        """Write ``{suffix: value}`` as the server (read-only PVs too, no validation)."""
        for suffix, value in values.items():
            channel = self.channel(suffix)
            if channel.value != value:
                await channel.write(value, verify_value=False)


