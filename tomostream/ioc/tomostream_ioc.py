"""The TomoStream IOC: the Channel Access face of the stream server.

The PV names, record types and enum strings are those of the APS TomoStream IOC, so existing
screens, autosave files and scripts keep working. The group validates every write (refusing
or clamping it, with a message in ``ReconStatus``), runs the watchdog, and hands accepted
changes to a listener (the stream server) that lives in another thread.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Callable, Mapping

from caproto import CaprotoConversionError, ChannelType, SkipWrite
from caproto.server import PVGroup, PvpropertyEnum, SubGroup, pvproperty

from ..errors import BadParameter
from ..vocabulary import FILTER_NAMES, MAX_PLUGINS
from .records import (
    DONE_ACQUIRE,
    NO_YES,
    STOPPED_RUNNING,
    WATCHDOG_PERIOD,
    WATCHDOG_RESET,
    count_down,
    follow_watchdog,
)

#: Enum strings, index = value written by clients.
#: Dezinger states, by index as at APS (0 None, 1 Radius 2, 2 Radius 3, 3 Radius 4), and the
#: median radius [pixels] each stands for.
DEZINGER_RADII: Mapping[str, int] = {"None": 0, "Radius 2": 2, "Radius 3": 3, "Radius 4": 4}
DEZINGER_TYPES = tuple(DEZINGER_RADII)
RING_REMOVAL_TYPES = ("None", "fw")

STATUS_LENGTH = 256
_PV_NAME = re.compile(r"^[A-Za-z0-9_:.\-\[\]<>;{}$]+$")

# Listener signature: (PV suffix, accepted value) -> None, called in the IOC's event loop.
Listener = Callable[[str, object], None]


class CheckedEnum(PvpropertyEnum):
    """An enum PV that answers a write of an undefined state index with a ReconStatus message.

    caproto refuses such an index while converting the request, before any putter runs.
    """

    async def write_from_dbr(self, data, data_type, metadata, *, flags=0):
        try:
            await super().write_from_dbr(data, data_type, metadata, flags=flags)
        except CaprotoConversionError:
            shown = data[0] if len(data) == 1 else list(data)
            await self.group.parent.report(
                f"{self.pvspec.name}={shown} is not one of "
                f"{[s for s in self.enum_strings if s]}: refused")


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"


def _finite(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise BadParameter(f"{name}={value} is not a finite number: refused")
    return value


def _clamp(name: str, value: float, low: float, high: float) -> tuple[float, str | None]:
    """Clamp ``value`` into ``[low, high]``; return it and a message if it moved."""
    if value < low or value > high:
        new = min(max(value, low), high)
        return new, f"{name}={_fmt(value)} is outside {_fmt(low)}..{_fmt(high)}: set to {_fmt(new)}"
    return value, None


def _stringout(value: str, **kwargs) -> pvproperty:
    return pvproperty(value=value, dtype=ChannelType.STRING, record="stringout", **kwargs)


class _Part(PVGroup):
    """A SubGroup that reports accepted writes and problems to the top-level group."""

    async def _refuse(self, message: str):
        await self.parent.report(message)
        raise SkipWrite()

    async def _accept(self, suffix: str, value, message: str | None = None):
        if message:
            await self.parent.report(message)
        self.parent.notify(suffix, value)
        return value


class ChannelNames(_Part):
    """Where the stream comes from and where the reconstruction goes (names, not values)."""

    TomoScanPVPrefix = _stringout("2bmb:TomoScanStream:",
                                  doc="prefix of the TomoScan IOC that drives the scan")
    ImagePVAPName = _stringout("2bmb:TomoScanStream:PvaPluginPVPrefix",
                               doc="CA PV whose value is the detector's PVA plugin prefix")
    DarkPVAName = _stringout("2bmb:TomoScanStream:StreamDarkFields",
                             doc="PVA channel of the averaged dark field")
    FlatPVAName = _stringout("2bmb:TomoScanStream:StreamFlatFields",
                             doc="PVA channel of the averaged flat field")
    ThetaPVAName = _stringout("2bmb:TomoScanStream:StreamTheta",
                              doc="PVA channel of the angle table [degrees]")
    ReconPVAName = _stringout("2bmb:TomoStream:StreamRecon",
                              doc="PVA channel where the three slices are served")
    ImagePlugins = pvproperty(value=1, record="longout",
                              doc=f"NDPluginPva plugins the projections are spread over (by an "
                                  f"NDPluginScatter), 1..{MAX_PLUGINS}; their prefixes count up "
                                  "from the one ImagePVAPName gives: 2bmSP1:Pva1:, 2bmSP1:Pva2:, ...")

    async def _name(self, instance, value):
        suffix = instance.pvspec.name
        text = str(value).strip()
        if not _PV_NAME.match(text):
            await self._refuse(f"{suffix}={value!r} is not a PV name: refused")
        return await self._accept(suffix, text)

    @ImagePlugins.putter
    async def ImagePlugins(self, instance, value):
        value, message = _clamp("ImagePlugins", int(value), 1, MAX_PLUGINS)
        return await self._accept("ImagePlugins", int(value), message)

    TomoScanPVPrefix.putter(_name)
    ImagePVAPName.putter(_name)
    DarkPVAName.putter(_name)
    FlatPVAName.putter(_name)
    ThetaPVAName.putter(_name)
    ReconPVAName.putter(_name)


#: Defaults of the optical-zoom name PVs: the names at APS 2-BM (the optics IOC and the sample
#: stages of its TomoStream 2-BM database), which ``tomostream sim`` serves as well.
ZOOM_NAMES: Mapping[str, str] = {
    "MctOpticsPVPrefix": "2bm:MCTOptics:",
    "SampleTomo0degPVName": "2bmS1:m2",
    "SampleTomo90degPVName": "2bmS1:m1",
    "SampleYPVName": "2bmb:m25",
}


class OpticalZoom(_Part):
    """The 2-BM optical zoom (``zoom_to``): the optics IOC, the sample stages and whether a lens
    change brings the slices' crossing to the rotation axis."""

    LensChangeSync = pvproperty(value="No", enum_strings=NO_YES, dtype=CheckedEnum, record="bo",
                                doc="Yes: a lens change without a region moves the sample stages "
                                    "so the slices' crossing (OrthoX, OrthoY, OrthoZ) comes to "
                                    "the rotation axis and the field's centre")
    MctOpticsPVPrefix = _stringout(ZOOM_NAMES["MctOpticsPVPrefix"],
                                   doc="prefix of the mctoptics IOC (LensSelect, ImagePixelSize, ...)")
    SampleTomo0degPVName = _stringout(ZOOM_NAMES["SampleTomo0degPVName"],
                                      doc="motor record of the sample stage along the beam-normal "
                                          "direction at 0 degrees (on the rotation stage)")
    SampleTomo90degPVName = _stringout(ZOOM_NAMES["SampleTomo90degPVName"],
                                       doc="motor record of the sample stage along the beam-normal "
                                           "direction at 90 degrees (on the rotation stage)")
    SampleYPVName = _stringout(ZOOM_NAMES["SampleYPVName"],
                               doc="motor record of the vertical sample stage")

    @LensChangeSync.putter
    async def LensChangeSync(self, instance, value):
        return await self._accept("LensChangeSync", value)

    MctOpticsPVPrefix.putter(ChannelNames._name)
    SampleTomo0degPVName.putter(ChannelNames._name)
    SampleTomo90degPVName.putter(ChannelNames._name)
    SampleYPVName.putter(ChannelNames._name)


