"""Dark/flat and theta structures, locally and through p4p."""

from __future__ import annotations

import numpy as np
import pvaccess as pva
import pytest

from tomostream.errors import BadFrame
from tomostream.pva.fields import FIELD_TYPE, THETA_TYPE, field_pv, read_field, read_theta, theta_pv


@pytest.mark.parametrize("dtype", [np.uint16, np.float32, np.float64])
def test_field_round_trip(dtype):
    field = (np.arange(5 * 7) * 3).astype(dtype).reshape(5, 7)
    pv = field_pv(field)
    assert pv["sizex"] == 7 and pv["sizey"] == 5
    out = read_field(pv)
    assert out.dtype == np.float32 and out.shape == (5, 7)
    np.testing.assert_array_equal(out, field.astype(np.float32))


def test_theta_round_trip():
    theta = np.arange(0, 180, 0.5)
    out = read_theta(theta_pv(theta))
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, theta)


@pytest.mark.parametrize("bad, match", [
    (np.zeros(5), "2-D"),
    (np.zeros((0, 5)), "size"),
    (np.zeros((2, 2), complex), "real-valued"),
])
def test_field_pv_rejects(bad, match):
    with pytest.raises(BadFrame, match=match):
        field_pv(bad)


@pytest.mark.parametrize("bad, match", [([], "non-empty"), ([[1.0]], "1-D"), ([0.0, np.nan], "non-finite")])
def test_theta_pv_rejects(bad, match):
    with pytest.raises(BadFrame, match=match):
        theta_pv(np.asarray(bad))


@pytest.mark.parametrize("values, sizex, sizey, match", [
    ([1.0] * 5, 2, 3, "5 values"),
    ([], 0, 0, "size"),
    ([1.0] * 6, -2, -3, "size"),
])
def test_read_field_rejects(values, sizex, sizey, match):
    pv = pva.PvObject(FIELD_TYPE, {"value": values, "sizex": sizex, "sizey": sizey})
    with pytest.raises(BadFrame, match=match):
        read_field(pv)


def test_read_field_rejects_other_structures():
    with pytest.raises(BadFrame, match="'sizey'"):
        read_field(pva.PvObject(THETA_TYPE, {"value": [1.0], "sizex": 1}))
    with pytest.raises(BadFrame, match="not a numeric array"):
        read_field(pva.PvObject({"value": pva.STRING, "sizex": pva.INT, "sizey": pva.INT}))


@pytest.mark.parametrize("values, sizex, match", [
    ([1.0, 2.0], 3, "2 values"),
    ([], 0, "sizex=0"),
    ([1.0, float("inf")], 2, "non-finite"),
])
def test_read_theta_rejects(values, sizex, match):
    with pytest.raises(BadFrame, match=match):
        read_theta(pva.PvObject(THETA_TYPE, {"value": values, "sizex": sizex}))


def test_p4p_reads_served_fields(channels, p4p_ctx, unique_prefix):
    dark = np.full((3, 4), 100.0, np.float32)
    channels.add(unique_prefix + "StreamDarkFields", field_pv(dark))
    channels.add(unique_prefix + "StreamTheta", theta_pv([0.0, 0.5, 1.0]))
    got = p4p_ctx.get(unique_prefix + "StreamDarkFields", timeout=5.0)
    assert (got.sizex, got.sizey) == (4, 3)
    np.testing.assert_array_equal(got.value, dark.ravel())
    got = p4p_ctx.get(unique_prefix + "StreamTheta", timeout=5.0)
    assert got.sizex == 3
    np.testing.assert_array_equal(got.value, [0.0, 0.5, 1.0])
