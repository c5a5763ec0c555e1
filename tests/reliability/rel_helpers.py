"""Helpers of the reliability tests: a small simulated beamline and StartRecon.

The Channel Access shorthands and the polling helper are in ``tests/helpers.py``.
"""

from __future__ import annotations

from helpers import start_recon, wait_until

from tomostream.sim import SimBeamline

__all__ = ["make_sim", "start_recon"]

#: Frame size [pixels] and rate [frames/s] of the small beamline.
N = 64
STEP = 3.0          # 60 frames per 180 degrees
FPS = 400.0


def make_sim(sim_prefix: str, unique_prefix: str, sim_ca_port: int, **options) -> SimBeamline:
    """A noiseless, static 64 x 64 beamline (not started)."""
    kw = dict(width=N, height=N, fps=FPS, step=STEP, ca_port=sim_ca_port, num_angles=120,
              inclusion=None, read_noise=0.0, photons=0.0)
    kw.update(options)
    return SimBeamline(prefix=sim_prefix, plugin_prefix=f"{unique_prefix}DET:", **kw)


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
