"""The TomoStream IOC alone, through a real Channel Access client (pyepics)."""

from __future__ import annotations

import math
import threading

import epics
import pytest

from tomostream.errors import BadParameter
from tomostream.ioc.tomostream_ioc import (
    DEZINGER_TYPES,
    RING_REMOVAL_TYPES,
    TomoStreamIOC,
)
from tomostream.recon.params import MAX_ZOOM
from tomostream.server.settings import dezinger_radius
from tomostream.vocabulary import FILTER_NAMES

# suffix -> (record type, enum strings or None); pv-names.md plus the frame counters,
# ImagePlugins, Zoom and the optical-zoom PVs of the 2-BM database
EXPECTED = {
    "TomoScanPVPrefix": ("stringout", None), "ImagePVAPName": ("stringout", None),
    "DarkPVAName": ("stringout", None), "FlatPVAName": ("stringout", None),
    "ThetaPVAName": ("stringout", None), "ReconPVAName": ("stringout", None),
    "BufferSize": ("stringout", None), "Center": ("ao", None), "CenterTweak": ("ao", None),
    "CenterTweakUp": ("calcout", None), "CenterTweakDown": ("calcout", None),
    "FilterType": ("mbbo", ("Parzen", "Shepp-logan", "Ramp", "Butterworth")),
    "Dezinger": ("mbbo", ("None", "Radius 2", "Radius 3", "Radius 4")),
    "RingRemoval": ("mbbo", ("None", "fw")),
    "OrthoX": ("longout", None), "OrthoY": ("longout", None), "OrthoZ": ("longout", None),
    "RotX": ("ao", None), "RotY": ("ao", None), "RotZ": ("ao", None), "Zoom": ("ao", None),
    "Energy": ("ao", None), "Distance": ("ao", None), "Alpha": ("ao", None),
    "PixelSize": ("ao", None), "ReconStatus": ("waveform", None), "ReconTime": ("ao", None),
    "Watchdog": ("calcout", None), "ServerRunning": ("bi", ("Stopped", "Running")),
    "StartRecon": ("busy", ("Done", "Acquire")), "AbortRecon": ("bo", ("No", "Yes")),
    "FramesReceived": ("longin", None), "FramesUsed": ("longin", None),
    "FramesDropped": ("longin", None), "FramesLost": ("longin", None), "FramesBad": ("longin", None),
    "ImagePlugins": ("longout", None),
    "CenterEstimate": ("ao", None), "CenterAuto": ("bo", ("No", "Yes")),
    "LensChangeSync": ("bo", ("No", "Yes")), "MctOpticsPVPrefix": ("stringout", None),
    "SampleTomo0degPVName": ("stringout", None), "SampleTomo90degPVName": ("stringout", None),
    "SampleYPVName": ("stringout", None),
}

# one valid write per writable PV: suffix -> (value written, value read back)
WRITES = {
    "TomoScanPVPrefix": ("2bmb:TomoScan:", "2bmb:TomoScan:"),
    "ImagePVAPName": ("2bmb:TS:PvaPluginPVPrefix", "2bmb:TS:PvaPluginPVPrefix"),
    "DarkPVAName": ("2bmb:TS:StreamDarkFields", "2bmb:TS:StreamDarkFields"),
    "FlatPVAName": ("2bmb:TS:StreamFlatFields", "2bmb:TS:StreamFlatFields"),
    "ThetaPVAName": ("2bmb:TS:StreamTheta", "2bmb:TS:StreamTheta"),
    "ReconPVAName": ("2bmb:TS:Recon", "2bmb:TS:Recon"),
    "Center": (12.5, 12.5), "CenterTweak": (0.25, 0.25),
    "FilterType": (2, "Ramp"), "Dezinger": (3, "Radius 4"), "RingRemoval": (1, "fw"),
    "OrthoX": (7, 7), "OrthoY": (8, 8), "OrthoZ": (9, 9),
    "RotX": (1.5, 1.5), "RotY": (-2.0, -2.0), "RotZ": (30.0, 30.0), "Zoom": (3.5, 3.5),
    "Energy": (25.0, 25.0), "Distance": (150.0, 150.0), "Alpha": (0.001, 0.001),
    "PixelSize": (0.65, 0.65), "ImagePlugins": (2, 2), "CenterAuto": (1, "Yes"),
    "LensChangeSync": (1, "Yes"), "MctOpticsPVPrefix": ("2bm:MCTOptics2:", "2bm:MCTOptics2:"),
    "SampleTomo0degPVName": ("2bmS1:m4", "2bmS1:m4"), "SampleTomo90degPVName": ("2bmS1:m3", "2bmS1:m3"),
    "SampleYPVName": ("2bmb:m57", "2bmb:m57"),
}


