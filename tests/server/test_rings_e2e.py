"""RingRemoval end to end: a simulated detector with miscalibrated columns -> StreamServer ->
p4p client; the published slices lose their rings when RingRemoval is fw."""

from __future__ import annotations

import dataclasses

import numpy as np
from helpers import start_recon
from test_stream_e2e import SCAN, Recon, make_sim, scan

from tomostream.recon import OrthoReconstructor
from tomostream.sim import FrameSource

W, H = 128, 32              # wide enough for the phantom to be smooth at the scale of a column
COLUMN_ERRORS = 0.1         # a tenth of the columns off by 2-10%


def rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(a, dtype=np.float64))))


def test_ring_removal_takes_the_rings_away(sim_prefix, unique_prefix, sim_ca_port, server, ca, sim_ca,
                                          stream_prefix):
    server.markers = False                       # images compare with a reconstruction everywhere
    recon = Recon(stream_prefix + "Recon")
    try:
        with make_sim(sim_prefix, unique_prefix, sim_ca_port, width=W, height=H,
                      column_errors=COLUMN_ERRORS) as sim:
            assert ca.text("RingRemoval") == "None"
            start_recon(ca, server)
            scan(sim_ca, ca)
            uid, plain = recon.settled(ca)
            ca.put("RingRemoval", "fw")
            uid, removed = recon.next(uid)
            ca.put("RingRemoval", "None")
            uid, back = recon.next(uid)
            # the buffer holds the scan's second half; the same frames, reconstructed here
            params = dict(center=float(ca.get("Center")), filter=ca.text("FilterType").lower(),
                          ortho=(ca.get("OrthoX"), ca.get("OrthoY"), ca.get("OrthoZ")))
            theta, last = sim.theta[SCAN // 2:SCAN], range(SCAN // 2, SCAN)
            calibrated = FrameSource(dataclasses.replace(sim.options, column_errors=0.0))
            calibrated.prepare(theta)
            images = {}
            for name, source in (("truth", calibrated), ("removed", sim.source)):
                rec = OrthoReconstructor(W, H, theta.size, backend="numpy")
                rec.set_dark(sim.dark)
                rec.set_flat(sim.flat)
                rec.set_params(**params)
                rec.push(np.stack([source.projection(theta[i], k) for i, k in enumerate(last)]), theta)
                if name == "removed":
                    rec.set_params(ring_removal="fw")
                images[name] = rec.image()
    finally:
        recon.close()
    truth = images["truth"]
    rings = rms(plain - truth)
    assert rings > 0.02 * rms(truth)                     # the miscalibration shows
    assert rms(removed - truth) < 0.5 * rings, (rms(removed - truth), rings)
    np.testing.assert_allclose(removed, images["removed"], rtol=0, atol=1e-4 * np.abs(removed).max())
    np.testing.assert_allclose(back, plain, rtol=0, atol=1e-5 * np.abs(plain).max())
    assert "refused" not in ca.text("ReconStatus")
