"""The stream server: TomoScan stream in, three live slices out.

:class:`StreamServer` serves the TomoStream IOC and reconstructs while StartRecon is busy;
``tomostream serve`` (:func:`main`) runs it from the shell.

- :mod:`.stream_server`: the server (IOC, worker and heartbeat threads, publisher);
- :mod:`.link`: what a StartRecon is given by the server (a frozen configuration, a link);
- :mod:`.session`: one StartRecon (the worker's loop, the reconstructor's life);
- :mod:`.tomoscan`: FrameType, FirstProjid and the plugin prefix, followed over Channel Access;
- :mod:`.gate`: which frames the reconstruction takes (verdicts, no actions);
- :mod:`.pacing`: when the slices are published, and each publication's latency;
- :mod:`.settings`: the TomoStream PVs as the reconstruction's parameters;
- :mod:`.axis`: the rotation axis found live (CenterEstimate, CenterAuto);
- :mod:`.frames`: frame bookkeeping (FrameType history, counters, latency);
- :mod:`.staging`: frames stacked for the engine by a few threads;
- :mod:`.heartbeat`: Watchdog, and what the worker cannot say while busy or dead;
- :mod:`.heap`: freed heap memory handed back to the OS;
- :mod:`.cli`: the command line.
"""

from ..unique_ids import projection_index
from .cli import main
from .frames import FrameTypeHistory, buffer_size_from_theta
from .settings import dezinger_radius
from .stream_server import StreamServer

__all__ = ["FrameTypeHistory", "StreamServer", "buffer_size_from_theta", "dezinger_radius", "main",
           "projection_index"]
