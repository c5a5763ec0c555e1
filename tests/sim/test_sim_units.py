"""Scan geometry and frame making, without EPICS."""

from __future__ import annotations

import numpy as np
import pytest

from tomostream.errors import BadParameter
from tomostream.recon.phantom import default_phantom, project
from tomostream.sim import DetectorOptions, FrameSource, Inclusion, angle_table, frame_index, unique_id


def test_continuous_table_grows_past_360():
    theta = angle_table("continuous", 10.0, 0.5, 1000)
    assert theta[0] == 10.0 and theta[-1] == 10.0 + 999 * 0.5 > 360
    np.testing.assert_allclose(np.diff(theta), 0.5)


def test_backforth_repeats_sweep_forward_and_reverse():
    theta = angle_table("backforth", 0.0, 1.0, 10, sweep=3)
    np.testing.assert_array_equal(theta, [0, 1, 2, 2, 1, 0, 0, 1, 2, 2])
    default = angle_table("backforth", 0.0, 0.5, 1000)
    assert default.max() == pytest.approx(179.5) and default.min() == 0


@pytest.mark.parametrize("bad", [dict(num_angles=0), dict(step=0.0), dict(step=float("nan"))])
def test_bad_tables_refused(bad):
    args = dict(scan_type="continuous", start=0.0, step=0.5, num_angles=10) | bad
    with pytest.raises(BadParameter):
        angle_table(**args)


def test_unique_id_wrap_and_index():
    ids = unique_id(65534, np.arange(4), wrap16=True)
    np.testing.assert_array_equal(ids, [65534, 65535, 0, 1])
    np.testing.assert_array_equal(frame_index(ids, 65534, True), np.arange(4))
    assert unique_id(2**31 - 1, 1, wrap16=False) == 0


def test_noiseless_frames_are_exact_projections():
    src = FrameSource(DetectorOptions(width=32, height=16, center=17.5))
    theta = angle_table("continuous", 3.0, 7.0, 100)
    src.prepare(theta)
    assert src.exact
    p = project(default_phantom(32, 16), theta[:60:7], 32, 16, center=17.5)
    for i, k in enumerate(range(0, 60, 7)):
        expected = src.dark + src.open_beam * np.exp(-p[i])
        frame = src.projection(theta[k], k)
        assert frame.dtype == np.uint16
        np.testing.assert_allclose(frame, expected, atol=0.5 + 1e-3)


def test_repeat_key_names_the_cached_frame_only_when_it_is_sent_unchanged():
    src = FrameSource(DetectorOptions(width=32, height=16))
    src.prepare(angle_table("continuous", 0.0, 10.0, 36))
    assert src.repeat_key(370.2) == src.repeat_key(10.0) == pytest.approx(10.0)
    assert src.repeat_key(20.0) != src.repeat_key(10.0)
    np.testing.assert_array_equal(src.projection(370.2), src.projection(10.0))
    assert src.repeat_key(10.0, binning=2) is None
    for options in (dict(photons=500.0), dict(zingers=0.01)):
        made_anew = FrameSource(DetectorOptions(width=32, height=16, **options))
        made_anew.prepare(angle_table("continuous", 0.0, 10.0, 36))
        assert made_anew.repeat_key(10.0) is None
    grows = FrameSource(DetectorOptions(width=32, height=16, inclusion=Inclusion.growing(32, 16, frames=10,
                                                                                        start_frame=5)))
    grows.prepare(angle_table("continuous", 0.0, 10.0, 36))
    assert grows.repeat_key(10.0, k=0) is not None and grows.repeat_key(10.0, k=8) is None


def test_cache_too_small_falls_back_to_nearest_angle():
    src = FrameSource(DetectorOptions(width=16, height=16, cache_mb=16 * 16 * 2 * 10 / 2**20))
    src.prepare(angle_table("continuous", 0.0, 0.5, 720))
    assert not src.exact and src.cached_angles.size == 10
    np.testing.assert_array_equal(src.projection(37.0), src.projection(36.0))


