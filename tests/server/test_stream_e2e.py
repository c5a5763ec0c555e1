"""End to end on loopback: simulated beamline -> StreamServer -> p4p client.

The beamline is noiseless and static (no growing inclusion), so the published slices must
match the analytic phantom. Scans cover 360 degrees: the first frames of a scan may race the
new dark/flat/theta and FirstProjid, and the second half refills every slot.
"""

from __future__ import annotations

import os
import signal
import time
from contextlib import closing

import numpy as np
import pytest
from helpers import FIRST_CONNECTION, Ca, start_recon, wait_until
from p4p.client.thread import Context

from tomostream.pva.ntnda import to_ntnda
from tomostream.recon.phantom import ortho_slices
from tomostream.sim import SimBeamline

N = NZ = 64
STEP = 3.0                      # 60 frames per 180 degrees
SCAN = 120                      # frames per scan: 360 degrees
FPS = 400.0


def rel_error(rec: np.ndarray, truth: np.ndarray) -> float:
    """RMS error inside the sample relative to the largest true value."""
    inner = truth != 0
    return float(np.sqrt(np.mean((rec[inner] - truth[inner]) ** 2)) / np.abs(truth).max())


def split(image: np.ndarray, n: int, nz: int):
    """The Z, Y, X slices of a published n x 3n image."""
    return image[:n, :n], image[:nz, n:2 * n], image[:nz, 2 * n:]


class Recon:
    """p4p client of the published slices."""

    def __init__(self, name: str):
        self.name = name
        self.ctx = Context("pva")

    def get(self):
        value = self.ctx.get(self.name, timeout=5.0)
        return int(value.raw.uniqueId), np.asarray(value)

    def next(self, after: int, timeout: float = 20.0):
        """The first image published after uniqueId ``after``."""
        got = {}

        def newer():
            got["v"] = self.get()
            return got["v"][0] > after

        wait_until(newer, timeout, f"an image newer than {after}")
        return got["v"]

    def settled(self, ca: Ca, timeout: float = 20.0):
        """The latest image once no frame has been used for a while (the final state)."""
        state = {"last": None}

        def quiet():
            now = (ca.get("FramesUsed"), self.get()[0])
            same, state["last"] = now == state["last"], now
            time.sleep(0.3)
            return same

        wait_until(quiet, timeout, "a settled image")
        return self.get()

    def close(self):
        self.ctx.close()




def make_sim(sim_prefix, unique_prefix, sim_ca_port, **kw):
    options = dict(width=N, height=NZ, fps=FPS, step=STEP, ca_port=sim_ca_port, num_angles=SCAN,
                   inclusion=None, read_noise=0.0, photons=0.0)
    options.update(kw)
    options.setdefault("plugin_prefix", f"{unique_prefix}DET:")
    return SimBeamline(prefix=sim_prefix, **options)


@pytest.fixture
def beamline(sim_prefix, unique_prefix, sim_ca_port):
    with make_sim(sim_prefix, unique_prefix, sim_ca_port) as sim:
        yield sim


@pytest.fixture
def quiet_server(server):
    """The server with marker lines off, so images compare with the phantom everywhere."""
    server.markers = False
    return server


@pytest.fixture
def recon(stream_prefix):
    with closing(Recon(stream_prefix + "Recon")) as client:
        yield client


def scan(sim_ca: Ca, ca: Ca, frames: int = SCAN):
    """Run one scan (the StartScan put completes at its end) and wait for the server."""
    used = ca.get("FramesUsed")
    sim_ca.put("StartScan", 1)
    wait_until(lambda: ca.get("FramesUsed") >= used + frames - 2, 40.0,
               lambda: f"the scan's frames used ({used} before): {ca.text('ReconStatus')!r}, "
                       f"{ca.get('FramesUsed')} used, {ca.get('FramesReceived')} received")


def check_phantom(sim, image, ortho, bound=0.3):
    n, nz = sim.options.width, sim.options.height
    truth = ortho_slices(sim.source.phantom, n, nz, ortho)
    for got, want in zip(split(image, n, nz), truth, strict=True):
        assert rel_error(got, want) < bound


def counters_add_up(server, sim):
    c = server.counters
    return c["FramesReceived"] + c["FramesLost"] >= sim.frames_published and \
        c["FramesReceived"] - c["FramesBad"] == (c["FramesUsed"] + c["FramesDropped"]
                                                   + c["NotProjection"] + c["OutsideTheta"])