class ReconParams(_Part):
    """Reconstruction parameters; each takes effect on the next published update."""

    Center = pvproperty(value=0.0, record="ao", units="pixels", precision=2,
                        doc="rotation axis, detector column [pixels]; 0 (unset): the middle of "
                            "the first frames")
    CenterTweak = pvproperty(value=0.5, record="ao", units="pixels", precision=2,
                             doc="step of CenterTweakUp / CenterTweakDown [pixels]")
    CenterTweakUp = pvproperty(value=0.0, record="calcout", doc="Center += CenterTweak")
    CenterTweakDown = pvproperty(value=0.0, record="calcout", doc="Center -= CenterTweak")
    FilterType = pvproperty(value="Parzen", enum_strings=FILTER_NAMES, dtype=CheckedEnum,
                            record="mbbo", doc="filter of the filtered backprojection")
    Dezinger = pvproperty(value="None", enum_strings=DEZINGER_TYPES, dtype=CheckedEnum,
                          record="mbbo", doc="zinger removal: 0 None, 1 Radius 2, 2 Radius 3, 3 Radius 4 "
                                              "(median radius [pixels])")
    RingRemoval = pvproperty(value="None", enum_strings=RING_REMOVAL_TYPES, dtype=CheckedEnum,
                             record="mbbo", doc="ring artefact removal")
    OrthoX = pvproperty(value=0, record="longout", units="pixels",
                        doc="column of the X slice [pixels]; 0..width-1")
    OrthoY = pvproperty(value=0, record="longout", units="pixels",
                        doc="column of the Y slice [pixels]; 0..width-1")
    OrthoZ = pvproperty(value=0, record="longout", units="pixels",
                        doc="detector row of the Z slice [pixels]; 0..height-1")
    RotX = pvproperty(value=0.0, record="ao", units="degrees", precision=2,
                       doc="turn of the X slice about the rotation axis")
    RotY = pvproperty(value=0.0, record="ao", units="degrees", precision=2,
                       doc="turn of the Y slice about the rotation axis")
    RotZ = pvproperty(value=0.0, record="ao", units="degrees", precision=2,
                       doc="tilt of the Z slice about the y direction")
    Zoom = pvproperty(value=1.0, record="ao", precision=2,
                      doc="software zoom of the three slices, 1..16: each shows a field 1/Zoom "
                          "as wide about the point where they cross, sampled Zoom times finer, "
                          "image size unchanged")
    Energy = pvproperty(value=20.0, record="ao", units="keV", precision=2,
                        doc="X-ray energy for phase retrieval [keV]")
    Distance = pvproperty(value=50.0, record="ao", units="mm", precision=2,
                          doc="sample-detector distance for phase retrieval [mm]")
    Alpha = pvproperty(value=0.0, record="ao", precision=5,
                       doc="Paganin regularisation on tomopy's retrieve_phase scale; 0 turns "
                           "phase retrieval off")
    PixelSize = pvproperty(value=1.0, record="ao", units="um", precision=3,
                           doc="detector pixel size at the sample [um]")

    #: Closed ranges of the float parameters; the last item says whether the low end is open.
    LIMITS: Mapping[str, tuple[float, float, bool]] = {
        "RotX": (-180.0, 180.0, False), "RotY": (-180.0, 180.0, False),
        "RotZ": (-180.0, 180.0, False), "Energy": (0.0, 1000.0, True),
        "Distance": (0.0, 1.0e5, False), "Alpha": (0.0, 1.0e3, False),
        "PixelSize": (0.0, 1.0e4, True), "CenterTweak": (0.0, 1.0e4, False),
        "Zoom": (1.0, 16.0, False),
    }

    @Center.putter
    async def Center(self, instance, value):
        try:
            value = _finite("Center", value)
        except BadParameter as exc:
            await self._refuse(str(exc))
        width = self.parent.frame_width
        high = float(width - 1) if width else math.inf
        value, message = _clamp("Center", value, 0.0, high)
        return await self._accept("Center", value, message)

    async def _bounded(self, instance, value):
        suffix = instance.pvspec.name
        low, high, open_low = self.LIMITS[suffix]
        try:
            value = _finite(suffix, value)
        except BadParameter as exc:
            await self._refuse(str(exc))
        if open_low and value <= low:
            await self._refuse(f"{suffix}={value:g} must be > {low:g}: refused")
        value, message = _clamp(suffix, value, low, high)
        return await self._accept(suffix, value, message)

    RotX.putter(_bounded)
    RotY.putter(_bounded)
    RotZ.putter(_bounded)
    Zoom.putter(_bounded)
    Energy.putter(_bounded)
    Distance.putter(_bounded)
    Alpha.putter(_bounded)
    PixelSize.putter(_bounded)
    CenterTweak.putter(_bounded)

    async def _tweak(self, instance, value, sign: float):
        """Any write processes the record; like a calcout, its value becomes the result."""
        center = self.Center.value + sign * self.CenterTweak.value
        await self.Center.write(center)
        return self.Center.value

    @CenterTweakUp.putter
    async def CenterTweakUp(self, instance, value):
        return await self._tweak(instance, value, +1.0)

    @CenterTweakDown.putter
    async def CenterTweakDown(self, instance, value):
        return await self._tweak(instance, value, -1.0)

    async def _enum(self, instance, value):
        suffix = instance.pvspec.name
        if value not in instance.enum_strings or value == "":
            shown = instance.enum_strings.index(value) if value == "" else repr(value)
            await self._refuse(f"{suffix}={shown} is not one of "
                               f"{[s for s in instance.enum_strings if s]}: refused")
        return await self._accept(suffix, value)

    FilterType.putter(_enum)
    Dezinger.putter(_enum)
    RingRemoval.putter(_enum)

    async def _ortho(self, instance, value):
        suffix = instance.pvspec.name
        size = self.parent.frame_height if suffix == "OrthoZ" else self.parent.frame_width
        high = float(size - 1) if size else float(2**31 - 1)
        new, message = _clamp(suffix, float(value), 0.0, high)
        return await self._accept(suffix, int(new), message)

    OrthoX.putter(_ortho)
    OrthoY.putter(_ortho)
    OrthoZ.putter(_ortho)


