"""RE(stream_scan(...)) against a simulated beamline and the stream server, recorded in a catalog."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from bluesky import RunEngine
from bluesky.utils import RunEngineInterrupted
from event_model import DocumentNames, schema_validators
from helpers import wait_until

from tomostream.devices import TomoScanStream, destroy_devices, split_slices
from tomostream.errors import CaptureError
from tomostream.io import catalog as cat
from tomostream.io import read_capture
from tomostream.io.capture import missing_parts
from tomostream.plans import ChangeDetector, stream_scan

pytestmark = pytest.mark.timeout(120)


class Documents:
    """Every document of the runs, each validated against the event-model schema."""

    def __init__(self):
        self.docs: list[tuple[str, dict]] = []

    def __call__(self, name, doc):
        schema_validators[DocumentNames[name]].validate(doc)
        self.docs.append((name, doc))

    def named(self, name):
        return [doc for n, doc in self.docs if n == name]


@pytest.fixture
def RE(catalog, catalog_dir):
    engine = RunEngine({})
    engine.subscribe(cat.catalog_writer(catalog, cat.spool_dir(catalog_dir)))
    docs = Documents()
    engine.subscribe(docs)
    engine.docs = docs
    return engine


def assert_stopped(tomoscan, tomostream):
    assert tomoscan.start_scan.get(use_monitor=False) == 0
    assert tomostream.start_recon.get(use_monitor=False) == 0


class RecordingDetector(ChangeDetector):
    """A change detector that remembers every relative change it computed."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.changes: list[float] = []

    def __call__(self, image):
        fired = super().__call__(image)
        self.changes.append(self.last_change)
        return fired


def test_stream_scan_with_triggered_capture(RE, devices, catalog, catalog_dir):
    tomoscan, tomostream = devices
    trigger = RecordingDetector(threshold=1e-4, holdoff=60.0)
    (uid,) = RE(stream_scan(tomoscan, tomostream, center=32.0, filter="ramp", ortho=(32, 32, 16),
                            capture_when=trigger, num_capture=20, pre_count=8, max_captures=1,
                            poll_period=0.25, snapshot_dir=cat.snapshot_dir(catalog_dir),
                            md={"sample": "growing inclusion"}))
    assert_stopped(tomoscan, tomostream)
    events = [e for e in RE.docs.named("event") if "tomostream_buffer_size" in e["data"]]
    last = events[-1]["data"] if events else {}
    status = {k: last.get(f"tomostream_{k}") for k in ("buffer_size", "frames_received", "frames_used",
                                                      "frames_dropped", "recon_status")}
    assert trigger.fired == 1, f"changes {trigger.changes} over {len(events)} readings; last {status}"
    (stop,) = RE.docs.named("stop")
    assert stop["exit_status"] == "success"
    assert stop["num_events"]["primary"] >= 2
    assert stop["num_events"]["captures"] == 1

    run = catalog[uid]
    assert run.metadata["start"]["sample"] == "growing inclusion"
    assert run.metadata["stop"]["exit_status"] == "success"
    primary = run["primary"].read()
    assert (np.asarray(primary["tomostream_frames_used"]) >= 0).all()
    assert "tomostream_center" in run["primary"].metadata["configuration"]["tomostream"]["data"]

    captures = run["captures"].read()
    main = Path(str(captures["captures_file"].values[0]))
    assert main.parent == cat.capture_dir(catalog_dir)      # StreamFileName resolved against FilePath
    capture = read_capture(main)
    assert capture.pre_count == int(captures["captures_pre_counted"].values[0]) == 8
    assert 1 <= len(capture.projections) - 8 <= 20            # fewer if the scan ended first
    assert_frames_recorded(run, [capture])
    snapshot = run["captures"]["captures_slices"].read()
    assert snapshot.shape == (1, 64, 192)  # rows = max(width, height), columns = 3 * width
    z, y, x = split_slices(snapshot[0])
    assert np.isfinite(z).all() and np.abs(z).max() > 0  # a reconstruction, not a blank frame
    (snap,) = [d for d in RE.docs.named("stream_resource") if d["data_key"] == "captures_slices"]
    assert snap["uri"].startswith(f"file://localhost{cat.snapshot_dir(catalog_dir)}/")


def assert_frames_recorded(run, captures):
    """The run's ``capture`` stream holds exactly the captures' frames, angles and uniqueIds."""
    frames = run["capture"]
    np.testing.assert_array_equal(frames["capture_projections"].read(),
                                  np.concatenate([c.projections for c in captures]))
    np.testing.assert_allclose(frames["capture_theta"].read(), np.concatenate([c.theta for c in captures]))
    np.testing.assert_array_equal(frames["capture_unique_id"].read(),
                                  np.concatenate([c.unique_ids for c in captures]))