def caget(group, suffix, **kw):
    value = epics.caget(group.prefix + suffix, timeout=5.0, use_monitor=False, **kw)
    assert value is not None, f"no answer from {group.prefix}{suffix}"
    return value


def caput(group, suffix, value, wait=True):
    assert epics.caput(group.prefix + suffix, value, wait=wait, timeout=5.0) == 1


def test_pv_list_matches_reference():
    names = {k.split(":")[-1] for k in TomoStreamIOC("P:").pvdb if "." not in k}
    assert names == set(EXPECTED)
    assert FILTER_NAMES == EXPECTED["FilterType"][1]
    assert DEZINGER_TYPES == EXPECTED["Dezinger"][1]
    assert RING_REMOVAL_TYPES == EXPECTED["RingRemoval"][1]


def test_every_pv_answers_with_its_record_type_and_enums(ioc):
    group, _, _ = ioc
    for suffix, (rtyp, enums) in EXPECTED.items():
        assert caget(group, suffix + ".RTYP") == rtyp, suffix
        if enums is not None:
            pv = epics.get_pv(group.prefix + suffix)
            assert pv.wait_for_connection(5.0)
            assert tuple(pv.get_ctrlvars(timeout=5.0)["enum_strs"]) == enums, suffix
    for suffix, units in (("Center", "pixels"), ("Energy", "keV"), ("ReconTime", "s"),
                          ("CenterEstimate", "pixels")):
        pv = epics.get_pv(group.prefix + suffix)
        assert pv.wait_for_connection(5.0)
        assert pv.get_ctrlvars(timeout=5.0)["units"] == units
    assert caget(group, "ReconStatus", as_string=True) == "Stopped"
    assert math.isnan(caget(group, "CenterEstimate"))       # no estimate before any frame
    assert caget(group, "CenterAuto", as_string=True) == "No"


def test_write_every_writable_pv_once(ioc):
    group, _, recorder = ioc
    for suffix, (written, expected) in WRITES.items():
        caput(group, suffix, written)
        assert recorder.wait_for(suffix) == expected
        got = caget(group, suffix, as_string=isinstance(expected, str))
        assert (got == pytest.approx(expected)) if isinstance(expected, float) else (got == expected), (
            suffix, got, group.value(suffix))


def test_read_only_pvs_refuse_client_writes(ioc):
    group, _, _ = ioc
    for suffix in ("ReconStatus", "ReconTime", "BufferSize", "ServerRunning", "FramesUsed",
                   "CenterEstimate"):
        pv = epics.get_pv(group.prefix + suffix)
        assert pv.wait_for_connection(5.0)
        assert not pv.write_access, suffix


def test_center_tweak_up_and_down(ioc):
    group, _, _ = ioc
    caput(group, "Center", 40.0)
    caput(group, "CenterTweak", 1.5)
    caput(group, "CenterTweakUp", 1)
    assert caget(group, "Center") == pytest.approx(41.5)
    caput(group, "CenterTweakDown", 1)
    caput(group, "CenterTweakDown", 1)
    assert caget(group, "Center") == pytest.approx(38.5)


def test_nan_and_bad_values_are_refused_with_a_message(ioc):
    group, _, _ = ioc
    caput(group, "Center", 20.0)
    caput(group, "Center", math.nan)
    assert caget(group, "Center") == pytest.approx(20.0)
    assert "Center=nan" in caget(group, "ReconStatus", as_string=True)
    caput(group, "PixelSize", -1.0)
    assert caget(group, "PixelSize") == pytest.approx(1.0)
    assert "PixelSize=-1" in caget(group, "ReconStatus", as_string=True)
    epics.caput(group.prefix + "Dezinger", 4, wait=True, timeout=5.0)  # no fifth state
    assert caget(group, "Dezinger", as_string=True) == "None"
    assert "Dezinger=4" in caget(group, "ReconStatus", as_string=True)
    caput(group, "DarkPVAName", "has spaces in it")
    assert caget(group, "DarkPVAName") == "2bmb:TomoScanStream:StreamDarkFields"
    assert "DarkPVAName" in caget(group, "ReconStatus", as_string=True)


def test_a_stage_name_that_is_no_pv_name_is_refused(ioc):
    group, _, _ = ioc
    caput(group, "SampleYPVName", "2bmb:m25 and more")
    assert caget(group, "SampleYPVName") == "2bmb:m25"
    assert "SampleYPVName='2bmb:m25 and more' is not a PV name" in caget(group, "ReconStatus",
                                                                          as_string=True)


