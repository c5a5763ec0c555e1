"""Ring removal (RingRemoval fw): column stripes of the buffer's mean frame, subtracted per frame."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage

from tomostream.errors import BadParameter
from tomostream.recon import OrthoReconstructor
from tomostream.recon.rings import canonical_ring_removal, stripe_profile
from tomostream.sim import DetectorOptions, FrameSource

N, NZ, P = 128, 16, 120                     # 1.5 degrees per slot
ANGLES = np.arange(2 * P) * (180.0 / P)     # two turns of the buffer: 360 degrees
#: Fraction of miscalibrated columns (2-10% gain errors the flat field does not see).
COLUMN_ERRORS = 0.1


class Detector:
    """Noiseless frames of the simulated detector over :data:`ANGLES`, and its fields."""

    def __init__(self, column_errors: float):
        self.source = FrameSource(DetectorOptions(width=N, height=NZ, column_errors=column_errors))
        self.source.prepare(ANGLES)
        self.frames = np.stack([self.source.projection(a, k) for k, a in enumerate(ANGLES)])
        self.dark = self.source.dark
        self.flat = self.source.dark + self.source.open_beam

    def reconstructor(self, **params) -> OrthoReconstructor:
        rec = OrthoReconstructor(width=N, height=NZ, buffer_size=P, backend="numpy")
        rec.set_dark(self.dark)
        rec.set_flat(self.flat)
        rec.set_params(**params)
        return rec

    def image(self, per_push: int = 8, **params) -> np.ndarray:
        """The slices after both turns, pushed ``per_push`` frames at a time."""
        rec = self.reconstructor(**params)
        for start in range(0, ANGLES.size, per_push):
            rec.push(self.frames[start:start + per_push], ANGLES[start:start + per_push])
        return rec.image()


@pytest.fixture(scope="module")
def calibrated() -> Detector:
    return Detector(0.0)


@pytest.fixture(scope="module")
def miscalibrated() -> Detector:
    return Detector(COLUMN_ERRORS)


@pytest.fixture(scope="module")
def reference(calibrated) -> np.ndarray:
    """The slices a calibrated detector gives, without ring removal."""
    return calibrated.image()


def rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(a, dtype=np.float64))))


def test_pv_spellings_and_bad_names():
    assert canonical_ring_removal("None") == "none"
    assert canonical_ring_removal("fw") == "fw"
    with pytest.raises(BadParameter, match="ring_removal='ti'"):
        canonical_ring_removal("ti")
    rec = OrthoReconstructor(width=8, height=4, buffer_size=4, backend="numpy")
    with pytest.raises(BadParameter, match="ring_removal"):
        rec.set_params(ring_removal=1)
    assert rec.params.ring_removal == "none"


def test_stripes_are_found_on_a_sloping_sample_profile():
    u = np.arange(256) - 127.5
    sample = 1.0 + 0.01 * u + 0.4 * np.exp(-(u / 30) ** 2) + 0.5 * np.exp(-((u - 60) / 12) ** 2)
    stripes = np.zeros(256)
    where = [40, 41, 100, 160, 200]                     # a two-column stripe and three single ones
    stripes[where] = [0.05, 0.05, -0.03, 0.02, 0.08]
    found = stripe_profile((sample + stripes)[None].astype(np.float32), scipy.ndimage)[0]
    np.testing.assert_allclose(found[where], stripes[where], rtol=0.1)
    # the sample itself (slopes of 0.01 per column, bumps) is no stripe
    alone = stripe_profile(sample[None].astype(np.float32), scipy.ndimage)[0]
    assert np.abs(alone).max() < 0.1 * np.abs(stripes[where]).min()


def test_ring_contrast_of_miscalibrated_columns_drops(miscalibrated, calibrated, reference):
    """Rings: what the miscalibrated columns add to the slices of a calibrated detector."""
    rings = rms(miscalibrated.image() - reference)
    removed = rms(miscalibrated.image(ring_removal="fw") - reference)
    assert rings > 0.02 * rms(reference)                    # the rings are there to remove
    assert removed < 0.5 * rings, (removed, rings)
    # on a calibrated detector ring removal changes little (the centred phantom's edges)
    assert rms(calibrated.image(ring_removal="fw") - reference) < 0.3 * rings


def test_frame_by_frame_the_rings_go_and_the_sums_stay_exact(miscalibrated, reference):
    """Frames pushed one at a time, an image every few frames (as the server publishes): each
    frame keeps the estimate of its time, the buffer is corrected anew each time the frames
    behind the estimate double, and the incremental slices equal slices rebuilt from the
    filtered buffer."""
    rec = miscalibrated.reconstructor(ring_removal="fw")
    rec.rebuild_every = 0
    rec.image()
    for k, (frame, angle) in enumerate(zip(miscalibrated.frames, ANGLES, strict=True)):
        rec.push(frame, [angle])
        if k % 5 == 4:
            rec.image()
    assert P // 2 < rec.stats["reprocessed"] <= 2 * P
    incremental = rec.image().copy()
    rec._stale_sums = True
    np.testing.assert_allclose(rec.image(), incremental, rtol=0, atol=1e-4 * np.abs(incremental).max())
    assert rms(incremental - reference) < 0.5 * rms(miscalibrated.image() - reference)


def test_the_running_sum_holds_exactly_the_buffered_frames(miscalibrated):
    rec = miscalibrated.reconstructor(ring_removal="fw")
    rng = np.random.default_rng(1)

    def check():
        expected = rec.raw_frames[rec.occupied].sum(axis=0, dtype=np.float64)
        np.testing.assert_array_equal(rec.pipeline.stripes.total, expected)

    for _ in range(6):                                   # random batches: new slots and replacements
        pick = rng.choice(ANGLES.size, 17, replace=False)
        rec.push(miscalibrated.frames[pick], ANGLES[pick] + rng.uniform(0, 1.4, 17))
        check()
    rec.reset()
    rec.push(miscalibrated.frames[:5], ANGLES[:5])      # after a reset: only the new frames
    check()
    rec.push(miscalibrated.frames[5:9].astype(np.float32), ANGLES[5:9])   # uint16 -> float32 buffer
    assert rec.raw_frames.dtype == np.float32
    check()
    rec.set_params(ring_removal="none")                 # frames replaced while it is off
    rec.push(miscalibrated.frames[P:P + 9].astype(np.float32), ANGLES[P:P + 9])
    rec.set_params(ring_removal="fw")
    rec.image()
    check()


def test_switching_it_on_and_off_rebuilds(miscalibrated, calibrated):
    truth = calibrated.reconstructor()
    truth.push(calibrated.frames[:P], ANGLES[:P])
    rec = miscalibrated.reconstructor()
    rec.push(miscalibrated.frames[:P], ANGLES[:P])
    plain = rec.image().copy()
    rec.set_params(ring_removal="fw")
    assert rms(rec.image() - truth.image()) < 0.5 * rms(plain - truth.image())
    rec.set_params(ring_removal="None")
    np.testing.assert_allclose(rec.image(), plain, rtol=0, atol=1e-6 * np.abs(plain).max())


def test_a_new_flat_field_corrects_the_buffer_with_it(miscalibrated):
    """The estimate follows the fields: after a new flat the slices are those of a buffer
    filled with that flat from the start."""
    flat = miscalibrated.flat * np.linspace(0.9, 1.1, N, dtype=np.float32)
    rec = miscalibrated.reconstructor(ring_removal="fw")
    rec.push(miscalibrated.frames[:P], ANGLES[:P])
    rec.image()
    rec.set_flat(flat)
    fresh = miscalibrated.reconstructor(ring_removal="fw")
    fresh.set_flat(flat)
    fresh.push(miscalibrated.frames[:P], ANGLES[:P])
    a, b = rec.image(), fresh.image()
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * np.abs(b).max())


def test_the_estimate_is_made_again_once_a_thirty_second_of_the_buffer_is_new(miscalibrated, monkeypatch):
    from tomostream.recon import rings

    made = []
    monkeypatch.setattr(rings, "stripe_profile", lambda *a, **k: made.append(1) or stripe_profile(*a, **k))
    rec = miscalibrated.reconstructor(ring_removal="fw")
    rec.push(miscalibrated.frames[:P], ANGLES[:P])
    rec.image()
    made.clear()
    for frame, angle in zip(miscalibrated.frames[P:P + 40], ANGLES[P:P + 40], strict=True):
        rec.push(frame, [angle])
    assert len(made) == 40 // int(np.ceil(P * rings.REFRESH))     # every 4th frame of 120
    assert rec.up_to_date                                         # a full buffer: no re-processing
