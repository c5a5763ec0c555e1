"""Software zoom of the three slices (ReconParams.zoom) on the CPU: the sample points (centred
on the crossing point, stopped at the volume's edges), the magnified slices against the
analytic phantom and against the unzoomed reconstruction, with an off-centre crossing point,
with turned slices, and incremental updates."""

from __future__ import annotations

import numpy as np
import pytest

from tests.recon.conftest import NZ, N, transmission
from tests.recon.test_reconstructor import ORTHO, full_sweep, reconstructor, rel_error
from tomostream.errors import BadParameter
from tomostream.recon.geometry import crossing_pixel, crossing_pixels, slice_points
from tomostream.recon.params import MAX_ZOOM
from tomostream.recon.phantom import rasterize

#: A crossing point far from the middle of the 64 x 24 detector (the middle is 32, 32, 12).
OFF_CENTRE = (20, 44, 8)


def phantom_on(points, shape, ellipsoids) -> np.ndarray:
    """The phantom's attenuation [1/pixel] at sample points ``(m, 3)``, as a slice of ``shape``."""
    return rasterize(ellipsoids, points[:, 0], points[:, 1], points[:, 2]).reshape(shape)


def crossings(ortho, zoom=1.0):
    """Pixel ``(row, column)`` of the crossing point in the Z, Y and X slices at ``zoom``."""
    ix, iy, iz = crossing_pixels(N, NZ, ortho, zoom)
    return (iy, ix), (iz, ix), (iz, iy)


# -- sample points ------------------------------------------------------------------------------
@pytest.mark.parametrize("rot", [(0.0, 0.0, 0.0), (10.0, -15.0, 20.0)])
def test_zoom_1_gives_exactly_the_unzoomed_points(rot):
    c, cz = np.arange(N) - N / 2, np.arange(NZ) - NZ / 2
    plain = slice_points(N, NZ, OFF_CENTRE, rot)
    for a, b in zip(slice_points(N, NZ, OFF_CENTRE, rot, 1.0), plain, strict=True):
        np.testing.assert_array_equal(a, b)
    if rot == (0.0, 0.0, 0.0):                          # the untilted grid, written out
        z, y, x = plain
        np.testing.assert_array_equal(z[:, 0].reshape(N, N), np.broadcast_to(c, (N, N)))
        np.testing.assert_array_equal(y[:, 2].reshape(NZ, N), np.broadcast_to(cz[:, None], (NZ, N)))
        np.testing.assert_array_equal(x[:, 1].reshape(NZ, N), np.broadcast_to(c, (NZ, N)))


