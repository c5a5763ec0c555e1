"""The arithmetic of zoom_to: where a region lies, stage moves, the magnified Center, units and
lens names."""

from __future__ import annotations

import pytest

from tomostream.devices.optics import um_per_unit
from tomostream.errors import BadParameter
from tomostream.plans import STAGES_2BM, StageDirections
from tomostream.plans.optical_zoom import _lens_name, region_offsets, stage_moves, zoomed_center
from tomostream.recon.geometry import slice_points


def test_the_centre_of_the_slices_needs_no_move():
    offsets = region_offsets((256, 256, 128), (512, 256))
    assert offsets == (0.0, 0.0, 0.0) and stage_moves(offsets, 3.45) == (0.0, 0.0, 0.0)


def test_moves_follow_2bm_directions_in_pixel_sizes():
    # 80 pixels left, 64 below and 44 rows down from the centre of 512 x 512 slices
    offsets = region_offsets((176, 320, 300), (512, 512))
    assert offsets == (-80.0, 64.0, 44.0)
    moves = stage_moves(offsets, 3.45, STAGES_2BM)
    assert moves == pytest.approx((-80 * 3.45, -64 * 3.45, 44 * 3.45))
    assert stage_moves(offsets, 3.45, StageDirections(-1, 1, -1)) == pytest.approx(tuple(-m for m in moves))


@pytest.mark.parametrize("zoom, ortho", [(1.0, (0, 0, 30)), (2.0, (40, 20, 30)), (3.5, (60, 5, 40))])
def test_the_region_is_where_the_slice_geometry_puts_it(zoom, ortho):
    # a pixel picked in the Z slice (x, y) and a row picked in the X slice (z), as shown with
    # the software zoom about the crossing point
    n, nz, (col, row, z_row) = 64, 48, (21, 41, 13)
    z_slice, _, x_slice = slice_points(n, nz, ortho, (0.0, 0.0, 0.0), zoom)
    x, y, _ = z_slice[row * n + col]
    _, _, z = x_slice[z_row * n + 7]
    assert region_offsets((col, row, z_row), (n, nz), ortho, zoom) == pytest.approx((x, y, z))


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
