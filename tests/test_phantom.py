import numpy as np
import pytest

from tomostream.recon.phantom import Ellipsoid, default_phantom, ortho_slices, project, rasterize


def test_sphere_projection_is_chord_length():
    sphere = [Ellipsoid(0, 0, 0, 10, 10, 10, 0, 1.0)]
    p = project(sphere, [0.0, 37.0], 64, 64)
    # through the centre: the diameter; 6 pixels off: 2 sqrt(r^2 - 6^2)
    assert p[0, 32, 32] == pytest.approx(20.0)
    assert p[1, 32, 32] == pytest.approx(20.0)
    assert p[0, 32, 38] == pytest.approx(2 * np.sqrt(100 - 36), rel=1e-6)
    assert p[0, 32 + 10, 32] == 0.0


def test_projection_matches_numerical_ray_sum():
    e = [Ellipsoid(5, 3, 1, 10, 4, 9, 30, 1.0), Ellipsoid(-4, 2, 0, 6, 6, 6, 0, 0.5)]
    t, u, n, center = np.deg2rad(25.0), 35, 64, 31.3
    s = u - center
    ell = np.linspace(-40, 40, 80001)
    x = s * np.cos(t) + ell * np.sin(t)
    y = -s * np.sin(t) + ell * np.cos(t)
    numeric = rasterize(e, x, y, np.zeros_like(x)).sum() * (ell[1] - ell[0])
    assert project(e, [25.0], n, n, center=center)[0, 32, u] == pytest.approx(numeric, rel=1e-3)


def test_opposite_angles_mirror_about_center():
    e = default_phantom(48, 16)
    center = 22.0
    a, b = project(e, [10.0, 190.0], 48, 16, center=center)
    # p(t + 180, u) = p(t, 2 center - u)
    u = np.arange(4, 40)
    np.testing.assert_allclose(b[:, u], a[:, (2 * center - u).astype(int)], atol=1e-6)


def test_ortho_slices_shapes_and_values():
    e = [Ellipsoid(0, 0, 0, 5, 5, 5, 0, 0.02)]
    z, y, x = ortho_slices(e, 32, 20, (16, 16, 10))
    assert z.shape == (32, 32) and y.shape == (20, 32) and x.shape == (20, 32)
    assert z[16, 16] == pytest.approx(0.02) and z[0, 0] == 0
