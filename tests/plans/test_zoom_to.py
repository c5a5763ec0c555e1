"""RE(zoom_to(...)) against the simulated beamline (stages, lenses) and the stream server."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from bluesky import RunEngine
from helpers import beamline_ports, wait_until
from scipy import ndimage

from tomostream.demo import simulated_beamline
from tomostream.devices import TomoStream, destroy_devices, split_slices
from tomostream.errors import BadParameter, ConnectionLost
from tomostream.plans import StageDirections, zoom_to
from tomostream.sim import Inclusion

pytestmark = pytest.mark.timeout(300)

WIDTH, HEIGHT = 64, 48
#: A ball off the axis and below the middle row [pixels from the axis and the middle row].
BALL = dict(x0=-11.0, y0=9.0, z0=6.0, radius=3.0)
#: Where the ball shows in the slices before the zoom: (x, y) in the Z slice, z the row.
ROI = (WIDTH / 2 + BALL["x0"], WIDTH / 2 + BALL["y0"], HEIGHT / 2 + BALL["z0"])
#: The rotation axis sits 3 pixels right of the middle (Center 35).
AXIS = WIDTH / 2 + 3.0


@pytest.fixture(scope="module")
def beamline(tmp_path_factory):
    root = f"z{uuid.uuid4().hex[:5]}:"     # names stay within the 40 characters of a stringout
    ball = Inclusion(x0=BALL["x0"], y0=BALL["y0"], z0=BALL["z0"], r0=BALL["radius"],
                     r1=BALL["radius"], mu=0.1, frames=1)
    with simulated_beamline(root, width=WIDTH, height=HEIGHT, fps=100.0, step=1.0, num_angles=100_000,
                            capture_dir=tmp_path_factory.mktemp("captures"), inclusion=ball,
                            center=AXIS,
                            **beamline_ports()) as bl:
        yield bl


@pytest.fixture(scope="module")
def tomostream(beamline):
    """The TomoStream device, Center on the axis and the Z slice through the ball."""
    device = TomoStream(beamline.tomostream_prefix, name="tomostream")
    device.wait_for_connection(timeout=30)
    device.center.set(AXIS).wait(10)
    device.ortho_z.set(int(ROI[2])).wait(10)
    yield device
    destroy_devices(device)


def ball_in(image: np.ndarray, col: int, row: int) -> tuple[float, float]:
    """(column, row) of the brightest blob of a slice panel: the smoothed maximum, refined by
    the centroid of the pixels above half of it. The marker lines the server draws (brightest
    value) at column ``col`` and row ``row`` are replaced by their neighbours first, so they
    cannot pull the answer to where they cross."""
    image = np.array(image, dtype=np.float64)
    image[:, col] = (image[:, col - 1] + image[:, col + 1]) / 2
    image[row, :] = (image[row - 1, :] + image[row + 1, :]) / 2
    smooth = ndimage.gaussian_filter(image, 1.5)
    smooth -= np.median(smooth)
    row, col = np.unravel_index(np.argmax(smooth), smooth.shape)
    near = np.zeros_like(smooth, bool)
    near[max(row - 8, 0):row + 9, max(col - 8, 0):col + 9] = True
    mask = near & (smooth > smooth[row, col] / 2)
    rows, cols = np.nonzero(mask)
    weights = smooth[mask]
    return float(np.sum(cols * weights) / np.sum(weights)), float(np.sum(rows * weights) / np.sum(weights))


def refilled_slices(bl, tomostream, turns: float = 1.5) -> np.ndarray:
    """The slices once ``turns`` x 180 degrees of new frames went into the buffer."""
    used = lambda: bl.server.ioc.value("FramesUsed")  # noqa: E731
    start = used()
    wait_until(lambda: used() >= start + turns * 180, 60.0, "a refilled buffer")
    version = tomostream.recon.version
    return tomostream.recon.wait_for_frame(version, timeout=30.0)


@pytest.fixture(scope="module")
def streaming(beamline, tomostream):
    """The beamline scanning and the server reconstructing, for the module."""
    tomostream.start_recon.put(1, use_complete=True)
    wait_until(lambda: beamline.server.ready, 60.0, "the server following the beamline")
    beamline.sim.put("StartScan", "Acquire")
    yield beamline
    beamline.sim.abort()
    tomostream.abort_recon.put(1)


def positions(bl) -> tuple[float, float, float]:
    stages = bl.sim.stages
    return stages.tomo0deg.position, stages.tomo90deg.position, stages.sample_y.position


def test_zoom_brings_the_region_to_the_centre_at_the_new_lens(streaming, tomostream):
    bl = streaming
    z, y, x = split_slices(refilled_slices(bl, tomostream))
    before = ball_in(z[:WIDTH], WIDTH // 2, WIDTH // 2)
    assert before == pytest.approx(ROI[:2], abs=1.5), "the ball is where the phantom puts it"

    RE = RunEngine({})
    RE(zoom_to(tomostream, roi=ROI, lens="2x"))

    assert bl.sim.stages.optics.lens == 1 and tomostream.pixel_size.get() == pytest.approx(3.45 / 2)
    assert tomostream.center.get() == pytest.approx(WIDTH / 2 + 2 * (AXIS - WIDTH / 2))
    um = 3.45 / 1000          # mm per pixel of the first lens
    assert positions(bl) == pytest.approx((BALL["x0"] * um, -BALL["y0"] * um, BALL["z0"] * um))
    assert (tomostream.ortho_x.get(), tomostream.ortho_y.get(), tomostream.ortho_z.get()) == \
        (WIDTH // 2, WIDTH // 2, HEIGHT // 2)
    z, y, x = split_slices(refilled_slices(bl, tomostream))
    assert ball_in(z[:WIDTH], WIDTH // 2, WIDTH // 2) == pytest.approx((WIDTH / 2, WIDTH / 2), abs=2.0)
    assert ball_in(x[:HEIGHT], WIDTH // 2, HEIGHT // 2) == pytest.approx((WIDTH / 2, HEIGHT / 2), abs=2.0)
    # twice the magnification: the ball covers four times the pixels it did
    assert np.count_nonzero(z[:WIDTH] > z[:WIDTH].max() / 2) > 3 * np.pi * BALL["radius"] ** 2


def test_an_unknown_lens_is_refused_and_nothing_moves(beamline, tomostream):
    before = positions(beamline)
    with pytest.raises(BadParameter, match=r"lens='20x' is not one of \('1x', '2x', '5x'\)"):
        RunEngine({})(zoom_to(tomostream, roi=ROI, lens="20x"))
    assert positions(beamline) == before


def test_a_name_pv_that_points_at_nothing_is_named(tomostream):
    good = tomostream.sample_y_pv_name.get()
    tomostream.sample_y_pv_name.set(good + "9").wait(10)
    try:
        with pytest.raises(ConnectionLost, match=rf"SampleYPVName='{good}9': nothing answers"):
            RunEngine({})(zoom_to(tomostream, roi=ROI, connect_timeout=2.0))
    finally:
        tomostream.sample_y_pv_name.set(good).wait(10)


def test_a_move_beyond_a_stage_limit_is_refused_before_anything_moves(beamline, tomostream):
    before = positions(beamline)
    far = StageDirections(tomo0deg=1.0, tomo90deg=-1.0, sample_y=1000.0)   # 6000 pixel sizes
    with pytest.raises(BadParameter, match=r"b:m25 would move to .* outside its limits -10..10"):
        RunEngine({})(zoom_to(tomostream, roi=ROI, lens="5x", directions=far))
    assert positions(beamline) == before and beamline.sim.stages.optics.names[
        beamline.sim.stages.optics.lens] != "5x"


def test_a_region_in_a_tilted_z_slice_is_refused(beamline, tomostream):
    before = positions(beamline)
    tomostream.rot_z.set(10.0).wait(10)
    try:
        with pytest.raises(BadParameter, match="RotZ=10 degrees tilts the Z slice"):
            RunEngine({})(zoom_to(tomostream, roi=ROI, lens="2x"))
    finally:
        tomostream.rot_z.set(0.0).wait(10)
    assert positions(beamline) == before


@pytest.mark.parametrize("kwargs, message", [
    ({}, "needs a region"),
    ({"roi": (WIDTH + 5, 3, 3)}, "roi x=69 is outside"),
    ({"roi": (1, 2)}, "three finite numbers"),
    ({"lens": 7}, "lens=7 is not one of"),
])
def test_bad_regions_and_lenses_are_refused(tomostream, kwargs, message):
    with pytest.raises(BadParameter, match=message):
        RunEngine({})(zoom_to(tomostream, **kwargs))


def test_without_a_region_lens_change_sync_decides(streaming, tomostream):
    bl = streaming
    optics = bl.sim.stages.optics
    RE = RunEngine({})

    def zoom_expecting(lens: str, moves_in_pixels):
        start, center, old = positions(bl), tomostream.center.get(), optics.magnification
        pixel_mm = 3.45 / old / 1000
        RE(zoom_to(tomostream, lens=lens))
        assert optics.names[optics.lens] == lens
        new = optics.magnification
        assert tomostream.pixel_size.get() == pytest.approx(3.45 / new)
        assert tomostream.center.get() == pytest.approx(WIDTH / 2 + new / old * (center - WIDTH / 2))
        assert positions(bl) == pytest.approx(np.add(start, np.multiply(moves_in_pixels, pixel_mm)))

    tomostream.lens_change_sync.set("No").wait(10)
    zoom_expecting("5x", (0, 0, 0))                            # the lens alone
    tomostream.lens_change_sync.set("Yes").wait(10)
    for signal, value in ((tomostream.ortho_x, 40), (tomostream.ortho_y, 30), (tomostream.ortho_z, 20)):
        signal.set(value).wait(10)
    # the crossing (40, 30, 20) comes to the centre: 2-BM's directions
    zoom_expecting("1x", (40 - WIDTH / 2, -(30 - WIDTH / 2), 20 - HEIGHT / 2))
    assert (tomostream.ortho_x.get(), tomostream.ortho_y.get(), tomostream.ortho_z.get()) == \
        (WIDTH // 2, WIDTH // 2, HEIGHT // 2)
    tomostream.lens_change_sync.set("No").wait(10)