def test_unknown_filter_index_is_refused(ioc):
    group, _, _ = ioc
    caput(group, "FilterType", "Ramp")
    epics.caput(group.prefix + "FilterType", 9, wait=True, timeout=5.0)
    assert caget(group, "FilterType", as_string=True) == "Ramp"
    assert "FilterType=9 is not one of" in caget(group, "ReconStatus", as_string=True)


def test_slice_positions_are_clamped_to_the_frame(ioc):
    group, _, _ = ioc
    group.frame_width, group.frame_height = 128, 64
    caput(group, "OrthoX", 5000)
    assert caget(group, "OrthoX") == 127
    assert "OrthoX=5000 is outside 0..127" in caget(group, "ReconStatus", as_string=True)
    caput(group, "OrthoZ", 100)
    assert caget(group, "OrthoZ") == 63
    caput(group, "OrthoY", -3)
    assert caget(group, "OrthoY") == 0
    caput(group, "Center", 300.0)
    assert caget(group, "Center") == pytest.approx(127.0)


def test_image_plugins_are_clamped_to_what_a_stream_is_spread_over(ioc):
    group, _, _ = ioc
    caput(group, "ImagePlugins", 9)
    assert caget(group, "ImagePlugins") == 8
    assert "ImagePlugins=9 is outside 1..8: set to 8" in caget(group, "ReconStatus", as_string=True)
    caput(group, "ImagePlugins", 0)
    assert caget(group, "ImagePlugins") == 1


def test_zoom_is_clamped_to_1_16_and_nan_refused(ioc):
    group, _, recorder = ioc
    caput(group, "Zoom", 40.0)
    assert caget(group, "Zoom") == pytest.approx(MAX_ZOOM)
    assert recorder.wait_for("Zoom") == pytest.approx(MAX_ZOOM)
    assert "Zoom=40 is outside 1..16: set to 16" in caget(group, "ReconStatus", as_string=True)
    caput(group, "Zoom", 0.5)
    assert caget(group, "Zoom") == pytest.approx(1.0)
    assert "Zoom=0.5 is outside 1..16: set to 1" in caget(group, "ReconStatus", as_string=True)
    caput(group, "Zoom", math.nan)
    assert caget(group, "Zoom") == pytest.approx(1.0)
    assert "Zoom=nan" in caget(group, "ReconStatus", as_string=True)


def test_watchdog_drives_server_running(ioc, wait_until):
    group, _, _ = ioc
    assert caget(group, "ServerRunning", as_string=True) == "Stopped"
    caput(group, "Watchdog", 2)
    assert caget(group, "ServerRunning", as_string=True) == "Running"
    # decremented once a second by the IOC: Stopped within about 2 s
    wait_until(lambda: caget(group, "ServerRunning", as_string=True) == "Stopped", 5.0,
               "ServerRunning Stopped")
    assert caget(group, "Watchdog") == 0


def test_start_recon_put_completes_when_the_server_says_so(ioc, wait_until):
    group, thread, recorder = ioc
    done = threading.Event()
    pv = epics.get_pv(group.prefix + "StartRecon")
    assert pv.wait_for_connection(5.0)
    pv.put(1, wait=False, use_complete=True, callback=lambda **kw: done.set())
    assert recorder.wait_for("StartRecon") == "Acquire"
    wait_until(lambda: caget(group, "StartRecon", as_string=True) == "Acquire", 5.0, "Acquire")
    assert not done.is_set()
    caput(group, "AbortRecon", 1)
    assert recorder.wait_for("AbortRecon") == "Yes"
    thread.run_coroutine(group.control.finished())
    assert done.wait(5.0)
    assert caget(group, "StartRecon", as_string=True) == "Done"
    assert caget(group, "AbortRecon", as_string=True) == "No"


def test_apply_and_update_from_the_server_side(ioc):
    group, thread, _ = ioc
    thread.run_coroutine(group.apply({"Center": 33.0, "ReconPVAName": "X:Recon"}))
    thread.run_coroutine(group.update({"FramesUsed": 17, "BufferSize": "17/360"}))
    assert caget(group, "Center") == pytest.approx(33.0)
    assert caget(group, "ReconPVAName") == "X:Recon"
    assert caget(group, "FramesUsed") == 17
    assert caget(group, "BufferSize") == "17/360"


def test_dezinger_states_by_index_are_the_aps_radii(ioc):
    """A client writes the index: 0 None, 1 Radius 2, 2 Radius 3, 3 Radius 4 (as at APS)."""
    group, _, recorder = ioc
    for index, radius in enumerate((0, 2, 3, 4)):
        caput(group, "Dezinger", index)
        assert dezinger_radius(recorder.wait_for("Dezinger")) == radius
    with pytest.raises(BadParameter, match="Radius 5"):
        dezinger_radius("Radius 5")