def test_two_captures_of_different_sizes_wait_for_late_fields(RE, devices, catalog, catalog_dir, beamline):
    tomoscan, tomostream = devices
    complete_when_recorded = []

    def check_files(name, doc):
        if name == "event" and "captures_file" in doc["data"]:
            complete_when_recorded.append(missing_parts(doc["data"]["captures_file"]))

    token = RE.subscribe(check_files)
    beamline.sim.field_copy_delay = 1.0        # the fields arrive after StreamCapture reads Done
    try:
        (uid,) = RE(stream_scan(tomoscan, tomostream, capture_when=lambda image: True, num_capture=10,
                                pre_count=300, max_captures=2, poll_period=0.25,
                                snapshot_dir=cat.snapshot_dir(catalog_dir)))
    finally:
        beamline.sim.field_copy_delay = 0.0
        RE.unsubscribe(token)
    assert complete_when_recorded == [[], []]
    run = catalog[uid]
    captures = run["captures"].read()
    files = [Path(str(f)) for f in captures["captures_file"].values]
    assert len(files) == 2 and files[0] != files[1]
    read = [read_capture(f) for f in files]
    for capture, first_row, rows, pre in zip(read, captures["captures_first_row"].values,
                                             captures["captures_rows"].values,
                                             captures["captures_pre_counted"].values, strict=True):
        assert rows == len(capture.projections) and pre == capture.pre_count <= 300
        assert first_row == (0 if capture is read[0] else len(read[0].projections))
    assert_frames_recorded(run, read)
    np.testing.assert_array_equal(read_capture(run).unique_ids, read[1].unique_ids)
    np.testing.assert_array_equal(read_capture(run, 0).projections, read[0].projections)


@pytest.mark.parametrize("action, exit_status", [("abort", "abort"), ("stop", "success"),
                                                 ("resume", "success")])
def test_pause_then_abort_stop_or_resume(RE, devices, catalog, action, exit_status):
    tomoscan, tomostream = devices

    def pause_after_the_first_reading(name, doc):
        # as Ctrl-C would, from outside the RunEngine's loop (a callback runs inside it)
        if name == "event" and doc["seq_num"] == 1:
            threading.Thread(target=RE.request_pause, kwargs={"defer": True}).start()

    token = RE.subscribe(pause_after_the_first_reading)
    # no duration: the scan (NUM_ANGLES / FPS seconds) is the plan's only end, so the deferred
    # pause meets the next checkpoint however long this machine takes to read the devices
    # (with a 2 s duration, a slow machine ended the plan before it)
    with pytest.raises(RunEngineInterrupted):
        RE(stream_scan(tomoscan, tomostream, poll_period=0.2))
    RE.unsubscribe(token)
    assert RE.state == "paused"
    getattr(RE, action)()
    assert RE.state == "idle"
    assert_stopped(tomoscan, tomostream)
    (stop,) = RE.docs.named("stop")
    assert stop["exit_status"] == exit_status
    assert catalog[stop["run_start"]].metadata["stop"]["exit_status"] == exit_status


def test_exception_in_the_trigger_stops_everything(RE, devices, catalog):
    tomoscan, tomostream = devices

    def broken(image):
        raise ZeroDivisionError("trigger bug")

    with pytest.raises(ZeroDivisionError):
        RE(stream_scan(tomoscan, tomostream, capture_when=broken, poll_period=0.2))
    assert_stopped(tomoscan, tomostream)
    (stop,) = RE.docs.named("stop")
    assert stop["exit_status"] == "fail"
    assert "trigger bug" in stop["reason"]
    assert catalog[stop["run_start"]].metadata["stop"]["exit_status"] == "fail"


def scan_device(beamline, **templates):
    """A second TomoScanStream on the simulator, with FilePath read elsewhere."""
    device = TomoScanStream(beamline.tomoscan_prefix, name="tomoscan", **templates)
    device.wait_for_connection(timeout=30)
    return device


def test_a_capture_folder_mounted_elsewhere_is_read_there(RE, devices, catalog, catalog_dir,
                                                          beamline, tmp_path):
    _, tomostream = devices
    written = cat.capture_dir(catalog_dir)
    # the same folder under another name, inside what the catalog may read
    mounted = written / f"mounted-{tmp_path.name}"
    mounted.symlink_to(written, target_is_directory=True)
    tomoscan = scan_device(beamline, write_path_template=str(written), read_path_template=str(mounted))
    try:
        (uid,) = RE(stream_scan(tomoscan, tomostream, capture_when=lambda image: True, num_capture=10,
                                pre_count=5, max_captures=1, poll_period=0.25,
                                snapshot_dir=cat.snapshot_dir(catalog_dir)))
    finally:
        destroy_devices(tomoscan)
    run = catalog[uid]
    main = Path(str(run["captures"].read()["captures_file"].values[0]))
    assert main.parent == mounted
    assert_frames_recorded(run, [read_capture(main)])


def test_a_capture_folder_not_seen_here_is_a_clear_error_and_nothing_is_lost(RE, devices, catalog,
                                                                             catalog_dir, beamline,
                                                                             tmp_path):
    _, tomostream = devices
    written = cat.capture_dir(catalog_dir)
    tomoscan = scan_device(beamline, write_path_template=str(written),
                           read_path_template=str(tmp_path / "not-mounted"))
    try:
        with pytest.raises(CaptureError, match="not a folder on this machine") as raised:
            RE(stream_scan(tomoscan, tomostream, capture_when=lambda image: True, num_capture=10,
                           max_captures=1, poll_period=0.25, snapshot_dir=cat.snapshot_dir(catalog_dir)))
        base = tomoscan.stream_file_name.get(use_monitor=False)
        assert_stopped(tomoscan, tomostream)
    finally:
        destroy_devices(tomoscan)
    assert f"FilePath {written}" in str(raised.value) and base in str(raised.value)
    (stop,) = RE.docs.named("stop")
    assert stop["exit_status"] == "fail" and "not a folder on this machine" in stop["reason"]
    run = catalog[stop["run_start"]]
    assert run.metadata["stop"]["exit_status"] == "fail"
    assert len(run["primary"].read()["tomostream_frames_used"]) >= 1   # the readings so far
    main = written / base                                            # TomoScan's file is whole
    wait_until(lambda: not missing_parts(main), what=f"{main} complete")
    assert len(read_capture(main).projections) >= 1
