"""Streaming over real PV Access (p4p client): rate, uniqueIds, exact frames, retakes, binning."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from tomostream.recon.phantom import default_phantom, project
from tomostream.sim import frame_index


def _scan(ca, wait, monitor, n_frames, timeout=30.0):
    """Run a whole scan (put-completion) and wait until the monitor has all its frames."""
    ca.put("StartScan", "Acquire", timeout=timeout)
    assert ca.get("StartScan") == "Done"
    first = int(ca.get("FirstProjid"))
    wait(lambda: len([f for f in monitor.snapshot() if f[0] != 0]) >= n_frames, what=f"{n_frames} frames")
    return first, [f for f in monitor.snapshot() if f[0] != 0]


def test_rate_ids_and_theta(ca, sim, pva, wait):
    images = pva(sim.image_channel)
    theta_mon = pva(sim.theta_channel, "field")
    wait(lambda: images.snapshot(), what="initial image")
    ca.put("NumAngles", 150)
    first, frames = _scan(ca, wait, images, 150)
    ids = [f[0] for f in frames]
    assert ids == list(range(first, first + 150))
    stamps = np.array([f[2] for f in frames])
    rate = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    assert rate == pytest.approx(100.0, rel=0.10)
    theta = wait(lambda: theta_mon.latest if theta_mon.latest is not None and theta_mon.latest.size == 150
                 else None, what="theta of 150 angles")
    np.testing.assert_allclose(theta, np.arange(150) * 0.5, atol=1e-4)
    assert ca.get("ScanStatus") == "Done"
    # the detector counter continues across scans; FirstProjid follows it
    first2, frames2 = _scan(ca, wait, images, 300)
    assert first2 == first + 150 and frames2[-1][0] == first2 + 149


def test_unique_id_wraps_at_65535(make_sim, ca_for, pva, wait):
    sim = make_sim(first_projid=65530, wrap_unique_id=True, num_angles=12)
    ca = ca_for(sim.prefix)
    images = pva(sim.image_channel)
    wait(lambda: images.snapshot(), what="initial image")
    ca.put("StartScan", "Acquire")
    wait(lambda: len(images.snapshot()) >= 13, what="12 frames")
    ids = [f[0] for f in images.snapshot()[1:]]
    assert ids == [65530, 65531, 65532, 65533, 65534, 65535, 0, 1, 2, 3, 4, 5]
    assert ca.get("FirstProjid") == 65530
    np.testing.assert_array_equal(frame_index(np.array(ids), 65530, True), np.arange(12))


def test_noiseless_frames_equal_analytic_projections(make_sim, ca_for, pva, wait):
    sim = make_sim(width=48, height=32, center=26.0, num_angles=40, step=4.5, fps=200.0)
    ca = ca_for(sim.prefix)
    images, dark, flat = pva(sim.image_channel), pva(sim.dark_channel, "f"), pva(sim.flat_channel, "f")
    theta_mon = pva(sim.theta_channel, "f")
    wait(lambda: images.snapshot() and dark.latest is not None, what="channels")
    first, frames = _scan(ca, wait, images, 40)
    theta = wait(lambda: theta_mon.latest if theta_mon.latest.size == 40 else None, what="theta")
    d, f = dark.latest, flat.latest
    assert d.shape == f.shape == (32, 48)
    for uid, frame, _ in frames[::9]:
        assert frame.shape == (32, 48) and frame.dtype == np.uint16
        angle = theta[frame_index(uid, first, False)]
        p = project(default_phantom(48, 32), [angle], 48, 32, center=26.0)[0]
        np.testing.assert_allclose(frame, d + (f - d) * np.exp(-p), atol=1.01)


def test_repeated_angles_resend_the_same_pixels_with_new_ids_and_times(make_sim, ca_for, pva, wait):
    # a continuous scan of 2.5 turns at 9 degrees: every angle comes round again, so the
    # detector re-sends a frame it built once (restamped), as it does at high rates
    sim = make_sim(width=48, height=32, num_angles=100, step=9.0, fps=200.0)
    ca = ca_for(sim.prefix)
    images = pva(sim.image_channel)
    wait(lambda: images.snapshot(), what="initial image")
    first, frames = _scan(ca, wait, images, 100)
    ids = [f[0] for f in frames]
    assert ids == list(range(first, first + 100))
    stamps = np.array([f[2] for f in frames])
    assert (np.diff(stamps) > 0).all()
    for k in range(60):                                   # same angle 40 frames later
        np.testing.assert_array_equal(frames[k][1], frames[k + 40][1])
    assert not np.array_equal(frames[0][1], frames[1][1])
    p = project(default_phantom(48, 32), [9.0 * 87], 48, 32, center=24.0)[0]
    d, f = sim.dark, sim.flat
    np.testing.assert_allclose(frames[87][1], d + (f - d) * np.exp(-p), atol=1.01)


def test_retake_dark_and_flat_while_rotating(make_sim, ca_for, pva, wait, tmp_path):
    sim = make_sim(num_angles=100000, num_dark=5, num_flat=6, photons=1000.0)
    ca = ca_for(sim.prefix)
    images, dark = pva(sim.image_channel), pva(sim.dark_channel, "f")
    frame_types = []
    sub = ca.pv("FrameType").subscribe(data_type="control")

    def on_type(_sub, r):
        frame_types.append(r.metadata.enum_strings[int(r.data[0])].decode())

    sub.add_callback(on_type)          # caproto keeps a weak reference: on_type lives until the end
    wait(lambda: dark.latest is not None, what="dark")
    ca.put("StartScan", "Acquire", wait=False)
    wait(lambda: len(images.snapshot()) > 20, what="projections")
    n_dark = len(dark.values)
    ca.put("StreamRetakeDark", "Capture", timeout=10)         # completes when the dark is published
    assert ca.get("StreamRetakeDark") == "Done" and ca.get("FrameType") == "Projection"
    wait(lambda: len(dark.values) > n_dark, what="new dark field")
    wait(lambda: "DarkField" in frame_types and frame_types[-1] == "Projection", what="dark frames")
    ca.put("StreamRetakeFlat", "Capture", timeout=10)
    assert ca.get("FrameType") == "Projection"
    wait(lambda: "FlatField" in frame_types and frame_types[-1] == "Projection", what="flat frames")
    ca.put("AbortScan", "Yes")
    wait(lambda: ca.get("StartScan") == "Done", what="scan aborted")
    frames = images.snapshot()[1:]
    ids = [x[0] for x in frames]
    assert ids == list(range(ids[0], ids[0] + len(ids)))     # retake frames use uniqueIds too
    means = np.array([x[1].mean() for x in frames])
    dark_frames = np.count_nonzero(means < 2 * dark.latest.mean())
    assert dark_frames == 5                                   # streamed, for consumers to ignore
    assert ca.get("ScanStatus") == "Aborted" and ca.get("StreamMessage") == "Done"
    with h5py.File(tmp_path / "data" / "dark_fields.h5", "r") as f:   # the retake's file
        assert f["/exchange/data_dark"].shape == (5, 64, 64)
        np.testing.assert_allclose(f["/exchange/data_dark"][()].mean(axis=0), dark.latest, rtol=1e-5)
    sub.clear()


def test_binning_bins_frames_dark_and_flat(make_sim, ca_for, pva, wait):
    sim = make_sim(num_angles=100000)
    ca = ca_for(sim.prefix)
    images, flat = pva(sim.image_channel), pva(sim.flat_channel, "f")
    ca.put("StartScan", "Acquire", wait=False)
    wait(lambda: len(images.snapshot()) > 5, what="frames")
    ca.put("StreamBinning", "4x")
    wait(lambda: images.snapshot()[-1][1].shape == (16, 16), what="binned frames")
    wait(lambda: flat.latest is not None and flat.latest.shape == (16, 16), what="binned flat")
    ca.put("AbortScan", "Yes")
    wait(lambda: ca.get("StartScan") == "Done", what="scan aborted")
