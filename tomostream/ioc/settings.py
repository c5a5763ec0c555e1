"""The settings PVs of the TomoStream IOC: where the stream comes from and goes (PV names),
the 2-BM optical zoom's names, and the reconstruction parameters.

Every write is validated: refused (NaN, an unknown enum index, a malformed PV name) or clamped
into range, with a message in ``ReconStatus``; accepted values go to the IOC's listener.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from caproto import SkipWrite
from caproto.server import PVGroup, pvproperty

from ..errors import BadParameter
from ..vocabulary import FILTER_NAMES, MAX_PLUGINS
from .records import NO_YES, CheckedEnum, stringout

#: Enum strings, index = value written by clients.
#: Dezinger states, by index as at APS (0 None, 1 Radius 2, 2 Radius 3, 3 Radius 4), and the
#: median radius [pixels] each stands for.
DEZINGER_RADII: Mapping[str, int] = {"None": 0, "Radius 2": 2, "Radius 3": 3, "Radius 4": 4}
DEZINGER_TYPES = tuple(DEZINGER_RADII)
RING_REMOVAL_TYPES = ("None", "fw")

_PV_NAME = re.compile(r"^[A-Za-z0-9_:.\-\[\]<>;{}$]+$")


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


class Part(PVGroup):
    """A SubGroup that reports accepted writes and problems to the top-level group."""

    async def _refuse(self, message: str):
        await self.parent.report(message)
        raise SkipWrite()

    async def _accept(self, suffix: str, value, message: str | None = None):
        if message:
            await self.parent.report(message)
        self.parent.notify(suffix, value)
        return value


async def _check_name(self: Part, instance, value):
    """Putter of a PV-name stringout: the name stripped, or refused when it is not one."""
    suffix = instance.pvspec.name
    text = str(value).strip()
    if not _PV_NAME.match(text):
        await self._refuse(f"{suffix}={value!r} is not a PV name: refused")
    return await self._accept(suffix, text)


def _pv_name(value: str, doc: str) -> pvproperty:
    """A stringout holding a PV name or prefix (default ``value``), checked on write."""
    return stringout(value, doc=doc).putter(_check_name)


class ChannelNames(Part):
    """Where the stream comes from and where the reconstruction goes (names, not values)."""

    TomoScanPVPrefix = _pv_name("2bmb:TomoScanStream:", "prefix of the TomoScan IOC that drives the scan")
    ImagePVAPName = _pv_name("2bmb:TomoScanStream:PvaPluginPVPrefix",
                             "CA PV whose value is the detector's PVA plugin prefix")
    DarkPVAName = _pv_name("2bmb:TomoScanStream:StreamDarkFields", "PVA channel of the averaged dark field")
    FlatPVAName = _pv_name("2bmb:TomoScanStream:StreamFlatFields", "PVA channel of the averaged flat field")
    ThetaPVAName = _pv_name("2bmb:TomoScanStream:StreamTheta", "PVA channel of the angle table [degrees]")
    ReconPVAName = _pv_name("2bmb:TomoStream:StreamRecon", "PVA channel where the three slices are served")
    ImagePlugins = pvproperty(value=1, record="longout",
                              doc=f"NDPluginPva plugins the projections are spread over (by an "
                                  f"NDPluginScatter), 1..{MAX_PLUGINS}; their prefixes count up "
                                  "from the one ImagePVAPName gives: 2bmSP1:Pva1:, 2bmSP1:Pva2:, ...")

    @ImagePlugins.putter
    async def ImagePlugins(self, instance, value):
        value, message = _clamp("ImagePlugins", int(value), 1, MAX_PLUGINS)
        return await self._accept("ImagePlugins", int(value), message)


#: Defaults of the optical-zoom name PVs: the names at APS 2-BM (the optics IOC and the sample
#: stages of its TomoStream 2-BM database), which ``tomostream sim`` serves as well.
ZOOM_NAMES: Mapping[str, str] = {
    "MctOpticsPVPrefix": "2bm:MCTOptics:",
    "SampleTomo0degPVName": "2bmS1:m2",
    "SampleTomo90degPVName": "2bmS1:m1",
    "SampleYPVName": "2bmb:m25",
}


class OpticalZoom(Part):
    """The 2-BM optical zoom (``zoom_to``): the optics IOC, the sample stages and whether a lens
    change brings the slices' crossing to the rotation axis."""

    LensChangeSync = pvproperty(value="No", enum_strings=NO_YES, dtype=CheckedEnum, record="bo",
                                doc="Yes: a lens change without a region moves the sample stages "
                                    "so the slices' crossing (OrthoX, OrthoY, OrthoZ) comes to "
                                    "the rotation axis and the field's centre")
    MctOpticsPVPrefix = _pv_name(ZOOM_NAMES["MctOpticsPVPrefix"],
                                 "prefix of the mctoptics IOC (LensSelect, ImagePixelSize, ...)")
    SampleTomo0degPVName = _pv_name(ZOOM_NAMES["SampleTomo0degPVName"],
                                    "motor record of the sample stage along the beam-normal "
                                    "direction at 0 degrees (on the rotation stage)")
    SampleTomo90degPVName = _pv_name(ZOOM_NAMES["SampleTomo90degPVName"],
                                     "motor record of the sample stage along the beam-normal "
                                     "direction at 90 degrees (on the rotation stage)")
    SampleYPVName = _pv_name(ZOOM_NAMES["SampleYPVName"], "motor record of the vertical sample stage")

    @LensChangeSync.putter
    async def LensChangeSync(self, instance, value):
        return await self._accept("LensChangeSync", value)


class ReconParams(Part):
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
