"""OrthoReconstructor on the CPU: accuracy against the analytic phantom, the angular buffer,
incremental updates, parameter changes and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from tests.recon.conftest import FLAT, NZ, N, transmission
from tomostream.errors import BackendUnavailable, BadFrame, BadParameter
from tomostream.recon import FILTERS, OrthoReconstructor
from tomostream.recon.geometry import slice_points
from tomostream.recon.phantom import Ellipsoid, ortho_slices, rasterize

ORTHO = (36, 30, 13)


def reconstructor(p=90, **params) -> OrthoReconstructor:
    rec = OrthoReconstructor(width=N, height=NZ, buffer_size=p, backend="numpy")
    rec.set_params(**{"ortho": ORTHO, **params})
    rec.set_flat(np.full((NZ, N), FLAT))
    return rec


def rel_error(rec: np.ndarray, truth: np.ndarray) -> float:
    """RMS error inside the sample (away from edges) relative to the largest value."""
    inner = truth != 0
    return float(np.sqrt(np.mean((rec[inner] - truth[inner]) ** 2)) / np.abs(truth).max())


def full_sweep(rec, phantom, p=90, start=0.0, center=None):
    angles = start + np.arange(p) * 180.0 / p
    rec.push(transmission(phantom, angles, center=center), angles)


@pytest.mark.parametrize("name", ["ramp", "shepp-logan", "parzen", "hann"])
def test_three_slices_match_phantom(phantom, name):
    rec = reconstructor(filter=name)
    full_sweep(rec, phantom)
    for got, truth in zip(rec.slices(), ortho_slices(phantom, N, NZ, ORTHO), strict=True):
        assert got.dtype == np.float32 and got.shape == truth.shape
        assert rel_error(got, truth) < 0.25


def test_uniform_disc_reconstructs_to_its_value():
    disc = [Ellipsoid(0, 0, 0, 20, 20, 40, 0, 0.01)]
    rec = reconstructor(filter="ramp")
    full_sweep(rec, disc)
    z, y, x = rec.slices()
    c = N // 2
    assert np.abs(z[c - 8:c + 8, c - 8:c + 8] - 0.01).max() < 5e-4
    assert np.abs(y[:, 20:44].mean() - 0.01) < 3e-4 and abs(x[5, 32] - 0.01) < 5e-4
    assert np.abs(z[0:4, 0:4]).max() < 1e-3                      # outside the disc


def test_every_filter_and_pv_spelling():
    assert set(FILTERS) == {"ramp", "shepp-logan", "parzen", "butterworth", "hann", "hamming", "cosine"}
    disc = [Ellipsoid(0, 0, 0, 20, 20, 40, 0, 0.01)]
    rec = reconstructor()
    full_sweep(rec, disc)
    for name in FILTERS + ("Parzen", "Shepp-logan", "Ramp", "Butterworth"):
        rec.set_params(filter=name)
        z = rec.slices()[0]
        assert abs(z[28:36, 28:36].mean() - 0.01) < 1e-3, name
    with pytest.raises(BadParameter, match="valid: ramp, shepp-logan"):
        rec.set_params(filter="sinc")


def test_off_centre_axis(phantom):
    rec = reconstructor(center=N / 2 + 3.5)
    full_sweep(rec, phantom, center=N / 2 + 3.5)
    good = rel_error(rec.slices()[0], ortho_slices(phantom, N, NZ, ORTHO)[0])
    rec.set_params(center=N / 2)                                   # wrong axis: visibly worse
    bad = rel_error(rec.slices()[0], ortho_slices(phantom, N, NZ, ORTHO)[0])
    assert good < 0.25 and bad > 1.5 * good


def test_tilted_planes_match_phantom(phantom):
    rot = (10.0, -15.0, 20.0)
    rec = reconstructor(rot=rot)
    full_sweep(rec, phantom)
    for got, pts in zip(rec.slices(), slice_points(N, NZ, ORTHO, rot), strict=True):
        truth = rasterize(phantom, pts[:, 0], pts[:, 1], pts[:, 2]).reshape(got.shape)
        # points leaving the detector rows reconstruct to 0: compare where the sample is seen
        seen = np.abs(pts[:, 2].reshape(got.shape)) < NZ / 2 - 1
        assert rel_error(np.where(seen, got, 0), np.where(seen, truth, 0)) < 0.25
    untilted = reconstructor()
    full_sweep(untilted, phantom)
    assert not np.allclose(untilted.slices()[0], rec.slices()[0], atol=1e-3)


def test_rot_x_90_at_the_centre_shows_the_y_slice_through_the_centre(phantom):
    centre = (N // 2, N // 2, ORTHO[2])
    turned = reconstructor(ortho=centre, rot=(90.0, 0.0, 0.0))
    full_sweep(turned, phantom)
    plain = reconstructor(ortho=centre)
    full_sweep(plain, phantom)
    y = plain.slices()[1]
    np.testing.assert_allclose(turned.slices()[2], y, atol=1e-5 * np.abs(y).max())


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_a_rot_pv_turns_its_own_slice_only(phantom, axis):
    """RotX turns the X slice, RotY the Y slice, RotZ the Z slice; the others stay."""
    rot = [0.0, 0.0, 0.0]
    rot[axis] = 25.0
    turned = reconstructor(rot=tuple(rot))
    full_sweep(turned, phantom)
    plain = reconstructor()
    full_sweep(plain, phantom)
    own = (2, 1, 0)[axis]                                     # slices come as Z, Y, X
    for k, (a, b) in enumerate(zip(turned.slices(), plain.slices(), strict=True)):
        if k == own:
            assert not np.allclose(a, b, atol=1e-3 * np.abs(b).max())
        else:
            np.testing.assert_allclose(a, b, atol=1e-5 * np.abs(b).max())


def test_tilt_zero_equals_fast_path(phantom):
    fast = reconstructor()
    full_sweep(fast, phantom)
    general = reconstructor(rot=(1e-9, 0.0, 0.0))                  # forces the sample-point kernel
    full_sweep(general, phantom)
    for a, b in zip(fast.slices(), general.slices(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5 * np.abs(a).max())


def test_continuous_rotation_over_540_degrees(phantom):
    p = 60
    rec = reconstructor(p=p, center=N / 2 + 2)
    angles = np.arange(3 * p) * 3.0                                # 0 .. 537 degrees
    for chunk in np.array_split(np.arange(angles.size), 9):
        rec.push(transmission(phantom, angles[chunk], center=N / 2 + 2), angles[chunk])
    assert rec.filled == p and rec.stats["replaced"] == 2 * p
    ref = reconstructor(p=p, center=N / 2 + 2)
    last = angles[-p:]
    ref.push(transmission(phantom, last, center=N / 2 + 2), last)
    for a, b in zip(rec.slices(), ref.slices(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4 * np.abs(b).max())
    assert rel_error(rec.slices()[0], ortho_slices(phantom, N, NZ, ORTHO)[0]) < 0.25


def test_back_and_forth_sweeps_and_uneven_steps(phantom):
    rng = np.random.default_rng(1)
    fwd = np.sort(rng.uniform(0, 180, 70))
    angles = np.concatenate([fwd, fwd[::-1] + rng.uniform(-0.5, 0.5, 70), fwd])
    rec = reconstructor(p=45)
    for a in np.array_split(angles, 7):
        rec.push(transmission(phantom, a), a)
    assert rec.filled <= 45 and rec.stats["frames"] == angles.size
    assert rel_error(rec.slices()[0], ortho_slices(phantom, N, NZ, ORTHO)[0]) < 0.3


def test_filling_buffer_weights_follow_coverage():
    disc = [Ellipsoid(0, 0, 0, 20, 20, 40, 0, 0.01)]
    rec = reconstructor(p=90, filter="ramp")
    angles = np.arange(0, 180, 4.0)                                # half the slots
    rec.push(transmission(disc, angles), angles)
    assert rec.filled == 45
    assert abs(rec.slices()[0][28:36, 28:36].mean() - 0.01) < 5e-4


def test_incremental_equals_rebuild_after_many_single_pushes(phantom):
    p = 30
    rec = reconstructor(p=p)
    rec.rebuild_every = 0                                          # pure incremental updates
    rng = np.random.default_rng(0)
    angles = rng.uniform(-720, 720, 10 * p)
    frames = transmission(phantom, angles)
    rec.slices()
    for f, a in zip(frames, angles, strict=True):
        rec.push(f, [a])
    inc = rec.image()
    assert rec.stats["rebuilds"] == 1                              # only the first, empty one
    rec.set_params(center=rec.params.center)                       # no change: no rebuild
    rec._stale_sums = True
    scratch = rec.image()
    np.testing.assert_allclose(inc, scratch, atol=1e-4 * np.abs(scratch).max())


def test_periodic_rebuild_happens(phantom):
    rec = reconstructor(p=10)
    rec.rebuild_every = 20
    for a in np.arange(0, 300, 6.0):                               # 50 updates
        rec.push(transmission(phantom, [a]), [a])
        rec.slices()
    assert rec.stats["rebuilds"] == 1 + 50 // 20


def test_parameter_changes_are_honoured(phantom):
    rec = reconstructor()
    full_sweep(rec, phantom)
    base = rec.image()
    for change in (dict(center=N / 2 + 1), dict(ortho=(20, 40, 5)), dict(rot=(0, 0, 30.0)),
                   dict(filter="ramp"), dict(dezinger=2, dezinger_threshold=0.01),
                   dict(alpha=1e-2, energy=30.0, distance=50.0, pixel_size=1.0)):
        fresh = reconstructor(**change)
        full_sweep(fresh, phantom)
        rec.set_params(**change)
        np.testing.assert_allclose(rec.image(), fresh.image(), atol=1e-5)
        assert not np.allclose(rec.image(), base, atol=1e-4), change
        rec.set_params(**{k: getattr(reconstructor().params, k) for k in change})
        np.testing.assert_allclose(rec.image(), base, atol=1e-5)


def test_dark_and_flat_changes_are_honoured(phantom):
    angles = np.arange(90) * 2.0
    raw = transmission(phantom, angles, flat=900.0, dark=100.0)
    rec = reconstructor()
    rec.set_flat(np.ones((NZ, N)))
    rec.push(np.round(raw).astype(np.uint16), angles)
    wrong = rec.slices()[0]
    rec.set_dark(np.full((NZ, N), 100, np.uint16))
    rec.set_flat(np.full((NZ, N), 900.0))
    right = rec.slices()[0]
    truth = ortho_slices(phantom, N, NZ, ORTHO)[0]
    assert rel_error(right, truth) < 0.25 < rel_error(wrong, truth)


@pytest.mark.parametrize(("dtype", "flat", "full_scale"), [
    (np.uint8, 200.0, 255), (np.uint16, 3000.0, 4095), (np.uint16, 30000.0, 65535),
    (np.float32, 1.0, 4.0)])
def test_dezinger_removes_outliers_at_any_bit_depth(phantom, dtype, flat, full_scale):
    """The default threshold (relative to the local median) finds zingers that saturate an
    8-bit, a 12-bit or a 16-bit camera, or quadruple a float frame."""
    angles = np.arange(90) * 2.0
    frames = np.round(transmission(phantom, angles, flat=flat)).astype(dtype) if dtype != np.float32 \
        else transmission(phantom, angles, flat=flat)
    zingers = frames.copy()
    zingers[::3, 10, 20] = full_scale
    zingers[1::3, 4, 33] = full_scale
    recs = {}
    for name, data, radius in (("clean", frames, 0), ("dz", zingers, 2), ("raw", zingers, 0),
                               ("clean_dz", frames, 2)):
        rec = recs[name] = reconstructor(dezinger=radius)
        rec.set_flat(np.full((NZ, N), flat))
        rec.push(data, angles)
    clean = recs["clean"].image()
    assert np.abs(recs["dz"].image() - clean).max() < 0.2 * np.abs(recs["raw"].image() - clean).max()
    # frames without zingers are left as they were
    assert np.abs(recs["clean_dz"].image() - clean).max() < 0.05 * np.abs(clean).max()


def test_paganin_smooths_and_keeps_mean():
    disc = [Ellipsoid(0, 0, 0, 20, 20, 40, 0, 0.01)]
    rec = reconstructor(filter="ramp")
    full_sweep(rec, disc)
    sharp = rec.slices()[0]
    rec.set_params(alpha=1e-2, energy=20.0, distance=50.0, pixel_size=1.0)
    smooth = rec.slices()[0]
    assert abs(smooth[28:36, 28:36].mean() - 0.01) < 2e-3
    assert np.abs(np.diff(smooth, axis=1)).max() < np.abs(np.diff(sharp, axis=1)).max()


def test_nonfinite_pixels_are_counted_not_propagated(phantom):
    angles = np.arange(90) * 2.0
    frames = transmission(phantom, angles)
    frames[5, 3, 7] = np.nan
    frames[6, 4, 8] = np.inf
    frames[7, 5, 9] = -np.inf
    rec = reconstructor()
    rec.push(frames, angles)
    assert rec.stats["nonfinite_pixels"] == 3
    assert np.isfinite(rec.image()).all()


def test_dead_pixels_and_zero_counts_are_guarded(phantom):
    angles = np.arange(90) * 2.0
    frames = transmission(phantom, angles)
    frames[:, 2, 2] = 0.0                                          # no light: -log clamped
    flat = np.full((NZ, N), 1000.0)
    flat[3, 3] = 0.0                                               # flat - dark <= 0
    rec = reconstructor()
    rec.set_flat(flat)
    rec.push(frames, angles)
    assert np.isfinite(rec.image()).all()


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_frame_dtypes(phantom, dtype):
    angles = np.arange(90) * 2.0
    frames = transmission(phantom, angles, flat=200.0)
    rec = reconstructor()
    rec.set_flat(np.full((NZ, N), 200.0))
    rec.push(np.round(frames).astype(dtype), angles)
    assert rel_error(rec.slices()[0], ortho_slices(phantom, N, NZ, ORTHO)[0]) < 0.3


def test_bad_input_leaves_buffer_unchanged(phantom):
    rec = reconstructor()
    full_sweep(rec, phantom)
    before, stats = rec.image(), rec.stats
    good = transmission(phantom, [1.0, 2.0])
    cases = [
        (BadFrame, "shape", good[:, :, :-1], [1.0, 2.0]),
        (BadFrame, "dtype", good.astype(np.float64), [1.0, 2.0]),
        (BadFrame, "dtype", good.astype(np.int32), [1.0, 2.0]),
        (BadFrame, "shape", good[0, 0], [1.0]),
        (BadParameter, "one per frame", good, [1.0]),
        (BadParameter, "non-finite", good, [1.0, np.nan]),
        (BadParameter, "not numbers", good, ["a", "b"]),
    ]
    for exc, msg, frames, angles in cases:
        with pytest.raises(exc, match=msg):
            rec.push(frames, angles)
    for bad in (dict(center=np.nan), dict(ortho=(N, 0, 0)), dict(ortho=(1, 2)), dict(rot=(0, 0, np.inf)),
                dict(dezinger=7), dict(alpha=-1), dict(energy=0), dict(filter=3), dict(bogus=1)):
        with pytest.raises(BadParameter):
            rec.set_params(**bad)
    for field in (np.zeros((NZ, N + 1)), np.full((NZ, N), np.nan), np.zeros((NZ, N), complex)):
        with pytest.raises(BadFrame):
            rec.set_dark(field)
        with pytest.raises(BadFrame):
            rec.set_flat(field)
    assert isinstance(BadFrame("x"), ValueError) and isinstance(BadParameter("x"), ValueError)
    np.testing.assert_array_equal(rec.image(), before)
    assert rec.stats == stats


def test_reset_keeps_parameters_dark_and_flat(phantom):
    rec = reconstructor(center=33.0)
    rec.set_flat(np.full((NZ, N), 1000.0))
    full_sweep(rec, phantom)
    rec.reset()
    assert rec.filled == 0 and not rec.image().any()
    assert rec.params.center == 33.0
    full_sweep(rec, phantom)
    assert rec.filled == 90 and rel_error(rec.slices()[0], ortho_slices(phantom, N, NZ, ORTHO)[0]) < 0.3


def test_image_layout(phantom):
    rec = reconstructor()
    full_sweep(rec, phantom)
    z, y, x = rec.slices()
    img = rec.image()
    assert img.shape == (max(N, NZ), 3 * N) and img.dtype == np.float32
    np.testing.assert_array_equal(img[:N, :N], z)
    np.testing.assert_array_equal(img[:NZ, N:2 * N], y)
    np.testing.assert_array_equal(img[:NZ, 2 * N:], x)
    assert not img[NZ:, N:].any()
    canvas = np.full_like(img, np.nan)                  # a reused buffer holds old pixels
    assert rec.image(out=canvas) is canvas
    np.testing.assert_array_equal(canvas, img)
    with pytest.raises(BadParameter, match="expected"):
        rec.image(out=np.empty((N, 3 * N), np.float64))


def test_image_into_a_buffer_clears_the_padding_of_a_tall_detector():
    rec = OrthoReconstructor(width=16, height=24, buffer_size=30, backend="numpy")
    rng = np.random.default_rng(1)
    rec.push(rng.uniform(500, 900, (30, 24, 16)).astype(np.float32), np.arange(30) * 6.0)
    canvas = np.full((24, 48), 7.0, np.float32)
    rec.image(out=canvas)
    np.testing.assert_array_equal(canvas, rec.image())
    assert not canvas[16:, :16].any()


def test_backend_choice():
    rec = OrthoReconstructor(width=8, height=4, buffer_size=4, backend="numpy")
    assert rec.backend == "numpy" and "numpy" in rec.backend_reason
    auto = OrthoReconstructor(width=8, height=4, buffer_size=4, backend="auto")
    assert auto.backend in ("numpy", "cupy") and auto.backend_reason.startswith("auto")
    with pytest.raises(BadParameter):
        OrthoReconstructor(width=8, height=4, buffer_size=4, backend="opencl")
    with pytest.raises(BadParameter):
        OrthoReconstructor(width=0, height=4, buffer_size=4)
    try:
        import cupy  # noqa: F401
    except ImportError:
        with pytest.raises(BackendUnavailable, match="CuPy"):
            OrthoReconstructor(width=8, height=4, buffer_size=4, backend="cupy")
        assert "NumPy" in auto.backend_reason


def test_chunks_are_full_batches_then_powers_of_two():
    from tomostream.recon.reconstructor import chunk_size

    def chunks(n, batch):
        out = []
        while n:
            out.append(chunk_size(n, batch))
            n -= out[-1]
        return out

    assert chunks(77, 32) == [32, 32, 8, 4, 1]
    assert chunks(5, 32) == [4, 1]
    assert chunks(24, 24) == [24]
    shapes = {k for n in range(1, 200) for k in chunks(n, 24)}
    assert shapes == {24, 16, 8, 4, 2, 1}   # a handful of shapes, whatever the push sizes
