"""The simulated sample stages and lenses: motor records ophyd drives, an mctoptics-like optics
IOC, and projections that follow both."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from helpers import wait_until
from ophyd import EpicsMotor
from ophyd.utils.errors import LimitError

from tomostream.devices import Optics, destroy_devices
from tomostream.errors import BadParameter
from tomostream.recon.phantom import default_phantom, project
from tomostream.sim import DetectorOptions, FrameSource, frame_index
from tomostream.sim.pose import Pose

W, H = 48, 32
ANGLES = np.array([0.0, 30.0, 90.0, 180.0, 270.0])


def projections(pose: Pose, center: float = W / 2) -> np.ndarray:
    return project(pose.place(default_phantom(W, H)), ANGLES, W, H, pose.axis(center, W))


# -- the pose: pure geometry ----------------------------------------------------------------------
def test_a_shift_in_the_sample_frame_moves_the_projection_with_the_angle():
    ref = projections(Pose())
    for pose, shifts in ((Pose(x=4.0), 4 * np.cos(np.deg2rad(ANGLES))),
                         (Pose(y=4.0), -4 * np.sin(np.deg2rad(ANGLES)))):
        moved = projections(pose)
        for k, shift in enumerate(np.rint(shifts).astype(int)):
            assert np.abs(shifts[k] - shift) < 1e-9 or ANGLES[k] == 30.0
            if ANGLES[k] == 30.0:          # not a whole pixel: the centroid moves by it
                u = np.arange(W)
                c_ref, c_mov = (np.sum(p[k] * u) / np.sum(p[k]) for p in (ref, moved))
                assert c_mov - c_ref == pytest.approx(shifts[k], abs=0.05)
                continue
            np.testing.assert_allclose(moved[k][:, 8 + shift:W - 8 + shift], ref[k][:, 8:W - 8],
                                       atol=1e-5)


def test_a_vertical_shift_moves_every_projection_down():
    ref, moved = projections(Pose()), projections(Pose(z=3.0))
    np.testing.assert_allclose(moved[:, 3:, :], ref[:, :-3, :], atol=1e-5)


def test_magnification_scales_the_projection_about_the_optical_centre():
    # axis 2 pixels right of the middle: with twice the magnification it is 4 pixels right
    ref, zoomed = projections(Pose(), W / 2 + 2), projections(Pose(zoom=2.0), W / 2 + 2)
    assert Pose(zoom=2.0).axis(W / 2 + 2, W) == W / 2 + 4
    i, j = np.arange(-6, 7), np.arange(-10, 11)
    np.testing.assert_allclose(zoomed[:, H // 2 + 2 * i][:, :, W // 2 + 2 * j],
                               ref[:, H // 2 + i][:, :, W // 2 + j], atol=1e-5)


def test_frames_of_a_new_pose_are_exact_before_and_after_they_are_cached():
    source = FrameSource(DetectorOptions(width=W, height=H))
    source.prepare(ANGLES)
    before = source.projection(90.0)
    source.pose = Pose(x=2.0, y=-3.0, z=1.0, zoom=2.0)
    assert source.repeat_key(90.0) is None                      # not the cached pose
    computed = source.projection(90.0)
    np.testing.assert_allclose(computed, source.expected(90.0), atol=1.01)
    assert np.abs(computed.astype(float) - before).max() > 100
    source.prepare(ANGLES)
    assert source.cached_pose == source.pose and source.repeat_key(90.0) == 90.0
    np.testing.assert_allclose(source.projection(90.0), computed, atol=1)


# -- motor records through ophyd ------------------------------------------------------------------
@pytest.fixture
def motor(sim):
    m = EpicsMotor(sim.stages.options.sample_y, name="sample_y")
    m.wait_for_connection(timeout=10)
    yield m
    destroy_devices(m)


def test_a_motor_moves_at_its_velocity_and_reports_as_a_motor_record(motor, sim):
    assert motor.egu == "mm" and motor.limits == (-10.0, 10.0)
    assert motor.velocity.get() == pytest.approx(0.5)
    readbacks: list[float] = []
    motor.user_readback.subscribe(lambda value=None, **kw: readbacks.append(value), run=False)
    start = time.monotonic()
    motor.set(0.4).wait(30)
    assert time.monotonic() - start >= 0.4 / 0.5 * 0.9          # 0.4 mm at 0.5 mm/s
    assert motor.position == pytest.approx(0.4) and motor.motor_done_move.get() == 1
    inside = [r for r in readbacks if 0.0 < r < 0.4]
    assert len(inside) >= 5 and inside == sorted(inside)        # on its way, step by step
    assert sim.stages.sample_y.position == pytest.approx(0.4)


def test_a_motor_stops_where_it_is_and_keeps_to_its_limits(motor):
    status = motor.set(-5.0)
    time.sleep(0.5)                    # a move of 10 s is under way
    motor.motor_stop.put(1)
    wait_until(lambda: status.done, 30, "the motor stopped")   # ophyd has seen DMOV again
    assert -1.0 < motor.position < 0.0 and motor.user_setpoint.get() == pytest.approx(motor.position)
    with pytest.raises(LimitError):
        motor.set(11.0)
    motor.set(0.0).wait(30)            # a stopped motor moves again
    assert motor.position == pytest.approx(0.0)


# -- the optics IOC -------------------------------------------------------------------------------
@pytest.fixture
def optics(sim):
    device = Optics(sim.stages.options.optics_prefix, name="optics", settle_timeout=30)
    device.wait_for_connection(timeout=10)
    yield device
    destroy_devices(device)


def test_a_lens_change_goes_as_mctoptics_goes(optics, sim):
    assert optics.lens_names == ("1x", "2x", "5x") and optics.lens_select.get() == "1x"
    assert optics.image_pixel_size.get() == pytest.approx(3.45)
    seen: list[str] = []
    lock = threading.Lock()

    def follow(value=None, **kw):
        with lock:
            seen.append(value)

    optics.mct_status.subscribe(follow, run=False)
    status = optics.set("5x")
    wait_until(lambda: "Moving to lens: 5x" in seen, 30, "the turret moving")   # 60 mm at 30 mm/s
    assert sim.stages.optics.magnification == 1.0  # the old lens until the new one is in place
    optics.lens_select.put("2x")                   # refused: a change is under way
    status.wait(30)
    with lock:
        assert seen == ["Moving to lens: 5x", "Lens selected: 5x", "Done"]
    assert optics.lens_select.get() == "5x" and optics.camera_objective.get() == "5"
    assert optics.image_pixel_size.get() == pytest.approx(3.45 / 5)
    assert sim.stages.optics.magnification == 5.0
    assert sim.stages.lens_motor.position == pytest.approx(60.0)
    with pytest.raises(BadParameter, match="lens='7x' is not one of"):
        optics.set("7x")


def test_projections_follow_the_stages_and_the_lens(sim, pva, wait, optics):
    images = pva(sim.image_channel)
    wait(lambda: images.snapshot(), what="initial image")
    sim.put("NumAngles", 100_000).result(10)
    sim.put("RotationStep", 9.0).result(10)        # 40 angles: each comes round every 0.4 s
    sim.put("StartScan", "Acquire")
    wait(lambda: sim.ioc.value("ScanStatus") == "Scanning", what="the scan")
    first = int(sim.ioc.value("FirstProjid"))
    y = EpicsMotor(sim.stages.options.sample_y, name="y")
    y.wait_for_connection(timeout=10)
    try:
        y.set(4 * 0.00345).wait(30)                # 4 pixels of the first lens, up
        optics.set("2x").wait(30)
    finally:
        destroy_devices(y)
    pose = Pose(z=-4.0, zoom=2.0)
    wait(lambda: sim.stages.pose() == pose and sim.source.cached_pose == pose, what="the new pose cached")
    count = len(images.snapshot())
    wait(lambda: len(images.snapshot()) > count + 5, what="frames of the new pose")
    theta = sim.theta
    for uid, frame, _ in images.snapshot()[-3:]:
        angle = theta[frame_index(uid, first, False)]
        p = project(pose.place(default_phantom(64, 64)), [angle], 64, 64, pose.axis(32, 64))[0]
        np.testing.assert_allclose(frame, sim.dark + (sim.flat - sim.dark) * np.exp(-p), atol=1.01)
    sim.abort()
