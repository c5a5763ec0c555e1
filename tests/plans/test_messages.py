"""Plans compared message by message against expected tables, without a RunEngine."""

from __future__ import annotations

import numpy as np
import pytest

from tomostream.devices import TomoScanStream, TomoStream
from tomostream.errors import BadParameter, ConnectionLost
from tomostream.plans import ChangeDetector, capture, retake_dark, retake_flat, set_recon, stream_scan

# devices are never connected here: plans only name them in messages
SCAN = TomoScanStream("msg:TomoScanStream:", name="tomoscan")
STREAM = TomoStream("msg:TomoStream:", name="tomostream")


def table(plan):
    """(command, object name, args) of each message, driving the plan with None replies."""
    rows = []
    for msg in plan:
        name = getattr(msg.obj, "name", None)
        rows.append((msg.command, name, msg.args))
    return rows


def test_set_recon_table():
    rows = table(set_recon(STREAM, center=12.5, filter="RAMP", ortho=(1, 2, 3)))
    assert rows == [
        ("set", "tomostream_center", (12.5,)),
        ("set", "tomostream_filter_type", ("Ramp",)),
        ("set", "tomostream_ortho_x", (1,)),
        ("set", "tomostream_ortho_y", (2,)),
        ("set", "tomostream_ortho_z", (3,)),
        ("wait", None, ()),
    ]


def test_set_recon_zoom_table():
    rows = table(set_recon(STREAM, zoom=4))
    assert rows == [("set", "tomostream_zoom", (4.0,)), ("wait", None, ())]


def test_set_recon_with_nothing_to_do_yields_nothing():
    assert table(set_recon(STREAM)) == []


def test_retakes_table():
    assert table(retake_dark(SCAN)) == [("set", "tomoscan_stream_retake_dark", (1,)), ("wait", None, ())]
    assert table(retake_flat(SCAN)) == [("set", "tomoscan_stream_retake_flat", (1,)), ("wait", None, ())]


def test_capture_table():
    rows = table(capture(SCAN, STREAM, num_capture=20, pre_count=5))
    assert rows == [
        ("set", "tomoscan_stream_num_capture", (20,)), ("wait", None, ()),
        ("set", "tomoscan_stream_pre_count", (5,)), ("wait", None, ()),
        ("read", "tomostream_recon", ()),  # slices at trigger time, before the capture
        ("read", "tomoscan_stream_num_total_captured", ()),
        ("set", "tomoscan_stream_capture", (1,)), ("wait", None, ()),
        ("read", "tomoscan_stream_num_total_captured", ()),  # until it changes (or not)
        ("read", "tomoscan_stream_file_name", ()),  # a base name ...
        ("read", "tomoscan_file_path", ()),  # ... in FilePath
    ]  # without a RunEngine no file is named: nothing to record


def test_stream_scan_table():
    rows = table(stream_scan(SCAN, STREAM, duration=0, center=10.0, md={"sample": "disc"}))
    assert rows == [
        ("stage", "tomoscan", ()), ("stage", "tomostream", ()),
        ("open_run", None, ()),
        ("read", "tomostream_server_running", ()),       # the server is up
        ("set", "tomostream_center", (10.0,)), ("wait", None, ()),
        ("set", "tomoscan_stream_num_capture", (100,)), ("wait", None, ()),
        ("set", "tomoscan_stream_pre_count", (0,)), ("wait", None, ()),
        ("set", "tomostream_start_recon", (1,)),
        ("read", "tomostream_start_recon", ()),
        ("set", "tomoscan_start_scan", (1,)),
        ("checkpoint", None, ()),
        ("read", "tomostream_server_running", ()),       # still up: read the status
        ("trigger", "tomostream", ()), ("trigger", "tomoscan", ()), ("wait", None, ()),
        ("create", None, ()), ("read", "tomostream", ()), ("read", "tomoscan", ()), ("save", None, ()),
        # finally: abort both and wait until both busy records read Done
        ("set", "tomoscan_abort_scan", (1,)), ("wait", None, ()),
        ("set", "tomostream_abort_recon", (1,)), ("wait", None, ()),
        ("read", "tomoscan_start_scan", ()),
        ("read", "tomostream_start_recon", ()),
        ("close_run", None, ()),
        ("unstage", "tomostream", ()), ("unstage", "tomoscan", ()),
    ]


def test_stream_scan_start_document_metadata():
    plan = stream_scan(SCAN, STREAM, duration=0, md={"sample": "disc"})
    open_run = next(msg for msg in plan if msg.command == "open_run")
    assert open_run.kwargs["plan_name"] == "stream_scan"
    assert open_run.kwargs["sample"] == "disc"
    assert open_run.kwargs["plan_args"]["num_capture"] == 100


