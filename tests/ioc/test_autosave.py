"""Autosave: settings written on change and restored when an IOC with the same prefix starts."""

from __future__ import annotations

import epics
import pytest
from helpers import Ca, wait_until

from tomostream.ioc import IocThread
from tomostream.ioc.autosave import AUTOSAVED, END, Autosave, autosave_path
from tomostream.ioc.tomostream_ioc import TomoStreamIOC

# settings written by a client -> value read back after a restart
CHANGES = {
    "Center": (1224.5, 1224.5), "CenterTweak": (0.25, 0.25), "FilterType": (2, "Ramp"),
    "Dezinger": (2, "Radius 3"), "RingRemoval": (1, "fw"), "OrthoX": (17, 17), "OrthoY": (5, 5),
    "OrthoZ": (3, 3), "RotY": (-12.5, -12.5), "Energy": (24.9, 24.9), "Distance": (120.0, 120.0),
    "Alpha": (0.0005, 0.0005), "PixelSize": (0.69, 0.69), "ImagePlugins": (3, 3), "Zoom": (2.5, 2.5),
    "DarkPVAName": ("2bmb:TS2:StreamDarkFields", "2bmb:TS2:StreamDarkFields"),
    "ReconPVAName": ("2bmb:TomoStream:Recon2", "2bmb:TomoStream:Recon2"),
}


class Ioc:
    """A TomoStream IOC with autosave, started and stopped as a server would."""

    def __init__(self, prefix, port, path, period=0.2):
        self.group = TomoStreamIOC(prefix)
        self.thread = IocThread(self.group.pvdb, port=port, name="autosave-test")
        self.errors: list[str] = []
        self.autosave = Autosave(self.group, path, period=period, on_error=self.errors.append)

    def __enter__(self):
        self.thread.start()
        self.note = self.thread.run_coroutine(self.autosave.restore())
        self.autosave.start()
        return self

    def __exit__(self, *exc):
        self.autosave.stop()
        self.thread.stop()


def read(ca: Ca, suffix: str, expected):
    value = ca.get(suffix, as_string=isinstance(expected, str))
    return pytest.approx(value) if isinstance(expected, float) else value


@pytest.fixture
def prefix(unique_prefix):
    return f"{unique_prefix}TS:"


def test_settings_survive_a_restart(prefix, stream_ca_port, tmp_path):
    path = autosave_path(tmp_path, prefix)
    ca = Ca(prefix)
    with Ioc(prefix, stream_ca_port, path) as ioc:
        assert ioc.note.startswith("no autosave file yet")
        for suffix, (written, _) in CHANGES.items():
            ca.put(suffix, written)
        wait_until(lambda: path.exists() and ioc.autosave.load().get("ReconPVAName") ==
                   CHANGES["ReconPVAName"][1], 10.0, "the changes in the autosave file")
    lines = path.read_text().splitlines()
    assert lines[-1] == END and f"{prefix}FilterType 2" in lines and f"{prefix}Dezinger 2" in lines
    assert {line.split()[0][len(prefix):] for line in lines[1:-1]} == set(AUTOSAVED)
    assert not [p for p in path.parent.iterdir() if p != path]       # no temporary file left
    with Ioc(prefix, stream_ca_port, path) as ioc:
        assert ioc.note == f"{len(AUTOSAVED)} settings restored from {path}"
        for suffix in CHANGES:          # the client finds the restarted IOC again
            pv = epics.get_pv(prefix + suffix)
            wait_until(lambda pv=pv: pv.connected, 60.0, f"{suffix} reconnected")
        for suffix, (_, expected) in CHANGES.items():
            assert read(ca, suffix, expected) == expected, suffix
        assert ca.get("TomoScanPVPrefix") == "2bmb:TomoScanStream:"      # saved unchanged


