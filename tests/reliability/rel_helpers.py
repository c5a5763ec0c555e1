"""Helpers of the reliability tests: a small simulated beamline, server wiring, StartRecon.

The Channel Access shorthands and the polling helper are those of the stream server tests
(``tests/server/stream_helpers.py``), re-exported here.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "server"))

from stream_helpers import Ca, wait_until  # noqa: E402

from tomostream.server import StreamServer  # noqa: E402
from tomostream.sim import SimBeamline  # noqa: E402

__all__ = ["Ca", "channel_defaults", "make_sim", "start_recon", "wait_until"]

#: Frame size [pixels] and rate [frames/s] of the small beamline.
N = 64
STEP = 3.0          # 60 frames per 180 degrees
FPS = 400.0


def channel_defaults(stream_prefix: str, sim_prefix: str) -> dict[str, str]:
    """StreamServer keywords that point its channel names at the beamline ``sim_prefix``."""
    return dict(tomoscan_prefix=sim_prefix, image_pvap_name=sim_prefix + "PvaPluginPVPrefix",
                dark_pva_name=sim_prefix + "StreamDarkFields",
                flat_pva_name=sim_prefix + "StreamFlatFields",
                theta_pva_name=sim_prefix + "StreamTheta", recon_pva_name=stream_prefix + "Recon")


def make_sim(sim_prefix: str, unique_prefix: str, sim_ca_port: int, **options) -> SimBeamline:
    """A noiseless, static 64 x 64 beamline (not started)."""
    kw = dict(width=N, height=N, fps=FPS, step=STEP, ca_port=sim_ca_port, num_angles=120,
              inclusion=None, read_noise=0.0, photons=0.0)
    kw.update(options)
    return SimBeamline(prefix=sim_prefix, plugin_prefix=f"{unique_prefix}DET:", **kw)


def start_recon(ca: Ca, server: StreamServer, timeout: float = 20.0) -> None:
    """StartRecon (put without waiting) and wait until the server follows the beamline."""
    ca.put_nowait("StartRecon", 1)
    wait_until(lambda: server.ready, timeout,
               lambda: f"the server connected to the beamline: {ca.text('ReconStatus')!r}")


class StatusLog:
    """Every value a PV takes (a CA monitor), so that no short-lived message is missed.

    It may be made before the server of the PV starts.

    Parameters
    ----------
    name : str
        Full PV name, e.g. ``<prefix>ReconStatus``.
    """

    def __init__(self, name: str):
        import epics

        self.texts: list[str] = []
        self.pv = epics.PV(name, auto_monitor=True, callback=self._on_value)  # connects later

    def _on_value(self, char_value=None, **kw) -> None:
        self.texts.append(str(char_value))

    def wait_for(self, text: str, timeout: float = 10.0) -> str:
        """The first value containing ``text``, waiting up to ``timeout`` [s] for it."""
        def found():
            return any(text in t for t in list(self.texts))

        wait_until(found, timeout, lambda: f"{text!r} in {self.pv.pvname}: {self.texts[-8:]}")
        return next(t for t in list(self.texts) if text in t)

    def close(self) -> None:
        self.pv.clear_callbacks()
