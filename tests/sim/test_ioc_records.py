"""The simulated TomoScan IOC over real Channel Access: names, record types, enums, bad puts."""

from __future__ import annotations

import os

import pytest

#: suffix -> record type, from reference/pv-names.md (TomoScan streaming section)
RECORDS = {
    "RotationStart": "ao", "RotationStep": "ao", "NumAngles": "longout", "FrameType": "mbbi",
    "ExposureTime": "ao", "StartScan": "busy", "AbortScan": "bo", "ScanStatus": "waveform",
    "ServerRunning": "bi", "Watchdog": "calcout", "FilePath": "waveform", "FileName": "waveform",
    "HDF5ProjectionLocation": "stringout", "HDF5DarkLocation": "stringout",
    "HDF5FlatLocation": "stringout", "PvaPluginPVPrefix": "stringout",
    "StreamCapture": "busy", "StreamNumCapture": "longout", "StreamNumCaptured": "longout",
    "StreamNumTotalCaptured": "longout", "StreamPreCount": "longout", "StreamPreCounted": "longout",
    "StreamRetakeDark": "busy", "StreamRetakeFlat": "busy", "StreamBinning": "mbbo",
    "StreamMessage": "waveform", "StreamCBStatusMessage": "waveform", "StreamFileName": "waveform",
    "PvaStreamPVPrefix": "stringout", "StreamSync": "bo", "FirstProjid": "longout",
    "StreamScanType": "bo",
}
ENUMS = {
    "FrameType": ("DarkField", "FlatField", "Projection"),
    "StreamBinning": ("1x", "2x", "4x"),
    "StreamScanType": ("backforth", "continuous"),
    "StreamCapture": ("Done", "Capture"),
    "StreamRetakeDark": ("Done", "Capture"),
    "StreamRetakeFlat": ("Done", "Capture"),
    "StartScan": ("Done", "Acquire"),
    "ServerRunning": ("Stopped", "Running"),
    "StreamSync": ("Done", "Sync"),
    "AbortScan": ("No", "Yes"),
}


def test_record_types_and_enum_strings(ca, sim, wait):
    for suffix, rtyp in RECORDS.items():
        assert ca.get(suffix + ".RTYP") == rtyp, suffix
    for suffix, strings in ENUMS.items():
        assert ca.enum_strings(suffix) == strings, suffix
    assert ca.get("PvaPluginPVPrefix") == sim.plugin_prefix
    assert sim.image_channel == sim.plugin_prefix + "Image"
    assert ca.get("PvaStreamPVPrefix") == sim.pva_prefix == sim.prefix
    assert ca.get("HDF5ProjectionLocation") == "/exchange/data"
    assert ca.get("HDF5FlatLocation") == "/exchange/data_white"
    assert ca.get("ExposureTime") == pytest.approx(1 / 100.0)
    wait(lambda: ca.get("ServerRunning") == "Running", what="ServerRunning = Running")


def test_every_setting_writable_once(ca, sim, tmp_path):
    writes = {"RotationStart": 5.0, "RotationStep": 0.25, "NumAngles": 300, "ExposureTime": 0.02,
              "StreamScanType": "backforth", "FirstProjid": 77, "FileName": "sample",
              "FilePath": str(tmp_path), "StreamNumCapture": 12, "StreamPreCount": 3,
              "StreamBinning": "2x", "Watchdog": 5.0}
    for suffix, value in writes.items():
        ca.put(suffix, value)
        got = ca.get(suffix)
        assert got == pytest.approx(value) if isinstance(value, float) else got == value, suffix
    assert sim.fps == pytest.approx(50.0)
    ca.put("StreamSync", "Sync")
    assert ca.get("StreamSync") == "Done"


@pytest.mark.parametrize("suffix, value, words", [
    ("NumAngles", -5, "NumAngles=-5"),
    ("RotationStep", 0.0, "RotationStep=0.0"),
    ("ExposureTime", -1.0, "ExposureTime=-1.0"),
    ("StreamNumCapture", 0, "StreamNumCapture=0"),
    ("StreamPreCount", -1, "StreamPreCount=-1"),
    ("FileName", "../escape", "FileName='../escape'"),
    ("FileName", "/etc/passwd", "absolute"),
    ("FrameType", "DarkField", "FrameType"),
    ("PvaPluginPVPrefix", "other:", "PvaPluginPVPrefix is fixed by the detector configuration"),
    ("HDF5ProjectionLocation", "/exchange/other",
     "HDF5ProjectionLocation='/exchange/other': the simulator always writes '/exchange/data'"),
])
def test_bad_puts_refused_with_message(ca, suffix, value, words):
    before = ca.get(suffix)
    ca.put(suffix, value)
    assert ca.get(suffix) == before
    assert words in ca.get("StreamMessage")


def test_capture_refused_without_usable_file_path(ca, sim, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    for path, words in [(" ", "FilePath is empty"), (str(tmp_path / "missing"), "does not exist"),
                        (str(tmp_path / "afile"), "not a folder")]:
        if path.endswith("afile"):
            (tmp_path / "afile").write_bytes(b"")
        ca.put("FilePath", path)
        ca.put("StreamCapture", "Capture", timeout=5)
        assert ca.get("StreamCapture") == "Done"
        assert words in ca.get("StreamMessage"), path
    assert not list(outside.iterdir())


def test_restart_on_same_port(make_sim, ca_for, unique_prefix):
    for i in range(2):
        sim = make_sim(prefix=f"{unique_prefix}r{i}:")
        assert ca_for(sim.prefix).get("StreamScanType") == "continuous"
        sim.stop()
    assert os.environ["EPICS_CA_AUTO_ADDR_LIST"] == "NO"
