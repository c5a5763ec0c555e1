"""Simulated TomoScan streaming beamline: a caproto TomoScan IOC, a PV Access detector
streaming projections of an analytic phantom, dark/flat/theta channels and DXfile captures,
and the sample stages and lenses the projections follow (motor records, an optics IOC).

``SimBeamline(...).start()`` runs it in-process; ``tomostream sim`` runs it from the shell.
"""

from ..unique_ids import frame_index, unique_id
from .beamline import SimBeamline
from .detector import DetectorOptions, FrameSource
from .pose import Pose
from .scan import Inclusion, angle_table
from .stages import StageOptions

__all__ = ["DetectorOptions", "FrameSource", "Inclusion", "Pose", "SimBeamline", "StageOptions",
           "angle_table", "frame_index", "unique_id"]
