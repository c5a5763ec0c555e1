"""The session's pure parts: the frame gate's verdicts, publication pacing and the PVs turned
into the reconstruction's parameters, each with plain objects (no EPICS, no engine)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from tomostream.errors import BadParameter
from tomostream.pva.publish_process import InlinePublisher
from tomostream.recon import OrthoReconstructor
from tomostream.server.frames import FrameTypeHistory, LatencyStats
from tomostream.server.gate import NEW_SIZE_RUN, SCAN_START_SLACK, Action, FrameGate, Skip, Verdict
from tomostream.server.pacing import PUBLISH_POLL, Pacer
from tomostream.server.settings import centred, engine_params, rescaled


def frame(shape=(8, 12), dtype=np.uint16) -> np.ndarray:
    return np.zeros(shape, dtype)


# -- format ------------------------------------------------------------------------------------
def test_the_first_frame_builds_and_its_format_is_taken_from_then_on():
    gate = FrameGate(0.1)
    assert gate.check_format(frame()).action is Action.BUILD
    assert gate.format == ((8, 12), np.dtype(np.uint16))
    assert gate.check_format(frame()).action is Action.TAKE


def test_a_frame_of_another_size_alone_is_refused_with_both_formats_named():
    gate = FrameGate(0.1)
    gate.check_format(frame())
    verdict = gate.check_format(frame((4, 6)))
    assert verdict.action is Action.REFUSE
    assert verdict.why == "a uint16 6x4 frame in a stream of uint16 12x8 frames"
    assert gate.check_format(frame()).action is Action.TAKE       # the run is broken


def test_a_new_size_is_followed_after_a_run_of_it_or_at_once_when_a_field_has_it():
    gate = FrameGate(0.1)
    gate.check_format(frame())
    verdicts = [gate.check_format(frame((4, 6))).action for _ in range(NEW_SIZE_RUN)]
    assert verdicts == [Action.REFUSE] * (NEW_SIZE_RUN - 1) + [Action.RESIZE]
    assert gate.check_format(frame((4, 6))).action is Action.TAKE
    # binned back, and the flat field taken at that size is already there
    assert gate.check_format(frame(), [None, (8, 12)]).action is Action.RESIZE


def test_a_new_dtype_is_followed_after_a_run_of_it_and_said():
    gate = FrameGate(0.1)
    gate.check_format(frame())
    for _ in range(NEW_SIZE_RUN - 1):
        assert gate.check_format(frame(dtype=np.float32), [(8, 12)]).action is Action.REFUSE
    verdict = gate.check_format(frame(dtype=np.float32))
    assert verdict == Verdict(Action.RETYPE, "the detector now sends float32 frames (was uint16)")


def test_a_dtype_the_engine_cannot_take_is_refused_by_name():
    assert FrameGate.dtype_refusal(frame()) is None
    why = FrameGate.dtype_refusal(frame(dtype=np.complex64))
    assert why.startswith("a complex64 12x8 frame: the reconstruction takes ")


# -- projection and angle ------------------------------------------------------------------------
def history(*changes) -> FrameTypeHistory:
    h = FrameTypeHistory()
    for t, name in changes:
        h.record(t, name)
    return h


def test_a_projection_gets_its_angle_counted_from_first_projid():
    gate, theta = FrameGate(0.1), np.arange(10, dtype=float) * 2.0
    types = history((100.0, "Projection"))
    assert gate.angle(503, 101.0, theta, 500, types) == 6.0
    assert gate.angle(510, 101.0, theta, 500, types) is Skip.OUTSIDE_THETA
    assert gate.angle(503, 0.0, theta, 500, types) == 6.0      # no timestamp: the type now


def test_frames_near_a_frame_type_change_or_before_a_scan_is_known_are_not_projections():
    gate, theta = FrameGate(0.1), np.arange(10, dtype=float)
    types = history((100.0, "Projection"), (105.0, "FlatField"))
    assert gate.angle(501, 104.95, theta, 500, types) is Skip.NOT_PROJECTION   # within the window
    assert gate.angle(501, 104.85, theta, 500, types) == 1.0
    assert gate.angle(501, 106.0, theta, 500, types) is Skip.NOT_PROJECTION
    assert gate.angle(501, 101.0, None, 500, types) is Skip.NOT_PROJECTION     # no angle table
    assert gate.angle(501, 101.0, theta, None, types) is Skip.NOT_PROJECTION   # no FirstProjid


def test_ids_skipped_between_scans_are_counted_once_at_first_projid():
    gate = FrameGate(0.1)
    assert [gate.skipped_before_scan(uid, None) for uid in (10, 11, 12)] == [0, 0, 0]
    assert gate.skipped_before_scan(40, 40) == 27       # 13 .. 39 never came
    assert gate.skipped_before_scan(41, 40) == 0
    assert gate.skipped_before_scan(40, 40) == 0        # a repeat of the first changes nothing


def test_late_frames_of_another_channel_do_not_restart_the_count():
    gate = FrameGate(0.1)
    gate.skipped_before_scan(1000, None)
    gate.skipped_before_scan(1000 - SCAN_START_SLACK + 1, None)   # late: the newest stays
    assert gate.last_uid == 1000
    gate.skipped_before_scan(5, None)                              # the detector restarted
    assert gate.last_uid == 5


# -- publication pacing (a real engine, a real publisher on loopback) ------------------------------
@pytest.fixture
def publisher():
    pub = InlinePublisher()
    yield pub
    pub.close()


@pytest.fixture
def rec():
    return OrthoReconstructor(width=16, height=8, buffer_size=4, backend="numpy")


def test_a_publication_is_due_when_the_slices_changed_and_the_interval_passed(publisher, rec,
                                                                              unique_prefix):
    said, written, latency = [], [], LatencyStats()
    pacer = Pacer(0.5, said.append, written.append, latency)
    assert pacer.wait(0.0, False) is None and not pacer.due(1e9)    # nothing changed
    sent = time.time() - 10.0
    pacer.changed([sent, sent + 1.0], work=0.25)
    assert pacer.due(time.monotonic())
    assert pacer.publish(rec, publisher, unique_prefix + "Recon", markers=True)
    assert not pacer.dirty and pacer.in_flight == 1
    pacer.changed([time.time()])
    assert 0 < pacer.wait(time.monotonic(), False) <= 0.5          # not due yet
    assert pacer.wait(pacer.last + 10, True) == PUBLISH_POLL         # every buffer in flight
    pacer.collect(publisher)
    assert pacer.in_flight == 0 and not said
    assert latency.count == 2 and 9.0 < latency.percentiles()["max"] < 60.0
    assert written[-1]["ReconTime"] >= 0.25


def test_a_failed_publication_is_said_and_its_frames_add_no_latency(publisher, rec):
    said, latency = [], LatencyStats()
    pacer = Pacer(0.0, said.append, lambda values: None, latency)
    pacer.changed([time.time()])
    assert pacer.publish(rec, publisher, "", markers=False)
    pacer.collect(publisher)
    assert said == ["Running: cannot publish the slices: reconstruction PVA channel name is empty"]
    assert latency.count == 0


def test_publishing_takes_at_most_half_of_the_worker():
    pacer = Pacer(0.01, print, print, LatencyStats())
    pacer.cost = 0.2
    assert pacer.interval == pytest.approx(0.4)


# -- PVs as parameters ---------------------------------------------------------------------------
PVS = {"Center": 0.0, "OrthoX": 0, "OrthoY": 0, "OrthoZ": 0, "FilterType": "Parzen",
       "Dezinger": "Radius 2", "RotX": 1.0, "RotY": 0.0, "RotZ": 0.0, "Zoom": 1.0,
       "Energy": 20.0, "Distance": 100.0, "Alpha": 1e-3, "PixelSize": 1.0,
       "RingRemoval": "None"}


def test_unset_or_outside_positions_go_to_the_middle_of_the_first_frames():
    assert centred(PVS.__getitem__, 12, 8) == {"Center": 6.0, "OrthoX": 6, "OrthoY": 6,
                                               "OrthoZ": 4}
    placed = {**PVS, "Center": 5.5, "OrthoX": 3, "OrthoY": 20, "OrthoZ": 2}
    assert centred(placed.__getitem__, 12, 8) == {"OrthoY": 6}


def test_positions_stay_on_the_same_features_when_the_detector_bins():
    pvs = {**PVS, "Center": 1000.5, "OrthoX": 100, "OrthoY": 2047, "OrthoZ": 300}
    assert rescaled(pvs.__getitem__, (2048, 2048), (1024, 1024)) == {
        "Center": 500.25, "OrthoX": 50, "OrthoY": 1023, "OrthoZ": 150}


def test_the_pvs_become_the_engines_parameters_inside_the_frame():
    pvs = {**PVS, "Center": 5.5, "OrthoX": 30, "OrthoY": -2, "OrthoZ": 3}
    params = engine_params(pvs.__getitem__, 12, 8)
    assert params["ortho"] == (11, 0, 3) and params["dezinger"] == 2
    assert params["rot"] == (1.0, 0.0, 0.0) and math.isclose(params["alpha"], 1e-3)
    with pytest.raises(BadParameter, match="Dezinger='Radius 9'"):
        engine_params({**pvs, "Dezinger": "Radius 9"}.__getitem__, 12, 8)