@pytest.mark.parametrize("zoom", [2.0, 3.5, MAX_ZOOM])
def test_zoomed_points_are_finer_and_centred_on_the_crossing_point(zoom):
    ix, iy, iz = OFF_CENTRE
    crossing = np.array([ix - N / 2, iy - N / 2, iz - NZ / 2], np.float32)
    shapes = ((N, N), (NZ, N), (NZ, N))
    assert crossings(OFF_CENTRE, zoom) == ((N // 2, N // 2), (NZ // 2, N // 2), (NZ // 2, N // 2))
    for pts, shape, (r, c) in zip(slice_points(N, NZ, OFF_CENTRE, (0, 0, 0), zoom), shapes,
                                  crossings(OFF_CENTRE, zoom), strict=True):
        grid = pts.reshape(shape + (3,))
        np.testing.assert_array_equal(grid[r, c], crossing)              # in the middle
        steps = [np.diff(grid, axis=a).reshape(-1, 3) for a in (0, 1)]
        for step in steps:                                               # 1/zoom along one axis
            sizes = np.sort(np.abs(step), axis=1)[:, 1:]
            np.testing.assert_allclose(sizes, np.broadcast_to([0, 1 / zoom], sizes.shape), atol=1e-5)
        span = grid.reshape(-1, 3).max(axis=0) - grid.reshape(-1, 3).min(axis=0)
        extent = np.array([N - 1, N - 1, NZ - 1], float)
        moving = span > 0
        np.testing.assert_allclose(span[moving], extent[moving] / zoom, rtol=1e-6)
        # inside the field of the unzoomed slice
        assert (grid[..., :2] >= -N / 2).all() and (grid[..., :2] <= N / 2 - 1).all()
        assert (grid[..., 2] >= -NZ / 2).all() and (grid[..., 2] <= NZ / 2 - 1).all()


@pytest.mark.parametrize("crossing, zoom", [(2, 2.0), (60, 2.0), (20, 1.2), (5, MAX_ZOOM)])
def test_near_an_edge_the_field_stops_at_the_edge_and_moves_smoothly(crossing, zoom):
    axis = np.arange(N) - N / 2.0
    z = slice_points(N, NZ, (crossing, N // 2, NZ // 2), (0, 0, 0), zoom)[0].reshape(N, N, 3)
    x = z[0, :, 0]
    assert x.min() >= -N / 2 and x.max() <= N / 2 - 1 / zoom + 1e-5     # inside the volume
    assert np.allclose(np.diff(x), 1 / zoom)
    at = crossing_pixel(N, crossing, zoom)                               # where it is seen
    np.testing.assert_allclose(np.interp(at, np.arange(N), x), crossing - N / 2, atol=1e-4)
    near = slice_points(N, NZ, (crossing, N // 2, NZ // 2), (0, 0, 0), zoom * 1.001)[0]
    assert np.abs(near.reshape(N, N, 3)[0, :, 0] - x).max() < 0.1        # no jump with zoom
    np.testing.assert_array_equal(slice_points(N, NZ, (crossing, 32, 12), (0, 0, 0), 1.0)[0][:N, 0],
                                  axis.astype(np.float32))               # zoom 1: the whole slice


def test_zoom_keeps_the_turned_planes_and_centres_the_crossing_point():
    rot = (25.0, -40.0, 15.0)
    for one, two, (r, c), (r2, c2), shape in zip(slice_points(N, NZ, OFF_CENTRE, rot),
                                                 slice_points(N, NZ, OFF_CENTRE, rot, 2.5),
                                                 crossings(OFF_CENTRE), crossings(OFF_CENTRE, 2.5),
                                                 ((N, N), (NZ, N), (NZ, N)), strict=True):
        a, b = one.reshape(shape + (3,)).astype(float), two.reshape(shape + (3,)).astype(float)
        np.testing.assert_allclose(b[r2, c2], a[r, c], atol=1e-5)
        normal = np.cross(a[1, 0] - a[0, 0], a[0, 1] - a[0, 0])          # plane of the zoom 1 slice
        distance = (b.reshape(-1, 3) - a[r, c]) @ (normal / np.linalg.norm(normal))
        assert np.abs(distance).max() < 1e-4


# -- reconstructions ------------------------------------------------------------------------------
@pytest.mark.parametrize("ortho", [ORTHO, OFF_CENTRE])
def test_zoom_2_is_the_unzoomed_slice_magnified_about_the_crossing_point(phantom, ortho):
    """Pixel ``k2 + 2 d`` at zoom 2 (``k2`` where the crossing point is seen, the middle) samples
    what pixel ``k + d`` does at zoom 1 (``k`` the crossing pixel there); a zoomed row half-way
    between two detector rows is their mean (linear in z)."""
    plain = reconstructor(ortho=ortho)
    full_sweep(plain, phantom)
    zoomed = reconstructor(ortho=ortho, zoom=2.0)
    full_sweep(zoomed, phantom)
    assert zoomed.image().shape == plain.image().shape == zoomed.image_shape
    assert zoomed.crossing == (N // 2, N // 2, NZ // 2) and plain.crossing == ortho
    for k, (two, one, (r, c), (r2, c2)) in enumerate(zip(zoomed.slices(), plain.slices(), crossings(ortho),
                                                         crossings(ortho, 2.0), strict=True)):
        assert two.shape == one.shape
        tol = 1e-5 * np.abs(one).max()
        rows2 = np.arange(r2 % 2, two.shape[0], 2)                       # even offsets from r2
        cols2 = np.arange(c2 % 2, two.shape[1], 2)
        rows1, cols1 = r + (rows2 - r2) // 2, c + (cols2 - c2) // 2
        np.testing.assert_allclose(two[np.ix_(rows2, cols2)], one[np.ix_(rows1, cols1)], atol=tol)
        if k == 0:                                                       # the Z slice: one row
            continue
        odd = np.arange(1 - r2 % 2, two.shape[0] - 1, 2)                 # between detector rows
        below = r + (odd - r2 - 1) // 2
        keep = (below >= 0) & (below + 1 < one.shape[0])
        odd, below = odd[keep], below[keep]
        mean = 0.5 * (one[np.ix_(below, cols1)] + one[np.ix_(below + 1, cols1)])
        np.testing.assert_allclose(two[np.ix_(odd, cols2)], mean, atol=tol)


@pytest.mark.parametrize("zoom", [2.0, 3.5])
def test_zoomed_slices_match_the_phantom_on_the_zoomed_grid(phantom, zoom):
    rec = reconstructor(ortho=OFF_CENTRE, zoom=zoom)
    full_sweep(rec, phantom)
    flat = (0.0, 0.0, 0.0)
    for got, pts, plain in zip(rec.slices(), slice_points(N, NZ, OFF_CENTRE, flat, zoom),
                               slice_points(N, NZ, OFF_CENTRE, flat), strict=True):
        error = rel_error(got, phantom_on(pts, got.shape, phantom))
        assert error < 0.25, error
        # against the unzoomed grid it fits markedly worse: the magnification is seen
        assert rel_error(got, phantom_on(plain, got.shape, phantom)) > 1.3 * error


def test_zoom_with_turned_slices_matches_the_phantom_and_rot_x_90(phantom):
    rot = (10.0, -15.0, 20.0)
    rec = reconstructor(ortho=OFF_CENTRE, rot=rot, zoom=2.5)
    full_sweep(rec, phantom)
    for got, pts in zip(rec.slices(), slice_points(N, NZ, OFF_CENTRE, rot, 2.5), strict=True):
        truth = phantom_on(pts, got.shape, phantom)
        seen = np.abs(pts[:, 2].reshape(got.shape)) < NZ / 2 - 1
        assert rel_error(np.where(seen, got, 0), np.where(seen, truth, 0)) < 0.3
    # RotX = 90 at the centre shows the Y slice through the centre, at any zoom
    centre = (N // 2, N // 2, ORTHO[2])
    turned = reconstructor(ortho=centre, rot=(90.0, 0.0, 0.0), zoom=2.0)
    plain = reconstructor(ortho=centre, zoom=2.0)
    for r in (turned, plain):
        full_sweep(r, phantom)
    y = plain.slices()[1]
    np.testing.assert_allclose(turned.slices()[2], y, atol=1e-5 * np.abs(y).max())


def test_zoom_changes_rebuild_from_the_buffer_and_zoom_1_restores_the_image(phantom):
    rec = reconstructor(ortho=OFF_CENTRE)
    full_sweep(rec, phantom)
    base = rec.image()
    for zoom in (2.0, 3.5):
        fresh = reconstructor(ortho=OFF_CENTRE, zoom=zoom)
        full_sweep(fresh, phantom)
        rec.set_params(zoom=zoom)
        np.testing.assert_allclose(rec.image(), fresh.image(), atol=1e-5)
        assert not np.allclose(rec.image(), base, atol=1e-4)
    rec.set_params(zoom=1.0)
    np.testing.assert_array_equal(rec.image(), base)                   # today's image, exactly


def test_incremental_updates_at_zoom_equal_a_rebuild(phantom):
    p = 30
    rec = reconstructor(p=p, ortho=OFF_CENTRE, zoom=3.0)
    rec.rebuild_every = 0
    angles = np.random.default_rng(2).uniform(-360, 360, 4 * p)
    frames = transmission(phantom, angles)
    rec.slices()
    for f, a in zip(frames, angles, strict=True):
        rec.push(f, [a])
    inc = rec.image()
    assert rec.stats["rebuilds"] == 1
    rec._stale_sums = True
    scratch = rec.image()
    np.testing.assert_allclose(inc, scratch, atol=1e-4 * np.abs(scratch).max())


@pytest.mark.parametrize("zoom", [0.5, 0.0, -2.0, MAX_ZOOM + 0.1, np.nan, np.inf, "two"])
def test_bad_zoom_is_refused_and_changes_nothing(phantom, zoom):
    rec = reconstructor(zoom=2.0)
    full_sweep(rec, phantom)
    before = rec.image()
    with pytest.raises(BadParameter, match="zoom"):
        rec.set_params(zoom=zoom)
    assert rec.params.zoom == 2.0
    np.testing.assert_array_equal(rec.image(), before)
