"""The rotation axis found from the buffer: accuracy on the simulator's noisy frames, the seam,
and no estimate where the frames do not allow one."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.recon.conftest import FLAT, NZ, N, transmission
from tomostream.recon import OrthoReconstructor
from tomostream.recon.center import SIDE, find_seam
from tomostream.recon.phantom import Ellipsoid
from tomostream.sim.detector import DetectorOptions, FrameSource
from tomostream.sim.scan import Inclusion, angle_table

SIZE = 128
TOLERANCE = 0.25   # [pixels]


def simulated(center: float, angles: np.ndarray, photons: float = 2000.0, inclusion=None,
              phantom=None, buffer_size: int = 180) -> OrthoReconstructor:
    """A NumPy reconstructor fed the simulator's uint16 frames (noise on) at ``angles``."""
    src = FrameSource(DetectorOptions(width=SIZE, height=SIZE, photons=photons, center=center,
                                      inclusion=inclusion, phantom=phantom))
    src.prepare(angles)
    rec = OrthoReconstructor(SIZE, SIZE, buffer_size, backend="numpy")
    rec.set_dark(np.mean([src.dark_frame() for _ in range(4)], axis=0))
    rec.set_flat(np.mean([src.flat_frame() for _ in range(4)], axis=0))
    for start in range(0, angles.size, 16):
        chunk = angles[start:start + 16]
        rec.push(np.stack([src.projection(a, start + i) for i, a in enumerate(chunk)]), chunk)
    return rec


@pytest.mark.parametrize("center", [64.0, 57.3, 70.75, 61.5])
@pytest.mark.parametrize("scan", ["continuous", "backforth"])
def test_axis_within_a_quarter_pixel_on_noisy_simulated_frames(center, scan):
    # continuous: a turn and a half from 100 degrees, so the buffer holds 370..550 (mod 360
    # across 0); back-and-forth: 0..179, back, and forth again
    angles = angle_table(scan, 100.0 if scan == "continuous" else 0.0, 1.0, 450)
    rec = simulated(center, angles, inclusion=Inclusion.growing(SIZE, SIZE, frames=300))
    assert abs(rec.estimate_center() - center) <= TOLERANCE
    rec.set_params(center=center + 7.0, filter="ramp")       # reconstruction settings play no part
    assert abs(rec.estimate_center() - center) <= TOLERANCE


def test_a_sample_far_off_the_axis_with_coarse_slots():
    # 5-degree slots and a sample whose centre turns 30 pixels from the axis: the two sides of
    # the seam see it turned by 5 degrees (2.6 pixels at its centre) unless extrapolated
    sample = [Ellipsoid(25.0, 15.0, 0.0, 14.0, 9.0, 50.0, 30.0, 0.03),
              Ellipsoid(-8.0, -20.0, 5.0, 7.0, 7.0, 40.0, 0.0, 0.05)]
    for center in (59.0, 66.4):
        rec = simulated(center, np.arange(36) * 5.0 + 12.0, phantom=sample, buffer_size=36)
        assert abs(rec.estimate_center() - center) <= TOLERANCE


def test_no_estimate_until_the_buffer_covers_half_a_turn():
    center = 66.2
    angles = np.arange(200) * 1.0
    src = FrameSource(DetectorOptions(width=SIZE, height=SIZE, photons=2000.0, center=center,
                                      inclusion=None))
    src.prepare(angles)
    rec = OrthoReconstructor(SIZE, SIZE, 180, backend="numpy")
    assert math.isnan(rec.estimate_center())                  # empty
    rec.set_dark(src.dark_frame())
    rec.set_flat(src.flat_frame())
    got = []
    for a in angles:
        rec.push(src.projection(a), [a])
        got.append(rec.estimate_center())
    got = np.array(got)
    assert np.isnan(got[:178]).all()                            # up to 177 degrees
    assert np.isfinite(got[178:]).all() and np.abs(got[178:] - center).max() <= TOLERANCE


def test_no_estimate_without_a_sample_in_the_beam():
    src = FrameSource(DetectorOptions(width=SIZE, height=SIZE, photons=2000.0, inclusion=None))
    rec = OrthoReconstructor(SIZE, SIZE, 90, backend="numpy")
    rec.set_dark(src.dark_frame())
    rec.set_flat(src.flat_frame())
    rec.push(np.stack([src.flat_frame() for _ in range(90)]), np.arange(90) * 2.0)
    assert math.isnan(rec.estimate_center())


def test_noiseless_analytic_frames_give_the_axis_to_a_twentieth_of_a_pixel(phantom):
    # the reference conftest phantom (64 x 24, float32 frames, exact projections)
    for center in (N / 2, N / 2 + 2.5, N / 2 - 4.2):
        rec = OrthoReconstructor(N, NZ, 60, backend="numpy")
        rec.set_flat(np.full((NZ, N), FLAT))
        angles = 200.0 + np.arange(90) * 3.0
        rec.push(transmission(phantom, angles, center=center), angles)
        assert abs(rec.estimate_center() - center) <= 0.05


def test_seam_of_a_continuous_rotation_across_360_degrees():
    angles = np.full(12, np.nan)
    turn = np.arange(300.0, 480.0, 15.0)          # the last half turn, slot = angle mod 180 / 15
    angles[(np.mod(turn, 180.0) // 15).astype(int)] = turn
    seam = find_seam(angles)
    assert seam is not None and seam.gap == pytest.approx(15.0)
    ends, begins = seam.slots[:SIDE], seam.slots[SIDE:]
    np.testing.assert_allclose(angles[ends], [435.0, 450.0, 465.0])
    np.testing.assert_allclose(angles[begins], [300.0, 315.0, 330.0])
    # each side is extrapolated half the gap: the weights reproduce constants and lines
    for side in (seam.weights[:SIDE], seam.weights[SIDE:]):
        assert side.sum() == pytest.approx(1.0)
    assert seam.weights[:SIDE] @ np.array([435.0, 450.0, 465.0]) == pytest.approx(472.5)
    assert seam.weights[SIDE:] @ np.array([480.0, 495.0, 510.0]) == pytest.approx(472.5)


@pytest.mark.parametrize("angles", [
    [],                                            # empty
    [0.0, 1.0, 2.0, 3.0, 4.0],                     # too few frames
    np.arange(0.0, 170.0, 1.0),                    # 10 degrees short of half a turn
    np.r_[np.arange(0.0, 90.0, 1.0), np.arange(270.0, 360.0, 1.0) - 90.0],  # 0..90 and 180..270
], ids=["empty", "few", "short", "two-halves"])
def test_no_seam_where_the_frames_do_not_close_half_a_turn(angles):
    assert find_seam(np.asarray(angles, dtype=float)) is None
