"""The arithmetic of zoom_to: stage moves, the magnified Center, units and lens names."""

from __future__ import annotations

import pytest

from tomostream.devices.zoom import um_per_unit
from tomostream.errors import BadParameter
from tomostream.plans import STAGES_2BM, StageDirections
from tomostream.plans.zoom import _lens_name, stage_moves, zoomed_center
from tomostream.recon.geometry import slice_points


def test_the_centre_of_the_slices_needs_no_move():
    assert stage_moves((256, 256, 128), (512, 256), 3.45) == (0.0, 0.0, 0.0)


def test_moves_follow_2bm_directions_in_pixel_sizes():
    # 80 pixels left, 64 below and 44 rows down from the centre of 512 x 512 slices
    moves = stage_moves((176, 320, 300), (512, 512), 3.45, STAGES_2BM)
    assert moves == pytest.approx((-80 * 3.45, -64 * 3.45, 44 * 3.45))
    flipped = stage_moves((176, 320, 300), (512, 512), 3.45, StageDirections(-1, 1, -1))
    assert flipped == pytest.approx(tuple(-m for m in moves))


def test_the_region_is_where_the_geometry_puts_it():
    # the offsets are the slice point's coordinates from the axis and the middle row
    n, nz, roi = 64, 48, (21, 41, 30)
    (z_points, _, _) = slice_points(n, nz, (0, 0, roi[2]), (0.0, 0.0, 0.0))
    x, y, z = z_points[roi[1] * n + roi[0]]
    assert stage_moves(roi, (n, nz), 1.0, StageDirections(1, 1, 1)) == pytest.approx((x, y, z))


def test_center_is_magnified_about_the_optical_centre():
    assert zoomed_center(260.0, 2.0, 256.0) == 264.0
    assert zoomed_center(zoomed_center(260.0, 5.0, 256.0), 1 / 5.0, 256.0) == pytest.approx(260.0)
    assert zoomed_center(0.0, 2.0, 256.0) == 0.0          # unset stays unset (the middle)


@pytest.mark.parametrize("egu, um", [("mm", 1000.0), ("um", 1.0), ("microns", 1.0), ("MM", 1000.0),
                                     ("nm", 0.001)])
def test_stage_units(egu, um):
    assert um_per_unit(egu, "2bmS1:m2") == um


def test_a_stage_in_degrees_cannot_take_a_length():
    with pytest.raises(BadParameter, match=r"2bmS1:m2.EGU='deg' is not a length unit"):
        um_per_unit("deg", "2bmS1:m2")


def test_lenses_by_name_or_index():
    names = ("1x", "2x", "5x")
    assert _lens_name("5x", names, "P:LensSelect") == "5x"
    assert _lens_name(1, names, "P:LensSelect") == "2x"
    for bad in ("20x", 3, -1, True):
        with pytest.raises(BadParameter, match="is not one of"):
            _lens_name(bad, names, "P:LensSelect")
