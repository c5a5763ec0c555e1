"""Names the beamline's records use, shared by every layer (the ground floor, as errors).

The strings are the EPICS enum states of TomoScan and of the APS TomoStream records; they
must match the records exactly (autosave files and screens write them).
"""

from __future__ import annotations

#: TomoStream FilterType (mbbo) states, by index.
FILTER_NAMES = ("Parzen", "Shepp-logan", "Ramp", "Butterworth")
#: TomoScan FrameType (mbbi) states, by index.
FRAME_TYPES = ("DarkField", "FlatField", "Projection")
#: The FrameType of the frames that are reconstructed.
PROJECTION = "Projection"
#: Most detector image channels (PVA plugins behind an NDPluginScatter) one detector's frames
#: may be spread over: the range of TomoStream's ImagePlugins.
MAX_PLUGINS = 8