def test_slices_follow_the_scan_and_the_parameters(beamline, quiet_server, ca, sim_ca, recon):
    from tomostream.pva.receive_process import ProcessImageSubscriber

    start_recon(ca, quiet_server)
    scan(sim_ca, ca)
    receiver = quiet_server.image_stream.receiver
    assert isinstance(receiver, ProcessImageSubscriber) and receiver.pid != os.getpid()
    ortho = (ca.get("OrthoX"), ca.get("OrthoY"), ca.get("OrthoZ"))
    assert ortho == (N // 2, N // 2, NZ // 2)
    assert ca.get("Center") == pytest.approx(N / 2)
    uid, image = recon.settled(ca)
    assert image.shape == (max(N, NZ), 3 * N)
    check_phantom(beamline, image, ortho)
    assert ca.get("BufferSize") == "60/60"
    assert ca.get("ReconTime") > 0
    c = quiet_server.counters
    assert c["FramesLost"] == 0 and c["FramesBad"] == 0 and c["FramesDropped"] == 0
    # every frame's delays: decoded after its timestamp, reached the worker after that
    receive, arrival = quiet_server.receive.percentiles(), quiet_server.arrival.percentiles()
    assert receive["count"] == arrival["count"] >= c["FramesUsed"]
    assert 0 < receive["p50"] <= arrival["p50"] < 5.0
    wait_until(lambda: counters_add_up(quiet_server, beamline), 5.0,
               lambda: f"counters that add up: {quiet_server.counters}")

    # live parameter changes, no new frames: each gives a new image
    ca.put("OrthoZ", 20)
    uid, image = recon.next(uid)
    check_phantom(beamline, image, (N // 2, N // 2, 20))
    ca.put("CenterTweak", 3.0)
    ca.put("CenterTweakUp", 1)
    assert ca.get("Center") == pytest.approx(N / 2 + 3)
    uid, off_axis = recon.next(uid)
    z_truth = ortho_slices(beamline.source.phantom, N, NZ, (N // 2, N // 2, 20))[0]
    assert rel_error(split(off_axis, N, NZ)[0], z_truth) > 1.5 * rel_error(split(image, N, NZ)[0], z_truth)
    ca.put("CenterTweakDown", 1)
    uid, image = recon.next(uid)
    ca.put("FilterType", "Ramp")
    uid, ramp = recon.next(uid)
    assert not np.allclose(ramp, image)
    check_phantom(beamline, ramp, (N // 2, N // 2, 20), bound=0.35)

    # a frame of the wrong size is counted and skipped; the server goes on
    bad = np.zeros((NZ - 16, N), dtype=np.uint16)
    beamline.channels.update(beamline.image_channel, to_ntnda(bad, SCAN + 1, time.time()))
    wait_until(lambda: ca.get("FramesBad") == 1, 10.0, "the bad frame counted")
    assert quiet_server.running and ca.text("ServerRunning") == "Running"
    assert ca.get("BufferSize") == "60/60"

    ca.put("AbortRecon", 1)
    wait_until(lambda: ca.text("StartRecon") == "Done", 10.0, "StartRecon done")


def test_dark_retake_binning_and_new_theta_restart_cleanly(beamline, quiet_server, ca, sim_ca, recon):
    start_recon(ca, quiet_server)
    scan(sim_ca, ca)
    uid, _ = recon.settled(ca)
    # dark retake while rotating: 10 dark frames, then a new dark field restarts the buffer
    sim_ca.put("NumAngles", 4 * SCAN)  # long enough to ask for a retake while it runs
    sim_ca.put_nowait("StartScan", 1)
    wait_until(lambda: sim_ca.text("ScanStatus") == "Scanning", 10.0, "the second scan")
    sim_ca.put("StreamRetakeDark", 1)
    assert sim_ca.text("StreamMessage") == "Done"  # the retake has ended
    wait_until(lambda: sim_ca.text("StartScan") == "Done", 20.0, "end of the second scan")
    sim_ca.put("NumAngles", SCAN)
    wait_until(lambda: quiet_server.counters["NotProjection"] >= 10, 10.0,
               lambda: f"dark frames skipped: {quiet_server.counters}")
    scan(sim_ca, ca)
    uid, image = recon.settled(ca)
    check_phantom(beamline, image, (N // 2, N // 2, NZ // 2))
    wait_until(lambda: counters_add_up(quiet_server, beamline), 5.0,
               lambda: f"counters that add up: {quiet_server.counters}")

    # binning 2x between scans: 32 x 32 frames, Center and slice positions follow
    sim_ca.put("StreamBinning", "2x")
    scan(sim_ca, ca, frames=SCAN - 10)
    wait_until(lambda: ca.get("BufferSize").endswith("/60"), 10.0, "a rebuilt buffer")
    assert ca.get("Center") == pytest.approx(N / 4)
    assert (ca.get("OrthoX"), ca.get("OrthoY"), ca.get("OrthoZ")) == (N // 4, N // 4, NZ // 4)
    uid, image = recon.settled(ca)
    assert image.shape == (NZ // 2, 3 * N // 2)
    fine = ortho_slices(beamline.source.phantom, N, NZ, (N // 2, N // 2, NZ // 2))
    for got, want in zip(split(image, N // 2, NZ // 2), fine, strict=True):
        coarse = want.reshape(got.shape[0], 2, got.shape[1], 2).mean(axis=(1, 3))
        assert np.corrcoef(got.ravel(), coarse.ravel())[0, 1] > 0.9
    assert quiet_server.counters["FramesBad"] <= 8

    # a new angle table (coarser step): a buffer of the new size
    sim_ca.put("RotationStep", 2 * STEP)
    sim_ca.put("NumAngles", SCAN // 2)
    scan(sim_ca, ca, frames=SCAN // 2 - 10)
    wait_until(lambda: ca.get("BufferSize") == "30/30", 10.0, "a 30-slot buffer filled")


def test_a_new_dark_field_renormalises_the_buffer_and_the_slices_stay_up(beamline, quiet_server, ca,
                                                                          sim_ca, recon):
    """As TomoScan broadcasts a retaken dark field: the buffer keeps its frames (its fill never
    drops), and the next image equals a reconstruction from scratch with the new field."""
    import epics

    from tomostream.pva.fields import field_pv
    from tomostream.recon import OrthoReconstructor

    start_recon(ca, quiet_server)
    scan(sim_ca, ca)
    wait_until(lambda: ca.get("BufferSize") == "60/60", 10.0, "a full buffer")
    uid, before = recon.settled(ca)
    fills: list[str] = []
    monitor = epics.PV(quiet_server.prefix + "BufferSize", auto_monitor=True,
                       callback=lambda char_value=None, **kw: fills.append(str(char_value)))
    try:
        assert monitor.wait_for_connection(5.0)
        dark = beamline.dark + np.linspace(0.0, 40.0, N, dtype=np.float32)  # a drifted dark
        beamline.channels.update(beamline.dark_channel, field_pv(dark))
        uid, after = recon.next(uid)
        wait_until(lambda: "normalised with it" in ca.text("ReconStatus"), 10.0,
                   lambda: f"the new dark field taken: {ca.text('ReconStatus')!r}")
    finally:
        monitor.clear_callbacks()
    assert fills and all(fill == "60/60" for fill in fills), fills
    assert not np.allclose(after, before)
    # from scratch: the frames the buffer holds (the scan's second half), the new dark field
    rec = OrthoReconstructor(N, NZ, 60, backend="numpy")
    rec.set_dark(dark)
    rec.set_flat(beamline.flat)
    rec.set_params(center=float(ca.get("Center")), filter=ca.text("FilterType").lower(),
                   ortho=(ca.get("OrthoX"), ca.get("OrthoY"), ca.get("OrthoZ")))
    theta = beamline.theta
    frames = [beamline.source.projection(theta[k], k) for k in range(SCAN // 2, SCAN)]
    rec.push(np.stack(frames), theta[SCAN // 2:])
    np.testing.assert_allclose(after, rec.image(), rtol=1e-4, atol=1e-4 * np.abs(after).max())


def test_unique_id_wrap(sim_prefix, unique_prefix, sim_ca_port, quiet_server, ca, sim_ca, recon):
    with make_sim(sim_prefix, unique_prefix, sim_ca_port, first_projid=65536 - 50,
                  wrap_unique_id=True) as sim:
        start_recon(ca, quiet_server)
        scan(sim_ca, ca)
        wait_until(lambda: quiet_server.counters["FramesUsed"] >= SCAN, 10.0, "all frames used")
        _, image = recon.settled(ca)
        check_phantom(sim, image, (N // 2, N // 2, NZ // 2))
        c = quiet_server.counters
        assert c["FramesLost"] == 0 and c["OutsideTheta"] == 0
        wait_until(lambda: counters_add_up(quiet_server, sim), 5.0,
                   lambda: f"counters that add up: {quiet_server.counters}")


def test_frames_spread_over_two_channels_are_one_stream(sim_prefix, unique_prefix, sim_ca_port,
                                                        quiet_server, ca, sim_ca, recon):
    """The detector hands its frames in turn to two NDPluginPva plugins (as NDPluginScatter
    does), each received over a connection and by a process of its own; uniqueIds wrap at
    65535 meanwhile and are counted over the whole stream."""
    from tomostream.pva.receive_process import ProcessImageSubscriber
    from tomostream.pva.scatter import ScatterSubscriber

    with make_sim(sim_prefix, unique_prefix, sim_ca_port, plugin_prefix=f"{unique_prefix}Pva1:",
                  image_plugins=2, first_projid=65536 - 50, wrap_unique_id=True) as sim:
        assert sim.image_channels == [f"{unique_prefix}Pva{k}:Image" for k in (1, 2)]
        ca.put("ImagePlugins", 2)
        start_recon(ca, quiet_server)
        image = quiet_server.image_stream
        assert isinstance(image, ScatterSubscriber) and image.channels == tuple(sim.image_channels)
        assert all(type(r) is ProcessImageSubscriber for r in image.receivers)
        scan(sim_ca, ca)
        wait_until(lambda: ca.get("BufferSize") == "60/60", 10.0, "a full buffer")
        _, picture = recon.settled(ca)
        check_phantom(sim, picture, (N // 2, N // 2, NZ // 2))
        assert all(r.counters["received"] > SCAN // 4 for r in image.receivers)  # both carried
        wait_until(lambda: counters_add_up(quiet_server, sim), 5.0,
                   lambda: f"counters that add up: {quiet_server.counters}, per channel "
                           f"{[r.counters for r in image.receivers]}")
        c = quiet_server.counters
        assert c["FramesLost"] == 0 and c["OutsideTheta"] == 0 and c["FramesDropped"] == 0


def test_tomoscan_ioc_restart_is_survived(sim_prefix, unique_prefix, sim_ca_port, quiet_server, ca,
                                          sim_ca, recon):
    with make_sim(sim_prefix, unique_prefix, sim_ca_port):
        start_recon(ca, quiet_server)
    wait_until(lambda: not quiet_server.ready, 10.0, "the loss of the beamline noticed")
    assert "disconnected" in ca.text("ReconStatus") or "waiting" in ca.text("ReconStatus")
    with make_sim(sim_prefix, unique_prefix, sim_ca_port) as sim:
        wait_until(lambda: quiet_server.ready, 30.0, "the beamline followed again")
        scan(sim_ca, ca)
        wait_until(lambda: ca.get("BufferSize") == "60/60", 10.0, "a full buffer")
        uid, image = recon.settled(ca)
        check_phantom(sim, image, (N // 2, N // 2, NZ // 2))
    assert ca.text("StartRecon") == "Acquire"


def test_an_ophyd_device_on_the_same_pvs_leaves_the_servers_watches_alone(beamline, quiet_server, ca,
                                                                          sim_ca, recon):
    """A Bluesky session in the server's process connects to and lets go of the TomoScan PVs
    the server watches: the server keeps following them and its session ends cleanly."""
    from ophyd import EpicsSignal

    from tomostream.devices import destroy_devices

    start_recon(ca, quiet_server)
    sim = beamline.prefix
    signals = [EpicsSignal(sim + "FrameType", name="frame_type"),
               EpicsSignal(sim + "FirstProjid", name="first_projid")]
    for signal_ in signals:
        signal_.wait_for_connection(timeout=30)
    destroy_devices(*signals)  # ophyd clears its channels and unsets their context
    scan(sim_ca, ca)
    wait_until(lambda: ca.get("BufferSize") == "60/60", 10.0, "a full buffer")
    check_phantom(beamline, recon.settled(ca)[1], (N // 2, N // 2, NZ // 2))
    ca.put("AbortRecon", 1)
    wait_until(lambda: ca.text("StartRecon") == "Done", 10.0, "StartRecon done")
    assert "error" not in ca.text("ReconStatus").lower()
    start_recon(ca, quiet_server)  # the next session reuses the channels
    scan(sim_ca, ca)
    assert "error" not in ca.text("ReconStatus").lower()


def test_drop_burst_is_counted_and_survived(beamline, server, ca, sim_ca, recon):
    server.markers = False
    server.queue_size = 2            # a worker that falls behind at once
    server.batch_max = 1
    beamline.set_fps(5000.0)
    start_recon(ca, server)
    sim_ca.put("StartScan", 1)
    wait_until(lambda: counters_add_up(server, beamline), 10.0,
               lambda: f"counters that add up: {server.counters}")
    burst = server.counters
    assert burst["FramesDropped"] + burst["FramesLost"] > 0
    assert server.running and ca.text("StartRecon") == "Acquire"   # still reconstructing
    # at a gentler rate the same session fills every slot again; the 2-frame queue may
    # still drop a frame now and then on a busy machine, so scan until the buffer is full
    beamline.set_fps(100.0)
    for _ in range(5):
        sim_ca.put("StartScan", 1, timeout=60.0)   # completes at the end of the scan
        wait_until(lambda: counters_add_up(server, beamline), 30.0,
                   lambda: f"the scan's frames counted: {server.counters}")
        if ca.get("BufferSize") == "60/60":
            break
    assert ca.get("BufferSize") == "60/60"
    uid, image = recon.settled(ca)
    check_phantom(beamline, image, (N // 2, N // 2, NZ // 2))
    wait_until(lambda: counters_add_up(server, beamline), 10.0,
               lambda: f"counters that add up: {server.counters}")


def test_publishing_process_that_cannot_restart_falls_back_to_the_worker(
        beamline, quiet_server, ca, sim_ca, recon, monkeypatch):
    from tomostream.errors import TomostreamError
    from tomostream.pva.publish_process import InlinePublisher, ProcessPublisher

    start_recon(ca, quiet_server)
    scan(sim_ca, ca)
    first, _ = recon.settled(ca)
    child = quiet_server.publisher.pid
    assert child is not None and child != os.getpid()   # served by another process

    def refuse(self):
        raise TomostreamError("cannot start the publishing process: refused for this test")

    monkeypatch.setattr(ProcessPublisher, "_start", refuse)
    os.kill(child, signal.SIGKILL)
    scan(sim_ca, ca)
    wait_until(lambda: isinstance(quiet_server.publisher, InlinePublisher), 10.0,
               "the server publishing from its worker")
    uid, image = recon.settled(ca)
    assert uid > first                                   # the same channel goes on
    check_phantom(beamline, image, (N // 2, N // 2, NZ // 2))
    assert ca.text("StartRecon") == "Acquire"


def test_receiving_process_that_dies_too_often_falls_back_to_the_server_process(
        beamline, quiet_server, ca, sim_ca, recon, monkeypatch, caplog):
    import logging

    from tomostream.pva import receive_process
    from tomostream.pva.subscriber import ImageSubscriber

    monkeypatch.setattr(receive_process, "MAX_RESTARTS", 0)
    caplog.set_level(logging.INFO, logger="tomostream.server.stream_server")
    start_recon(ca, quiet_server)
    scan(sim_ca, ca)
    first, _ = recon.settled(ca)
    os.kill(quiet_server.image_stream.pid, signal.SIGKILL)
    fallback = lambda: [t for t in caplog.messages if "in the server process" in t]  # noqa: E731
    wait_until(fallback, 10.0, lambda: f"the fall-back reported: {caplog.messages[-5:]}")
    assert "receiving process ended 1 times within 60 s" in fallback()[0]
    receiver = quiet_server.image_stream.receiver
    assert type(receiver) is ImageSubscriber
    wait_until(lambda: receiver.connected, FIRST_CONNECTION, "the server's own subscriber connected")
    scan(sim_ca, ca)
    uid, image = recon.settled(ca)
    assert uid > first
    check_phantom(beamline, image, (N // 2, N // 2, NZ // 2))
    assert ca.text("StartRecon") == "Acquire"
    wait_until(lambda: counters_add_up(quiet_server, beamline), 10.0,
               lambda: f"counters that add up: {quiet_server.counters}")