def test_inclusion_grows_only_in_its_window():
    inc = Inclusion.growing(64, 64, frames=100)
    src = FrameSource(DetectorOptions(width=64, height=64, inclusion=inc))
    src.prepare(np.array([30.0]))
    early, late = src.projection(30.0, 0).astype(float), src.projection(30.0, 100).astype(float)
    np.testing.assert_allclose(late, src.expected(30.0, 100), atol=0.5 + 1e-3)
    changed = np.argwhere(np.abs(late - early) > 1)
    assert changed.size
    assert np.ptp(changed[:, 0]) <= 2 * inc.r1 + 2 and np.ptp(changed[:, 1]) <= 2 * inc.r1 + 2
    assert (late <= early + 0.5).all()    # more material absorbs more


def test_noise_follows_photon_statistics_and_binning():
    photons = 400.0
    src = FrameSource(DetectorOptions(width=64, height=64, photons=photons, read_noise=0.0))
    flats = np.stack([src.flat_frame().astype(np.float64) for _ in range(40)])
    signal = (src.dark + src.open_beam).astype(np.float64)
    rel = flats.std(axis=0).mean() / np.sqrt(signal * src.intensity / photons).mean()
    assert 0.85 < rel < 1.15
    sigma = np.sqrt(signal * src.intensity / photons).mean()
    assert abs((flats - signal).mean()) < 0.02 * sigma    # unbiased
    assert src.flat_frame(binning=4).shape == (16, 16)


def test_zingers_hit_about_the_asked_fraction():
    src = FrameSource(DetectorOptions(width=128, height=128, zingers=0.01))
    flat = src.flat_frame().astype(float)
    clean = np.rint(src.dark + src.open_beam)
    hits = np.count_nonzero(flat > clean + src.intensity)
    assert 0.5 * 0.01 * 128 * 128 < hits < 1.5 * 0.01 * 128 * 128


@pytest.mark.parametrize("bad", [dict(width=30), dict(dtype="int64"), dict(photons=-1.0),
                                 dict(center=10.0), dict(center=float("nan")),
                                 dict(zingers=0.5)])
def test_bad_detector_options_name_the_parameter(bad):
    name = next(iter(bad))
    with pytest.raises(BadParameter, match=name):
        DetectorOptions(**({"width": 64, "height": 64} | bad))


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_every_detector_dtype_matches_the_model(dtype):
    src = FrameSource(DetectorOptions(width=16, height=16, dtype=dtype))
    src.prepare(np.array([45.0]))
    frame = src.projection(45.0)
    assert frame.dtype == np.dtype(dtype)
    tol = 1e-3 if dtype == "float32" else 0.5 + 1e-3
    np.testing.assert_allclose(frame, src.expected(45.0), rtol=1e-6, atol=tol)
    assert src.projection(45.0, binning=2).shape == (8, 8)


def test_projection_noise_and_zingers_leave_the_cache_intact():
    photons = 400.0
    src = FrameSource(DetectorOptions(width=64, height=64, photons=photons, read_noise=0.0, zingers=0.001))
    src.prepare(np.array([10.0]))
    cached = src._cached(10.0).copy()
    frames = np.stack([src.projection(10.0).astype(np.float64) for _ in range(40)])
    np.testing.assert_array_equal(src._cached(10.0), cached)
    clean = src.expected(10.0).astype(np.float64)
    sigma = np.sqrt(np.maximum(clean - src.dark, 0) * src.intensity / photons)
    ok = frames < clean + 6 * sigma + 1                      # leave zingers out of the statistics
    z = ((frames - clean) / sigma)[ok]
    assert abs(z.mean()) < 0.05 and 0.9 < z.std() < 1.1
    hits = np.count_nonzero(~ok)
    assert 0.3 * 0.001 * frames.size < hits < 2 * 0.001 * frames.size
