"""The stream server: TomoScan stream in, three live slices out.

:class:`StreamServer` serves the TomoStream IOC and reconstructs while StartRecon is busy;
``tomostream serve`` (:func:`main`) runs it from the shell.

- :mod:`.stream_server`: the server (IOC, worker and heartbeat threads, publisher);
- :mod:`.session`: one StartRecon (connections, reconstructor, counters);
- :mod:`.axis`: the rotation axis found live (CenterEstimate, CenterAuto);
- :mod:`.frames`: frame bookkeeping (angle lookup across uniqueId wraps, FrameType history,
  counters, latency);
- :mod:`.cli`: the command line.
"""

from ..unique_ids import projection_index
from .cli import main
from .frames import FrameTypeHistory, buffer_size_from_theta, dezinger_radius
from .stream_server import StreamServer

__all__ = ["FrameTypeHistory", "StreamServer", "buffer_size_from_theta", "dezinger_radius", "main",
           "projection_index"]