@pytest.mark.parametrize("kwargs, match", [
    ({"duration": -1}, "duration=-1"),
    ({"num_capture": 0}, "num_capture=0"),
    ({"pre_count": -3}, "pre_count=-3"),
    ({"capture_when": "sometimes"}, "capture_when='sometimes'"),
    ({"poll_period": 0}, "poll_period=0"),
])
def test_stream_scan_refuses_bad_arguments(kwargs, match):
    with pytest.raises(BadParameter, match=match):
        list(stream_scan(SCAN, STREAM, **kwargs))


def test_bad_setting_is_refused_before_any_message():
    with pytest.raises(BadParameter, match="FilterType='sinc'"):
        list(set_recon(STREAM, filter="sinc"))
    with pytest.raises(BadParameter, match="Zoom=0"):
        list(set_recon(STREAM, zoom=0))


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_change_detector_fires_on_change_and_holds_off():
    clock = FakeClock()
    det = ChangeDetector(threshold=0.2, holdoff=5.0, clock=clock)
    base = np.ones((8, 24), np.float32)
    assert not det(base)  # reference
    assert not det(base * 1.1)  # 10 % < 20 %
    assert det(base * 1.5)  # 50 %
    assert det.fired == 1
    clock.now = 1.0
    assert not det(base * 3.0)  # within hold-off
    clock.now = 6.0
    assert det(base * 3.0)  # reference is the image at the last firing (x1.5): 100 % change
    assert det.last_change == pytest.approx(1.0)


def test_change_detector_region_sees_only_its_part():
    det = ChangeDetector(threshold=0.1, region=np.s_[:, :8], holdoff=0.0)
    image = np.ones((8, 24))
    det(image)
    changed = image.copy()
    changed[:, 8:] *= 10  # outside the region
    assert not det(changed)
    changed[:, :8] *= 2
    assert det(changed)


@pytest.mark.parametrize("kwargs", [{"threshold": 0}, {"threshold": float("nan")}, {"holdoff": -1}])
def test_change_detector_refuses_bad_settings(kwargs):
    with pytest.raises(BadParameter):
        ChangeDetector(**kwargs)


def test_buffer_full_parses_the_readback():
    from tomostream.plans.stream_scan import buffer_full

    assert buffer_full("360/360")
    assert not buffer_full("359/360")
    assert not buffer_full("0/0")
    assert not buffer_full("garbage")
    assert not buffer_full(None)


def test_trigger_is_asked_only_once_the_buffer_is_full():
    """Drive the loop by hand: replies to 'read' messages decide what the plan sees."""
    seen = []

    def trigger(image):
        seen.append(image)
        return False

    buffer_readbacks = iter(["10/360", "360/360"])
    plan = stream_scan(SCAN, STREAM, capture_when=trigger, poll_period=0.1)
    msg = next(plan)
    recon_reads = 0
    while True:
        reply = None
        if msg.command == "read" and msg.obj.name == "tomostream_buffer_size":
            value = next(buffer_readbacks, None)
            if value is None:
                break
            reply = {msg.obj.name: {"value": value, "timestamp": 0.0}}
        elif msg.command == "read" and msg.obj.name == "tomostream_recon":
            recon_reads += 1
            reply = {msg.obj.name: {"value": np.ones((4, 12)), "timestamp": 0.0}}
        msg = plan.send(reply)
    plan.close()
    assert recon_reads == 1 and len(seen) == 1


def test_server_stopping_mid_scan_ends_the_plan_with_its_status_and_stops_the_scan():
    """ServerRunning read as Stopped in the loop: a clear error, and the finally-stop still runs."""
    readbacks = {"tomostream_server_running": iter(["Running", "Running", "Stopped"]),
                 "tomostream_recon_status": iter(["worker ended unexpectedly: out of memory"])}
    plan = stream_scan(SCAN, STREAM, poll_period=0.1)
    commands = []
    msg = next(plan)
    with pytest.raises(ConnectionLost, match="ServerRunning = Stopped.*worker ended unexpectedly"):
        while True:
            commands.append((msg.command, getattr(msg.obj, "name", None)))
            reply = None
            if msg.command == "read" and msg.obj.name in readbacks:
                reply = {msg.obj.name: {"value": next(readbacks[msg.obj.name]), "timestamp": 0.0}}
            msg = plan.send(reply)
    assert ("set", "tomoscan_abort_scan") in commands and ("close_run", None) in commands
    assert commands.count(("create", None)) == 1  # one status event before the server stopped
