"""PV Access layer (pvapy): NTNDArray <-> numpy, dark/flat/theta structures, the server that
serves channels, the reconstruction publisher and the image / latest-value subscribers (the
image subscriber also in a child process of its own: :mod:`.receive_process`), and
:func:`open_image_stream`, which decides where the detector's frames are received."""

from ..unique_ids import missing_ids
from .fields import FIELD_TYPE, THETA_TYPE, field_pv, read_field, read_theta, theta_pv
from .ntnda import Frame, from_ntnda, to_ntnda
from .publisher import ReconPublisher, draw_markers
from .receive_process import ProcessImageSubscriber
from .receiving import open_image_stream
from .server import PvaChannels
from .stream import ImageStream
from .subscriber import ImageSubscriber, LatestValue

__all__ = [
    "FIELD_TYPE", "THETA_TYPE", "Frame", "ImageStream", "ImageSubscriber", "LatestValue",
    "ProcessImageSubscriber", "PvaChannels", "ReconPublisher", "draw_markers", "field_pv",
    "from_ntnda", "missing_ids", "open_image_stream", "read_field", "read_theta", "theta_pv",
    "to_ntnda",
]