class ReconState(_Part):
    """What the server reports: status text, timing, buffer fill and frame counters."""

    ReconStatus = pvproperty(value="Stopped", dtype=ChannelType.CHAR, max_length=STATUS_LENGTH,
                             record="waveform", read_only=True,
                             doc="status text of the server")
    ReconTime = pvproperty(value=0.0, record="ao", units="s", precision=4, read_only=True,
                           doc="seconds per published update of the three slices")
    BufferSize = _stringout("0/0", read_only=True,
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


class AxisFinding(_Part):
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


class Control(_Part):
    """Start / stop and the server heartbeat."""

    StartRecon = pvproperty(value="Done", enum_strings=DONE_ACQUIRE, dtype=CheckedEnum,
                            record="busy", doc="Acquire starts streaming; put completes when it stops")
    AbortRecon = pvproperty(value="No", enum_strings=NO_YES, dtype=CheckedEnum, record="bo",
                            doc="Yes stops the streaming reconstruction")
    Watchdog = pvproperty(value=0.0, record="calcout",
                          doc=f"decremented each {WATCHDOG_PERIOD:g} s; the server sets it to "
                              f"{WATCHDOG_RESET}")
    ServerRunning = pvproperty(value="Stopped", enum_strings=STOPPED_RUNNING, dtype=ChannelType.ENUM,
                               record="bi", read_only=True, doc="Running while Watchdog > 0")

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

    @Watchdog.putter
    async def Watchdog(self, instance, value):
        return await follow_watchdog(self.ServerRunning, value)

    @Watchdog.scan(period=WATCHDOG_PERIOD)
    async def Watchdog(self, instance, async_lib):
        await count_down(instance)


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


