"""RE(stream_scan(...)) against a simulated beamline and the stream server, recorded in a catalog."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from bluesky import RunEngine
from bluesky.utils import RunEngineInterrupted
from event_model import DocumentNames, schema_validators

from tomostream.devices import split_slices
from tomostream.io import catalog as cat
from tomostream.io import read_dxfile
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


def test_stream_scan_with_triggered_capture(RE, devices, catalog):
    tomoscan, tomostream = devices
    trigger = RecordingDetector(threshold=1e-4, holdoff=60.0)
    (uid,) = RE(stream_scan(tomoscan, tomostream, center=32.0, filter="ramp", ortho=(32, 32, 16),
                            capture_when=trigger, num_capture=20, pre_count=8, max_captures=1,
                            poll_period=0.25, md={"sample": "growing inclusion"}))
    assert_stopped(tomoscan, tomostream)
    events = [e for e in RE.docs.named("event") if "tomostream_buffer_size" in e["data"]]
    last = events[-1]["data"] if events else {}
    status = {k: last.get(f"tomostream_{k}") for k in ("buffer_size", "frames_received", "frames_used",
                                                      "frames_dropped", "recon_status")}
    assert trigger.fired == 1, f"changes {trigger.changes} over {len(events)} readings; last {status}"
    (stop,) = RE.docs.named("stop")
    assert stop["exit_status"] == "success"
    assert stop["num_events"]["capture"] == 1
    assert stop["num_events"]["primary"] >= 2
    (resource_proj, resource_snap) = RE.docs.named("stream_resource")
    assert resource_proj["parameters"]["dataset"] == "/exchange/data"

    run = catalog[uid]
    assert run.metadata["start"]["sample"] == "growing inclusion"
    assert run.metadata["stop"]["exit_status"] == "success"
    primary = run["primary"].read()
    assert (np.asarray(primary["tomostream_frames_used"]) >= 0).all()
    assert "tomostream_center" in run["primary"].metadata["configuration"]["tomostream"]["data"]

    capture = run["capture"]
    events = capture.read()
    file_name = str(events["capture_file"].values[0])
    content = read_dxfile(file_name)
    projections = capture["capture_projections"].read()
    assert projections.shape == (1, 28, 32, 64)  # (captures, frames, rows, columns)
    np.testing.assert_array_equal(projections[0], content["data"])
    assert int(events["capture_pre_counted"].values[0]) == 8
    snapshot = capture["capture_slices"].read()
    assert snapshot.shape == (1, 64, 192)  # rows = max(width, height), columns = 3 * width
    z, y, x = split_slices(snapshot[0])
    assert np.isfinite(z).all() and np.abs(z).max() > 0  # a reconstruction, not a blank frame


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
