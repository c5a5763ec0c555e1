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


async def _enum(self: Part, instance, value):
    """Putter of a settings enum: the state, or refused when it is not one."""
    suffix = instance.pvspec.name
    if value not in instance.enum_strings or value == "":
        shown = instance.enum_strings.index(value) if value == "" else repr(value)
        await self._refuse(f"{suffix}={shown} is not one of "
                           f"{[s for s in instance.enum_strings if s]}: refused")
    return await self._accept(suffix, value)


def _choice(value: str, strings, doc: str) -> pvproperty:
    """An mbbo setting of states ``strings`` (default ``value``), checked on write."""
    return pvproperty(value=value, enum_strings=strings, dtype=CheckedEnum, record="mbbo",
                      doc=doc).putter(_enum)


def _limited(value: float, low: float, high: float, doc: str, *, open_low: bool = False,
             **kwargs) -> pvproperty:
    """An ao setting (default ``value``) whose writes must be finite and are clamped into
    ``[low, high]``; with ``open_low``, ``low`` itself and below are refused."""

    async def put(self: Part, instance, value):
        suffix = instance.pvspec.name
        try:
            value = _finite(suffix, value)
        except BadParameter as exc:
            await self._refuse(str(exc))
        if open_low and value <= low:
            await self._refuse(f"{suffix}={value:g} must be > {low:g}: refused")
        value, message = _clamp(suffix, value, low, high)
        return await self._accept(suffix, value, message)

    return pvproperty(value=value, record="ao", doc=doc, **kwargs).putter(put)


def _turn(doc: str) -> pvproperty:
    """A slice's turn [degrees], -180..180."""
    return _limited(0.0, -180.0, 180.0, doc, units="degrees", precision=2)


async def _ortho(self: Part, instance, value):
    """Putter of a slice position: clamped into the frame (OrthoZ its rows, the others its
    columns) once its size is known."""
    suffix = instance.pvspec.name
    size = self.parent.frame_height if suffix == "OrthoZ" else self.parent.frame_width
    high = float(size - 1) if size else float(2**31 - 1)
    new, message = _clamp(suffix, float(value), 0.0, high)
    return await self._accept(suffix, int(new), message)


def _position(doc: str) -> pvproperty:
    """A slice position [pixels] (longout)."""
    return pvproperty(value=0, record="longout", units="pixels", doc=doc).putter(_ortho)


class ReconParams(Part):
    """Reconstruction parameters; each takes effect on the next published update."""

    Center = pvproperty(value=0.0, record="ao", units="pixels", precision=2,
                        doc="rotation axis, detector column [pixels]; 0 (unset): the middle of "
                            "the first frames")
    CenterTweak = _limited(0.5, 0.0, 1.0e4, "step of CenterTweakUp / CenterTweakDown [pixels]",
                           units="pixels", precision=2)
    CenterTweakUp = pvproperty(value=0.0, record="calcout", doc="Center += CenterTweak")
    CenterTweakDown = pvproperty(value=0.0, record="calcout", doc="Center -= CenterTweak")
    FilterType = _choice("Parzen", FILTER_NAMES, "filter of the filtered backprojection")
    Dezinger = _choice("None", DEZINGER_TYPES, "zinger removal: 0 None, 1 Radius 2, 2 Radius 3, "
                                               "3 Radius 4 (median radius [pixels])")
    RingRemoval = _choice("None", RING_REMOVAL_TYPES, "ring artefact removal")
    OrthoX = _position("column of the X slice [pixels]; 0..width-1")
    OrthoY = _position("column of the Y slice [pixels]; 0..width-1")
    OrthoZ = _position("detector row of the Z slice [pixels]; 0..height-1")
    RotX = _turn("turn of the X slice about the rotation axis")
    RotY = _turn("turn of the Y slice about the rotation axis")
    RotZ = _turn("tilt of the Z slice about the y direction")
    Zoom = _limited(1.0, 1.0, 16.0, "software zoom of the three slices, 1..16: each shows a field "
                    "1/Zoom as wide about the point where they cross, sampled Zoom times finer, "
                    "image size unchanged", precision=2)
    Energy = _limited(20.0, 0.0, 1000.0, "X-ray energy for phase retrieval [keV]", open_low=True,
                      units="keV", precision=2)
    Distance = _limited(50.0, 0.0, 1.0e5, "sample-detector distance for phase retrieval [mm]",
                        units="mm", precision=2)
    Alpha = _limited(0.0, 0.0, 1.0e3, "Paganin regularisation on tomopy's retrieve_phase scale; "
                     "0 turns phase retrieval off", precision=5)
    PixelSize = _limited(1.0, 0.0, 1.0e4, "detector pixel size at the sample [um]", open_low=True,
                         units="um", precision=3)

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