def test_center_auto_is_not_saved_and_starts_at_no(prefix, stream_ca_port, tmp_path):
    path = tmp_path / "ts.sav"
    ca = Ca(prefix)
    with Ioc(prefix, stream_ca_port, path) as ioc:
        ca.put("CenterAuto", "Yes")
        ca.put("Center", 101.25)
        wait_until(lambda: path.exists() and ioc.autosave.load().get("Center") == 101.25, 10.0,
                   "Center in the autosave file")
        assert "CenterAuto" not in ioc.autosave.load()
    with Ioc(prefix, stream_ca_port, path):
        pv = epics.get_pv(prefix + "CenterAuto")
        wait_until(lambda: pv.connected, 60.0, "CenterAuto reconnected")
        assert ca.get("Center") == pytest.approx(101.25)
        assert ca.get("CenterAuto", as_string=True) == "No"


def test_the_file_is_written_on_change_only(prefix, stream_ca_port, tmp_path):
    path = tmp_path / "ts.sav"
    with Ioc(prefix, stream_ca_port, path, period=3600) as ioc:
        assert ioc.autosave.save() and not ioc.autosave.save()
        ioc.thread.run_coroutine(ioc.group.update({"OrthoZ": 7}))  # a change by the server
        assert ioc.autosave.save()
        assert ioc.autosave.load()["OrthoZ"] == 7


def test_a_settings_file_from_an_aps_ioc_is_restored(prefix, stream_ca_port, tmp_path):
    path = tmp_path / "tomoStream_settings.sav"
    path.write_text(
        "# autosave R5.10\tAutomatically generated - DO NOT MODIFY - 240117-101500\n"
        "! 1 channel(s) not connected - or illegal\n"
        f"{prefix}Center 1010.25\n"
        f"{prefix}FilterType 1\n"
        f"{prefix}Dezinger 3\n"
        f"{prefix}BufferSize 1500\n"
        f"{prefix}ThetaPVAName 2bmb:TomoScanStream:StreamTheta\n"
        f"other:TomoStream:Center 5\n"
        f"{END}\n")
    ca = Ca(prefix)
    with Ioc(prefix, stream_ca_port, path) as ioc:
        assert ioc.note == f"4 settings restored from {path}"
        assert ca.get("Center") == pytest.approx(1010.25)
        assert ca.get("FilterType", as_string=True) == "Shepp-logan"
        assert ca.get("Dezinger", as_string=True) == "Radius 4"
        assert ca.get("BufferSize") == "0/0"                       # a read-back: not restored


@pytest.mark.parametrize(("content", "why"), [
    ("P:Center 12.5\nP:FilterType 2\n", "cut short"),
    (f"P:Center twelve\n{END}\n", "line 1: 'twelve' is not a value of Center"),
    (f"P:Dezinger 4\n{END}\n", "is not a value of Dezinger"),
    (b"\xff\xfe\x00garbage", "cannot be read"),
])
def test_a_corrupt_file_is_reported_and_the_defaults_used(prefix, stream_ca_port, tmp_path,
                                                          content, why):
    path = tmp_path / "ts.sav"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content.replace("P:", prefix))
    ca = Ca(prefix)
    with Ioc(prefix, stream_ca_port, path) as ioc:
        assert why in ioc.note and "defaults used" in ioc.note, ioc.note
        assert ca.get("Center") == 0.0 and ca.get("FilterType", as_string=True) == "Parzen"
        assert path.with_name("ts.sav.corrupt").exists()           # kept for a person to read
        wait_until(path.exists, 10.0, "a fresh autosave file")
    assert ioc.autosave.load()["Center"] == 0.0


def test_an_unreadable_or_unwritable_place_never_stops_the_ioc(prefix, stream_ca_port, tmp_path):
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    path = blocker / "ts.sav"                          # its folder is a file
    with Ioc(prefix, stream_ca_port, path) as ioc:
        assert "cannot be read" in ioc.note and "defaults used" in ioc.note
        assert not ioc.autosave.save()
        assert len(ioc.errors) == 1 and f"cannot write {path}" in ioc.errors[0]
        epics.caput(prefix + "Center", 3.0, wait=True, timeout=5.0)
        assert not ioc.autosave.save() and len(ioc.errors) == 1    # reported once
