"""The simulated sample stages and optics: motor records and an mctoptics IOC, and the pose
they give the sample.

Three motor records move the sample, as at APS 2-BM (the directions are those of the 2-BM
lens-change code, which moves the stages by ``+(ix - n/2)``, ``-(iy - n/2)`` and
``+(iz - nz/2)`` pixel sizes to bring slice pixel ``(ix, iy, iz)`` to the centre):

- the *tomo 0 deg* stage (on the rotation stage) moves the sample along the slices' x; a
  positive move takes it towards smaller x (Z-slice columns);
- the *tomo 90 deg* stage (on the rotation stage) moves it along y; a positive move takes it
  towards larger y (Z-slice rows);
- the *sample Y* stage moves it vertically; a positive move takes it up (to smaller detector
  rows).

A fourth motor turns the lens turret of the optics IOC (:class:`~tomostream.sim.optics.OpticsIOC`).
Stage positions are in mm; a pixel of the reference lens (the one in place at start) is
``DetectorPixelSize / magnification`` microns.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import BadParameter
from ..ioc.tomostream_ioc import ZOOM_NAMES
from .motor import MotorRecord
from .optics import OpticsIOC
from .pose import Pose

#: Microns per mm, the stages' unit.
UM_PER_MM = 1000.0


@dataclass(frozen=True)
class StageOptions:
    """Names and behaviour of the simulated stages and optics.

    Parameters
    ----------
    optics_prefix : str
        Prefix of the optics IOC (TomoStream's MctOpticsPVPrefix).
    tomo0deg, tomo90deg, sample_y : str
        Motor records of the sample stages (TomoStream's SampleTomo0degPVName,
        SampleTomo90degPVName, SampleYPVName).
    lens_motor : str
        Motor record of the lens turret (the optics IOC's LensMotorPVName).
    magnifications : tuple of float
        Objective magnification of each lens (1 to 3).
    lens : int
        Lens in place at start: the frames then are those of the simulator without stages.
    detector_pixel_size : float [microns]
        Camera pixel size.
    velocity : float [mm/s]
        Speed of the sample stages.
    lens_velocity : float [mm/s]
        Speed of the lens turret (lenses 30 mm apart).
    travel : float [mm]
        The sample stages move within +-travel.
    """

    optics_prefix: str = ZOOM_NAMES["MctOpticsPVPrefix"]
    tomo0deg: str = ZOOM_NAMES["SampleTomo0degPVName"]
    tomo90deg: str = ZOOM_NAMES["SampleTomo90degPVName"]
    sample_y: str = ZOOM_NAMES["SampleYPVName"]
    lens_motor: str = "2bmb:m1"
    magnifications: tuple[float, ...] = (1.0, 2.0, 5.0)
    lens: int = 0
    detector_pixel_size: float = 3.45
    velocity: float = 0.5
    lens_velocity: float = 30.0
    travel: float = 10.0

    def __post_init__(self) -> None:
        names = (self.tomo0deg, self.tomo90deg, self.sample_y, self.lens_motor)
        if len(set(names)) != len(names) or not all(names) or not self.optics_prefix:
            raise BadParameter(f"stage and optics names must be distinct and not empty: {names}, "
                               f"optics {self.optics_prefix!r}")
        if not 1 <= len(self.magnifications) <= 3 or not 0 <= self.lens < len(self.magnifications):
            raise BadParameter(f"lens={self.lens} must be one of the 1 to 3 lenses of "
                               f"magnifications={self.magnifications}")
        if not (self.velocity > 0 and self.lens_velocity > 0 and self.travel > 0):
            raise BadParameter(f"velocity={self.velocity}, lens_velocity={self.lens_velocity} mm/s "
                               f"and travel={self.travel} mm must be > 0")

    @classmethod
    def under(cls, root: str, **kwargs) -> StageOptions:
        """Options whose PV names all start with ``root`` (``<root>MCTOptics:``,
        ``<root>S1:m2``, ``<root>S1:m1``, ``<root>b:m25``, ``<root>b:m1``)."""
        names = dict(optics_prefix=f"{root}MCTOptics:", tomo0deg=f"{root}S1:m2",
                     tomo90deg=f"{root}S1:m1", sample_y=f"{root}b:m25", lens_motor=f"{root}b:m1")
        return cls(**{**names, **kwargs})

    def zoom_names(self) -> dict[str, str]:
        """The TomoStream name PVs that point at these stages and optics, by suffix."""
        return {"MctOpticsPVPrefix": self.optics_prefix, "SampleTomo0degPVName": self.tomo0deg,
                "SampleTomo90degPVName": self.tomo90deg, "SampleYPVName": self.sample_y}


class SampleStages:
    """The motor records and the optics IOC of one simulated beamline, and the pose they give.

    Parameters
    ----------
    options : StageOptions
    """

    def __init__(self, options: StageOptions = StageOptions()):
        o = self.options = options
        stage = dict(egu="mm", velocity=o.velocity, limits=(-o.travel, o.travel))
        self.tomo0deg = MotorRecord(o.tomo0deg, description="sample tomo 0 deg", **stage)
        self.tomo90deg = MotorRecord(o.tomo90deg, description="sample tomo 90 deg", **stage)
        self.sample_y = MotorRecord(o.sample_y, description="sample Y", **stage)
        positions = [30.0 * k for k in range(len(o.magnifications))]
        self.lens_motor = MotorRecord(o.lens_motor, egu="mm", velocity=o.lens_velocity,
                                      limits=(-1.0, positions[-1] + 1.0),
                                      position=positions[o.lens],
                                      description="lens turret")
        self.optics = OpticsIOC(o.optics_prefix, lens_motor=self.lens_motor,
                                magnifications=o.magnifications, lens=o.lens,
                                detector_pixel_size=o.detector_pixel_size, positions=positions)
        self._reference = self.optics.magnification
        #: Pixel size of the reference lens [microns].
        self.reference_pixel_size = o.detector_pixel_size / self._reference
        self._motors = (self.tomo0deg, self.tomo90deg, self.sample_y, self.lens_motor)

    @property
    def pvdb(self) -> Mapping:
        """Every PV of the stages and the optics, to serve beside another IOC's."""
        pvdb: dict = {}
        for group in (*self._motors, self.optics):
            pvdb.update(group.pvdb)
        return pvdb

    def pose(self) -> Pose:
        """Where the stages and the lens put the sample now (any thread)."""
        pixels_per_mm = UM_PER_MM / self.reference_pixel_size
        return Pose(x=-self.tomo0deg.position * pixels_per_mm,
                    y=self.tomo90deg.position * pixels_per_mm,
                    z=-self.sample_y.position * pixels_per_mm,
                    zoom=self.optics.magnification / self._reference)

    @property
    def settled(self) -> bool:
        """Whether every motor stands still and no lens change is under way."""
        return self.optics.settled and all(m.done for m in self._motors)


def add_stage_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``tomostream sim`` that name and shape the stages and optics."""
    d = StageOptions()
    g = parser.add_argument_group(
        "sample stages and optics", "motor records and an mctoptics IOC served beside the TomoScan "
        "PVs; the defaults are 2-BM's names, which tomostream serve names by default")
    g.add_argument("--optics-prefix", default=d.optics_prefix, help="optics IOC prefix [%(default)s]")
    g.add_argument("--tomo0deg-motor", default=d.tomo0deg, help="sample tomo 0 deg stage [%(default)s]")
    g.add_argument("--tomo90deg-motor", default=d.tomo90deg, help="sample tomo 90 deg stage [%(default)s]")
    g.add_argument("--sample-y-motor", default=d.sample_y, help="vertical sample stage [%(default)s]")
    g.add_argument("--lens-motor", default=d.lens_motor, help="lens turret motor [%(default)s]")
    g.add_argument("--lenses", default=",".join(f"{m:g}" for m in d.magnifications),
                   help="objective magnifications, 1 to 3, comma separated [%(default)s]")
    g.add_argument("--lens", type=int, default=d.lens,
                   help="index of the lens in place at start; its frames are the plain simulator's "
                        "[%(default)s]")
    g.add_argument("--detector-pixel-size", type=float, default=d.detector_pixel_size,
                   help="camera pixel size [microns] [%(default)s]")
    g.add_argument("--stage-velocity", type=float, default=d.velocity,
                   help="speed of the sample stages [mm/s] [%(default)s]")


def stage_options(args: argparse.Namespace) -> StageOptions:
    """The StageOptions that :func:`add_stage_arguments`' options ask for."""
    try:
        lenses = tuple(float(m) for m in args.lenses.split(","))
    except ValueError:
        raise BadParameter(f"--lenses {args.lenses!r} is not a list of magnifications") from None
    return StageOptions(optics_prefix=args.optics_prefix, tomo0deg=args.tomo0deg_motor,
                        tomo90deg=args.tomo90deg_motor, sample_y=args.sample_y_motor,
                        lens_motor=args.lens_motor, magnifications=lenses, lens=args.lens,
                        detector_pixel_size=args.detector_pixel_size, velocity=args.stage_velocity)
