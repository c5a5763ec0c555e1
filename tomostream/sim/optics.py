"""The simulated optics IOC: the lens selector of an Optique Peter microscope, as mctoptics runs it.

Record names and the sequence of a lens change are those of the APS mctoptics IOC
(github.com/xray-imaging/mctoptics, ``mctOptics.template`` and ``mctoptics.py``):

- a write to ``LensSelect`` while ``MCTStatus`` is not ``Done`` is refused (mctoptics writes
  the current lens back); otherwise
- ``MCTStatus`` reads ``Moving to lens: <name>`` while the lens motor (``LensMotorPVName``, a
  motor record) moves to ``LensPos<k>``,
- then ``Lens selected: <name>``; ``CameraObjective`` (the magnification, as text) and
  ``ImagePixelSize`` (``DetectorPixelSize`` / magnification [microns]) follow the new lens,
- and ``MCTStatus`` goes back to ``Done``.

The simulated detector sees the new magnification from ``Lens selected`` on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from caproto import ChannelType, SkipWrite
from caproto.server import PVGroup, pvproperty

from ..errors import BadParameter
from .motor import MotorRecord

#: MCTStatus when no lens change runs.
IDLE = "Done"
STATUS_LENGTH = 256
MAX_LENSES = 3


def lens_name(magnification: float) -> str:
    """The name of a lens of ``magnification``, as beamlines write them: ``5x``, ``1.1x``."""
    return f"{magnification:g}x"


def _stringout(value: str, **kwargs) -> pvproperty:
    return pvproperty(value=value, dtype=ChannelType.STRING, record="stringout", **kwargs)


def _microns(**kwargs) -> pvproperty:
    return pvproperty(value=0.0, record="ao", units="microns", precision=4, **kwargs)


class OpticsIOC(PVGroup):
    """Simulated mctoptics IOC: lens selection and the pixel size it gives.

    PVs (prefix + suffix): LensSelect (mbbo, the lens names), Lens0Name, Lens1Name, Lens2Name
    (stringout), LensPos0, LensPos1, LensPos2 (ao, lens motor positions), LensMotorPVName
    (stringout: the lens motor record), CameraObjective (stringout: magnification),
    DetectorPixelSize, ImagePixelSize (ao, microns), MCTStatus (waveform of char).

    Parameters
    ----------
    prefix : str
        PV prefix, e.g. ``2bm:MCTOptics:``.
    lens_motor : MotorRecord
        The motor that turns the lens turret; served beside this group.
    magnifications : sequence of float
        Objective magnification of each lens (1 to 3 lenses).
    lens : int
        The lens in place at start.
    detector_pixel_size : float [microns]
        Pixel size of the camera.
    positions : sequence of float [EGU of the lens motor], optional
        Lens motor position of each lens; every 30 EGU from 0 by default.
    """

    LensSelect = pvproperty(value="Pos. 0", dtype=ChannelType.ENUM, enum_strings=("Pos. 0",),
                            record="mbbo",
                            doc="the lens to use; refused while MCTStatus is not Done")
    Lens0Name = _stringout("Unknown", read_only=True, doc="name of lens 0")
    Lens1Name = _stringout("Unknown", read_only=True, doc="name of lens 1")
    Lens2Name = _stringout("Unknown", read_only=True, doc="name of lens 2")
    LensPos0 = pvproperty(value=0.0, record="ao", read_only=True, doc="lens motor position of lens 0")
    LensPos1 = pvproperty(value=0.0, record="ao", read_only=True, doc="lens motor position of lens 1")
    LensPos2 = pvproperty(value=0.0, record="ao", read_only=True, doc="lens motor position of lens 2")
    LensMotorPVName = _stringout("", read_only=True, doc="motor record of the lens turret")
    CameraObjective = _stringout("Unknown", read_only=True, doc="magnification of the lens in place")
    DetectorPixelSize = _microns(read_only=True, doc="pixel size of the camera [microns]")
    ImagePixelSize = _microns(read_only=True, doc="pixel size at the sample [microns]")
    MCTStatus = pvproperty(value=IDLE, dtype=ChannelType.CHAR, max_length=STATUS_LENGTH,
                           string_encoding="latin-1", record="waveform", read_only=True,
                           doc="Done, or the lens change running")

    def __init__(self, prefix: str, *, lens_motor: MotorRecord, magnifications: Sequence[float],
                 lens: int = 0, detector_pixel_size: float = 3.45,
                 positions: Sequence[float] | None = None, **kwargs):
        magnifications = [float(m) for m in magnifications]
        if not 1 <= len(magnifications) <= MAX_LENSES or min(magnifications) <= 0:
            raise BadParameter(f"magnifications={magnifications}: 1 to {MAX_LENSES} lenses, each > 0")
        if not 0 <= lens < len(magnifications):
            raise BadParameter(f"lens={lens} is not one of the {len(magnifications)} lenses")
        if not detector_pixel_size > 0:
            raise BadParameter(f"detector_pixel_size={detector_pixel_size} microns must be > 0")
        positions = [30.0 * k for k in range(len(magnifications))] if positions is None else list(positions)
        if len(positions) != len(magnifications):
            raise BadParameter(f"positions={positions}: one per lens ({len(magnifications)})")
        super().__init__(prefix, **kwargs)
        self.lens_motor = lens_motor
        self.magnifications = magnifications
        self.names = tuple(lens_name(m) for m in magnifications)
        self.positions = positions
        self.detector_pixel_size = float(detector_pixel_size)
        #: Index of the lens the detector sees (changes at "Lens selected"); any thread may read.
        self.lens = int(lens)
        self._busy = False
        self._change: asyncio.Task | None = None       # the lens change running (kept alive)

    @property
    def magnification(self) -> float:
        """Magnification of the lens the detector sees now."""
        return self.magnifications[self.lens]

    @property
    def settled(self) -> bool:
        """Whether no lens change is under way."""
        return not self._busy

    @LensSelect.startup
    async def LensSelect(self, instance, async_lib):
        await instance.write_metadata(enum_strings=self.names)    # mctoptics: LensName<k> sets them
        await instance.write(self.names[self.lens], verify_value=False)
        for k in range(MAX_LENSES):
            name, position = ((self.names[k], self.positions[k]) if k < len(self.names)
                              else ("Unknown", 0.0))
            await getattr(self, f"Lens{k}Name").write(name, verify_value=False)
            await getattr(self, f"LensPos{k}").write(position, verify_value=False)
        await self.LensMotorPVName.write(self.lens_motor.prefix, verify_value=False)
        await self.DetectorPixelSize.write(self.detector_pixel_size, verify_value=False)
        await self._show_lens()

    @LensSelect.putter
    async def LensSelect(self, instance, value):
        if self._busy:
            self.log.warning("LensSelect=%s refused: %s", value, self.MCTStatus.value)
            raise SkipWrite()
        self._busy = True
        self._change = asyncio.create_task(self._select(self.names.index(value)))
        return value

    async def _select(self, lens: int) -> None:
        """mctoptics' lens_select: move the turret, then show the new lens."""
        name = self.names[lens]
        try:
            await self.MCTStatus.write(f"Moving to lens: {name}", verify_value=False)
            await self.lens_motor.motor.write(self.positions[lens])      # completes at the end
            if self.lens_motor.position != self.positions[lens]:         # stopped on the way
                raise RuntimeError(f"the lens motor stopped at {self.lens_motor.position:g}")
            self.lens = lens
            await self.MCTStatus.write(f"Lens selected: {name}", verify_value=False)
            await self._show_lens()
        except Exception as exc:     # the lens in place stays selected, as mctoptics reports
            self.log.error("lens %s not selected: %s", name, exc)
            await self.LensSelect.write(self.names[self.lens], verify_value=False)
        finally:
            await self.MCTStatus.write(IDLE, verify_value=False)
            self._busy = False

    async def _show_lens(self) -> None:
        await self.CameraObjective.write(f"{self.magnification:g}", verify_value=False)
        await self.ImagePixelSize.write(self.detector_pixel_size / self.magnification,
                                        verify_value=False)
