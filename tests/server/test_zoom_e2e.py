"""Zoom written over Channel Access changes the published slices: simulated beamline ->
StreamServer -> p4p client, on loopback (as in test_stream_e2e)."""

from __future__ import annotations

import numpy as np
import pytest
import test_stream_e2e
from helpers import start_recon
from test_stream_e2e import NZ, N, rel_error, scan, split

from tomostream.recon.geometry import crossing_pixels, slice_points
from tomostream.recon.phantom import rasterize

# the simulated beamline and the slices client of the stream tests
beamline = test_stream_e2e.beamline
recon = test_stream_e2e.recon


def test_writing_zoom_magnifies_the_published_slices_centred_on_their_crossing(beamline, server, ca,
                                                                          sim_ca, recon):
    server.markers = False
    start_recon(ca, server)
    scan(sim_ca, ca)
    uid, _ = recon.settled(ca)
    ortho = (40, 22, NZ // 2)                       # off the middle of the 64 x 64 frames
    for suffix, value in zip(("OrthoX", "OrthoY"), ortho[:2], strict=True):
        ca.put(suffix, value)
        uid, plain = recon.next(uid)                # no frames flow: one image per change

    ca.put("Zoom", 2.0)
    assert ca.get("Zoom") == pytest.approx(2.0)
    uid, zoomed = recon.next(uid)
    assert zoomed.shape == plain.shape == (max(N, NZ), 3 * N)       # the viewer keeps its window
    assert not np.allclose(zoomed, plain, atol=1e-3 * np.abs(plain).max())
    phantom = beamline.source.phantom
    def crossings(zoom):
        ix, iy, iz = crossing_pixels(N, NZ, ortho, zoom)
        return (iy, ix), (iz, ix), (iz, iy)

    assert crossings(2.0) == ((N // 2, N // 2), (NZ // 2, N // 2), (NZ // 2, N // 2))  # centred
    for got, one, pts, (r, c), (r2, c2) in zip(split(zoomed, N, NZ), split(plain, N, NZ),
                                               slice_points(N, NZ, ortho, (0.0, 0.0, 0.0), 2.0),
                                               crossings(1.0), crossings(2.0), strict=True):
        truth = rasterize(phantom, pts[:, 0], pts[:, 1], pts[:, 2]).reshape(got.shape)
        assert rel_error(got, truth) < 0.3
        # pixel k2 + 2d at zoom 2 shows what pixel k + d showed (k, k2: the crossing pixels)
        rows, cols = np.arange(r2 % 2, got.shape[0], 2), np.arange(c2 % 2, got.shape[1], 2)
        np.testing.assert_allclose(got[np.ix_(rows, cols)],
                                   one[np.ix_(r + (rows - r2) // 2, c + (cols - c2) // 2)],
                                   atol=1e-5 * np.abs(one).max())

    ca.put("Zoom", 40.0)                            # clamped, with a message
    assert ca.get("Zoom") == pytest.approx(16.0)
    assert "Zoom=40 is outside 1..16: set to 16" in ca.text("ReconStatus")
    uid, _ = recon.next(uid)
    ca.put("Zoom", 1.0)
    uid, back = recon.next(uid)
    np.testing.assert_array_equal(back, plain)      # Zoom 1: the unzoomed image exactly
    assert server.running and ca.text("StartRecon") == "Acquire"
