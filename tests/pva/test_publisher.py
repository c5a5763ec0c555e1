"""ReconPublisher, checked by an independent p4p client."""

from __future__ import annotations

import numpy as np
import pytest

from tomostream.errors import BadFrame, BadParameter
from tomostream.pva.ntnda import INT32_MAX, INT32_MIN
from tomostream.pva.publisher import ReconPublisher, draw_markers


def _ortho(n: int, nz: int) -> np.ndarray:
    """A random ortho image, zero where the layout pads (as the reconstructor leaves it)."""
    image = np.random.default_rng(3).uniform(0.0, 1.0, (max(n, nz), 3 * n)).astype(np.float32)
    image[n:, :n] = 0.0
    image[nz:, n:] = 0.0
    return image


def test_p4p_sees_float32_ids_and_colormode(channels, p4p_ctx, unique_prefix, wait):
    name = unique_prefix + "StreamRecon"
    pub = ReconPublisher(channels, name)
    image = _ortho(16, 16)
    assert pub.publish(image) == 1
    got = []
    sub = p4p_ctx.monitor(name, got.append)
    try:
        wait(lambda: got, what="first p4p update")
        for _ in range(3):
            pub.publish(image * 2)
        wait(lambda: got[-1].raw.uniqueId == 4, what="p4p updates")
    finally:
        sub.close()
    assert [v.raw.uniqueId for v in got] == [1, 2, 3, 4]
    last = got[-1]
    assert last.dtype == np.float32 and last.shape == (16, 48)
    np.testing.assert_array_equal(np.asarray(last), image * 2)
    assert last.attrib == {"ColorMode": 0}
    assert last.raw.codec.name == ""


def test_markers_cross_where_the_slices_do(channels, p4p_ctx, unique_prefix):
    n, nz = 20, 12
    ix, iy, iz = 3, 7, 5
    name = unique_prefix + "StreamRecon"
    image = _ortho(n, nz)
    before = image.copy()
    ReconPublisher(channels, name).publish(image, markers=(ix, iy, iz), n=n, nz=nz)
    got = np.asarray(p4p_ctx.get(name, timeout=5.0))
    np.testing.assert_array_equal(image, before)           # the caller's image is untouched
    top = float(image.max())
    lines = got == top
    assert lines[:n, ix].all() and lines[iy, :n].all()      # Z panel
    assert lines[iz, n:2 * n].all() and lines[:nz, n + ix].all()           # Y panel
    assert lines[iz, 2 * n:].all() and lines[:nz, 2 * n + iy].all()        # X panel
    assert not lines[nz:, n:].any()                         # nothing below the vertical slices
    others = np.ones_like(lines)
    others[:n, ix] = others[iy, :n] = others[iz, n:] = False
    others[:nz, n + ix] = others[:nz, 2 * n + iy] = False
    np.testing.assert_array_equal(got[others], image[others])


def test_marker_value_ignores_non_finite_pixels():
    image = np.full((4, 12), np.nan, np.float32)
    image[0, 0] = 2.5
    draw_markers(image, (1, 2, 3), n=4, nz=4)
    assert image[3, 1] == 2.5 and image[3, 4] == 2.5 and image[0, 2 * 4 + 2] == 2.5
    empty = np.full((4, 12), np.nan, np.float32)
    draw_markers(empty, (0, 0, 0), n=4, nz=4, value=None)
    assert empty[0, 0] == 0.0


def test_markers_switched_off(channels, p4p_ctx, unique_prefix):
    name = unique_prefix + "StreamRecon"
    pub = ReconPublisher(channels, name, draw_markers=False)
    image = _ortho(8, 8)
    pub.publish(image, markers=(1, 2, 3))
    np.testing.assert_array_equal(np.asarray(p4p_ctx.get(name, timeout=5.0)), image)


def test_nz_larger_than_n_pads_the_z_panel(channels, p4p_ctx, unique_prefix):
    name = unique_prefix + "StreamRecon"
    image = _ortho(8, 12)
    ReconPublisher(channels, name).publish(image.astype(np.float64), markers=(0, 7, 11))
    got = p4p_ctx.get(name, timeout=5.0)
    assert got.shape == (12, 24) and got.dtype == np.float32
    assert got[11, 8:].min() == image.max()


@pytest.mark.parametrize("shape, kwargs, match", [
    ((8, 25), {}, "not \\(max"),
    ((8, 24), {"nz": 9}, "nz=9"),
    ((8, 24, 1), {}, "2-D"),
])
def test_bad_images_are_refused(channels, unique_prefix, shape, kwargs, match):
    pub = ReconPublisher(channels, unique_prefix + "StreamRecon")
    with pytest.raises(BadFrame, match=match):
        pub.publish(np.zeros(shape, np.float32), **kwargs)
    assert pub.unique_id == 0 and unique_prefix + "StreamRecon" not in channels


@pytest.mark.parametrize("markers, match", [((8, 0, 0), "ix=8"), ((0, -1, 0), "iy=-1"), ((0, 0, 4), "iz=4")])
def test_markers_outside_the_slices_are_refused(channels, unique_prefix, markers, match):
    pub = ReconPublisher(channels, unique_prefix + "StreamRecon")
    with pytest.raises(BadParameter, match=match):
        pub.publish(np.zeros((8, 24), np.float32), markers=markers, nz=4)


def test_unique_id_wraps_as_int32_and_close_removes(channels, unique_prefix):
    name = unique_prefix + "StreamRecon"
    pub = ReconPublisher(channels, name)
    pub.unique_id = INT32_MAX - 1
    assert [pub.publish(_ortho(4, 4)) for _ in range(3)] == [INT32_MAX, INT32_MIN, INT32_MIN + 1]
    pub.close()
    assert name not in channels
    with pytest.raises(BadParameter, match="empty"):
        ReconPublisher(channels, "")
