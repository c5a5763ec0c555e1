"""The simulated detector with miscalibrated columns (``tomostream sim --column-errors``)."""

from __future__ import annotations

import numpy as np
import pytest

from tomostream.errors import BadParameter
from tomostream.sim import DetectorOptions, FrameSource
from tomostream.sim.cli import main
from tomostream.sim.response import COLUMN_ERROR_RANGE, column_gain

W, H = 256, 8


def test_some_columns_see_the_sample_with_a_gain_the_flat_field_misses():
    calibrated = FrameSource(DetectorOptions(width=W, height=H))
    src = FrameSource(DetectorOptions(width=W, height=H, column_errors=0.1))
    np.testing.assert_array_equal(src.flat_frame(), calibrated.flat_frame())   # flats as before
    src.prepare(np.array([30.0]))
    calibrated.prepare(np.array([30.0]))
    above_dark = (src.expected(30.0) - src.dark) / (calibrated.expected(30.0) - calibrated.dark)
    gain = column_gain(W, 0.1, 0)
    np.testing.assert_allclose(above_dark, np.broadcast_to(gain, (H, W)), rtol=1e-5)
    # the frames sent are those frames, rounded to counts
    np.testing.assert_allclose(src.projection(30.0), src.expected(30.0), atol=0.5 + 1e-3)
    off = np.abs(gain - 1)
    bad = off > 0
    assert 0.05 * W < bad.sum() < 0.15 * W                    # about the asked fraction of columns
    low, high = COLUMN_ERROR_RANGE
    assert (off[bad] >= low - 1e-6).all() and (off[bad] <= high + 1e-6).all()
    assert (gain[bad] > 1).any() and (gain[bad] < 1).any()     # too bright and too dark


def test_the_same_seed_picks_the_same_columns():
    np.testing.assert_array_equal(column_gain(W, 0.1, 3), column_gain(W, 0.1, 3))
    assert not np.array_equal(column_gain(W, 0.1, 3), column_gain(W, 0.1, 4))
    np.testing.assert_array_equal(column_gain(W, 0.0, 3), np.ones(W))
    # the other random patterns of the detector do not depend on the column errors
    a = FrameSource(DetectorOptions(width=W, height=H, photons=100.0))
    b = FrameSource(DetectorOptions(width=W, height=H, photons=100.0, column_errors=0.2))
    np.testing.assert_array_equal(a.dark, b.dark)
    np.testing.assert_array_equal(a.open_beam, b.open_beam)


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan")])
def test_bad_fractions_are_refused_by_name(value):
    with pytest.raises(BadParameter, match="column_errors"):
        DetectorOptions(width=W, height=H, column_errors=value)


def test_cli_option(capsys):
    assert main(["--column-errors", "2", "--ca-port", "1"]) == 1
    assert "column_errors=2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--column-errors FRACTION" in capsys.readouterr().out
