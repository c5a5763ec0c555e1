"""Simulated TomoScan streaming beamline: a caproto TomoScan IOC, a PV Access detector
streaming projections of an analytic phantom, dark/flat/theta channels and DXfile captures.

``SimBeamline(...).start()`` runs it in-process; ``tomostream sim`` runs it from the shell.
"""

from .beamline import SimBeamline
from .detector import DetectorOptions, FrameSource
from .scan import Inclusion, angle_table, frame_index, unique_id

__all__ = ["DetectorOptions", "FrameSource", "Inclusion", "SimBeamline", "angle_table", "frame_index",
           "unique_id"]
